"""Wall time of one 4-job sweep (seeds 0-3) with the basic launcher against joblib.

The same command line twice, through the real CLI: first `hydra/launcher=basic` (one job after
the other), then `hydra/launcher=joblib hydra.launcher.n_jobs=<cores>`. Each job is long enough
(default 8k frames, ~20-40 s on a laptop core) that process start-up does not dominate.
One run each, so on a busy machine the ratio moves; the ideal is min(cores, 4). To tell, each
line also gives the CPU that other processes used meanwhile (Linux, in cores on average).

    python benchmarks/sweep_scaling.py [--frames 8000] [--jobs 4] [--n-jobs <cores>]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_sweep(launcher: list[str], frames: int, jobs: int, sweep_dir: Path):
    """(wall seconds, cores used by other processes meanwhile) of one sweep."""
    cmd = [
        sys.executable, str(ROOT / "train_curriculum.py"), "-m",
        f"seed={','.join(str(s) for s in range(jobs))}", f"num_train_frames={frames}",
        f"eval_every_frames={frames // 2}", "progress=lines", *launcher,
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    start, busy, own = time.perf_counter(), busy_cpu_s(), own_cpu_s()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, ((busy_cpu_s() - busy) - (own_cpu_s() - own)) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8_000)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        basic = timed_sweep([], args.frames, args.jobs, Path(tmp) / "basic")
        joblib = timed_sweep(
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
            args.frames, args.jobs, Path(tmp) / "joblib",
        )  # fmt: skip
    print(f"{args.jobs} jobs x {args.frames} frames, {os.cpu_count()} cores")
    for name, (wall, others) in (("basic", basic), (f"joblib (n_jobs={args.n_jobs})", joblib)):
        print(f"{name:18s} {wall:6.1f} s   other processes meanwhile: {others:.2f} cores")
    print(f"speed-up basic / joblib: {basic[0] / joblib[0]:.2f}x")


if __name__ == "__main__":
    main()
