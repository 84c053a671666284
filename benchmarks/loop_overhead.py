"""Env steps per second of the real training loop: `differential` against `constant`.

Both runs use the same seed, budget and agent; only the schedule differs. Rounds alternate the
two presets so machine noise hits both alike; the printed ratio (differential / constant, median
over rounds) is what to compare. Target: >= 0.99.

    python benchmarks/loop_overhead.py [--frames 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import config_schema  # noqa: E402,F401
from train_curriculum import Workspace, compile_run_schedules  # noqa: E402


def steps_per_second(preset: str, frames: int, workdir: Path) -> float:
    overrides = [
        f"lr_schedule={preset}", f"num_train_frames={frames}", "num_seed_frames=1000",
        f"eval_every_frames={10 * frames}", f"checkpoint_every_frames={10 * frames}",
        f"log_every_frames={frames // 8}", "progress=lines", "resume.enabled=false",
    ]  # fmt: skip
    with initialize_config_dir(str(ROOT / "cfgs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    workspace = Workspace(cfg, run_dir, compile_run_schedules(cfg))
    t0 = time.perf_counter()
    workspace.train()
    return workspace.global_step / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    samples: dict[str, list[float]] = {"constant": [], "differential": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            order = ("constant", "differential") if k % 2 == 0 else ("differential", "constant")
            for preset in order:
                samples[preset].append(steps_per_second(preset, args.frames, Path(tmp)))
    for preset, values in samples.items():
        print(f"  {preset:<13} median {statistics.median(values):7.1f} steps/s  "
              f"({', '.join(f'{v:.1f}' for v in values)})")  # fmt: skip
    ratios = [d / c for d, c in zip(samples["differential"], samples["constant"], strict=True)]
    ratio = statistics.median(ratios)
    print(f"differential / constant steps/s: {ratio:.3f} (median of {args.rounds} paired rounds; "
          f"target >= 0.99: {'met' if ratio >= 0.99 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
