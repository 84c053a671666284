"""Checkpoints and resume through the real CLI: kill -9, SIGTERM, SIGINT, schedule changes, old
format. What is checked is what happened: the LRs inside the optimizers' saved state, the
TensorBoard trace as a reader sees it, result.json, and the files left on disk."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
import torch
from cli import (
    NETWORKS,
    TINY,
    TINY_PPO,
    kill_then_rerun,
    latest,
    optimizer_lrs,
    raw_scalar_steps,
    result,
    run_cli,
    scalars,
    start_cli,
    wait_for_checkpoint_step,
)

from training import checkpoint
from training.build import compose_config
from training.run import compile_run_schedules

LR_TAGS = tuple(f"lr_{n}" for n in NETWORKS)
# Presets whose LRs still move after the first checkpoint (a third of the DrQ-v2 run, a quarter of
# the PPO run).
DRQV2 = [*TINY, "num_train_frames=1200", "checkpoint_every_frames=400"]  # 200-step episodes
# One preset per loop and optimizer kind through the CLI; tests/test_run_state.py runs more
# presets in-process (the LR of every optimizer step after a resume).
CASES = [
    pytest.param(DRQV2, "differential", 400, id="drqv2-differential"),
    # The optimizer steps compiled, its LRs tensors the graphs read (the eager backend: the same
    # dynamo capture and guards as inductor, without a C++ build per process).
    pytest.param([*DRQV2, "compile=true", "agent.compile=eager"], "warmup_cosine", 400,
                 id="drqv2-compiled-warmup_cosine"),
    pytest.param(TINY_PPO, "exponential_smooth", 1500, id="ppo-exponential_smooth"),
]  # fmt: skip


def assert_same_weights(resumed: dict, straight: dict) -> None:
    """Every network tensor of two agent states equal within float tolerance."""
    names = [n for n in straight if n != "optimizers"]
    assert names and set(resumed) == set(straight)
    for name in names:
        for key, tensor in straight[name].items():
            torch.testing.assert_close(resumed[name][key], tensor, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, k=f"{name}.{key}": f"{k}: {m}")  # fmt: skip


def schedule_lrs(args, step):
    schedules = compile_run_schedules(compose_config(list(args)))
    return {n: schedules[n](step) for n in NETWORKS}


@pytest.mark.parametrize("base,preset,first_checkpoint", CASES)
def test_kill9_and_rerun_trains_on_the_uninterrupted_schedule(
    tmp_path, base, preset, first_checkpoint
):
    args = [*base, f"lr_schedule={preset}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_cli(*args, run_dir=straight).returncode == 0
    at_kill, _ = kill_then_rerun(*args, run_dir=killed, at_step=first_checkpoint)
    killed_at = at_kill["global_step"]

    end = latest(straight)["global_step"]
    assert latest(killed)["global_step"] == end
    expected = schedule_lrs(args, end)
    assert expected != schedule_lrs(args, killed_at), "the LRs must move after the kill"
    # The optimizers really hold the schedule's LRs at the end, in both runs.
    assert optimizer_lrs(latest(killed)) == pytest.approx(expected, rel=1e-9)
    assert optimizer_lrs(latest(straight)) == pytest.approx(expected, rel=1e-9)

    if "agent=ppo" not in args:
        # What the steps used, not what the groups say: DrQ-v2 on the CPU is deterministic, and
        # the checkpoint falls between the gimbal's fixed 200-step episodes, so both runs see
        # the same episodes. Every update after the kill at another LR would move the weights.
        assert_same_weights(latest(killed)["agent"], latest(straight)["agent"])

    for tag in LR_TAGS:
        a, b = scalars(straight, tag), scalars(killed, tag)
        assert [s for s, _ in a] == [s for s, _ in b], tag
        assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-6), tag
    for tag in (*LR_TAGS, "train/episode_return", "eval/episode_return"):
        steps = Counter(s for s, _ in scalars(killed, tag))
        assert steps and all(n == 1 for n in steps.values()), (tag, steps.most_common(3))
    # No step twice in the event files themselves either (readers that ignore purge events).
    raw = Counter(raw_scalar_steps(killed))
    assert [k for k, n in raw.items() if n > 1] == []
    lr_points = {k for k in raw_scalar_steps(straight) if k[0] in LR_TAGS}
    assert {k for k in raw if k[0] in LR_TAGS} == lr_points

    # result.json covers the whole run, not just the part after the kill.
    evals = [v for _, v in scalars(killed, "eval/episode_return")]
    assert any(s <= killed_at for s, _ in scalars(killed, "eval/episode_return"))
    done = result(killed)
    assert done["status"] == "completed" and done["global_step"] == end
    assert done["best_eval_return"] == pytest.approx(max(evals), rel=1e-6)
    assert done["final_eval_return"] == pytest.approx(evals[-1], rel=1e-6)
    assert done["wall_time_s"] > at_kill["result"]["wall_time_s"] > 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_leaves_a_complete_checkpoint_and_the_run_resumes(tmp_path, signum):
    args = [*TINY, "lr_schedule=warmup_cosine"]
    proc = start_cli(*args, run_dir=tmp_path)
    wait_for_checkpoint_step(tmp_path, 1000, proc)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 128 + signum
    ckpt_dir = tmp_path / "checkpoints"
    raw = torch.load(ckpt_dir / "latest.pt", weights_only=True)  # plain data, no pickles
    state = checkpoint.load(ckpt_dir / "latest.pt")
    step = state["global_step"]
    assert raw["format"] == checkpoint.FORMAT and step >= 1000
    assert optimizer_lrs(state) == pytest.approx(schedule_lrs(args, step), rel=1e-9)
    assert state["replay"]["size"] == step  # one transition per step, all kept
    assert state["curriculum"]["episodes"] >= 1 and state["rng"]["torch"].numel() > 0
    assert all(state["agent"]["optimizers"][n]["state"] for n in NETWORKS)  # Adam moments saved
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["latest.pt", "previous.pt"]  # no temp
    stopped = json.loads((tmp_path / "result.json").read_text())  # what a sweep summary shows
    assert stopped["status"] == "preempted" and stopped["global_step"] == step
    assert stopped["error"].startswith(f"{signal.Signals(signum).name} at step {step}:")
    if signum == signal.SIGINT:
        return  # the same handler and checkpoint as SIGTERM: the resume is checked once
    again = run_cli(*args, run_dir=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert latest(tmp_path)["global_step"] == 3000
    finished = json.loads((tmp_path / "result.json").read_text())
    assert finished["status"] == "completed" and finished["global_step"] == 3000
    assert optimizer_lrs(latest(tmp_path)) == pytest.approx(schedule_lrs(args, 3000), rel=1e-9)


def test_changed_schedule_is_refused_untouched_or_followed_when_allowed(tmp_path):
    first = [*TINY, "num_train_frames=2000", "lr_schedule=warmup_cosine"]
    assert run_cli(*first, run_dir=tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "result.json", tmp_path / "checkpoints" /
                                          "latest.pt")}  # fmt: skip
    other = [*TINY, "num_train_frames=3000", "lr_schedule=aggressive_decay"]
    refused = run_cli(*other, run_dir=tmp_path)
    assert refused.returncode == 2
    assert "resume refused" in refused.stderr
    assert "resume.allow_schedule_change=true" in refused.stderr
    assert {p: p.read_bytes() for p in before} == before  # a refused resume changes nothing

    allowed = run_cli(*other, "resume.allow_schedule_change=true", run_dir=tmp_path)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    state = latest(tmp_path)
    assert state["global_step"] == 3000
    # From the resumed step on, the optimizers follow the new schedule.
    assert optimizer_lrs(state) == pytest.approx(schedule_lrs(other, 3000), rel=1e-9)
    assert scalars(tmp_path, "lr_actor")[-1] == (3000, pytest.approx(state_lr := 5e-6, rel=1e-6))
    assert optimizer_lrs(state)["actor"] == state_lr  # aggressive_decay ends at 0.05 x lr


def test_checkpoint_without_schedule_state_still_loads_and_continues(tmp_path):
    args = [*TINY, "num_train_frames=2000", "lr_schedule=warmup_cosine"]
    assert run_cli(*args, run_dir=tmp_path).returncode == 0
    path = tmp_path / "checkpoints" / "latest.pt"
    state = checkpoint.load(path)
    del state["lr_schedule"]
    state.pop("format")
    checkpoint.save_atomic(state, path)
    longer = [*TINY, "num_train_frames=3000", "lr_schedule=warmup_cosine"]
    resumed = run_cli(*longer, "resume.allow_schedule_change=true", run_dir=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # It continued from step 2000 (not from 0): one lr_actor point per step, none before 2000
    # written twice, and the episode count carried on.
    steps = Counter(s for s, _ in scalars(tmp_path, "lr_actor"))
    assert all(n == 1 for n in steps.values()) and max(steps) == 3000
    after = latest(tmp_path)
    assert after["global_step"] == 3000 and after["episode"] > state["episode"]
    assert optimizer_lrs(after) == pytest.approx(schedule_lrs(longer, 3000), rel=1e-9)


def test_a_checkpoint_of_a_newer_format_is_refused_by_name_and_left_as_it_is(tmp_path):
    args = [*TINY, "num_train_frames=600", "eval_every_frames=600"]
    assert run_cli(*args, run_dir=tmp_path).returncode == 0
    path = tmp_path / "checkpoints" / "latest.pt"
    state = checkpoint.load(path)
    state["format"] = checkpoint.FORMAT + 1  # as a later version would write it
    checkpoint.save_atomic(state, path)
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    resumed = run_cli(*args, "num_train_frames=1200", run_dir=tmp_path)
    assert resumed.returncode == 2
    last = resumed.stderr.strip().splitlines()[-1]
    assert f"checkpoint format {checkpoint.FORMAT + 1}" in last and "newer" in last, last
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
