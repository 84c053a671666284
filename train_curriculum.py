"""Train an agent on a curriculum environment with per-network learning-rate schedules.

    python train_curriculum.py lr_schedule=gentle_decay
    python train_curriculum.py lr_schedule=gentle_decay dry_run=true   # preview, no training

The Hydra entry point, and only that: compose -> compile and validate the schedule (a bad
schedule exits 2 here, before any env or agent exists) -> preview, or build the run and train
-> exit code. The loops, checkpoints and resume live in ``training/``; the schedule engine in
``lr_scheduler.py``. Training writes TensorBoard scalars to ``<run dir>/tb``, checkpoints to
``<run dir>/checkpoints/latest.pt``, and resumes from it when re-run in the same
``hydra.run.dir``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import lr_scheduler
from envs.suites import MissingExtra, check_extras
from lr_scheduler import ScheduleError, ScheduleSet
from training.build import make_workspace
from training.checks import ConfigError, check_run_config
from training.run import (
    Preempted,
    Pruned,
    ResumeRefused,
    compile_run_schedules,
    total_steps,
    write_result,
)
from training.rundir import RunDirBusy, RunLock

log = logging.getLogger("train")


def preview(cfg: DictConfig, schedules: ScheduleSet, run_dir: Path) -> None:
    """dry_run=true: print the table, write lr_schedule.png; no env, no agent."""
    import lr_preview

    said = {}  # where the stage entries shown come from, when not the preset's measured ones
    if schedules.stages_used:  # stage starts: drawn at the curriculum's expected entries
        entries, measured = expected_stage_entries(cfg, schedules.stages_used)
        schedules = schedules.at_stages(entries)
        if not measured:
            said["entries_from"] = "evenly spaced: the preset has no expected_entry_fracs"
    print(lr_preview.format_preview(schedules, **said))
    png = run_dir / "lr_schedule.png"
    title = f"lr_schedule={HydraConfig.get().runtime.choices.get('lr_schedule')}, lr={cfg.lr}"
    lr_preview.plot_schedules(schedules, total_steps(cfg), png, title=title)
    print(f"\nfingerprint {schedules.fingerprint}; wrote {png}")
    print("dry run: schedule valid; no env or agent was built")


def expected_stage_entries(cfg: DictConfig, stages: tuple[int, ...]) -> tuple[dict[int, int], bool]:
    """stage -> the step the preview assumes it is entered at: the curriculum preset's
    ``expected_entry_fracs`` of the run where it has them (measured: True), else evenly
    spaced (False)."""
    from training.run import make_curriculum

    curriculum = make_curriculum(cfg)  # checks expected_entry_fracs
    steps, count = total_steps(cfg), curriculum.num_stages
    fracs = measured = curriculum.expected_entry_fracs
    if fracs is None:  # not measured for this preset: stage k at k / count of the run
        fracs = [k / count for k in range(1, count)]
    return {k: int(round(fracs[k - 1] * steps)) for k in stages}, measured is not None


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
    # A dir that already holds a run keeps its files unless this run is accepted to continue it.
    holds_run = (run_dir / "result.json").exists() or (run_dir / "checkpoints").exists()

    def fail(message: str, exit_code: int, result: dict[str, Any] | None = None) -> float:
        """Record the failure and exit (single run) or return -inf (sweep job). A run that
        never started (``result`` None) leaves a dir that holds another run as it was."""
        if result is not None or not holds_run:
            save_job_config(run_dir, cfg)
            write_result(run_dir, {**(result or {}), "status": "failed", "error": message})
        print(f"error: {message}", file=sys.stderr)
        if not in_sweep:
            sys.exit(exit_code)
        return -math.inf

    try:
        check_extras(cfg.env)
    except MissingExtra as err:
        # Nothing has happened yet: the dir keeps no trace of this start (Hydra's empty log
        # included) unless it already held a run.
        print(f"error: {err}", file=sys.stderr)
        if not holds_run:
            discard_untouched_run_dir(run_dir)
        if not in_sweep:
            sys.exit(2)
        return -math.inf
    try:
        check_run_config(cfg)
    except ConfigError as err:
        return fail(f"invalid config: {err}", 2)
    try:
        schedules = compile_run_schedules(cfg)
    except ScheduleError as err:
        return fail(f"invalid learning-rate schedule: {err}", 2)
    if schedules.disabled:
        seen = os.environ[lr_scheduler.DISABLE_ENV_VAR]
        print(f"{lr_scheduler.DISABLE_ENV_VAR}={seen}: lr_schedule ignored; every network "
              f"trains at the base lr={cfg.lr}", file=sys.stderr)  # fmt: skip
    if cfg.dry_run:
        if not holds_run:
            save_job_config(run_dir, cfg)
        preview(cfg, schedules, run_dir)
        return None
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except RunDirBusy as err:
        print(f"error: {err}", file=sys.stderr)  # the dir is another process's: touch nothing
        if not in_sweep:
            sys.exit(2)
        return -math.inf
    try:
        return train(cfg, run_dir, schedules, fail)
    finally:
        lock.release()


def train(cfg: DictConfig, run_dir: Path, schedules: ScheduleSet, fail) -> float:
    """Build the run (resuming if the dir holds one), train it, record the result."""
    from training.telemetry import write_hparams

    try:
        workspace = make_workspace(cfg, run_dir, schedules)
    except lr_scheduler.ScheduleMismatchError as err:
        return fail(f"resume refused: {err}. To resume with the new schedule anyway, pass "
                    "resume.allow_schedule_change=true", 2)  # fmt: skip
    except ResumeRefused as err:
        return fail(f"resume refused: {err}", 2)
    except ConfigError as err:  # found once the env exists (a curriculum on a plain env)
        return fail(f"invalid config: {err}", 2)
    except Exception as err:
        log.exception("could not build the run")
        return fail(f"{type(err).__name__}: {err}", 1)
    save_job_config(run_dir, cfg)  # accepted: the dir's config is now this run's
    try:
        workspace.train()
    except Preempted as stop:
        log.info("%s: checkpoint written at step %d; re-run in %s to resume",
                 stop, workspace.global_step, run_dir)  # fmt: skip
        # A sweep summary then says which jobs to re-run, and how far each got; the resumed
        # run replaces this file when it ends.
        write_result(run_dir, {
            **workspace.summary(), "status": "preempted",
            "error": f"{stop} at step {workspace.global_step}: checkpoint written, re-run the "
                     "same command to resume",
        })  # fmt: skip
        handler = workspace.launcher_handlers.get(stop.signum)
        if handler is not None:  # the launcher's own stop, e.g. submitit's: requeue and exit
            handler(stop.signum, None)
        sys.exit(128 + stop.signum)
    except Pruned as stop:  # search (issue 22): the study's pruner ended this trial; not a failure
        log.info("%s by the search's pruner: checkpoint written in %s", stop, run_dir)
        summary = {**workspace.summary(), "status": "pruned", "error": None,
                   "pruned_at_step": stop.step}  # fmt: skip
        write_result(run_dir, summary)
        write_hparams(run_dir / "tb", {**job_hparams(cfg), "status": "pruned"}, summary)
        return float(summary["final_eval_return"])
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


def discard_untouched_run_dir(run_dir: Path) -> None:
    """Remove Hydra's empty job log, then the run dir if that leaves it empty."""
    for log_file in run_dir.glob("*.log"):
        if log_file.stat().st_size == 0:
            log_file.unlink()
    try:
        run_dir.rmdir()
    except OSError:
        pass  # something else is in it: leave it


def save_job_config(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/`` (composed config, Hydra's own config, the overrides), written by the run
    itself (``hydra.output_subdir`` is null) so a refused start cannot replace those of the
    run already in the dir."""
    hydra_cfg = HydraConfig.get()
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (out / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra_cfg}))
    (out / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_cfg.overrides.task))


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        main()
    except SystemExit as stop:
        # Hydra exits 1 when the schema refuses a preset; say which key path, as for overrides.
        args = sys.argv[1:]
        if stop.code == 1 and not any(a.startswith("-") for a in args):
            from training.build import explain_rejected_config

            if (message := explain_rejected_config(args)) is not None:
                print(f"error: {message}", file=sys.stderr)
                sys.exit(2)
        raise
