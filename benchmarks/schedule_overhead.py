"""Microseconds per LR update on a three-group Adam: our controller vs torch's schedulers.

Measured side by side in one run, interleaved round by round, so machine noise hits every
contender alike; the printed ratios are what to compare. Two schedule kinds are timed:
`stepwise` (gentle_decay-like step intervals: the LR changes rarely), `continuous`
(warmup + cosine, the same on every network, as the warmup presets: the LR changes at every
step) and `continuous, differential` (a different warmup + cosine per network).

    python benchmarks/schedule_overhead.py [--steps 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lr_scheduler as L  # noqa: E402

TOTAL = 3_000_000


def three_group_adam() -> torch.optim.Adam:
    groups = [{"params": torch.nn.Linear(4, 4).parameters(), "name": n} for n in L.NETWORKS]
    return torch.optim.Adam(groups, lr=1e-4)


def stepwise_spec() -> dict:
    rows = [
        {"start": 0, "end": 1_000_000, "lr": 1e-4},
        {"start": 1_000_000, "end": 2_000_000, "lr": 5e-5},
        {"start": 2_000_000, "lr": 2.5e-5},
    ]
    return {n: {"type": "step_decay", "intervals": rows} for n in L.NETWORKS}


def continuous_spec() -> dict:
    rows = [
        {"type": "linear", "start": 0, "end": 150_000, "lr": 1e-6, "final_lr": 1e-4},
        {"type": "cosine", "start": 150_000, "lr": 1e-4, "final_lr": 1e-6},
    ]
    return {n: {"intervals": rows} for n in L.NETWORKS}


def differential_spec() -> dict:
    """Three different continuous schedules: nothing can be shared between networks."""
    spec = {}
    for k, name in enumerate(L.NETWORKS):
        warm = 50_000 * (k + 1)
        rows = [
            {"type": "linear", "start": 0, "end": warm, "lr": 1e-6, "final_lr": 1e-4 * (k + 1)},
            {"type": "cosine", "start": warm, "lr": 1e-4 * (k + 1), "final_lr": 1e-6},
        ]
        spec[name] = {"intervals": rows}
    return spec


def time_controller(spec: dict, steps: range) -> float:
    ctl = L.LRController.for_named_groups(
        L.compile_schedules(spec, base_lr=1e-4, total_steps=TOTAL), three_group_adam()
    )
    apply = ctl.apply
    t0 = time.perf_counter()
    for step in steps:
        apply(step)
    return (time.perf_counter() - t0) / len(steps) * 1e6


def time_torch(make, steps: range) -> float:
    opt = three_group_adam()
    sched = make(opt)
    if steps.start:
        sched.last_epoch = steps.start  # jump to the same region of the run
    t0 = time.perf_counter()
    for _ in steps:
        sched.step()
    return (time.perf_counter() - t0) / len(steps) * 1e6


def lambda_lr(opt):
    def factor(t):
        if t < 150_000:
            return 0.01 + 0.99 * t / 150_000
        p = (t - 150_000) / (TOTAL - 150_000)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def sequential_lr(opt):
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=150_000)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL - 150_000, eta_min=1e-6)
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[150_000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
    # Steps taken every `update_every_steps`=2, over a region containing a boundary.
    steps = range(990_000, 990_000 + 2 * args.steps, 2)
    contenders = {
        "apply() stepwise": lambda: time_controller(stepwise_spec(), steps),
        "apply() continuous": lambda: time_controller(continuous_spec(), steps),
        "apply() continuous, differential": lambda: time_controller(differential_spec(), steps),
        "LambdaLR.step()": lambda: time_torch(lambda_lr, range(args.steps)),
        "SequentialLR(LinearLR, CosineAnnealingLR).step()": lambda: time_torch(
            sequential_lr, range(args.steps)
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            samples[name].append(run())
    median = {name: statistics.median(v) for name, v in samples.items()}
    print(f"median of {args.rounds} interleaved rounds, {args.steps} updates each, 3 param groups")
    for name, us in median.items():
        print(f"  {name:<50} {us:8.3f} us/update")
    for ours in ("apply() stepwise", "apply() continuous", "apply() continuous, differential"):
        for theirs in ("LambdaLR.step()", "SequentialLR(LinearLR, CosineAnnealingLR).step()"):
            print(f"  {theirs} / {ours}: {median[theirs] / median[ours]:6.1f}x")
    for ours in ("apply() stepwise", "apply() continuous", "apply() continuous, differential"):
        ratio = median["LambdaLR.step()"] / median[ours]
        verdict = "met" if ratio >= 5 else "NOT met"
        print(f"target apply() >= 5x faster than LambdaLR.step(), {ours}: {ratio:.1f}x {verdict}")


if __name__ == "__main__":
    main()
