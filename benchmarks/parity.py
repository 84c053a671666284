"""Our PPO (``experiment=ppo_mujoco``) against Stable-Baselines3's PPO on gymnasium MuJoCo tasks,
with the same hyperparameters and the same normalisation, beside CleanRL's published table.

Both sides: CleanRL's ``ppo_continuous_action.py`` settings. One env, rollouts of 2048 steps,
10 epochs of 32 minibatches (64 transitions), lr 3e-4 annealed linearly (SB3 to 0, ours to
0.001x: a schedule LR stays > 0), gamma 0.99, GAE 0.95, clip 0.2 for the ratio and the value,
no entropy bonus, vf 0.5, grad norm 0.5, 64-64 tanh towers with orthogonal init, log-std from 0,
observations normalised and rewards scaled by the running return std, both clipped to +-10
(ours: ``agent.norm_obs/norm_reward``; SB3: ``VecNormalize``). One torch thread per run.

Per run: the final deterministic evaluation (10 episodes, normalisation statistics frozen),
the mean of the last 10 training episodes (what CleanRL's table reports), and steps/s over
training (ours: the whole loop with TensorBoard and checkpoints; evaluation only at the start
and the end, outside SB3's timing, inside ours).

    python benchmarks/parity.py [--tasks Hopper-v5 HalfCheetah-v5] [--ours 5] [--sb3 3]
                                [--steps 1000000] [--cache DIR] [--set agent.clip_vloss=false]

Each finished run is one JSON file in ``--cache`` (claimed first by a file made with O_EXCL), so
a stopped study picks up where it was and several processes split the runs; the table is
printed from whatever has finished (``--table`` prints it without running anything). The
runs alternate between ours and SB3 so that a partial study has both. Needs the ``mujoco`` and
``bench`` extras.
"""

from __future__ import annotations

import argparse
import hashlib
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
sys.path.insert(0, str(ROOT / "tests"))

from warmup_study import bootstrap_ci, commit  # noqa: E402

LR = 3e-4
EVAL_EPISODES = 10
LAST_EPISODES = 10
# CleanRL's published ppo_continuous_action.py, 1M steps, mean +- std over seeds (its docs'
# benchmark table; those runs used the v2 envs of gym 0.23, not gymnasium's v5).
CLEANRL = {
    "Hopper": (2231.12, 656.72),
    "Walker2d": (3050.22, 1136.21),
    "HalfCheetah": (1822.82, 928.45),
}


def run_ours(task: str, seed: int, steps: int, extra: tuple[str, ...]) -> dict:
    import torch
    from cli import scalars

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ws = our_workspace(task, seed, steps, extra, Path(tmp))
        t0 = time.perf_counter()
        ws.train()
        seconds = time.perf_counter() - t0
        returns = [v for _, v in scalars(Path(tmp), "train/episode_return")]
    return {
        "final_eval": float(ws.result["final_eval_return"]),
        "last_train": float(np.mean(returns[-LAST_EPISODES:])),
        "steps": int(ws.global_step),
        "seconds": seconds,
    }


def our_workspace(task: str, seed: int, steps: int, extra: tuple[str, ...], run_dir: Path):
    from training.build import workspace_from_overrides

    overrides = [
        "experiment=ppo_mujoco", f"env.id={task}", f"seed={seed}", f"num_train_frames={steps}",
        f"eval_every_frames={steps}", f"num_eval_episodes={EVAL_EPISODES}",
        "progress=lines", "resume.enabled=false", *extra,
    ]  # fmt: skip
    return workspace_from_overrides(overrides, run_dir)


