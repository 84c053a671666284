"""What both training loops share (`Workspace`): one run in one run dir.

A run's life, in the order `Workspace.__init__` does it (the loops only add their envs, agent
and storage in `build`):

1. open the run's checkpoint, if the run dir has one, and check it against this run
   (`training.state.RunState.open`: a refused resume stops here, before anything is built);
2. seed, then build envs, agent and storage (`build`, per loop);
3. put back everything that must survive a stop, in one place (`RunState.restore`): the
   components, RNG states, counters and result, then the LR controller over the restored
   optimizers with its schedule and KL-guard state; it returns where TensorBoard must cut the
   interrupted run's tail (a fresh run only binds the controller);
4. write the LRs for the step, open TensorBoard.

A checkpoint is `RunState.capture` of the workspace: every component of `components()` by
name, plus the counters and bookkeeping. A loop that adds a component (a replay buffer) adds it
to `components()`, and both saving and restoring follow.
"""

from __future__ import annotations

import bisect
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import lr_scheduler
from lr_scheduler import ScheduleSet
from training import checkpoint
from training.run import Diverged, Preempted, Pruned, make_curriculum, seed_everything, total_steps
from training.state import RunState, state_bytes

log = logging.getLogger("train")


class Workspace:
    """One run: its settings, its state across stops, evaluation and outputs.

    Subclasses are the loops (`training.offpolicy`, `training.onpolicy`); they implement
    `build` (envs, ``self.agent``, storage) and `steps` (the loop, a generator of global steps),
    and extend `components` with what else they checkpoint.
    """

    # Whether the loop evaluates at the step it resumes from (the off-policy loop evaluates at
    # the top of a step; the on-policy loop after the update that reaches it): the step a
    # checkpoint written during an evaluation purges TensorBoard from.
    evaluates_at_resume_step = True

    def __init__(self, cfg: DictConfig, run_dir: Path, schedules: ScheduleSet):
        self.cfg = cfg
        self.run_dir = run_dir
        self.schedules = schedules
        self.total_steps = total_steps(cfg)
        self.run_state = RunState(cfg, run_dir, schedules)
        self.ckpt_path = self.run_state.path
        state = self.run_state.open()  # a refused resume raises here, before anything exists
        torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        if OmegaConf.select(cfg, "agent.compile", default=False):
            # Dynamo's caches live as long as the process and keep at most `recompile_limit` (8)
            # variants of one function. A process that runs job after job (joblib reuses its
            # workers) would hand the 3rd DrQ-v2 job's Adam steps back to eager, silently (each
            # new optimizer is a new variant). Every job starts from empty caches.
            torch._dynamo.reset()
        self.global_step = 0
        self.episode = 0
        self.result: dict[str, Any] = {"best_eval_return": None, "final_eval_return": None}
        self.curriculum = make_curriculum(cfg)
        if self.curriculum is not None:
            self.result.update(stage_entry_steps=[0], stage_entry_seconds=[0.0])
        self.build()
        self._check_curriculum_env()
        self.run_state.probe(self.checkpoint_bytes())
        purge_step = None
        if state is not None:
            purge_step = self.run_state.restore(self, state)  # everything, in one place
        else:
            self.lr = self.bind_lr()
        self.lr.apply(self.global_step)
        # Steps at which some LR jumps: the loops log the LRs there (stage entries add theirs).
        self.lr_marks = [b for b in self.lr.schedules.boundaries() if b > self.global_step]
        from training.telemetry import Telemetry

        self.telemetry = Telemetry(run_dir, self.total_steps, cfg.progress, purge_step)
        self._signal: int | None = None
        self.launcher_handlers: dict[int, Any] = {}  # signal -> the launcher's handler of it
        self._t0 = time.time() - self.result.get("wall_time_s", 0.0)
        # ---- search (issue 22): a search job's link to its Optuna trial; None otherwise
        self.trial = None
        if OmegaConf.select(cfg, "search.storage") is not None:
            from sweeps.pruning import TrialReporter

            self.trial = TrialReporter.from_config(cfg)

    # ----------------------------------------------------------------------- per loop

    def build(self) -> None:
        """Create the envs, ``self.agent`` and any storage (called before the restore)."""
        raise NotImplementedError

    def steps(self) -> Iterator[int]:
        """The training loop, a generator of global steps; see `train`."""
        raise NotImplementedError

    def _check_curriculum_env(self) -> None:
        from envs.curriculum import CurriculumEnv
        from training.checks import ConfigError

        env = self.eval_env.unwrapped
        if self.curriculum is not None and not isinstance(env, CurriculumEnv):
            raise ConfigError(
                "env.curriculum",
                f"{type(env).__name__} ({self.cfg.env.id}) has no set_difficulty(**knobs), "
                "which a curriculum drives (envs.curriculum.CurriculumEnv); accepted: an env "
                "that provides it, or env.curriculum=false",
            )

    def components(self) -> dict[str, Any]:
        """What the checkpoint holds by ``state_dict()``, keyed by its checkpoint name."""
        parts: dict[str, Any] = {"agent": self.agent}
        if self.curriculum is not None:
            parts["curriculum"] = self.curriculum
        return parts

    # ----------------------------------------------------------------------- run state

    def bind_lr(self) -> lr_scheduler.LRController:
        """The LR controller over the agent's optimizers (`agents.base.Agent.optimizers`),
        stage starts resolved at the stage entries the curriculum recorded (restored first,
        on a resume)."""
        schedules = self.schedules
        if self.curriculum is not None and schedules.stages_used:
            schedules = schedules.at_stages({
                e.stage: e.global_step for e in self.curriculum.stage_history
                if e.stage > 0 and e.global_step is not None
            })  # fmt: skip
        return lr_scheduler.LRController(schedules, self.agent.optimizers)

    def bookkeeping(self) -> dict[str, Any]:
        """What changes outside the networks while the agent acts (episodes, curriculum, RNG,
        results): the part of a checkpoint a loop may need to keep as of an earlier moment."""
        self.result["wall_time_s"] = time.time() - self._t0
        state: dict[str, Any] = {
            "episode": self.episode,
            "rng": checkpoint.rng_state(),
            "result": dict(self.result),
        }
        if self.curriculum is not None:
            state["curriculum"] = self.curriculum.state_dict()
        return state

    def checkpoint_state(
        self, purge_from: int, bookkeeping: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The checkpoint of this moment (`training.state.RunState.capture`)."""
        return self.run_state.capture(self, purge_from, bookkeeping)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (from `checkpoint_state`) atomically to ``checkpoints/latest.pt``; the
        one before becomes ``previous.pt``. A state with NaN/inf is not written: `Diverged`."""
        self.telemetry.flush()  # events up to here are durable before the checkpoint says so
        try:
            self.run_state.write(state)
        except checkpoint.NonFiniteState as err:
            raise Diverged(f"diverged by step {state['global_step']}: {err}") from None

    def checkpoint_bytes(self) -> int:
        """A generous estimate of one checkpoint's size: the agent's tensors three times over
        (weights and two Adam moments), plus what `components` add (`extra_checkpoint_bytes`)."""
        return 3 * state_bytes(self.agent.state_dict()) + self.extra_checkpoint_bytes() + (1 << 20)

    def extra_checkpoint_bytes(self) -> int:
        return 0

    # ----------------------------------------------------------------------- signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum  # handled by the loop at its next safe point: never mid-update

    def _catch_signals(self) -> dict:
        """Route SIGTERM/SIGINT to `_on_signal`; returns the handlers to put back. Python lets
        only the main thread install handlers: elsewhere (thread-based sweep backends) the
        launcher owns the signals and this does nothing.

        A launcher's own preemption signal is caught too when the launcher listens to it:
        submitit (``hydra/launcher=slurm``) hears SIGUSR2 (``SUBMITIT_PREEMPT_SIGNAL``), sent
        before the time limit and on preemption, and requeues the job. The run checkpoints
        first; `launcher_handlers` keeps the launcher's handler, for the caller to hand the
        signal on to once the run has stopped."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        sig = getattr(signal, name, None)
        if sig is not None and callable(signal.getsignal(sig)):
            handlers[sig] = self.launcher_handlers[sig] = signal.signal(sig, self._on_signal)
        return handlers

    @staticmethod
    def _release_signals(handlers: dict) -> None:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    # ----------------------------------------------------------------------- the loop's helpers

    def train(self) -> None:
        """Train to the end of the budget; on SIGTERM/SIGINT checkpoint and raise `Preempted`."""
        for _ in self.steps():
            pass

    def stop_if_signalled(self, purge_from: int, bookkeeping: dict[str, Any] | None = None) -> None:
        """At a loop's safe point: if SIGTERM/SIGINT (or the launcher's signal) arrived, write
        the checkpoint (`checkpoint_state` of ``purge_from`` and ``bookkeeping``) and raise
        `Preempted`."""
        if self._signal is not None:
            self.save(self.checkpoint_state(purge_from, bookkeeping))
            raise Preempted(self._signal)

    def passed_lr_mark(self, step: int) -> bool:
        """True when ``step`` reached the next step where some LR jumps (a schedule boundary or
        a stage entry's start): the loops log the LRs there. Marks passed are consumed."""
        marks = self.lr_marks
        if not marks or step < marks[0]:
            return False
        while marks and step >= marks[0]:
            marks.pop(0)
        return True

    def cadences(self) -> dict[str, int]:
        """Eval, log and checkpoint periods in global steps (the config speaks frames)."""
        return {
            name: max(1, int(self.cfg[f"{name}_every_frames"]) // int(self.cfg.action_repeat))
            for name in ("eval", "log", "checkpoint")
        }

    def log_lrs(self, step: int) -> dict[str, float]:
        """Write the LRs for ``step`` and log what the optimizers then hold (``lr_<network>``);
        raises `lr_scheduler.LRMismatchError` if something else wrote an optimizer's LR."""
        self.lr.apply(step)
        held = self.lr.verify(step)
        for name, value in held.items():
            self.telemetry.scalar(f"lr_{name}", value, step)
        return held

    def set_difficulty(self, env) -> None:
        if self.curriculum is not None:
            env.unwrapped.set_difficulty(**self.curriculum.params)

    def evaluate(self, step: int) -> float:
        self.set_difficulty(self.eval_env)
        returns, successes = [], []
        for k in range(self.cfg.num_eval_episodes):
            obs, _ = self.eval_env.reset(seed=self.cfg.seed * 100_003 + step + k)
            self.agent.begin_episode()  # a recurrent policy drops its state
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
        # ---- search (issue 22): report to the trial; its pruner may end the run here. Not at
        # step 0 (every trial is an untrained policy then) nor at the end (the trial is done).
        if self.trial is not None and 0 < step < self.total_steps and self.trial.report(step, mean):
            purge = step if self.evaluates_at_resume_step else step + 1
            self.save(self.checkpoint_state(purge_from=purge))
            raise Pruned(step)
        return mean

    def end_episode(self, step: int, ep_return: float, info: Mapping[str, Any]) -> None:
        """Bookkeeping of a finished training episode: count, return, curriculum progress."""
        self.episode += 1
        self.telemetry.scalar("train/episode_return", ep_return, step)
        if self.curriculum is None:
            return
        success = bool(info.get("success", False))
        self.telemetry.scalar("train/episode_success", float(success), step)
        if not self.curriculum.record_episode(success, global_step=step):
            return
        c = self.curriculum
        log.info("curriculum: stage %d/%d (%s) at step %d",
                 c.stage + 1, c.num_stages, c.stage_name, step)  # fmt: skip
        seconds = time.time() - self._t0
        self.result["stage_entry_steps"].append(step)
        self.result["stage_entry_seconds"].append(seconds)
        if self.lr.enter_stage(c.stage, step):  # intervals that start at this stage begin here
            bisect.insort(self.lr_marks, step)
        if c.is_final:
            self.result["final_stage_step"] = step
            self.result["final_stage_seconds"] = seconds
        if step % self.cadences()["log"]:  # log steps record the stage anyway
            self.telemetry.scalar("curriculum/stage", c.stage, step)

    def log_progress(self, step: int, last_return: float, metrics: Mapping[str, float]) -> None:
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

    def finish(self) -> None:
        """Account the wall time and close the outputs (the loops call it however they end)."""
        self.result["wall_time_s"] = time.time() - self._t0
        self.telemetry.close()

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
            "kl_guard": self.lr.guard.summary() if self.lr.guard is not None else None,
        }
