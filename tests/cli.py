"""Run the real CLI tiny, and read what really happened: exit code, files, checkpoint contents,
TensorBoard scalars, and the learning rates inside the optimizers' saved state."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import forkserver
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lr_scheduler import NETWORKS
from training import checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "train_curriculum.py"
# A few thousand frames: seconds on a laptop CPU, still every phase of the loop.
TINY = [
    "num_train_frames=3000",
    "num_seed_frames=500",
    "eval_every_frames=1500",
    "num_eval_episodes=1",
    "log_every_frames=500",
    "checkpoint_every_frames=1000",
    "replay.batch_size=32",
    "agent.hidden_dim=32",
    "agent.feature_dim=16",
    "progress=lines",
]
# PPO on CartPole: rollouts of 4 x 64 = 256 steps, a checkpoint every few rollouts.
TINY_PPO = [
    "agent=ppo",
    "env=cartpole",
    "agent.num_steps=64",
    "num_train_frames=6000",
    "log_every_frames=1000",
    "checkpoint_every_frames=1500",
    "eval_every_frames=3000",
    "num_eval_episodes=1",
    "progress=lines",
]


# Not inherited: the kill switch, and a rendering backend an in-process test chose (the CLI picks
# its own, as from a user's shell).
NOT_INHERITED = ("LR_SCHEDULE_DISABLE", "MUJOCO_GL", "PYOPENGL_PLATFORM")


def _env(extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update({"PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}, **(extra or {}))
    return env


def run_cli(*args: str, run_dir: Path | None = None, env: dict | None = None, timeout=300):
    """Run train_curriculum.py; returns the CompletedProcess (text output)."""
    args = [*args] if run_dir is None else [*args, f"hydra.run.dir={run_dir}"]
    return forkserver.run(ENTRY, args, cwd=ROOT, env=_env(env), timeout=timeout)


def finished_run(tmp_path_factory, *args: str) -> Path:
    """A completed CLI run in a fresh dir (for module-scoped fixtures several tests read)."""
    run_dir = tmp_path_factory.mktemp("finished")
    done = run_cli(*args, run_dir=run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def start_cli(*args: str, run_dir: Path, env: dict | None = None):
    """Start train_curriculum.py in the background (to signal it): a ``subprocess.Popen``-like
    object (pid, poll, wait, send_signal, binary stdout / stderr)."""
    args = [*args, f"hydra.run.dir={run_dir}"]
    return forkserver.start(ENTRY, args, cwd=ROOT, env=_env(env))


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard tag, as TensorBoard shows it (purged events hidden)."""
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def raw_scalar_steps(run_dir: Path) -> list[tuple[str, int]]:
    """(tag, step) of every scalar in the event files, read as raw records (no purge applied,
    as pandas exports or tbparse would)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    found = []
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        for record in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(record)
            found += [(value.tag, event.step) for value in event.summary.value]
    return found


def result(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "result.json").read_text())


def latest(run_dir: Path) -> dict[str, Any]:
    return checkpoint.load(run_dir / "checkpoints" / "latest.pt")


def optimizer_lrs(state: dict[str, Any]) -> dict[str, float]:
    """network -> LR held by the optimizer state saved in a checkpoint (both agent layouts)."""
    agent = state["agent"]
    if "optimizers" in agent:  # DrQ-v2: one optimizer per network
        return {n: float(agent["optimizers"][n]["param_groups"][0]["lr"]) for n in NETWORKS}
    groups = agent["optimizer"]["param_groups"]  # PPO: one optimizer, groups named by network
    return {g["name"]: float(g["lr"]) for g in groups}


def wait_for_checkpoint_step(run_dir: Path, at_least: int, proc, timeout=120) -> int:
    """Wait until the run's checkpoint holds ``global_step >= at_least``; returns that step."""
    path = run_dir / "checkpoints" / "latest.pt"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        if path.exists():
            step = checkpoint.load(path)["global_step"]
            if step >= at_least:
                return step
        time.sleep(0.1)
    raise TimeoutError("no checkpoint")


def kill_then_rerun(
    *args: str, run_dir: Path, at_step: int, env: dict | None = None
) -> tuple[int, Any]:
    """SIGKILL a run once it has checkpointed ``at_step``, then re-run it in the same dir (the
    re-run must resume and finish). Returns the checkpoint the re-run started from, and the
    re-run."""
    proc = start_cli(*args, run_dir=run_dir, env=env)
    wait_for_checkpoint_step(run_dir, at_step, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = latest(run_dir)
    resumed = run_cli(*args, run_dir=run_dir, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in (run_dir / "train_curriculum.log").read_text()
    return at_kill, resumed
