"""Bindings of the schedule engine to other RL libraries; each module imports its library itself,
so the engine never needs one (``integrations.sb3``: Stable-Baselines3, the ``sb3`` extra)."""
