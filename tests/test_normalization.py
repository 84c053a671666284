"""Observation normalisation and reward scaling: the statistics against their definitions, and as
run state (a resumed run transforms with the checkpoint's statistics, never fresh ones;
evaluation does not move them)."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from agents.normalization import EPS, RewardScaler, RunningMeanStd
from envs.factory import make_vector_env
from training.build import workspace_from_overrides

NORMALISED_PPO = [
    "agent=ppo", "env=cartpole", "agent.norm_obs=true", "agent.norm_reward=true",
    "agent.num_steps=64", "num_train_frames=1024", "checkpoint_every_frames=256",
    "eval_every_frames=100000", "num_eval_episodes=1", "progress=lines",
]  # fmt: skip


def test_running_statistics_are_those_of_every_sample_seen():
    rng = np.random.default_rng(0)
    samples = rng.normal([3.0, -1.0], [2.0, 0.5], size=(301, 2))
    stats = RunningMeanStd((2,))
    for row in samples[:100]:  # one env: one sample at a time
        stats.update(row[None])
    stats.update(samples[100:])  # then a batch
    # The peers' 1e-4 prior count weighs a (0, 1) prior in: its pull is below 1e-6 here.
    np.testing.assert_allclose(stats.mean, samples.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(stats.var, samples.var(axis=0), rtol=1e-5)
    assert stats.count == pytest.approx(301, abs=1e-3)


def test_rewards_are_divided_by_the_std_of_the_discounted_return_and_clipped():
    gamma, rewards = 0.9, np.array([[1.0, 2.0], [1.0, -4.0], [1.0, 0.5], [500.0, 1.0]])
    dones = np.array([[False, False], [False, True], [False, False], [False, False]])
    scaler = RewardScaler(num_envs=2, gamma=gamma, clip=3.0)
    running, seen = np.zeros(2), []
    for reward, done in zip(rewards, dones, strict=True):
        running = running * gamma + reward
        seen.extend(running)  # the returns whose variance scales this step's rewards
        expected = np.clip(reward / np.sqrt(np.var(seen) + EPS), -3.0, 3.0)
        out = scaler(reward, done)
        np.testing.assert_allclose(out, expected, rtol=1e-3)  # the 1e-4 prior count aside
        running[done] = 0.0  # an episode's end starts its env's return over
    assert out[0] == 3.0  # the 500 was clipped


def test_a_resumed_run_transforms_with_the_checkpoints_statistics(tmp_path):
    """The straight run checkpoints at every rollout; the file it writes at step 512 is all a
    second run gets (as after kill -9). That run's normaliser starts with exactly the straight
    run's statistics at step 512, and its first observations (the envs' resets) are transformed
    with them, counted in first, as the straight run counts every new observation."""
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight = workspace_from_overrides(NORMALISED_PPO, straight_dir)
    loop = straight.steps()
    for step in loop:
        if step == 512:
            break
    at_checkpoint = copy.deepcopy(straight.agent.normalization.state_dict())
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(straight.ckpt_path, resumed_dir / "checkpoints" / "latest.pt")
    loop.close()

    resumed = workspace_from_overrides(NORMALISED_PPO, resumed_dir)
    assert resumed.global_step == 512
    restored = resumed.agent.normalization.state_dict()
    for part in ("obs", "reward"):
        assert torch.equal(restored[part]["mean"], at_checkpoint[part]["mean"])
        assert torch.equal(restored[part]["var"], at_checkpoint[part]["var"])
        assert restored[part]["count"] == at_checkpoint[part]["count"]

    first_stored = []
    update = resumed.agent.update
    resumed.agent.update = lambda batch, refresh: (
        first_stored.append(batch["obs"][0].clone()) or update(batch, refresh)
    )
    next(resumed.steps())  # one rollout and its update
    # The first observations by hand: the resets the loop does at step 512, merged into the
    # checkpoint's statistics by the textbook formula, then standardised and clipped.
    envs = make_vector_env(resumed.cfg.env, resumed.num_envs)
    raw = envs.reset(seed=resumed.cfg.seed * 1_000_003 + 512)[0].astype(np.float64)
    saved = at_checkpoint["obs"]
    m, v, c = saved["mean"].numpy(), saved["var"].numpy(), saved["count"]
    n, bm, bv = len(raw), raw.mean(axis=0), raw.var(axis=0)
    mean = (c * m + n * bm) / (c + n)
    var = (c * v + n * bv + (bm - m) ** 2 * c * n / (c + n)) / (c + n)
    expected = np.clip((raw - mean) / np.sqrt(var + EPS), -10, 10).astype(np.float32)
    np.testing.assert_allclose(first_stored[0].numpy(), expected, rtol=1e-6, atol=1e-6)
    # Fresh statistics would have standardised the resets by themselves: far from that.
    fresh = (raw - bm) / np.sqrt(bv + EPS)
    assert np.abs(first_stored[0].numpy() - fresh).max() > 0.5


def test_evaluation_acts_on_normalised_observations_and_leaves_the_statistics(tmp_path):
    ws = workspace_from_overrides([*NORMALISED_PPO, "num_train_frames=512"], tmp_path)
    ws.train()
    before = copy.deepcopy(ws.agent.normalization.state_dict())
    ws.evaluate(ws.global_step)
    after = ws.agent.normalization.state_dict()
    for part in ("obs", "reward"):
        assert torch.equal(before[part]["mean"], after[part]["mean"])
        assert before[part]["count"] == after[part]["count"]
    obs = np.array([0.5, -1.0, 0.05, 2.0], dtype=np.float32)
    stats = before["obs"]
    seen = (obs - stats["mean"].numpy()) / np.sqrt(stats["var"].numpy() + EPS)
    ws.agent.begin_episode()
    inputs = []
    hook = ws.agent.net.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    ws.agent.act(obs, ws.global_step, eval_mode=True)
    hook.remove()
    np.testing.assert_allclose(inputs[0].reshape(-1).numpy(), seen, rtol=1e-5)
    assert np.abs(seen - obs).max() > 0.1  # normalising made a difference
    assert ws.agent.normalization.state_dict()["obs"]["count"] == before["obs"]["count"]


def test_a_signal_mid_rollout_saves_the_statistics_of_the_rollouts_start(tmp_path):
    """The partial rollout is dropped (its step is not in the checkpoint), so the statistics
    its observations moved must not be either."""
    import signal

    from training import checkpoint
    from training.run import Preempted

    ws = workspace_from_overrides(NORMALISED_PPO, tmp_path)
    loop = ws.steps()
    assert next(loop) == 256
    at_rollout_start = copy.deepcopy(ws.agent.normalization.state_dict())
    step, calls = ws.envs.step, []

    def step_then_signal(action):
        calls.append(1)
        if len(calls) == 10:
            ws._signal = signal.SIGTERM
        return step(action)

    ws.envs.step = step_then_signal
    with pytest.raises(Preempted):
        next(loop)
    saved = checkpoint.load(ws.ckpt_path)
    assert saved["global_step"] == 256
    moved = ws.agent.normalization.state_dict()["obs"]["count"]
    assert moved > at_rollout_start["obs"]["count"]  # acting did count observations
    for part in ("obs", "reward"):
        assert torch.equal(saved["normalization"][part]["mean"], at_rollout_start[part]["mean"])
        assert saved["normalization"][part]["count"] == at_rollout_start[part]["count"]


def test_normalisation_is_on_by_default_for_continuous_actions_only():
    from agents.ppo import PPOAgent

    def agent(discrete, **knobs):
        return PPOAgent([3], [2], discrete, "cpu", 1e-3, {"bundle": "A"}, **knobs).normalization

    continuous, discrete = agent(False), agent(True)
    assert continuous.obs_norm is not None and continuous.reward_scaler is not None
    assert discrete.obs_norm is None and discrete.reward_scaler is None
    assert agent(False, norm_reward=False).reward_scaler is None
    assert agent(True, norm_obs=True).obs_norm is not None
    with pytest.raises(ValueError, match=r"agent.norm_obs='yes'; accepted: true, false, auto"):
        agent(False, norm_obs="yes")
