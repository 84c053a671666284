"""Two-axis (yaw, pitch) gimbal camera that must point at and track a target.

Each axis is a damped double integrator driven by a torque command in [-1, 1] plus a slowly
varying random disturbance. The target starts somewhere within ``target_range`` of the
boresight origin and, when ``target_speed > 0``, wanders inside that box, bouncing off its
edges. The reward is dense: a broad linear term that pulls the camera toward the target from
anywhere, plus a narrow Gaussian term that pays for precise pointing, minus a small control cost.

Angles are in radians, rates in rad/s. Positive yaw is to the right in the camera image,
positive pitch is up.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

DT = 0.05
"""Simulation step in seconds (20 Hz control)."""
TORQUE_GAIN = 8.0
"""Angular acceleration (rad/s^2) produced by a unit torque command."""
DAMPING = 2.0
"""Viscous damping (1/s); with TORQUE_GAIN it caps the slew rate at 4 rad/s."""
ANGLE_LIMIT = 1.2
"""Mechanical hard stop of both axes (rad)."""
MAX_TARGET_RANGE = 1.0
"""Largest accepted ``target_range``: the target must stay reachable inside the hard stops."""
DISTURBANCE_CORRELATION = 0.95
"""Per-step AR(1) coefficient of the disturbance (~1 s correlation time), so it acts like a
slowly drifting load the controller must integrate against rather than white noise."""
TARGET_TURN_STD = 1.0
"""Heading diffusion of the 2-axis target (rad per sqrt(s)): gently curving paths."""
SUCCESS_ERROR = 0.1
"""Pointing error (rad) under which the target counts as tracked (about 6 degrees)."""
SUCCESS_TAIL = 0.25
"""Success is judged on this final fraction of the episode, after the initial slew."""
SUCCESS_FRACTION = 0.8
"""Fraction of the judged steps that must be tracked for ``info["success"]``."""
REWARD_SIGMA = 0.1
"""Width (rad) of the precision term of the reward."""
REWARD_FAR = 1.5
"""Error (rad) at which the broad, linear term of the reward reaches zero."""
CONTROL_COST = 0.05
"""Weight of the mean squared torque command; keeps the per-step reward >= -0.05."""
STATE_BOUND = 10.0
"""Bound of every state entry; only extreme sensor noise ever reaches it (then clipped)."""
FIELD_OF_VIEW = 1.0
"""Width (rad) of the rendered camera view; off-screen targets are pinned to the border."""

DIFFICULTY_KNOBS = (
    "target_range",
    "target_speed",
    "disturbance_torque",
    "sensor_noise",
    "yaw_only",
)
"""Names accepted by ``GimbalEnv.set_difficulty`` (and by curriculum stages)."""

_SKY = np.array([135, 180, 230], dtype=np.uint8)
_GROUND = np.array([110, 95, 70], dtype=np.uint8)
_GROUND_MARK = np.array([70, 60, 45], dtype=np.uint8)
_CROSSHAIR = np.array([20, 20, 20], dtype=np.uint8)
_TARGET = np.array([230, 40, 30], dtype=np.uint8)
# Spacing of the yaw reference marks on the ground: they let a pixel agent see its own rotation.
_GROUND_MARK_SPACING = 0.25


def _validate_difficulty(knobs: dict[str, Any]) -> dict[str, Any]:
    """Return ``knobs`` with numbers as floats, or raise ValueError naming the bad knob."""
    unknown = sorted(set(knobs) - set(DIFFICULTY_KNOBS))
    if unknown:
        raise ValueError(
            f"unknown difficulty knob(s) {unknown}; accepted: {', '.join(DIFFICULTY_KNOBS)}"
        )
    clean: dict[str, Any] = {}
    for name, value in knobs.items():
        if name == "yaw_only":
            if not isinstance(value, bool | np.bool_):
                raise ValueError(f"yaw_only must be true or false, got {value!r}")
            clean[name] = bool(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if name == "target_range" and value > MAX_TARGET_RANGE:
            raise ValueError(
                f"target_range must be <= {MAX_TARGET_RANGE} rad (gimbal hard stops are at "
                f"{ANGLE_LIMIT} rad), got {value!r}"
            )
        clean[name] = value
    return clean


class GimbalEnv(gym.Env):
    """Point a two-axis gimbal camera at a (possibly moving) target.

    Action: ``Box(-1, 1, (2,), float32)``, torque commands for (yaw, pitch).

    Observation, ``obs_type="state"``: ``float32`` vector of 8, each entry with Gaussian noise
    of std ``sensor_noise``: camera angles (yaw, pitch), camera rates, target offset from the
    camera axis (target minus camera angle), rate of that offset.
    Observation, ``obs_type="pixels"``: ``uint8`` ``(3, pixel_size, pixel_size)`` camera view
    (sky/ground horizon, yaw marks on the ground, crosshair, red target disc); the noise
    jitters where the target and horizon are drawn.

    The episode never terminates; it is truncated after ``max_episode_steps`` steps, and on
    that step ``info["success"]`` tells whether the pointing error stayed below
    ``SUCCESS_ERROR`` for at least ``SUCCESS_FRACTION`` of the last ``SUCCESS_TAIL`` of the
    episode. ``info["pointing_error"]`` (rad) is reported on every step and at reset.

    Difficulty knobs (see :meth:`set_difficulty`): ``target_range`` (rad, half-width of the box
    the target starts and wanders in), ``target_speed`` (rad/s), ``disturbance_torque`` (peak
    random torque, in units of the full actuator torque), ``sensor_noise`` (rad and rad/s),
    ``yaw_only`` (pitch axis locked at 0 and the target stays on the horizon).
    The defaults are the full task: the hardest stage of the ``balanced`` curriculum.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / DT))}

    def __init__(
        self,
        obs_type: str = "state",
        pixel_size: int = 64,
        max_episode_steps: int = 200,
        render_mode: str | None = None,
        render_size: int = 128,
        target_range: float = 0.8,
        target_speed: float = 0.4,
        disturbance_torque: float = 0.2,
        sensor_noise: float = 0.01,
        yaw_only: bool = False,
    ) -> None:
        if obs_type not in ("state", "pixels"):
            raise ValueError(f"obs_type must be 'state' or 'pixels', got {obs_type!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}"
            )
        if pixel_size < 16 or render_size < 16:
            raise ValueError(
                f"pixel_size and render_size must be >= 16, got {pixel_size}, {render_size}"
            )
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.obs_type = obs_type
        self.pixel_size = int(pixel_size)
        self.render_size = int(render_size)
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode

        self._difficulty = _validate_difficulty(
            {
                "target_range": target_range,
                "target_speed": target_speed,
                "disturbance_torque": disturbance_torque,
                "sensor_noise": sensor_noise,
                "yaw_only": yaw_only,
            }
        )
        # The episode runs on a frozen copy so that set_difficulty mid-episode waits for reset.
        self._episode_knobs = dict(self._difficulty)

        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        if obs_type == "state":
            self.observation_space = spaces.Box(
                -STATE_BOUND, STATE_BOUND, shape=(8,), dtype=np.float32
            )
        else:
            self.observation_space = spaces.Box(
                0, 255, shape=(3, self.pixel_size, self.pixel_size), dtype=np.uint8
            )

        self._angle = np.zeros(2)
        self._rate = np.zeros(2)
        self._target = np.zeros(2)
        self._target_vel = np.zeros(2)
        self._disturbance = np.zeros(2)
        self._steps = 0
        self._tracked: list[bool] = []

    # ------------------------------------------------------------------ difficulty
    @property
    def difficulty(self) -> dict[str, Any]:
        """Knobs as last set; they drive every episode started from the next reset on."""
        return dict(self._difficulty)

    def set_difficulty(self, **knobs: Any) -> None:
        """Change some difficulty knobs; they take effect at the next ``reset``.

        Raises:
            ValueError: for an unknown knob name (the message lists the accepted ones) or a
                value out of range; nothing is changed then.
        """
        self._difficulty.update(_validate_difficulty(knobs))

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode with the current difficulty: camera at rest at the origin."""
        super().reset(seed=seed)
        knobs = self._episode_knobs = dict(self._difficulty)
        rng = self.np_random
        span = knobs["target_range"]

        self._angle = np.zeros(2)
        self._rate = np.zeros(2)
        self._disturbance = np.zeros(2)
        self._target = rng.uniform(-span, span, size=2)
        heading = rng.uniform(-np.pi, np.pi)
        self._target_vel = knobs["target_speed"] * np.array([np.cos(heading), np.sin(heading)])
        if knobs["yaw_only"]:
            self._target[1] = 0.0
            self._target_vel = np.array([np.sign(self._target_vel[0]) * knobs["target_speed"], 0])
        if span == 0.0:
            self._target_vel = np.zeros(2)
        self._steps = 0
        self._tracked = []
        return self._observation(), {"pointing_error": self._pointing_error()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance the gimbal and the target by one ``DT``."""
        knobs = self._episode_knobs
        rng = self.np_random
        command = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)

        if knobs["disturbance_torque"] > 0:
            # AR(1) with stationary std of half the peak, clipped so the knob is a hard bound.
            kick = np.sqrt(1 - DISTURBANCE_CORRELATION**2) * rng.normal(size=2)
            self._disturbance = np.clip(
                DISTURBANCE_CORRELATION * self._disturbance
                + 0.5 * knobs["disturbance_torque"] * kick,
                -knobs["disturbance_torque"],
                knobs["disturbance_torque"],
            )
        torque = command + self._disturbance
        # Semi-implicit Euler: stable for this stiff-ish damping at DT without substeps.
        self._rate = self._rate + (TORQUE_GAIN * torque - DAMPING * self._rate) * DT
        if knobs["yaw_only"]:
            self._rate[1] = 0.0
        self._angle = self._angle + self._rate * DT
        at_stop = np.abs(self._angle) > ANGLE_LIMIT
        self._angle = np.clip(self._angle, -ANGLE_LIMIT, ANGLE_LIMIT)
        self._rate[at_stop] = 0.0
        self._move_target(knobs, rng)

        error = self._pointing_error()
        self._tracked.append(error < SUCCESS_ERROR)
        self._steps += 1
        accuracy = 0.5 * max(0.0, 1.0 - error / REWARD_FAR) + 0.5 * np.exp(
            -((error / REWARD_SIGMA) ** 2)
        )
        reward = float(accuracy - CONTROL_COST * np.mean(command**2))

        truncated = self._steps >= self.max_episode_steps
        info: dict[str, Any] = {"pointing_error": error}
        if truncated:
            info["success"] = self._episode_success()
        return self._observation(), reward, False, truncated, info

    def render(self) -> np.ndarray | None:
        """Noise-free camera view, ``(render_size, render_size, 3)`` uint8, for videos."""
        if self.render_mode != "rgb_array":
            return None
        return self._draw_view(self.render_size, self._angle, self._target - self._angle)

    # ------------------------------------------------------------------ internals
    def _move_target(self, knobs: dict[str, Any], rng: np.random.Generator) -> None:
        if not self._target_vel.any():
            return
        if not knobs["yaw_only"]:
            turn = TARGET_TURN_STD * np.sqrt(DT) * rng.normal()
            cos, sin = np.cos(turn), np.sin(turn)
            vx, vy = self._target_vel
            self._target_vel = np.array([cos * vx - sin * vy, sin * vx + cos * vy])
        self._target = self._target + self._target_vel * DT
        span = knobs["target_range"]
        # Mirror off the box edges so the speed stays constant and the path stays continuous.
        over = np.abs(self._target) > span
        self._target[over] = np.sign(self._target[over]) * 2 * span - self._target[over]
        self._target_vel[over] = -self._target_vel[over]
        # A step longer than the whole box would mirror past the far edge.
        self._target = np.clip(self._target, -span, span)

    def _pointing_error(self) -> float:
        return float(np.linalg.norm(self._target - self._angle))

    def _episode_success(self) -> bool:
        tail = self._tracked[-max(1, round(SUCCESS_TAIL * len(self._tracked))) :]
        return sum(tail) >= SUCCESS_FRACTION * len(tail)

    def _observation(self) -> np.ndarray:
        noise_std = self._episode_knobs["sensor_noise"]
        noise = self.np_random.normal(scale=noise_std, size=8) if noise_std > 0 else np.zeros(8)
        angle = self._angle + noise[0:2]
        offset = self._target - self._angle + noise[4:6]
        if self.obs_type == "pixels":
            view = self._draw_view(self.pixel_size, angle, offset)
            return np.ascontiguousarray(view.transpose(2, 0, 1))
        state = np.concatenate(
            [angle, self._rate + noise[2:4], offset, self._target_vel - self._rate + noise[6:8]]
        )
        return np.clip(state, -STATE_BOUND, STATE_BOUND).astype(np.float32)

    @staticmethod
    def _draw_view(size: int, angle: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Rasterise the camera view for camera ``angle`` and target ``offset`` (rad)."""
        centre = (size - 1) / 2
        px_per_rad = size / FIELD_OF_VIEW
        # Pitching the camera up moves the world horizon down in the image.
        horizon = int(np.clip(round(centre + angle[1] * px_per_rad), 0, size))
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:horizon] = _SKY
        image[horizon:] = _GROUND

        first_mark = np.ceil((angle[0] - FIELD_OF_VIEW / 2) / _GROUND_MARK_SPACING)
        last_mark = np.floor((angle[0] + FIELD_OF_VIEW / 2) / _GROUND_MARK_SPACING)
        for mark in np.arange(first_mark, last_mark + 1):
            col = int(round(centre + (mark * _GROUND_MARK_SPACING - angle[0]) * px_per_rad))
            if 0 <= col < size:
                image[horizon:, col] = _GROUND_MARK

        mid = int(round(centre))
        arm = max(2, size // 16)
        image[mid, mid - arm : mid + arm + 1] = _CROSSHAIR
        image[mid - arm : mid + arm + 1, mid] = _CROSSHAIR

        radius = max(2.0, size / 20)
        lo, hi = radius, size - 1 - radius
        col = float(np.clip(centre + offset[0] * px_per_rad, lo, hi))
        row = float(np.clip(centre - offset[1] * px_per_rad, lo, hi))
        top, bottom = int(row - radius), int(row + radius) + 1
        left, right = int(col - radius), int(col + radius) + 1
        rows = np.arange(top, bottom)[:, None]
        cols = np.arange(left, right)[None, :]
        disc = (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
        image[top:bottom, left:right][disc] = _TARGET
        return image
