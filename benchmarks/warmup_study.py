"""Does an LR warmup stabilise PPO where a constant LR is unstable? constant vs warmup_cosine vs
recurrent_warmup, several seeds, one table.

Settings (``--setting``):
- ``gru`` (default): the GRU policy on CartPole with the velocities hidden (a memory task) at
  lr 3e-3: at a constant LR its approx KL passes 0.02 in a third of the updates.
- ``high_lr``: feedforward PPO on CartPole-v1 at lr 1e-2, 40x the usual 2.5e-4 (at 3e-3 a
  constant LR was still stable here).

Per run, from the ``ppo/*`` scalars written at every update: peak and mean approx KL, the share of
updates whose approx KL passed 0.02, mean clip fraction, the variance of the value loss across
updates, and the mean return of the last 20 training episodes.

    python benchmarks/warmup_study.py [--setting gru|high_lr] [--seeds 0 1 2] [--steps 150000]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PRESETS = ("constant", "warmup_cosine", "recurrent_warmup")
SETTINGS = {
    "gru": ["env=cartpole_masked", "encoder_bundle@agent=gru", "lr=3e-3"],
    "high_lr": ["env=cartpole", "lr=1e-2"],
}
KL_THRESHOLD = 0.02


def run(setting: list[str], preset: str, seed: int, steps: int) -> dict[str, float]:
    import torch
    from cli import scalars

    from training.workspace import workspace_from_overrides

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    overrides = [
        "agent=ppo", *setting, f"lr_schedule={preset}", f"seed={seed}",
        f"num_train_frames={steps}", "progress=lines", "resume.enabled=false",
        f"eval_every_frames={steps}",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        workspace_from_overrides(overrides, Path(tmp)).train()
        series = {
            tag: np.array([v for _, v in scalars(Path(tmp), tag)])
            for tag in ("ppo/approx_kl", "ppo/clip_fraction", "ppo/value_loss")
        }
        returns = [v for _, v in scalars(Path(tmp), "train/episode_return")]
    kl = series["ppo/approx_kl"]
    return {
        "peak_kl": float(kl.max()),
        "mean_kl": float(kl.mean()),
        "kl_over": float((kl > KL_THRESHOLD).mean()),
        "clip_fraction": float(series["ppo/clip_fraction"].mean()),
        "value_loss_var": float(series["ppo/value_loss"].var()),
        "final_return": float(np.mean(returns[-20:])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="gru")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. lr=1e-2")
    args = parser.parse_args()
    setting = [*SETTINGS[args.setting], *args.set]
    jobs = [(p, s) for p in PRESETS for s in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {job: pool.submit(run, setting, *job, args.steps) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}
    print(f"setting {args.setting} ({' '.join(setting)}), {args.steps} steps, "
          f"seeds {args.seeds}; mean +- std over seeds\n")  # fmt: skip
    print(
        "| preset | peak approx_kl | mean approx_kl | updates with KL > 0.02 | clip fraction "
        "| value-loss variance | final return (last 20 ep.) | per seed |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def cell(rows: list[dict[str, float]], key: str, fmt: str) -> str:
        values = np.array([r[key] for r in rows])
        return f"{values.mean():{fmt}} +- {values.std():{fmt}}"

    for preset in PRESETS:
        rows = [results[(preset, s)] for s in args.seeds]
        per_seed = ", ".join(f"{r['final_return']:.0f}" for r in rows)
        print(
            f"| {preset} | {cell(rows, 'peak_kl', '.3f')} | {cell(rows, 'mean_kl', '.4f')} "
            f"| {cell(rows, 'kl_over', '.0%')} | {cell(rows, 'clip_fraction', '.3f')} "
            f"| {cell(rows, 'value_loss_var', '.3g')} | {cell(rows, 'final_return', '.1f')} "
            f"| {per_seed} |"
        )


if __name__ == "__main__":
    main()
