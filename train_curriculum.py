"""Train an agent on a curriculum environment with per-network learning-rate schedules.

    python train_curriculum.py lr_schedule=gentle_decay
    python train_curriculum.py lr_schedule=gentle_decay dry_run=true   # preview, no training

Order of work, on purpose: compose -> compile and validate the schedule (a bad schedule exits
here, before any env or agent exists) -> preview or train. Training writes TensorBoard scalars to
``<run dir>/tb``, checkpoints to ``<run dir>/checkpoints/latest.pt`` and resumes from it when
re-run in the same ``hydra.run.dir``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from training import checkpoint
import training.schema  # noqa: F401  (registers the root schema before composition)
import lr_scheduler
from lr_scheduler import ScheduleError, ScheduleSet

log = logging.getLogger("train")


def total_steps(cfg: DictConfig) -> int:
    """Run length in global steps (agent env steps, summed over parallel envs)."""
    return int(cfg.num_train_frames) // int(cfg.action_repeat)


def compile_run_schedules(cfg: DictConfig) -> ScheduleSet:
    """The one compile path shared by training, the preview and the tests."""
    return lr_scheduler.compile_schedules(
        cfg.lr_schedule, base_lr=cfg.lr, total_steps=total_steps(cfg), context=cfg
    )


def preview(cfg: DictConfig, schedules: ScheduleSet, run_dir: Path) -> None:
    """dry_run=true: print the table, write lr_schedule.png; no env, no agent."""
    print(lr_scheduler.format_preview(schedules))
    png = run_dir / "lr_schedule.png"
    title = f"lr_schedule={HydraConfig.get().runtime.choices.get('lr_schedule')}, lr={cfg.lr}"
    lr_scheduler.plot_schedules(schedules, total_steps(cfg), png, title=title)
    print(f"\nfingerprint {schedules.fingerprint}; wrote {png}")
    print("dry run: schedule valid; no env or agent was built")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_curriculum(cfg: DictConfig):
    """The run's CurriculumManager, or None when the env has no curriculum."""
    from envs import CurriculumManager

    if not (cfg.env.get("curriculum") and cfg.curriculum is not None):
        return None
    c = OmegaConf.to_container(cfg.curriculum, resolve=True)
    return CurriculumManager(c["stages"], c["window"], c["min_episodes"], c["success_threshold"])


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint has been written."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Diverged(FloatingPointError):
    """A loss became NaN or infinite: the run cannot recover, so it stops as failed."""


