"""Curriculum environments: the gimbal pointing task and its stage manager.

Importing this package registers ``Gimbal-v0`` with gymnasium. The env truncates its own
episodes (``max_episode_steps`` keyword), so it is registered without a TimeLimit wrapper.
"""

import gymnasium

from envs.curriculum import CurriculumManager, StageEntry
from envs.gimbal import GimbalEnv

__all__ = ["CurriculumManager", "GimbalEnv", "StageEntry"]

if "Gimbal-v0" not in gymnasium.registry:
    gymnasium.register(id="Gimbal-v0", entry_point="envs.gimbal:GimbalEnv")
