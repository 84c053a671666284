"""Our PPO against Stable-Baselines3's PPO on CartPole-v1: env steps per second, and returns.

Same hyperparameters on both sides: 4 envs x 128 steps, 4 epochs, 4 minibatches (of 128), separate
64-64 tanh policy and value networks, gamma 0.99, GAE lambda 0.95, clip 0.2 (policy and value),
entropy 0.01, value 0.5 x MSE, grad norm 0.5, Adam eps 1e-5, lr 2.5e-4 annealed linearly (ours to
0.001x: a schedule LR must stay > 0; SB3's to 0), one torch thread, CPU.

Throughput (default): the two trainers live in one process and advance in alternating chunks
(order flipped every round), so machine noise hits both alike. Ours runs the real training path
(``OnPolicyWorkspace``: TensorBoard, evaluation and checkpoints at their usual cadence).

    python benchmarks/ppo_throughput.py [--steps 200000] [--chunk 10240]
    python benchmarks/ppo_throughput.py --returns [--seeds 0 1 2] [--steps 500000] [--jobs 2]

``--returns``: our PPO alone, one full run per seed, mean return of the last 20 training episodes.
Needs ``pip install -e .[bench]`` (stable-baselines3) for the throughput mode.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

LR = 2.5e-4


def our_workspace(steps: int, seed: int, run_dir: Path, extra: tuple[str, ...] = ()):
    from training.build import workspace_from_overrides

    anneal = []  # every network: linear from lr to 0.001 x lr over the run
    for net in ("encoder", "actor", "critic"):
        anneal += [f"lr_schedule.{net}.type=linear"]
        anneal += [f"lr_schedule.{net}.intervals.0.final_lr={LR * 1e-3}"]
    overrides = [
        "agent=ppo", "env=cartpole", "lr_schedule=constant", *anneal, f"lr={LR}",
        f"num_train_frames={steps}", f"seed={seed}", "progress=lines", "resume.enabled=false",
        *extra,
    ]  # fmt: skip
    return workspace_from_overrides(overrides, run_dir)


def sb3_model(seed: int):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    towers = {"activation_fn": torch.nn.Tanh, "net_arch": {"pi": [64, 64], "vf": [64, 64]}}
    envs = make_vec_env("CartPole-v1", n_envs=4, seed=seed)
    return PPO(
        "MlpPolicy", envs, learning_rate=lambda remaining: LR * remaining, n_steps=128,
        batch_size=128, n_epochs=4, gamma=0.99, gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2,
        ent_coef=0.01,
        vf_coef=0.5, max_grad_norm=0.5, seed=seed, device="cpu", policy_kwargs=towers,
    )  # fmt: skip


def throughput(steps: int, chunk: int) -> None:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        sys.exit("stable-baselines3 is not installed: pip install -e '.[bench]' (or --returns)")
    side_by_side(lambda run_dir: our_workspace(steps, 0, run_dir), lambda: sb3_model(0), steps,
                 chunk)  # fmt: skip


def side_by_side(make_ours, make_sb3, steps: int, chunk: int) -> float:
    """Train ours (``make_ours(run_dir)``, a workspace) and SB3's (``make_sb3()``, a model) for
    ``steps`` each in alternating chunks in this process (order flipped every round), one torch
    thread; prints both speeds and returns ours / SB3."""
    import stable_baselines3
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ours = make_ours(Path(tmp))
        loop = ours.steps()
        sb3 = make_sb3()
        seconds = {"ours": 0.0, "sb3": 0.0}
        done = {"ours": 0, "sb3": 0}
        turn = 0
        while min(done.values()) < steps:
            for name in ("ours", "sb3") if turn % 2 == 0 else ("sb3", "ours"):
                if done[name] >= steps:
                    continue
                t0 = time.perf_counter()
                if name == "ours":
                    target = min(done["ours"] + chunk, steps)
                    for step in loop:
                        if step >= target:
                            break
                    done["ours"] = ours.global_step
                else:
                    sb3.learn(min(chunk, steps - done["sb3"]), reset_num_timesteps=False)
                    done["sb3"] = sb3.num_timesteps
                seconds[name] += time.perf_counter() - t0
            turn += 1
        for _ in loop:  # the final eval, LR log and checkpoint (timed too)
            pass
    sps = {name: done[name] / seconds[name] for name in done}
    print(f"stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}, 1 thread")
    print(f"ours: {done['ours']} steps in {seconds['ours']:.1f} s = {sps['ours']:,.0f} SPS")
    print(f"sb3:  {done['sb3']} steps in {seconds['sb3']:.1f} s = {sps['sb3']:,.0f} SPS")
    print(f"ratio ours / sb3: {sps['ours'] / sps['sb3']:.2f}x")
    return sps["ours"] / sps["sb3"]


def final_returns(seed: int, steps: int, extra: tuple[str, ...]) -> tuple[int, float, float, float]:
    import torch
    from cli import scalars

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ws = our_workspace(steps, seed, Path(tmp), extra)
        t0 = time.perf_counter()
        ws.train()
        seconds = time.perf_counter() - t0
        returns = [v for _, v in scalars(Path(tmp), "train/episode_return")]
    return seed, float(np.mean(returns[-20:])), float(ws.summary()["final_eval_return"]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--returns", action="store_true", help="final returns over seeds")
    parser.add_argument("--steps", type=int, help="env steps (default 200k, --returns 500k)")
    parser.add_argument("--chunk", type=int, default=10240, help="env steps per turn")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="--returns: parallel processes")
    parser.add_argument("--set", nargs="*", default=[], help="--returns: extra overrides of ours")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.returns:
        throughput(args.steps or 200_000, args.chunk)
        return
    steps = args.steps or 500_000
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = len(args.seeds)
        results = list(
            pool.map(final_returns, args.seeds, [steps] * runs, [tuple(args.set)] * runs)
        )
    print(f"our PPO, CartPole-v1, {steps} steps {' '.join(args.set)}: mean return of the last 20 "
          "training episodes")  # fmt: skip
    for seed, last20, final_eval, seconds in results:
        print(f"seed {seed}: {last20:.1f}  (final eval {final_eval:.1f}, {seconds:.0f} s)")
    means = [r[1] for r in results]
    print(f"mean over seeds: {np.mean(means):.1f} +- {np.std(means):.1f}")


if __name__ == "__main__":
    main()
