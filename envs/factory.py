"""Builds the training and evaluation environments from the ``env`` config group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers Gimbal-v0)
from envs.suites import (
    DMCEnv,
    FrameStack,
    PixelObservation,
    check_extras,
    headless_rendering,
    required_extra,
)
from envs.vector import SameStepVectorEnv


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


class SelectObservation(gym.ObservationWrapper):
    """Keep only the observation entries at ``indices`` (e.g. CartPole without its velocities,
    a task that needs memory)."""

    def __init__(self, env: gym.Env, indices: list[int]):
        super().__init__(env)
        self.indices = np.asarray(indices, dtype=np.int64)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(
            space.low[self.indices], space.high[self.indices], dtype=space.dtype
        )

    def observation(self, observation):
        return observation[self.indices]


def make_env(env_cfg: Mapping[str, Any], action_repeat: int = 1) -> gym.Env:
    """The configured env: ``gym.make(id)`` (any registered id, or a ``package.module:Env-v0``
    entry point), or a DeepMind Control task (``suite: dmc``, ``domain``, ``task``).
    Continuous actions are rescaled to ``[-1, 1]``.

    ``obs_indices`` (optional) keeps only those entries of a state observation.
    ``obs_type: pixels`` observes the env's renders instead (``pixel_size``, the last
    ``frame_stack`` frames stacked channels-first; the gimbal draws its own camera view).
    """
    kwargs = dict(env_cfg.get("kwargs") or {})
    obs_type = env_cfg.get("obs_type", "state")
    if obs_type not in ("state", "pixels"):
        raise ValueError(f"env.obs_type={obs_type!r}; accepted: state, pixels")
    pixels = obs_type == "pixels"
    check_extras(env_cfg)
    if env_cfg.get("suite") == "dmc":
        env: gym.Env = DMCEnv(
            str(env_cfg["domain"]), str(env_cfg["task"]), obs_type,
            int(env_cfg.get("pixel_size", 84)), env_cfg.get("camera"), action_repeat, kwargs,
            env_cfg.get("environment_kwargs"),
        )  # fmt: skip
        action_repeat = 1  # repeated inside, with one render per agent step
    elif str(env_cfg["id"]).startswith("Gimbal"):
        env = gym.make(env_cfg["id"], obs_type=obs_type, **kwargs)
        pixels = False  # its observation already is the camera view
    else:
        if pixels:
            headless_rendering()
            kwargs["render_mode"] = "rgb_array"
            if required_extra(env_cfg) == "mujoco":  # render at the size asked, not resize
                size = int(env_cfg.get("pixel_size", 84))
                kwargs.setdefault("width", size)
                kwargs.setdefault("height", size)
        env = gym.make(env_cfg["id"], **kwargs)
    if isinstance(env.action_space, gym.spaces.Box) and not (
        np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    ):
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    if env_cfg.get("obs_indices") is not None:
        env = SelectObservation(env, list(env_cfg["obs_indices"]))
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    if pixels and not isinstance(env.unwrapped, DMCEnv):
        env = PixelObservation(env, int(env_cfg.get("pixel_size", 84)))
    if obs_type == "pixels" and int(env_cfg.get("frame_stack", 1)) > 1:
        env = FrameStack(env, int(env_cfg["frame_stack"]))
    return env


def make_vector_env(
    env_cfg: Mapping[str, Any], num_envs: int, action_repeat: int = 1
) -> SameStepVectorEnv:
    """``num_envs`` copies of :func:`make_env` stepped in one process, each reset inside the
    step that ends its episode (`envs.vector`)."""
    return SameStepVectorEnv([lambda: make_env(env_cfg, action_repeat) for _ in range(num_envs)])
