"""Behaviour of the gimbal environment as a training loop and a user see it."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import envs
from envs import GimbalEnv
from envs.gimbal import DIFFICULTY_KNOBS

PRESET_DIR = Path(__file__).resolve().parents[1] / "cfgs" / "curriculum_preset"


def hardest_balanced_stage() -> dict:
    stages = OmegaConf.to_container(OmegaConf.load(PRESET_DIR / "balanced.yaml"))["stages"]
    return {k: v for k, v in stages[-1].items() if k != "name"}


def pd_policy(obs: np.ndarray) -> np.ndarray:
    """Proportional-derivative control on the observed target offset and its rate."""
    return np.clip(10.0 * obs[4:6] + 2.0 * obs[6:8], -1.0, 1.0).astype(np.float32)


def run_episode(env: GimbalEnv, policy, seed: int) -> tuple[float, dict]:
    obs, _ = env.reset(seed=seed)
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += reward
        if terminated or truncated:
            return total, info


@pytest.mark.parametrize("obs_type", ["state", "pixels"])
def test_passes_gymnasium_env_checker(obs_type: str) -> None:
    # Through gymnasium.make so the checker also sees the spec and its render modes.
    env = gymnasium.make("Gimbal-v0", obs_type=obs_type, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)


def test_registered_with_gymnasium() -> None:
    env = gymnasium.make("Gimbal-v0", obs_type="pixels", pixel_size=32, max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 32, 32) and obs.dtype == np.uint8
    assert isinstance(env.unwrapped, envs.GimbalEnv)


def test_state_observation_is_an_8_vector() -> None:
    env = GimbalEnv()
    obs, info = env.reset(seed=0)
    assert obs.shape == (8,) and obs.dtype == np.float32
    assert "pointing_error" in info


def test_render_returns_an_image() -> None:
    env = GimbalEnv(render_mode="rgb_array", render_size=96)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8


@pytest.mark.parametrize("obs_type", ["state", "pixels"])
def test_same_seed_same_trajectory(obs_type: str) -> None:
    actions = np.random.default_rng(1).uniform(-1, 1, size=(30, 2)).astype(np.float32)

    def rollout(seed: int) -> list[np.ndarray]:
        env = GimbalEnv(obs_type=obs_type, pixel_size=32)
        observations = [env.reset(seed=seed)[0]]
        observations += [env.step(action)[0] for action in actions]
        return observations

    first, second, other = rollout(7), rollout(7), rollout(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_set_difficulty_waits_for_reset() -> None:
    env = GimbalEnv(target_range=0.0, disturbance_torque=0.0)
    env.reset(seed=0)
    assert env.step(np.zeros(2, np.float32))[4]["pointing_error"] == 0.0

    env.set_difficulty(target_range=0.8)
    assert env.difficulty["target_range"] == 0.8
    # The running episode keeps the target it started with.
    assert env.step(np.zeros(2, np.float32))[4]["pointing_error"] == 0.0
    _, info = env.reset(seed=0)
    assert info["pointing_error"] > 0.0


def test_set_difficulty_rejects_unknown_knob_and_lists_accepted() -> None:
    env = GimbalEnv()
    before = env.difficulty
    with pytest.raises(ValueError, match="target_sped") as excinfo:
        env.set_difficulty(target_range=0.1, target_sped=1.0)
    assert all(knob in str(excinfo.value) for knob in DIFFICULTY_KNOBS)
    assert env.difficulty == before


@pytest.mark.parametrize(
    "knobs", [{"target_range": -0.1}, {"target_range": 5.0}, {"sensor_noise": "high"}]
)
def test_set_difficulty_rejects_bad_values(knobs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(knobs))):
        GimbalEnv().set_difficulty(**knobs)


def test_yaw_only_keeps_pitch_fixed() -> None:
    env = GimbalEnv(yaw_only=True, sensor_noise=0.0, disturbance_torque=0.3, target_speed=0.5)
    obs, _ = env.reset(seed=3)
    for _ in range(50):
        obs, *_ = env.step(np.array([0.5, 1.0], np.float32))
        camera_pitch, target_pitch_offset = obs[1], obs[5]
        assert camera_pitch == 0.0 and target_pitch_offset == 0.0
    assert obs[0] != 0.0


def test_success_reported_on_last_step_only() -> None:
    env = GimbalEnv(max_episode_steps=12)
    env.reset(seed=0)
    for step in range(12):
        _, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        assert not terminated
        assert "pointing_error" in info
        assert truncated == (step == 11)
        assert ("success" in info) == (step == 11)
    assert isinstance(info["success"], bool)


def test_reward_range() -> None:
    env = GimbalEnv()
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    rewards = [env.step(rng.uniform(-1, 1, 2).astype(np.float32))[1] for _ in range(200)]
    assert -0.1 <= min(rewards) and max(rewards) <= 1.0


def test_pd_controller_succeeds_on_hardest_stage_where_random_fails() -> None:
    env = GimbalEnv(**hardest_balanced_stage())
    rng = np.random.default_rng(0)

    def random_policy(_: np.ndarray) -> np.ndarray:
        return rng.uniform(-1, 1, 2).astype(np.float32)

    pd = [run_episode(env, pd_policy, seed) for seed in range(5)]
    rand = [run_episode(env, random_policy, seed) for seed in range(5)]
    assert all(info["success"] for _, info in pd)
    assert not any(info["success"] for _, info in rand)
    assert min(ret for ret, _ in pd) > 2 * max(ret for ret, _ in rand)
