"""The training loops and what they share.

``run.py`` (one run's state across stops: checkpoint load, restore in one place, save; signals,
evaluation, results), ``offpolicy.py`` (DrQ-v2 loop), ``onpolicy.py`` (PPO loop),
``workspace.py`` (picks the loop for the agent), ``schema.py`` (root structured config),
``checks.py`` (start-up checks of the run knobs), ``rundir.py`` (the run-dir lock),
``checkpoint.py`` (atomic plain-data checkpoints), ``telemetry.py`` (TensorBoard, progress).
"""
