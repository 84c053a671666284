"""Seconds to compose, validate + compile, print and plot a preset with many intervals.

A user preset with tens of thousands of intervals (a schedule exported from another tool, one
interval per few hundred steps) must still preview in seconds. Targets (issue 10): validation
and compile of 30,000 intervals under 2 s, the preview plot under 5 s. Printed separately: Hydra's
compose (YAML and structured-schema checks) and OmegaConf's conversion of the composed nodes to
plain data, which the CLI pays before the engine sees the schedule.

    python benchmarks/huge_preset.py [--intervals 30000]

The preset gives each of the three networks ``intervals / 3`` linear pieces (30,000 in all by
default), written as a plain-group YAML file under a temporary ``hydra.searchpath``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omegaconf import OmegaConf  # noqa: E402

import lr_preview  # noqa: E402
import lr_scheduler  # noqa: E402
from training.build import compose_config  # noqa: E402
from training.run import compile_run_schedules, total_steps  # noqa: E402

TARGETS = {"compile": 2.0, "plot": 5.0}


def write_preset(folder: Path, intervals: int, steps: int) -> None:
    per_network = intervals // 3
    width = steps // per_network
    lines = []
    for net in ("encoder", "actor", "critic"):
        lines += [f"{net}:", "  type: linear", "  intervals:"]
        for k in range(per_network):
            lr = 1e-4 * (1.0 - 0.9 * k / per_network)
            lines.append(f"    - {{start: {k * width}, lr: {lr:.6e}, final_lr: {lr * 0.99:.6e}}}")
    (folder / "lr_schedule").mkdir(parents=True)
    (folder / "lr_schedule" / "huge.yaml").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=30_000)
    args = parser.parse_args()
    steps = 3_000_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "presets"
        write_preset(folder, args.intervals, steps)
        timings = {}
        t = time.perf_counter()
        cfg = compose_config(
            [f"hydra.searchpath=[file://{folder}]", "lr_schedule=huge", f"num_train_frames={steps}"]
        )
        timings["compose"] = time.perf_counter() - t
        t = time.perf_counter()
        plain = OmegaConf.to_container(cfg.lr_schedule, resolve=False)
        timings["to plain data"] = time.perf_counter() - t
        t = time.perf_counter()
        schedules = lr_scheduler.compile_schedules(
            plain, base_lr=cfg.lr, total_steps=total_steps(cfg), context=cfg
        )
        timings["compile"] = time.perf_counter() - t
        t = time.perf_counter()
        assert compile_run_schedules(cfg).fingerprint == schedules.fingerprint
        timings["both, as the CLI"] = time.perf_counter() - t
        t = time.perf_counter()
        text = lr_preview.format_preview(schedules)
        timings["table"] = time.perf_counter() - t
        t = time.perf_counter()
        lr_preview.plot_schedules(schedules, steps, Path(tmp) / "huge.png")
        timings["plot"] = time.perf_counter() - t
    count = sum(len(s.intervals) for s in schedules.values())
    print(f"{count} intervals, {len(text.splitlines())} preview lines")
    for name, seconds in timings.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"   target < {target:.0f} s: "
        verdict += "" if target is None else ("met" if seconds < target else "NOT met")
        print(f"  {name:<17} {seconds:7.2f} s{verdict}")


if __name__ == "__main__":
    main()
