"""A user's env outside this repo's packages, reached by a gymnasium entry-point id
(``env.id=corridor_env:Corridor-v0``): importing the module registers the id."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right along a 1-D corridor: the observation is the position, the reward the step
    taken; the episode ends at the far end (``length``) or after ``max_steps``."""

    def __init__(self, length: float = 5.0, max_steps: int = 50) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.length, self.max_steps = length, max_steps

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0.0, 0
        return np.array([self.pos], np.float32), {}

    def step(self, action):
        move = float(np.clip(action[0], -2.0, 2.0)) * 0.1
        self.pos += move
        self.t += 1
        done = self.pos >= self.length
        return np.array([self.pos], np.float32), move, done, self.t >= self.max_steps, {}


if "Corridor-v0" not in gym.registry:
    gym.register(id="Corridor-v0", entry_point=Corridor)
