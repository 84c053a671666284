"""Several envs stepped in turn in one process, for the on-policy loop.

What the loop needs of gymnasium's ``SyncVectorEnv`` in same-step autoreset mode, and nothing
else: an env that ends an episode is reset inside that ``step()``, which returns the new
episode's first observation and puts the last one in ``info["final_obs"][i]`` (and that step's
info in ``info["final_info"][key][i]``), so every step is a transition and a truncated episode
can bootstrap from its final observation. Unlike ``SyncVectorEnv`` it does not merge every
step's info dicts into arrays (the loop reads infos only at episode ends): that merging cost a
fifth of a MuJoCo step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np


class SameStepVectorEnv:
    """``len(env_fns)`` envs; ``reset(seed=s)`` seeds env ``i`` with ``s + i`` (as gymnasium's
    vector envs do). The observation array returned is reused by the next call."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [make() for make in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        space = self.single_observation_space
        self._obs = np.zeros((self.num_envs, *space.shape), dtype=space.dtype)

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict]:
        for i, env in enumerate(self.envs):
            self._obs[i] = env.reset(seed=None if seed is None else seed + i)[0]
        return self._obs, {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        n = self.num_envs
        rewards = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        info: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            obs, rewards[i], terminated[i], truncated[i], env_info = env.step(actions[i])
            if terminated[i] or truncated[i]:
                info.setdefault("final_obs", np.full(n, None, dtype=object))[i] = obs
                final = info.setdefault("final_info", {})
                for key, value in env_info.items():
                    final.setdefault(key, np.full(n, None, dtype=object))[i] = value
                obs = env.reset()[0]
            self._obs[i] = obs
        return self._obs, rewards, terminated, truncated, info

    def call(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """``name(*args, **kwargs)`` on every env (found through its wrappers)."""
        return [env.get_wrapper_attr(name)(*args, **kwargs) for env in self.envs]

    def get_attr(self, name: str) -> list[Any]:
        return [env.get_wrapper_attr(name) for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()
