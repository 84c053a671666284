"""Faults a user runs into, one at a time, and what they see: exit code, message, and the files
of the run already in the dir unchanged (or recovered)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch
from cli import TINY, finished_run, latest, result, run_cli, start_cli

from training import checkpoint
from training.build import compose_config, workspace_from_overrides
from training.checks import ConfigError, check_run_config
from training.run import Diverged

SHORT = [*TINY, "num_train_frames=1000", "checkpoint_every_frames=500"]


def files(run_dir):
    """Bytes of every file a finished run leaves that a later start must not touch."""
    names = ["result.json", "checkpoints/latest.pt", "checkpoints/previous.pt",
             ".hydra/config.yaml"]  # fmt: skip
    return {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).exists()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny DrQ-v2 run (copied per test so each may damage its own)."""
    return finished_run(tmp_path_factory, *SHORT)


@pytest.fixture
def run_dir(finished, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def test_a_second_run_in_the_same_dir_is_refused_while_the_first_runs(tmp_path):
    first = start_cli(*TINY, "num_train_frames=4000", "seed=1", run_dir=tmp_path)
    try:
        deadline = time.time() + 60
        while not (tmp_path / ".lock").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        second = run_cli(*TINY, "seed=2", run_dir=tmp_path)
        assert second.returncode == 2
        assert str(tmp_path) in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        assert first.wait(timeout=300) == 0
    assert "seed: 1" in (tmp_path / ".hydra" / "config.yaml").read_text()  # the first's config
    assert result(tmp_path)["status"] == "completed" and not (tmp_path / ".lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import socket

    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer runs
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid}))
    done = run_cli(*SHORT, run_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stale lock" in (tmp_path / "train_curriculum.log").read_text()


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    ws = workspace_from_overrides([*SHORT, "checkpoint_every_frames=300"], tmp_path)
    gen = ws.steps()
    for step in gen:
        if step == 600:  # the next thing the loop does is the checkpoint at step 600
            break
    good = (tmp_path / "checkpoints" / "latest.pt").read_bytes()
    with torch.no_grad():  # weights blew up after the last update's losses were checked
        next(ws.agent.actor.parameters()).fill_(float("nan"))
    with pytest.raises(Diverged, match=r"step 600.*non-finite values in agent\.actor"):
        next(gen)
    assert (tmp_path / "checkpoints" / "latest.pt").read_bytes() == good
    assert checkpoint.load(tmp_path / "checkpoints" / "latest.pt")["global_step"] == 300


def test_checkpoints_replaced_by_a_file_is_refused_and_nothing_changes(run_dir):
    import shutil

    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").write_text("not a dir")
    before = files(run_dir)
    again = run_cli(*SHORT, run_dir=run_dir)
    assert again.returncode == 2 and "checkpoints is not a directory" in again.stderr
    assert files(run_dir) == before


def test_resume_disabled_on_a_dir_with_a_run_needs_overwrite(run_dir):
    before = files(run_dir)
    refused = run_cli(*SHORT, "resume.enabled=false", run_dir=run_dir)
    assert refused.returncode == 2 and "resume.overwrite=true" in refused.stderr
    assert files(run_dir) == before
    fresh = run_cli(*SHORT, "resume.overwrite=true", "num_train_frames=500", run_dir=run_dir)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert latest(run_dir)["global_step"] == 500 and result(run_dir)["global_step"] == 500
    assert "resuming from" not in fresh.stderr


DAMAGES = {
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "random": (lambda p: p.write_bytes(bytes(range(256)) * 50), "not a readable checkpoint"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                  "not a readable checkpoint"),
    "wrong-structure": (lambda p: torch.save({"weights": torch.ones(2)}, p), "no global_step"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_a_damaged_checkpoint_is_named_with_what_is_wrong(finished, tmp_path, kind):
    damage, words = DAMAGES[kind]
    path = tmp_path / "latest.pt"
    path.write_bytes((finished / "checkpoints" / "latest.pt").read_bytes())
    damage(path)
    with pytest.raises(checkpoint.CheckpointError, match=words) as err:
        checkpoint.load(path)
    assert str(path) in str(err.value) and "weights_only" not in str(err.value)


def test_a_damaged_latest_falls_back_to_previous_and_none_readable_is_refused(run_dir):
    damage, words = DAMAGES["truncated"]
    damage(run_dir / "checkpoints" / "latest.pt")
    fallback = run_cli(*SHORT, "num_train_frames=1500", "resume.allow_schedule_change=true",
                       run_dir=run_dir)  # fmt: skip
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    log = (run_dir / "train_curriculum.log").read_text()
    assert words in log and "resuming from the previous checkpoint" in log
    assert latest(run_dir)["global_step"] == 1500

    damage(run_dir / "checkpoints" / "latest.pt")
    DAMAGES["empty"][0](run_dir / "checkpoints" / "previous.pt")
    before = files(run_dir)
    refused = run_cli(*SHORT, "num_train_frames=1500", run_dir=run_dir)
    assert refused.returncode == 2
    assert "latest.pt" in refused.stderr and words in refused.stderr
    assert "previous.pt is empty" in refused.stderr
    assert "resume.overwrite=true" in refused.stderr and "Traceback" not in refused.stderr
    assert files(run_dir) == before


def test_a_checkpoint_of_another_agent_is_refused_by_name(run_dir):
    before = files(run_dir)
    ppo = run_cli("agent=ppo", "env=cartpole", "num_train_frames=1000", run_dir=run_dir)
    assert ppo.returncode == 2
    assert "agents.drqv2.DrQV2Agent" in ppo.stderr and "agents.ppo.PPOAgent" in ppo.stderr
    assert "allow_schedule_change" not in ppo.stderr
    assert files(run_dir) == before


@pytest.mark.parametrize(
    "change,key", [("seed=7", "seed: 0 -> 7"), ("replay.batch_size=64", "replay.batch_size")]
)
def test_resuming_with_other_run_settings_is_refused_with_the_diff(run_dir, change, key):
    before = files(run_dir)
    refused = run_cli(*SHORT, change, run_dir=run_dir)
    assert refused.returncode == 2 and key in refused.stderr
    assert "resume.allow_config_change=true" in refused.stderr
    assert files(run_dir) == before
    allowed = run_cli(*SHORT, change, "resume.allow_config_change=true", run_dir=run_dir)
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_a_failed_write_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "latest.pt"
    checkpoint.save_atomic({"global_step": 1}, path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(checkpoint.CheckpointError, match="No space left") as err:
        checkpoint.save_atomic({"global_step": 2}, path)
    assert str(path) in str(err.value) and "previous checkpoint is intact" in str(err.value)
    assert checkpoint.load(path)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]  # no temp file left


BAD_KNOBS = {
    "num_train_frames=-5": "num_train_frames",
    "update_every_steps=0": "update_every_steps",
    "update_every_steps=-1": "update_every_steps",
    "action_repeat=0": "action_repeat",
    "num_eval_episodes=0": "num_eval_episodes",
    "log_every_frames=0": "log_every_frames",
    "replay.discount=1.5": "replay.discount",
    "+foo=1": "foo",
    "+replay.capcity=5": "replay.capcity",
    # The agent's own knobs, against its constructor's signature and annotations.
    "agent.hidden_dim=oops": "agent.hidden_dim",
    "agent.feature_dim=12.5": "agent.feature_dim",  # int(12.5) would quietly train a 12
    "agent.channels_last=1": "agent.channels_last",
    "+agent.hiden_dim=64": "agent.hiden_dim",
}


@pytest.mark.parametrize("override", list(BAD_KNOBS))
def test_bad_run_knobs_name_their_key(override):
    with pytest.raises(ConfigError) as err:
        check_run_config(compose_config([override]))
    assert err.value.path == BAD_KNOBS[override]
    if override.startswith("agent."):
        assert "(DrQV2Agent), got " in str(err.value)  # what the annotation wants, and the value
    if override == "+agent.hiden_dim=64":
        assert "did you mean 'hidden_dim'?" in str(err.value)


SHIPPED_AGENTS = [
    [],
    ["agent=ppo", "env=cartpole"],
    ["experiment=ppo_mujoco"],
    ["experiment=drqv2_dmc_pixels"],
    ["agent=ppo", "env=cartpole_masked", "encoder_bundle@agent=gru"],
    ["agent.amp=bf16", "agent.compile=eager"],
]


def test_every_shipped_agent_config_passes_the_argument_check():
    for overrides in SHIPPED_AGENTS:
        check_run_config(compose_config(overrides))


@pytest.mark.parametrize(
    "override", ["num_train_frames=-5", "num_eval_episodes=0", "+foo=1", "agent.feature_dim=12.5"]
)
def test_bad_run_knobs_exit_2_through_the_cli_before_any_env(tmp_path, override):
    proc = run_cli(override, "env.id=DoesNotExist-v0", run_dir=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: invalid config: {BAD_KNOBS[override]}: ")
    assert result(tmp_path)["status"] == "failed"
    assert not (tmp_path / "tb").exists()


def test_result_json_is_strict_json(tmp_path):
    from training.run import write_result

    write_result(tmp_path, {"final_eval_return": float("nan"), "best": float("inf"), "x": 1.5})
    text = (tmp_path / "result.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "final_eval_return": None, "best": None, "x": 1.5,
    }  # fmt: skip


@pytest.mark.parametrize(
    "value,disabled", [("1", True), ("on", True), ("TRUE", True), ("off", False), ("0", False),
                       ("", False), ("no", False)],
)  # fmt: skip
def test_kill_switch_values(monkeypatch, value, disabled):
    import lr_scheduler as L

    monkeypatch.setenv("LR_SCHEDULE_DISABLE", value)
    spec = {"actor": {"intervals": [{"start": 0, "lr": 1e-3}]}}
    actor = L.compile_schedules(spec, base_lr=1e-4)["actor"]
    assert actor(500) == (1e-4 if disabled else 1e-3)  # the base lr, or the preset's


def test_kill_switch_garbage_is_an_error_naming_the_variable(tmp_path):
    proc = run_cli("lr_schedule=gentle_decay", "dry_run=true", run_dir=tmp_path,
                   env={"LR_SCHEDULE_DISABLE": "garbage"})  # fmt: skip
    assert proc.returncode == 2
    assert "LR_SCHEDULE_DISABLE" in proc.stderr and "'garbage'" in proc.stderr
    shown = run_cli("lr_schedule=gentle_decay", "dry_run=true", run_dir=tmp_path / "on",
                    env={"LR_SCHEDULE_DISABLE": "yes"})  # fmt: skip
    assert shown.returncode == 0 and "LR_SCHEDULE_DISABLE=yes: lr_schedule ignored" in shown.stderr


def test_no_room_or_no_write_access_for_checkpoints_fails_at_start(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from training.run import ResumeRefused

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 9 << 20, 1 << 20))
    with pytest.raises(ResumeRefused, match=r"1 MiB free.*needs about \d+ MiB.*replay.capacity"):
        workspace_from_overrides(SHORT, tmp_path / "full")
    monkeypatch.undo()

    real_write = type(tmp_path).write_bytes

    def read_only(self, data):
        if self.name.startswith(".probe-"):
            raise PermissionError(13, "Permission denied")
        return real_write(self, data)

    monkeypatch.setattr(type(tmp_path), "write_bytes", read_only)
    with pytest.raises(ResumeRefused, match=r"cannot write checkpoints to .*Permission denied"):
        workspace_from_overrides(SHORT, tmp_path / "ro")
    assert not (tmp_path / "ro" / "tb").exists()  # refused before TensorBoard opened


def test_lock_rules_for_other_hosts_and_requeued_slurm_jobs(tmp_path, monkeypatch):
    import os

    from training.rundir import STALE_AFTER_S, RunDirBusy, RunLock

    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"host": "node-7", "pid": 1, "slurm_job_id": "41"}))
    with pytest.raises(RunDirBusy, match=r"pid 1 on node-7"):  # fresh heartbeat elsewhere
        RunLock(tmp_path).acquire()
    assert json.loads(lock.read_text())["host"] == "node-7"  # not touched

    monkeypatch.setenv("SLURM_JOB_ID", "41")  # the same job, requeued on another node
    with RunLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # released

    monkeypatch.delenv("SLURM_JOB_ID")
    lock.write_text(json.dumps({"host": "node-7", "pid": 1}))
    old = time.time() - STALE_AFTER_S - 5  # its holder stopped beating
    os.utime(lock, (old, old))
    with RunLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
