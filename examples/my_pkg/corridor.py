"""A curriculum env of the user's own: walk right along a corridor that grows longer.

What the launcher's curriculum needs of an env (docs/BRING_YOUR_OWN.md, `envs.curriculum`):
``set_difficulty(**knobs)`` taking the knobs of the curriculum preset's stages (applied at the
next reset), and ``info["success"]`` at the last step of an episode.
Registered as ``my_pkg.corridor:Corridor-v0`` (gymnasium imports this module for that id).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Observation: position and the distance left; action: a step in ``[-1, 1]``; reward: the
    progress made. Success: the far end reached within ``max_steps``."""

    def __init__(self, length: float = 1.0, max_steps: int = 40) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.max_steps = int(max_steps)
        self._knobs = {"length": float(length)}
        self.length = self._knobs["length"]

    def set_difficulty(self, length: float) -> None:
        """The corridor's length from the next episode on."""
        if not length > 0:
            raise ValueError(f"length must be > 0, got {length!r}")
        self._knobs["length"] = float(length)

    def _obs(self) -> np.ndarray:
        return np.array([self.pos, self.length - self.pos], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.length = self._knobs["length"]
        self.pos, self.t = 0.0, 0
        return self._obs(), {}

    def step(self, action):
        move = 0.1 * float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0))
        self.pos += move
        self.t += 1
        reached = self.pos >= self.length
        truncated = not reached and self.t >= self.max_steps
        info = {"success": reached} if reached or truncated else {}
        return self._obs(), move, reached, truncated, info


if "Corridor-v0" not in gym.registry:
    gym.register(id="Corridor-v0", entry_point=Corridor)
