"""PPO through the real CLI: the documented commands, and kill/resume keeping the LR trace."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
import torch
from cli import (
    finished_run,
    kill_then_rerun,
    latest,
    optimizer_lrs,
    result,
    run_cli,
    scalars,
    start_cli,
    wait_for_checkpoint_step,
)

from training import checkpoint
from training.build import compose_config
from training.run import compile_run_schedules

# Rollouts of 4 x 64 = 256 steps; a warmup then cosine LR that changes at every rollout.
PPO = [
    "agent=ppo", "env=cartpole", "lr_schedule=warmup_cosine", "lr_schedule.warmup_frac=0.2",
    "agent.num_steps=64", "num_train_frames=30000", "log_every_frames=1000",
    "checkpoint_every_frames=3000", "eval_every_frames=10000", "num_eval_episodes=1",
    "progress=lines",
]  # fmt: skip
LR_TAGS = ("lr_encoder", "lr_actor", "lr_critic", "ppo/learning_rate")
TAGS = (*LR_TAGS, "train/episode_return", "ppo/approx_kl", "eval/episode_return")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return finished_run(tmp_path_factory, *PPO)


def assert_same_lr_trace(straight, resumed):
    for tag in LR_TAGS:
        a, b = scalars(straight, tag), scalars(resumed, tag)
        assert [s for s, _ in a] == [s for s, _ in b], tag
        assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-7), tag
    for tag in TAGS:  # no step shown twice
        steps = Counter(s for s, _ in scalars(resumed, tag))
        assert steps and all(n == 1 for n in steps.values()), (tag, steps.most_common(3))


def test_documented_command_trains_and_logs_ppo_scalars(straight):
    for tag in (*TAGS, "ppo/clip_fraction", "ppo/value_loss", "ppo/policy_loss", "ppo/entropy",
                "ppo/explained_variance"):  # fmt: skip
        assert scalars(straight, tag), tag
    lrs = [v for _, v in scalars(straight, "lr_actor")]
    assert lrs[0] == pytest.approx(2.5e-6) and max(lrs) == pytest.approx(2.5e-4, rel=0.05)
    assert scalars(straight, "lr_actor")[-1][0] == 30208  # the first rollout end past the budget


def test_sigkill_then_rerun_keeps_the_lr_trace(straight, tmp_path):
    kill_then_rerun(*PPO, run_dir=tmp_path, at_step=6000)
    assert_same_lr_trace(straight, tmp_path)


def test_sigterm_mid_rollout_saves_the_last_update_and_resumes(straight, tmp_path):
    proc = start_cli(*PPO, run_dir=tmp_path)
    wait_for_checkpoint_step(tmp_path, 3000, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    path = tmp_path / "checkpoints" / "latest.pt"
    torch.load(path, weights_only=True)  # plain data
    state = checkpoint.load(path)
    assert state["global_step"] % 256 == 0  # a rollout boundary: the partial rollout is dropped
    assert state["agent"]["optimizer"]["state"] and state["lr_schedule"]["fingerprint"]
    resumed = run_cli(*PPO, run_dir=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_lr_trace(straight, tmp_path)


def test_documented_continuous_action_command_ends_on_the_schedule(tmp_path):
    # LR_SCHEDULING.md: `python train_curriculum.py agent=ppo env=pendulum agent.step_on=epoch`,
    # with a tiny budget and a decaying schedule (so the final LR is not the base LR).
    args = [
        "agent=ppo", "env=pendulum", "agent.step_on=epoch", "lr_schedule=warmup_cosine",
        "agent.num_steps=32", "num_train_frames=600", "eval_every_frames=100000",
        "num_eval_episodes=1", "progress=lines",
    ]  # fmt: skip
    done = run_cli(*args, run_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result(tmp_path)["status"] == "completed"
    state = latest(tmp_path)
    final = -(-600 // (4 * 32)) * (4 * 32)  # the first rollout end at or past the budget: 640
    assert state["global_step"] == final
    assert state["agent"]["log_std"].shape == (1,)  # a Gaussian policy over the 1-D torque
    schedules = compile_run_schedules(compose_config(args))
    expected = {name: schedules[name](final) for name in ("encoder", "actor", "critic")}
    assert expected["actor"] < 2.5e-4  # decayed below the base LR: the comparison can fail
    assert optimizer_lrs(state) == pytest.approx(expected, rel=1e-12)