def check_finite(metrics: Mapping[str, float], step: int) -> None:
    """Raise `Diverged` naming the non-finite metrics, so a sweep records why the job failed."""
    bad = [f"{name}={value}" for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise Diverged(f"diverged at step {step}: {', '.join(bad)}")


class Workspace:
    """Everything one run owns: env, agent, replay, curriculum, LR controller, outputs."""

    def __init__(self, cfg: DictConfig, run_dir: Path, schedules: ScheduleSet):
        from envs.factory import make_env
        from training.telemetry import Telemetry

        state = self._begin(cfg, run_dir, schedules)
        self.env = make_env(cfg.env, cfg.action_repeat)
        self.eval_env = make_env(cfg.env, cfg.action_repeat)
        self.curriculum = make_curriculum(cfg)
        obs_space, act_space = self.env.observation_space, self.env.action_space
        self.agent = hydra.utils.instantiate(
            cfg.agent, obs_shape=list(obs_space.shape), action_shape=list(act_space.shape)
        )
        from agents.replay_buffer import ReplayBuffer

        r = cfg.replay
        self.replay = ReplayBuffer(
            obs_space.shape, obs_space.dtype, act_space.shape, r.capacity, r.batch_size,
            r.nstep, r.discount, seed=cfg.seed,
        )  # fmt: skip
        self.lr = lr_scheduler.LRController.for_optimizers(schedules, self.agent.optimizers)
        if state:
            self._restore(state)
        self.telemetry = Telemetry(
            run_dir, self.total_steps, cfg.progress, purge_step=self.global_step if state else None
        )
        self._signal: int | None = None
        self.result: dict[str, Any] = {"best_eval_return": None, "final_eval_return": None}

    def _begin(self, cfg: DictConfig, run_dir: Path, schedules: ScheduleSet) -> dict | None:
        """What every loop sets up first (this one and train_onpolicy's): run settings, the
        checkpoint to resume from (returned, or None), threads and seeds."""
        self.cfg = cfg
        self.run_dir = run_dir
        self.schedules = schedules
        self.total_steps = total_steps(cfg)
        self.ckpt_path = run_dir / "checkpoints" / "latest.pt"
        state = self._load_checkpoint()
        self.global_step = int(state["global_step"]) if state else 0
        self.episode = int(state.get("episode", 0)) if state else 0
        torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        return state

    # ----------------------------------------------------------------------- checkpoints

    def _load_checkpoint(self) -> dict[str, Any] | None:
        if not (self.cfg.resume.enabled and self.ckpt_path.exists()):
            return None
        state = checkpoint.load(self.ckpt_path)
        lr_scheduler.check_schedule_state(
            self.schedules, state.get("lr_schedule"), self.cfg.resume.allow_schedule_change
        )
        log.info("resuming from %s at global step %d", self.ckpt_path, state["global_step"])
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.replay.load_state_dict(state["replay"])
        # The interrupted episode cannot be continued (env internals are not saved): close it
        # in the buffer as a time-out, so n-step targets bootstrap instead of crossing it.
        self.replay.mark_episode_end()
        if self.curriculum is not None and state.get("curriculum"):
            self.curriculum.load_state_dict(state["curriculum"])
        if state.get("rng"):
            checkpoint.set_rng_state(state["rng"])
        self.result = state.get("result", {})

    def save(self) -> None:
        """Atomic checkpoint of everything needed to continue from ``global_step``."""
        self.telemetry.flush()  # events up to here are durable before the checkpoint says so
        checkpoint.save_atomic(
            {
                "global_step": self.global_step,
                "episode": self.episode,
                "agent": self.agent.state_dict(),
                "replay": self.replay.state_dict(),
                "lr_schedule": self.lr.state_dict(),
                "curriculum": self.curriculum.state_dict() if self.curriculum else None,
                "rng": checkpoint.rng_state(),
                "result": self.result,
                "config": OmegaConf.to_container(self.cfg, resolve=False),
            },
            self.ckpt_path,
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum  # handled at the top of the next step: never mid-update

    def _catch_signals(self) -> dict:
        """Route SIGTERM/SIGINT to `_on_signal`; returns the handlers to put back. Python lets
        only the main thread install handlers: elsewhere (thread-based sweep backends) the
        launcher owns the signals and this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _release_signals(handlers: dict) -> None:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    # ----------------------------------------------------------------------- loop

    def _difficulty(self, env) -> None:
        if self.curriculum is not None:
            env.unwrapped.set_difficulty(**self.curriculum.params)

    def _log_lrs(self, step: int) -> None:
        for name, value in self.lr.apply(step).items():
            self.telemetry.scalar(f"lr_{name}", value, step)

    def evaluate(self, step: int) -> float:
        self._difficulty(self.eval_env)
        returns, successes = [], []
        for k in range(self.cfg.num_eval_episodes):
            obs, _ = self.eval_env.reset(seed=self.cfg.seed * 100_003 + step + k)
            if hasattr(self.agent, "begin_episode"):  # recurrent policies drop their state
                self.agent.begin_episode()
            done, ep_return, info = False, 0.0, {}
            while not done:
                with torch.no_grad():
                    action = self.agent.act(obs, step, eval_mode=True)
                obs, reward, terminated, truncated, info = self.eval_env.step(action)
                ep_return += float(reward)
                done = terminated or truncated
            returns.append(ep_return)
            successes.append(float(info.get("success", False)))
        mean = float(np.mean(returns))
        self.telemetry.scalar("eval/episode_return", mean, step)
        self.telemetry.scalar("eval/success_rate", float(np.mean(successes)), step)
        best = self.result.get("best_eval_return")
        self.result["best_eval_return"] = mean if best is None else max(best, mean)
        self.result["final_eval_return"] = mean
        return mean

    def _end_episode(self, step: int, ep_return: float, info: dict) -> None:
        self.episode += 1
        self.telemetry.scalar("train/episode_return", ep_return, step)
        if self.curriculum is not None:
            success = bool(info.get("success", False))
            self.telemetry.scalar("train/episode_success", float(success), step)
            if self.curriculum.record_episode(success, global_step=step):
                log.info(
                    "curriculum: stage %d/%d (%s) at step %d",
                    self.curriculum.stage + 1, self.curriculum.num_stages,
                    self.curriculum.stage_name, step,
                )  # fmt: skip
                if self.curriculum.is_final and "final_stage_step" not in self.result:
                    self.result["final_stage_step"] = step
                    self.result["final_stage_seconds"] = time.time() - self._t0
                if step % self._log_every:  # log steps record the stage anyway
                    self.telemetry.scalar("curriculum/stage", self.curriculum.stage, step)

    def train(self) -> None:
        """Train to the end of the budget; on SIGTERM/SIGINT checkpoint and raise `Preempted`."""
        for _ in self.steps():
            pass

    def steps(self) -> Iterator[int]:
        """The training loop, yielding the global step after every env step.

        `train()` runs it to the end; benchmarks advance two workspaces in alternating chunks.
        """
        cfg, ar = self.cfg, self.cfg.action_repeat
        every = {
            name: max(1, int(cfg[f"{name}_every_frames"]) // ar)
            for name in ("eval", "log", "checkpoint")
        }
        self._log_every = every["log"]
        seed_steps = cfg.num_seed_frames // ar
        update_every = cfg.update_every_steps
        boundaries = [b for b in self.schedules.boundaries() if b > self.global_step]
        boundaries.append(math.inf)
        next_mark = 0
        start_step = self.global_step
        self._t0 = time.time() - self.result.get("wall_time_s", 0.0)
        handlers = self._catch_signals()
        step, last_return, metrics = self.global_step, float("nan"), {}
        try:
            self._difficulty(self.env)
            obs, _ = self.env.reset(seed=cfg.seed + self.episode)
            ep_return = 0.0
            while step < self.total_steps:
                self.global_step = step
                if self._signal is not None:
                    self.save()
                    raise Preempted(self._signal)
                if step % every["checkpoint"] == 0 and step != start_step:
                    self.save()
                if step % every["eval"] == 0:
                    self.evaluate(step)
                if step >= boundaries[next_mark] or step % every["log"] == 0:
                    while step >= boundaries[next_mark]:
                        next_mark += 1
                    self._log_lrs(step)
                    if step % every["log"] == 0:
                        self._log_progress(step, last_return, metrics)
                with torch.no_grad():
                    action = self.agent.act(obs, step, eval_mode=False)
                if step >= seed_steps and step % update_every == 0 and self.replay.can_sample:
                    self.lr.apply(step)
                    metrics = self.agent.update(self.replay.sample(), step)
                    check_finite(metrics, step)
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                done = terminated or truncated
                self.replay.add(obs, action, reward, next_obs, terminated, done)
                ep_return += float(reward)
                step += 1
                obs = next_obs
                if done:
                    self._end_episode(step, ep_return, info)
                    last_return, ep_return = ep_return, 0.0
                    self._difficulty(self.env)
                    obs, _ = self.env.reset(seed=cfg.seed + self.episode)
                yield step
            self.global_step = step
            self.evaluate(step)
            self._log_lrs(step)
            self.save()
        finally:
            self._release_signals(handlers)
            self.result["wall_time_s"] = time.time() - self._t0
            self.telemetry.close()

    def _log_progress(self, step: int, last_return: float, metrics: dict) -> None:
        self.telemetry.scalars(metrics, step, prefix="train/")
        fields: dict[str, Any] = {"return": f"{last_return:.1f}"}
        if self.curriculum is not None:
            c = self.curriculum
            self.telemetry.scalar("curriculum/stage", c.stage, step)
            self.telemetry.scalar("curriculum/success_rate", c.success_rate, step)
            fields["stage"] = f"{c.stage + 1}/{c.num_stages} {c.stage_name}"
        if self.result.get("final_eval_return") is not None:
            fields["eval"] = f"{self.result['final_eval_return']:.1f}"
        self.telemetry.progress(step, **fields)

    def summary(self) -> dict[str, Any]:
        c = self.curriculum
        return {
            **self.result,
            "global_step": self.global_step,
            "stage_reached": c.stage if c else None,
            "stage_name": c.stage_name if c else None,
            "num_stages": c.num_stages if c else None,
            "steps_per_s": self.global_step / max(self.result.get("wall_time_s", 0.0), 1e-9),
            "schedule_fingerprint": self.schedules.fingerprint,
        }


def make_workspace(cfg: DictConfig, run_dir: Path, schedules: ScheduleSet):
    """The loop that fits the agent: agents whose class sets ``on_policy = True`` (PPO) collect
    rollouts from vector envs (train_onpolicy.py); the others learn off-policy from replay."""
    agent_cls = hydra.utils.get_class(cfg.agent._target_)
    if cfg.compile and not getattr(agent_cls, "on_policy", False):
        raise ValueError(f"compile=true: only agent=ppo runs its update through torch.compile, "
                         f"not {agent_cls.__name__}; leave compile=false")  # fmt: skip
    if getattr(agent_cls, "on_policy", False):
        from training.onpolicy import OnPolicyWorkspace

        return OnPolicyWorkspace(cfg, run_dir, schedules)
    return Workspace(cfg, run_dir, schedules)


def job_hparams(cfg: DictConfig) -> dict[str, Any]:
    """What the TensorBoard HParams tab compares: the chosen presets, the main knobs, and every
    command-line override of this job (sweeps vary those)."""
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    hparams: dict[str, Any] = {
        "agent": choices.get("agent"),
        "encoder_bundle": choices.get("encoder_bundle@agent"),
        "env": choices.get("env"),
        "curriculum_preset": choices.get("curriculum_preset"),
        "lr_schedule": choices.get("lr_schedule"),
        "lr": float(cfg.lr),
        "seed": int(cfg.seed),
        "num_train_frames": int(cfg.num_train_frames),
    }
    for override in hydra_cfg.overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        hparams.setdefault(key, value)
    return {k: v for k, v in hparams.items() if v is not None}


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """``result.json``: what the sweep summary ranks (written for failed runs too)."""
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def compose_config(overrides: list[str]) -> DictConfig:
    """The run config composed from ``cfgs/`` as the CLI would, without Hydra's run dir."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(__file__).resolve().parent / "cfgs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def workspace_from_overrides(overrides: list[str], run_dir: Path):
    """The workspace the CLI would train (for benchmarks and tests), e.g.
    ``["agent=ppo", "env=cartpole", "lr=1e-3"]``."""
    cfg = compose_config(overrides)
    return make_workspace(cfg, run_dir, compile_run_schedules(cfg))


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Returns the final evaluation return: the objective of an Optuna sweep (-inf if the run
    failed: the worst value for a maximising search, which goes on and steers away from it).

    A failure is recorded in ``result.json`` (status and error; traceback in the job's log).
    A single run then exits non-zero; a sweep job returns, so the other jobs go on and the sweep
    summary (sweeps/summary.py) reports it and sets the exit status.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN

    def fail(message: str, exit_code: int, result: dict[str, Any] | None = None) -> float:
        write_result(run_dir, {**(result or {}), "status": "failed", "error": message})
        print(f"error: {message}", file=sys.stderr)
        if not in_sweep:
            sys.exit(exit_code)
        return -math.inf

    try:
        schedules = compile_run_schedules(cfg)
    except ScheduleError as err:
        return fail(f"invalid learning-rate schedule: {err}", 2)
    if schedules.disabled:
        print(f"{lr_scheduler.DISABLE_ENV_VAR}=1: lr_schedule ignored; every network trains "
              f"at the base lr={cfg.lr}", file=sys.stderr)  # fmt: skip
    if cfg.dry_run:
        preview(cfg, schedules, run_dir)
        return None
    try:
        workspace = make_workspace(cfg, run_dir, schedules)
    except lr_scheduler.ScheduleMismatchError as err:
        return fail(f"resume refused: {err}. To resume with the new schedule anyway, pass "
                    "resume.allow_schedule_change=true", 2)  # fmt: skip
    except Exception as err:
        log.exception("could not build the run")
        return fail(f"{type(err).__name__}: {err}", 1)
    from training.telemetry import write_hparams

    try:
        workspace.train()
    except Preempted as stop:
        log.info("%s: checkpoint written at step %d; re-run in %s to resume",
                 stop, workspace.global_step, run_dir)  # fmt: skip
        sys.exit(128 + stop.signum)
    except Exception as err:
        log.exception("training failed at step %d", workspace.global_step)
        summary = workspace.summary()
        write_hparams(run_dir / "tb", {**job_hparams(cfg), "status": "failed"}, summary)
        return fail(f"{type(err).__name__}: {err}", 1, summary)
    summary = {**workspace.summary(), "status": "completed", "error": None}
    write_result(run_dir, summary)
    write_hparams(run_dir / "tb", {**job_hparams(cfg), "status": "completed"}, summary)
    log.info("done: %s", json.dumps(summary))
    final = summary.get("final_eval_return")
    return -math.inf if final is None else float(final)


if __name__ == "__main__":
    # train_onpolicy imports this module by name: let it find this run's module (one Preempted
    # class, one Workspace) instead of executing a second copy.
    sys.modules.setdefault("train_curriculum", sys.modules[__name__])
    os.environ.setdefault("MPLBACKEND", "Agg")
    main()
