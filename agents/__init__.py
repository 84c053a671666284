"""Agents and their shared building blocks.

One agent per module (``drqv2``), shared networks in ``networks``, the off-policy replay buffer in
``replay_buffer``. Nothing is imported here so that ``import agents`` stays cheap; Hydra reaches
each agent through its ``_target_`` path (e.g. ``agents.drqv2.DrQV2Agent``).
"""
