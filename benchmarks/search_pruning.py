"""Wall time a pruner saves on a real search: the same Optuna search twice, without pruning and
with the median pruner, through the real CLI.

The search: PPO on CartPole, ``--frames`` per trial (default 40k), ``--trials`` trials (default
12, the baseline trial included), base ``lr`` log-uniform over 1e-6..1e-2 (a range where many
draws are hopeless), the preset and the warmup length, TPE with a fixed seed, one job after the
other (basic launcher). The first trials are random draws (TPE's startup), the same in both runs;
later ones follow the values seen, so the runs may part ways there: each line gives the best
value found too. Other processes' CPU use meanwhile is printed, as in sweep_scaling.py.

    python benchmarks/search_pruning.py [--frames 40000] [--trials 12]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sweep_scaling import busy_cpu_s, own_cpu_s  # noqa: E402

from sweeps import study as studies  # noqa: E402


def timed_search(pruner: str, frames: int, trials: int, sweep_dir: Path) -> dict:
    cmd = [
        sys.executable, str(ROOT / "train_curriculum.py"), "-m", "hydra/sweeper=lr_search",
        f"hydra.sweeper.study_name=bench_{pruner}", f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.n_jobs=1", f"hydra.sweeper.pruner.name={pruner}",
        "hydra.sweeper.pruner.n_startup_trials=3", "hydra.sweeper.sampler.n_startup_trials=5",
        "lr=tag(log, interval(1e-6, 1e-2))", "agent=ppo", "env=cartpole",
        f"num_train_frames={frames}", f"eval_every_frames={frames // 8}",
        f"checkpoint_every_frames={frames // 2}", f"log_every_frames={frames // 4}",
        "num_eval_episodes=3", "progress=lines", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    busy0, own0, t0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    others = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s() - own0)) / wall
    study, _ = studies.load_study(sweep_dir)
    states = [t.state.name for t in study.trials]
    complete = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    steps = sum(t.intermediate_values and max(t.intermediate_values) or 0 for t in study.trials)
    return {
        "wall": wall, "others": others, "trials": len(states), "pruned": states.count("PRUNED"),
        "best": max(complete) if complete else float("nan"), "reported_steps": steps,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40_000)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in ("none", "median"):
            results[pruner] = r = timed_search(pruner, args.frames, args.trials, Path(tmp) / pruner)
            print(f"pruner={pruner:7s} {r['trials']} trials ({r['pruned']} pruned): "
                  f"{r['wall']:.1f} s wall, best final_eval_return {r['best']:.1f}; other "
                  f"processes used {r['others']:.2f} cores", flush=True)  # fmt: skip
    ratio = results["none"]["wall"] / results["median"]["wall"]
    print(
        f"pruning: {ratio:.2f}x faster ({results['none']['wall']:.1f} s -> "
        f"{results['median']['wall']:.1f} s) for {args.trials} trials of {args.frames} frames"
    )


if __name__ == "__main__":
    main()
