"""Stage-triggered ``stage_based`` against the fixed-fraction ``stage_based_fixed`` and
``constant`` on the default gimbal run (DrQ-v2, state observations, ``balanced`` curriculum).

Each run is the default 100k-step run (so the fixed fractions mean what they mean there), cut at
``--cap`` steps to fit a CPU budget: the evaluation at the cap (every ``eval_every_frames``) is
its final eval return, and a run that has not reached the final stage by the cap counts as
censored there. Ten or more seeds per arm, means with 95 % bootstrap confidence intervals, paired
differences by seed. The commit is printed with the table.

    python benchmarks/stage_study.py [--seeds 0 1 ... 9] [--cap 40000] [--cache DIR]

Each finished run is kept in ``--cache`` (one JSON file a run; a run is claimed by a file made
with O_EXCL first), so a stopped study picks up where it was, and several processes (on one
machine or sharing the dir) split the runs between them; each prints the table once every run
is there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from warmup_study import bootstrap_ci, commit  # noqa: E402

ARMS = ("constant", "stage_based", "stage_based_fixed")


def run(arm: str, seed: int, cap: int) -> dict:
    import torch

    from training.build import workspace_from_overrides

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    overrides = [f"lr_schedule={arm}", f"seed={seed}", "progress=lines", "resume.enabled=false"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = workspace_from_overrides(overrides, Path(tmp))
        for step in ws.steps():
            if step > cap:  # the eval at `cap` has run (it comes at the top of that step)
                break
        result = dict(ws.result)
    entries = result["stage_entry_steps"]
    final = result.get("final_stage_step")
    return {
        "entries": entries,
        "final_stage_step": final if final is not None else cap,
        "reached_final": final is not None,
        "eval_return": result["final_eval_return"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--cap", type=int, default=40_000)
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".stage_study")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    jobs = [(a, s) for s in args.seeds for a in ARMS]

    def done(arm: str, seed: int) -> Path:
        return args.cache / f"{arm}-seed{seed}-cap{args.cap}.json"

    for arm, seed in jobs:
        claim = done(arm, seed).with_suffix(".claim")
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue  # finished, or another process runs it
        out = run(arm, seed, args.cap)
        tmp = done(arm, seed).with_suffix(".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(done(arm, seed))
        print(f"{arm} seed {seed}: {out}", flush=True)
    while not all(done(*job).exists() for job in jobs):
        time.sleep(10)  # runs another process claimed
    results = {job: json.loads(done(*job).read_text()) for job in jobs}
    print(f"commit {commit()}; default gimbal run (DrQ-v2, state, balanced, 100k-step schedule) "
          f"cut at {args.cap} steps; seeds {args.seeds}; mean [95 % bootstrap CI]\n")  # fmt: skip
    print("| arm | steps to final stage (censored at the cap) | reached final stage "
          "| eval return at the cap |")  # fmt: skip
    print("|---|---|---|---|")
    table = {}
    for arm in ARMS:
        rows = [results[(arm, s)] for s in args.seeds]
        final = np.array([r["final_stage_step"] for r in rows], dtype=float)
        ret = np.array([r["eval_return"] for r in rows], dtype=float)
        table[arm] = {"final": final, "ret": ret}
        (flo, fhi), (rlo, rhi) = bootstrap_ci(final), bootstrap_ci(ret)
        reached = sum(r["reached_final"] for r in rows)
        print(f"| {arm} | {final.mean():.0f} [{flo:.0f}, {fhi:.0f}] | {reached}/{len(rows)} "
              f"| {ret.mean():.1f} [{rlo:.1f}, {rhi:.1f}] |")  # fmt: skip
    print("\nstage entry steps per seed:")
    for arm in ARMS:
        print(f"  {arm}: " + "; ".join(
            f"s{s} {results[(arm, s)]['entries'][1:]}" for s in args.seeds))  # fmt: skip
    print("\ndifferences (paired by seed), mean [95 % bootstrap CI]; * = the CI excludes 0:")
    for a, b in (("stage_based", "constant"), ("stage_based", "stage_based_fixed"),
                 ("stage_based_fixed", "constant")):  # fmt: skip
        parts = []
        for key, label, fmt in (("final", "steps to final stage", ".0f"),
                                ("ret", "eval return", ".1f")):  # fmt: skip
            diff = table[a][key] - table[b][key]
            lo, hi = bootstrap_ci(diff)
            mark = "*" if lo > 0 or hi < 0 else ""
            parts.append(f"{label} {diff.mean():+{fmt}} [{lo:+{fmt}}, {hi:+{fmt}}]{mark}")
        print(f"  {a} - {b}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
