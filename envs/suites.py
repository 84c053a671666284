"""The standard suites: the DeepMind Control Suite as a gymnasium env, pixel observations for any
gymnasium env that renders rgb arrays, frame stacking, headless rendering, and the extras each
suite needs.

Pixels follow DrQ-v2: ``pixel_size`` x ``pixel_size`` (84) uint8 frames, channels first, the last
``frame_stack`` (3) frames concatenated along the channels; DMC renders camera 0 (2 for
quadruped) once per agent step, after the ``action_repeat`` physics steps.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

log = logging.getLogger("train")

# extra -> (module it provides, the command that installs it from a checkout of this repo)
EXTRAS = {
    "mujoco": ("mujoco", 'pip install -e ".[mujoco]"'),
    "dmc": ("dm_control", 'pip install -e ".[dmc]"'),
}


class MissingExtra(RuntimeError):
    """The env needs an optional dependency that is not installed; the message says how."""


def required_extra(env_cfg: Mapping[str, Any]) -> str | None:
    """The extra (``mujoco``, ``dmc``) the configured env needs, or None."""
    if env_cfg.get("suite") == "dmc":
        return "dmc"
    env_id = str(env_cfg.get("id"))
    if ":" in env_id:  # a user's entry point: its package says what it needs
        return None
    try:
        entry = str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        return None  # an unknown id fails in make_env with gymnasium's own message
    return "mujoco" if entry.startswith("gymnasium.envs.mujoco") else None


def check_extras(env_cfg: Mapping[str, Any]) -> None:
    """Raise `MissingExtra` with the pip command if the env's suite is not installed."""
    extra = required_extra(env_cfg)
    if extra is None:
        return
    module, command = EXTRAS[extra]
    try:
        importlib.import_module(module)
    except ImportError as err:
        what = (
            f"env.suite=dmc ({env_cfg.get('domain')}/{env_cfg.get('task')})"
            if extra == "dmc"
            else f"env.id={env_cfg.get('id')}"
        )
        raise MissingExtra(
            f"{what} needs the `{extra}` extra ({module} could not be imported: {err}); "
            f"install it with: {command}"
        ) from None


_headless_said = False


def headless_rendering() -> None:
    """With no display and no ``MUJOCO_GL`` chosen, render through EGL (works without a GPU,
    in software); said once per process. Must run before mujoco / dm_control are imported."""
    global _headless_said
    if os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY"):
        return
    os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if not _headless_said:
        _headless_said = True
        log.info("no display: rendering headless through EGL (MUJOCO_GL=egl; set it to choose)")


class DMCEnv(gym.Env):
    """A DeepMind Control Suite task (``domain``, ``task``) as a gymnasium env.

    State observations are the task's observation arrays flattened and concatenated (float32);
    pixels are ``(3, size, size)`` uint8 renders of ``camera``. ``action_repeat`` physics steps
    per ``step`` (rewards summed, one render), so a 1000-step episode is ``1000 /
    action_repeat`` steps here; the suite's time limit is a truncation, not a termination.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        domain: str,
        task: str,
        obs_type: str = "state",
        pixel_size: int = 84,
        camera: int | None = None,
        action_repeat: int = 1,
        task_kwargs: Mapping[str, Any] | None = None,
        environment_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        headless_rendering()
        from dm_control import suite

        if (domain, task) not in suite.ALL_TASKS:
            known = ", ".join(f"{d}/{t}" for d, t in suite.ALL_TASKS)
            raise ValueError(
                f"env.domain/env.task={domain}/{task} is not a DMC task; one of {known}"
            )
        if obs_type not in ("state", "pixels"):
            raise ValueError(f"env.obs_type={obs_type!r}; accepted: state, pixels")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self._env = suite.load(
            domain, task, task_kwargs={"random": 0, **(task_kwargs or {})},
            environment_kwargs=dict(environment_kwargs or {}) or None,
        )  # fmt: skip
        self.pixels = obs_type == "pixels"
        self.size = int(pixel_size)
        self.camera = (2 if domain == "quadruped" else 0) if camera is None else int(camera)
        self.repeat = int(action_repeat)
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(
            spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), dtype=np.float32
        )
        if self.pixels:
            self.observation_space = gym.spaces.Box(0, 255, (3, self.size, self.size), np.uint8)
        else:
            dim = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def _observe(self, time_step) -> np.ndarray:
        if self.pixels:
            return self.render().transpose(2, 0, 1).copy()
        parts = [np.asarray(v, dtype=np.float32).ravel() for v in time_step.observation.values()]
        return np.concatenate(parts)

    def render(self) -> np.ndarray:
        """The ``camera`` view, ``(size, size, 3)`` uint8."""
        return self._env.physics.render(self.size, self.size, camera_id=self.camera)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:  # the task draws its initial state from its own RandomState
            self._env.task.random.seed(seed)
        return self._observe(self._env.reset()), {}

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            time_step = self._env.step(action)
            total += float(time_step.reward or 0.0)
            if time_step.last():
                break
        last = time_step.last()
        terminated = bool(last and time_step.discount == 0.0)
        return self._observe(time_step), total, terminated, bool(last and not terminated), {}


class PixelObservation(gym.ObservationWrapper):
    """Replace the observation with the env's rgb render, ``(3, size, size)`` uint8; renders of
    another size are resized (bilinear). The env must be made with ``render_mode='rgb_array'``."""

    def __init__(self, env: gym.Env, size: int) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            name = env.spec.id if env.spec else type(env.unwrapped).__name__
            raise ValueError(
                f"env.obs_type=pixels needs an env that renders rgb arrays; {name} has "
                f"render_mode={env.render_mode!r}"
            )
        self.size = int(size)
        self.observation_space = gym.spaces.Box(0, 255, (3, self.size, self.size), np.uint8)

    def observation(self, observation):
        frame = np.asarray(self.env.render())
        if frame.shape[:2] != (self.size, self.size):
            from PIL import Image

            resized = Image.fromarray(frame).resize((self.size, self.size), Image.BILINEAR)
            frame = np.asarray(resized)
        return np.ascontiguousarray(frame[..., :3].transpose(2, 0, 1))


class FrameStack(gym.ObservationWrapper):
    """The last ``k`` ``(C, H, W)`` frames concatenated along the channels (``(k*C, H, W)``); an
    episode starts with ``k`` copies of its first frame, as in DrQ-v2."""

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        space = env.observation_space
        self.k = int(k)
        self.frames: deque[np.ndarray] = deque(maxlen=self.k)
        shape = (space.shape[0] * self.k, *space.shape[1:])
        self.observation_space = gym.spaces.Box(0, 255, shape, space.dtype)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.k):
            self.frames.append(obs)
        return np.concatenate(self.frames), info

    def observation(self, observation):
        self.frames.append(observation)
        return np.concatenate(self.frames)
