"""Does a warmup, or the KL guard, keep PPO stable where a constant LR is not? Four arms, ten or
more seeds each, means with 95 % bootstrap confidence intervals, and which differences are
outside the noise.

Arms: ``constant``, ``constant+guard`` (``lr_schedule.kl_guard.enabled=true``, its defaults),
``warmup_cosine`` and ``warmup_cosine+guard``.

Settings (``--setting``):
- ``gru`` (default): the GRU policy on CartPole with the velocities hidden (a memory task) at
  lr 3e-3, the collapse-prone setting of source document 002's kind.
- ``high_lr``: feedforward PPO on CartPole-v1 at lr 1e-2, 40x the usual 2.5e-4.

Per run, from the ``ppo/*`` scalars written at every update (each the mean over the update's
minibatches): peak approx KL, the share of updates whose approx KL passed 0.02 (source document
002's threshold), and the mean return of the last 20 training episodes. Runs are deterministic
per machine (same seed, same numbers), so a table names the commit it was measured on; the
script prints it.

    python benchmarks/warmup_study.py [--setting gru|high_lr] [--seeds 0 1 ... 9] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

GUARD = ["lr_schedule.kl_guard.enabled=true"]
ARMS = {
    "constant": ["lr_schedule=constant"],
    "constant+guard": ["lr_schedule=constant", *GUARD],
    "warmup_cosine": ["lr_schedule=warmup_cosine"],
    "warmup_cosine+guard": ["lr_schedule=warmup_cosine", *GUARD],
}
SETTINGS = {
    "gru": ["env=cartpole_masked", "encoder_bundle@agent=gru", "lr=3e-3"],
    "high_lr": ["env=cartpole", "lr=1e-2"],
}
KL_THRESHOLD = 0.02
METRICS = (("peak_kl", ".3f"), ("kl_over", ".0%"), ("final_return", ".1f"))


def run(setting: list[str], arm: str, seed: int, steps: int) -> dict[str, float]:
    import torch
    from cli import scalars

    from training.build import workspace_from_overrides

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    overrides = [
        "agent=ppo", *setting, *ARMS[arm], f"seed={seed}", f"num_train_frames={steps}",
        "progress=lines", "resume.enabled=false", f"eval_every_frames={steps}",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        workspace_from_overrides(overrides, Path(tmp)).train()
        kl = np.array([v for _, v in scalars(Path(tmp), "ppo/approx_kl")])
        returns = [v for _, v in scalars(Path(tmp), "train/episode_return")]
    return {
        "peak_kl": float(kl.max()),
        "kl_over": float((kl > KL_THRESHOLD).mean()),
        "final_return": float(np.mean(returns[-20:])),
    }


def bootstrap_ci(values: np.ndarray, reps: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(reps, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def ratio_ci(num: np.ndarray, den: np.ndarray, reps: int = 10_000) -> tuple[float, float]:
    """95 % bootstrap interval of mean(num) / mean(den), resampling seeds in pairs."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(num), size=(reps, len(num)))
    ratios = num[idx].mean(axis=1) / den[idx].mean(axis=1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="gru")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. lr=1e-2")
    parser.add_argument("--out", type=Path, help="also write every run's numbers here (JSON)")
    args = parser.parse_args()
    setting = [*SETTINGS[args.setting], *args.set]
    jobs = [(a, s) for a in args.arms for s in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {job: pool.submit(run, setting, *job, args.steps) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}
    if args.out is not None:  # per run, so tables from several commits can be put together
        rows = [{"arm": a, "seed": s, "commit": commit(), **r} for (a, s), r in results.items()]
        args.out.write_text(json.dumps(rows, indent=1))
    print(f"commit {commit()}; setting {args.setting} ({' '.join(setting)}), {args.steps} "
          f"steps, seeds {args.seeds}; mean [95 % bootstrap CI] over seeds\n")  # fmt: skip
    print("| arm | peak approx_kl | updates with KL > 0.02 | final return (last 20 ep.) |")
    print("|---|---|---|---|")
    table = {a: {m: np.array([results[(a, s)][m] for s in args.seeds]) for m, _ in METRICS}
             for a in args.arms}  # fmt: skip
    for arm in args.arms:
        cells = []
        for metric, fmt in METRICS:
            values = table[arm][metric]
            lo, hi = bootstrap_ci(values)
            cells.append(f"{values.mean():{fmt}} [{lo:{fmt}}, {hi:{fmt}}]")
        print(f"| {arm} | " + " | ".join(cells) + " |")
    print("\nper seed (final return):")
    for arm in args.arms:
        print(f"  {arm}: " + ", ".join(f"{v:.0f}" for v in table[arm]["final_return"]))
    # Differences against each arm's unguarded twin (and constant), paired by seed.
    print("\ndifferences (paired by seed), mean [95 % bootstrap CI]; * = the CI excludes 0:")
    pairs = [
        ("constant+guard", "constant"),
        ("warmup_cosine", "constant"),
        ("warmup_cosine+guard", "warmup_cosine"),
        ("constant+guard", "warmup_cosine"),
    ]
    for a, b in pairs:
        if a not in table or b not in table:
            continue
        parts = []
        for metric, fmt in METRICS:
            diff = table[a][metric] - table[b][metric]
            lo, hi = bootstrap_ci(diff)
            mark = "*" if lo > 0 or hi < 0 else " "
            parts.append(f"{metric} {diff.mean():+{fmt}} [{lo:+{fmt}}, {hi:+{fmt}}]{mark}")
        ratio = table[b]["peak_kl"].mean() / table[a]["peak_kl"].mean()
        lo, hi = ratio_ci(table[b]["peak_kl"], table[a]["peak_kl"])
        print(f"  {a} - {b}: " + "; ".join(parts)
              + f"; peak-KL ratio {b}/{a} = {ratio:.2f}x [{lo:.2f}, {hi:.2f}]")  # fmt: skip


if __name__ == "__main__":
    main()
