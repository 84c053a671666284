"""DrQ-v2 on the DeepMind Control Suite: a resumable multi-seed study, and the cost of a pixel
step on this machine.

Study (``experiment=drqv2_dmc_state`` or ``drqv2_dmc_pixels``, DrQ-v2's published settings):

    python benchmarks/dmc_study.py --experiment drqv2_dmc_state --task cheetah_run \
        --frames 500000 --seeds 0 1 2
    python benchmarks/dmc_study.py --experiment drqv2_dmc_pixels --task cartpole_swingup \
        --frames 500000 --seeds 0 1 2 --set device=cuda      # DrQ-v2's curves: a GPU

Each finished run is one JSON file in ``--cache`` (final eval return, the eval curve, wall
time), claimed first as `parity.py` does, so a stopped study picks up where it was; the table
(mean, std, 95 % bootstrap CI over seeds) is printed from whatever has finished.

Cost (``--cost STEPS``): a pixel run of cartpole_swingup on this machine, the time of every env
step (physics x action repeat + one 84x84 render) and every update, measured apart:

    python benchmarks/dmc_study.py --cost 2000 [--set replay.batch_size=256]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from parity import claim  # noqa: E402
from warmup_study import bootstrap_ci, commit  # noqa: E402


def overrides(experiment: str, task: str, seed: int, frames: int, extra: list[str]) -> list[str]:
    domain, _, name = task.partition("_")
    return [
        f"experiment={experiment}", f"env.domain={domain}", f"env.task={name}", f"seed={seed}",
        f"num_train_frames={frames}", "progress=lines", "resume.enabled=false", *extra,
    ]  # fmt: skip


def run(experiment: str, task: str, seed: int, frames: int, extra: list[str]) -> dict:
    import torch
    from cli import scalars

    from training.build import workspace_from_overrides

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace_from_overrides(overrides(experiment, task, seed, frames, extra), Path(tmp))
        t0 = time.perf_counter()
        ws.train()
        seconds = time.perf_counter() - t0
        curve = scalars(Path(tmp), "eval/episode_return")
    return {
        "final_eval": float(ws.result["final_eval_return"]),
        "curve": [(int(s) * int(ws.cfg.action_repeat), float(v)) for s, v in curve],  # frames
        "steps": int(ws.global_step),
        "seconds": seconds,
    }


def cost(steps: int, extra: list[str]) -> None:
    """Time env steps (physics + render) and updates of a pixel run apart."""
    import torch

    from training.build import workspace_from_overrides

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    args = overrides("drqv2_dmc_pixels", "cartpole_swingup", 0, 2 * steps, extra)
    args += ["replay.capacity=20000", f"eval_every_frames={10 * steps}", "num_seed_frames=2000"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace_from_overrides(args, Path(tmp))
        timed = {"env step (2 physics steps + render)": [], "update": []}

        def timer(fn, bucket):
            def wrapped(*a, **k):
                t0 = time.perf_counter()
                out = fn(*a, **k)
                bucket.append(time.perf_counter() - t0)
                return out

            return wrapped

        ws.env.step = timer(ws.env.step, timed["env step (2 physics steps + render)"])
        ws.agent.update = timer(ws.agent.update, timed["update"])
        t0 = time.perf_counter()
        ws.train()
        total = time.perf_counter() - t0
    print(f"commit {commit()}; cartpole_swingup pixels, DrQ-v2 settings ({' '.join(extra)}), "
          f"{ws.global_step} agent steps, one torch thread")  # fmt: skip
    for name, times in timed.items():
        ms = 1e3 * np.array(times)
        print(f"  {name}: median {np.median(ms):.1f} ms, mean {ms.mean():.1f} ms ({len(ms)} calls)")
    print(f"  whole run: {total:.1f} s, {ws.global_step / total:.1f} agent steps/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="drqv2_dmc_state")
    parser.add_argument("--task", default="cheetah_run")
    parser.add_argument("--frames", type=int, default=500_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results" / "dmc")
    parser.add_argument("--table", action="store_true", help="print the table, run nothing")
    parser.add_argument("--cost", type=int, metavar="STEPS", help="time a pixel run's parts")
    args = parser.parse_args()
    if args.cost:
        cost(args.cost, args.set)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    code = commit()
    tag = "-".join([args.experiment, args.task, str(args.frames), *args.set]).replace("/", "_")

    def path(seed: int) -> Path:
        return args.cache / f"{tag}-seed{seed}.json"

    if not args.table:
        for seed in args.seeds:
            if path(seed).exists() or not claim(path(seed).with_suffix(".claim")):
                continue
            out = {**run(args.experiment, args.task, seed, args.frames, args.set), "commit": code}
            tmp = path(seed).with_suffix(".tmp")
            tmp.write_text(json.dumps(out))
            tmp.replace(path(seed))
            print(f"seed {seed}: final eval {out['final_eval']:.1f} in {out['seconds']:.0f} s")
    rows = [json.loads(path(s).read_text()) for s in args.seeds if path(s).exists()]
    if not rows:
        return
    final = np.array([r["final_eval"] for r in rows])
    lo, hi = bootstrap_ci(final) if len(final) > 1 else (final[0], final[0])
    sps = np.mean([r["steps"] / r["seconds"] for r in rows])
    commits = ", ".join(sorted({r["commit"] for r in rows}))
    print(f"{args.experiment} {args.task}, {args.frames} frames, {len(rows)} seeds ({commits}): "
          f"final eval {final.mean():.1f} +- {final.std():.1f} [{lo:.1f}, {hi:.1f}], "
          f"{sps:.0f} agent steps/s")  # fmt: skip


if __name__ == "__main__":
    main()
