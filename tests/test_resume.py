"""Checkpoints and resume through the real CLI: SIGKILL, SIGTERM, schedule changes, old format."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
import torch
from cli import TINY, kill_then_rerun, run_cli, scalars, start_cli, wait_for_checkpoint_step

from training import checkpoint

# Long enough to be killed mid-way; an LR that changes at every step (warmup then cosine) so a
# resumed trace that jumped would show.
RUN = [*TINY, "num_train_frames=6000", "lr_schedule=warmup_cosine", "lr_schedule.warmup_frac=0.2"]
TAGS = ("lr_encoder", "lr_actor", "lr_critic", "curriculum/stage", "train/episode_return")


def start(run_dir, *extra):
    return start_cli(*RUN, *extra, run_dir=run_dir)


def test_sigkill_then_rerun_gives_the_uninterrupted_lr_trace(tmp_path):
    straight = tmp_path / "straight"
    assert run_cli(*RUN, run_dir=straight).returncode == 0
    killed = tmp_path / "killed"
    kill_then_rerun(*RUN, run_dir=killed, at_step=3000)
    for tag in ("lr_encoder", "lr_actor", "lr_critic"):
        a, b = scalars(straight, tag), scalars(killed, tag)
        assert [s for s, _ in a] == [s for s, _ in b], tag
        assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-7), tag
    for tag in TAGS:  # no step shown twice
        steps = Counter(s for s, _ in scalars(killed, tag))
        assert all(n == 1 for n in steps.values()), (tag, steps.most_common(3))


def test_sigterm_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    proc = start(tmp_path)
    wait_for_checkpoint_step(tmp_path, 1000, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    path = tmp_path / "checkpoints" / "latest.pt"
    raw = torch.load(path, weights_only=True)  # plain data, no pickled objects
    state = checkpoint.load(path)
    assert raw["format"] == checkpoint.FORMAT and state["global_step"] >= 1000
    for key in ("agent", "replay", "lr_schedule", "curriculum", "rng"):
        assert state[key], key
    assert not [p for p in path.parent.iterdir() if p.name != "latest.pt"]  # no temp files left
    again = run_cli(*RUN, run_dir=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert scalars(tmp_path, "lr_actor")[-1][0] == 6000


def test_changed_schedule_is_refused_unless_allowed(tmp_path):
    first = run_cli(*RUN, "num_train_frames=2000", run_dir=tmp_path)
    assert first.returncode == 0
    other = [*TINY, "num_train_frames=4000", "lr_schedule=gentle_decay"]
    refused = run_cli(*other, run_dir=tmp_path)
    assert refused.returncode == 2
    assert (
        "resume refused" in refused.stderr and "resume.allow_schedule_change=true" in refused.stderr
    )
    allowed = run_cli(*other, "resume.allow_schedule_change=true", run_dir=tmp_path)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert scalars(tmp_path, "lr_actor")[-1][0] == 4000


def test_checkpoint_without_schedule_state_still_loads(tmp_path):
    assert run_cli(*RUN, "num_train_frames=2000", run_dir=tmp_path).returncode == 0
    path = tmp_path / "checkpoints" / "latest.pt"
    state = checkpoint.load(path)
    del state["lr_schedule"]
    state.pop("format")
    checkpoint.save_atomic(state, path)
    resumed = run_cli(*RUN, "num_train_frames=3000", run_dir=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert scalars(tmp_path, "lr_actor")[-1][0] == 3000
