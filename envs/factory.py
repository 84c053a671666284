"""Builds the training and evaluation environments from the ``env`` config group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers Gimbal-v0)


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards; stops at an episode end."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        if repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {repeat}")
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def make_env(env_cfg: Mapping[str, Any], action_repeat: int = 1) -> gym.Env:
    """``gym.make`` the configured id; continuous actions are rescaled to ``[-1, 1]``."""
    kwargs = dict(env_cfg.get("kwargs") or {})
    obs_type = env_cfg.get("obs_type", "state")
    if env_cfg["id"].startswith("Gimbal"):
        kwargs["obs_type"] = obs_type
    elif obs_type != "state":
        raise ValueError(f"env.obs_type={obs_type!r}: {env_cfg['id']} only offers 'state'")
    env = gym.make(env_cfg["id"], **kwargs)
    if isinstance(env.action_space, gym.spaces.Box) and not (
        np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    ):
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    return env