def sb3_model(task: str, seed: int):
    """SB3's PPO with CleanRL's settings, on VecNormalize'd envs (``model.get_env()``)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    envs = VecNormalize(
        make_vec_env(task, n_envs=1, seed=seed), norm_obs=True, norm_reward=True,
        clip_obs=10.0, clip_reward=10.0, gamma=0.99,
    )  # fmt: skip
    towers = {"activation_fn": torch.nn.Tanh, "net_arch": {"pi": [64, 64], "vf": [64, 64]}}
    model = PPO(
        "MlpPolicy", envs, learning_rate=lambda remaining: LR * remaining, n_steps=2048,
        batch_size=64, n_epochs=10, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
        clip_range_vf=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, seed=seed,
        device="cpu", policy_kwargs=towers,
    )  # fmt: skip
    return model


def run_sb3(task: str, seed: int, steps: int, extra: tuple[str, ...]) -> dict:
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    if extra:
        raise SystemExit("--set applies to our PPO only; run SB3 rows without it")
    torch.set_num_threads(1)
    model = sb3_model(task, seed)
    envs = model.get_env()
    t0 = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - t0
    last = [ep["r"] for ep in model.ep_info_buffer][-LAST_EPISODES:]
    eval_env = VecNormalize(make_vec_env(task, n_envs=1, seed=seed + 10_000), training=False,
                            norm_reward=False, clip_obs=10.0)  # fmt: skip
    eval_env.obs_rms = envs.obs_rms  # the training statistics, frozen
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True)
    return {
        "final_eval": float(mean),
        "last_train": float(np.mean(last)),
        "steps": int(model.num_timesteps),
        "seconds": seconds,
    }


def jobs(args) -> list[tuple[str, str, int]]:
    """Ours and SB3 alternate, task by task, seed by seed: a partial study has both."""
    out = []
    for task in args.tasks:
        for seed in range(max(args.ours, args.sb3)):
            if seed < args.ours:
                out.append(("ours", task, seed))
            if seed < args.sb3:
                out.append(("sb3", task, seed))
    return out


def result_path(args, who: str, task: str, seed: int) -> Path:
    tag = ""
    if who == "ours" and args.set:
        tag = "-" + hashlib.sha1(" ".join(args.set).encode()).hexdigest()[:8]
    return args.cache / f"{who}{tag}-{task}-seed{seed}-{args.steps}.json"


def table(args) -> None:
    print(f"PPO parity, {args.steps} steps, one env, one torch thread per run; ours: "
          f"experiment=ppo_mujoco {' '.join(args.set)}; mean, std and 95 % bootstrap CI over "
          "seeds (CI shown from 2 seeds on)\n")  # fmt: skip
    print("| task | who | seeds | final eval return | last 10 training episodes | steps/s | "
          "commits |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks:
        for who in ("ours", "sb3"):
            rows = []
            for seed in range(args.ours if who == "ours" else args.sb3):
                path = result_path(args, who, task, seed)
                if path.exists():
                    rows.append(json.loads(path.read_text()))
            if not rows:
                continue
            cells = []
            for key in ("final_eval", "last_train"):
                values = np.array([r[key] for r in rows])
                cell = f"{values.mean():.0f} +- {values.std():.0f}"
                if len(values) > 1:
                    lo, hi = bootstrap_ci(values)
                    cell += f" [{lo:.0f}, {hi:.0f}]"
                cells.append(cell)
            sps = np.array([r["steps"] / r["seconds"] for r in rows])
            commits = ", ".join(sorted({r["commit"] for r in rows}))
            print(f"| {task} | {who} | {len(rows)} | {cells[0]} | {cells[1]} | "
                  f"{sps.mean():.0f} | {commits} |")  # fmt: skip
        name = task.split("-")[0]
        if name in CLEANRL:
            mean, std = CLEANRL[name]
            print(f"| {task} | CleanRL (published, {name}-v2) | - | - | {mean:.0f} +- {std:.0f} "
                  "| - | - |")  # fmt: skip


def claim(path: Path) -> bool:
    """Claim a run with a file made with O_EXCL holding this process's pid; a claim whose
    process is gone (killed mid-run on this machine) is taken over."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return False  # its process is alive
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # a dead claim
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["Hopper-v5", "HalfCheetah-v5"])
    parser.add_argument("--ours", type=int, default=5, help="seeds of our PPO")
    parser.add_argument("--sb3", type=int, default=3, help="seeds of SB3's PPO")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results" / "parity")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides of ours")
    parser.add_argument("--only", choices=("ours", "sb3"), help="run one side's rows only")
    parser.add_argument("--table", action="store_true", help="print the table, run nothing")
    parser.add_argument(
        "--speed",
        type=int,
        metavar="STEPS",
        help="only time ours against SB3 side by side for STEPS on each task",
    )
    args = parser.parse_args()
    code = commit()  # the code this process runs (a commit made meanwhile does not change it)
    if args.speed:
        from ppo_throughput import side_by_side

        logging.basicConfig(level=logging.WARNING)
        for task in args.tasks:
            print(f"{task}, {args.speed} steps each, alternating chunks of 20480:")
            side_by_side(lambda d, t=task: our_workspace(t, 0, args.speed, tuple(args.set), d),
                         lambda t=task: sb3_model(t, 0), args.speed, 20480)  # fmt: skip
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for who, task, seed in jobs(args):
            if args.only and who != args.only:
                continue
            path = result_path(args, who, task, seed)
            if path.exists() or not claim(path.with_suffix(".claim")):
                continue  # finished, or another live process runs it
            runner = run_ours if who == "ours" else run_sb3
            out = {**runner(task, seed, args.steps, tuple(args.set)), "commit": code,
                   "overrides": args.set if who == "ours" else []}  # fmt: skip
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(out, indent=1))
            tmp.replace(path)
            print(f"{who} {task} seed {seed}: {out}", flush=True)
    table(args)


if __name__ == "__main__":
    main()
