"""Helpers to drive the real CLI in subprocesses with tiny budgets and read what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
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


def run_cli(*args: str, run_dir: Path | None = None, env: dict | None = None, timeout=300):
    """Run train_curriculum.py; returns the CompletedProcess (text output)."""
    cmd = [sys.executable, str(ROOT / "train_curriculum.py"), *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    full_env = {k: v for k, v in os.environ.items() if k != "LR_SCHEDULE_DISABLE"}
    full_env.update({"PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}, **(env or {}))
    return subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def start_cli(*args: str, run_dir: Path) -> subprocess.Popen:
    """Start train_curriculum.py in the background (to signal it); output piped."""
    cmd = [sys.executable, str(ROOT / "train_curriculum.py"), *args, f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "LR_SCHEDULE_DISABLE"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard tag, as TensorBoard shows it (purged events hidden)."""
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]
