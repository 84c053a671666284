"""A run's state across stops: what a checkpoint holds, read, checked, written and put back in
one place (`RunState`).

A checkpoint is plain data (`training.checkpoint`), and each key is put back where it came from:

- ``global_step``, ``episode``: the workspace's counters;
- one key per component (``agent``, ``replay``, ``curriculum``, ``normalization``): its
  ``state_dict()``, loaded by its ``load_state_dict``;
- ``rng``: python, numpy and torch RNG states;
- ``result``: what ``result.json`` reports so far (evaluations, stage entries, wall time);
- ``lr_schedule``: the LR controller's state (schedule fingerprint and spec, KL-guard scale),
  loaded by the controller bound over the restored optimizers;
- ``tb_purge_step``: the first step whose TensorBoard events the state does not account for
  (a resume cuts them from the event files);
- ``config``: the run's config, read by the resume checks only.

`RunState.capture` writes each key and `RunState.restore` reads each back; a loop that adds a
component adds it to ``Workspace.components()`` and both follow.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

import lr_scheduler
from lr_scheduler import ScheduleSet
from training import checkpoint

if TYPE_CHECKING:
    from training.workspace import Workspace

log = logging.getLogger("train")

# Settings that make a run what it is: resuming under other values mixes two experiments.
RUN_IDENTITY = ("seed", "env", "agent", "replay", "curriculum", "action_repeat")


class ResumeRefused(RuntimeError):
    """The run dir holds a run this one must not continue or replace; nothing was changed."""


def _diff(old: Any, new: Any, path: str) -> str:
    """The first key path where two plain configs differ, with both values."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _diff(old.get(key), new.get(key), f"{path}.{key}")
    return f"{path}: {old!r} -> {new!r}"


def _identity(value: Any) -> Any:
    """A setting as far as it makes the run what it is: a curriculum's expected stage entries
    only inform the preview."""
    if isinstance(value, Mapping) and "expected_entry_fracs" in value:
        return {k: v for k, v in value.items() if k != "expected_entry_fracs"}
    return value


def _tensors(state: Any) -> Iterator[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, Mapping):
        for value in state.values():
            yield from _tensors(value)
    elif isinstance(state, list | tuple):
        for value in state:
            yield from _tensors(value)


def state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) state dict."""
    return sum(t.numel() * t.element_size() for t in _tensors(state))


class RunState:
    """The checkpoints of one run dir (``checkpoints/latest.pt``, ``previous.pt``)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, schedules: ScheduleSet):
        self.cfg = cfg
        self.run_dir = run_dir
        self.schedules = schedules
        self.path = run_dir / "checkpoints" / "latest.pt"
        self.config = OmegaConf.to_container(cfg, resolve=False)

    # ----------------------------------------------------------------------- reading

    def open(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (``latest.pt``, else ``previous.pt``), checked against
        this run; None for a fresh start. Raises `ResumeRefused` (nothing touched) when the dir
        holds a run this one must not silently continue or replace."""
        ckpt_dir, resume = self.path.parent, self.cfg.resume
        holds_run = self.path.exists() or checkpoint.previous_path(self.path).exists()
        if not resume.enabled or resume.overwrite:
            if holds_run and not resume.overwrite:
                raise ResumeRefused(
                    f"{self.run_dir} holds a run (checkpoints/ in it) and resume.enabled=false: "
                    "pass resume.overwrite=true to delete its checkpoints, TensorBoard events "
                    "and result.json and start over, or pick another hydra.run.dir"
                )
            if holds_run:
                log.warning("resume.overwrite=true: deleting the run in %s", self.run_dir)
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                shutil.rmtree(self.run_dir / "tb", ignore_errors=True)
                (self.run_dir / "result.json").unlink(missing_ok=True)
            return None
        if ckpt_dir.exists() and not ckpt_dir.is_dir():
            raise ResumeRefused(f"{ckpt_dir} is not a directory; move it away to continue")
        if not holds_run:
            return None
        checkpoint.remove_stale_temporaries(ckpt_dir)
        problems = []
        for path in (self.path, checkpoint.previous_path(self.path)):
            if not path.exists():
                continue
            try:
                state = checkpoint.load(path)
            except checkpoint.NewerFormat as err:  # not damage: falling back would lose work
                raise ResumeRefused(str(err)) from None
            except checkpoint.CheckpointError as err:
                problems.append(str(err))
                log.warning("%s; trying the previous checkpoint", err)
                continue
            self._check_fits(state, path)
            if problems:
                log.warning("resuming from the previous checkpoint %s", path)
            log.info("resuming from %s at global step %d", path, state["global_step"])
            return state
        raise ResumeRefused(
            "no checkpoint in this run dir can be read: " + "; ".join(problems) + ". Pass "
            "resume.overwrite=true to start over here, or pick another hydra.run.dir"
        )

    def _check_fits(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint written by a different kind of run (agent, env, seed, ...)."""
        saved, current = state.get("config") or {}, self.config
        saved_agent = (saved.get("agent") or {}).get("_target_")
        agent = current["agent"]["_target_"]
        if saved_agent and saved_agent != agent:
            raise ResumeRefused(
                f"{path} was written by agent {saved_agent} while this run is agent {agent}: "
                "a checkpoint of another agent cannot be resumed. Pick another hydra.run.dir"
            )
        changed = [
            k for k in RUN_IDENTITY
            if k in saved and _identity(saved.get(k)) != _identity(current.get(k))
        ]  # fmt: skip
        if changed and not self.cfg.resume.allow_config_change:
            diff = "; ".join(_diff(saved.get(k), current.get(k), k) for k in changed)
            raise ResumeRefused(
                f"this run's settings differ from the checkpoint's ({diff}). Pass "
                "resume.allow_config_change=true to resume anyway, or pick another hydra.run.dir"
            )
        lr_scheduler.check_schedule_state(
            self.schedules, state.get("lr_schedule"), self.cfg.resume.allow_schedule_change
        )

    # ----------------------------------------------------------------------- the two directions

    def capture(
        self, ws: Workspace, purge_from: int, bookkeeping: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Everything needed to continue from ``ws.global_step``. ``purge_from``: the first
        step whose TensorBoard events this state does not account for; ``bookkeeping`` (from
        ``ws.bookkeeping()``): an earlier moment's, for a loop that drops work done since. The
        optimizers get the LRs of the step first, so the checkpoint holds the LRs it continues
        with."""
        ws.lr.apply(ws.global_step)
        return {
            "global_step": ws.global_step,
            **{name: part.state_dict() for name, part in ws.components().items()},
            **(bookkeeping or ws.bookkeeping()),  # episode, rng, result (and curriculum)
            "lr_schedule": ws.lr.state_dict(),
            "tb_purge_step": purge_from,
            "config": self.config,
        }

    def restore(self, ws: Workspace, state: dict[str, Any]) -> int:
        """Put back every fact `capture` took, in the order things bind to them: components
        (the agent with its optimizers, replay, curriculum, normalisers), RNG states, counters
        and result; then the LR controller, bound over the restored optimizers, loads the
        schedule and KL-guard state. Returns the step TensorBoard purges from."""
        for name, part in ws.components().items():
            if state.get(name) is not None:
                part.load_state_dict(state[name])
        if state.get("rng"):
            checkpoint.set_rng_state(state["rng"])
        ws.global_step = int(state["global_step"])
        ws.episode = int(state.get("episode", 0))
        ws.result.update(state.get("result") or {})
        ws.lr = ws.bind_lr()
        allow = self.cfg.resume.allow_schedule_change
        ws.lr.load_state_dict(state.get("lr_schedule"), allow_change=allow)
        return int(state.get("tb_purge_step", ws.global_step))

    # ----------------------------------------------------------------------- writing

    def write(self, state: dict[str, Any]) -> None:
        """``state`` (from `capture`) atomically to ``latest.pt``; the one before becomes
        ``previous.pt``. Raises ``checkpoint.NonFiniteState`` (nothing written) for NaN/inf."""
        checkpoint.save_atomic(state, self.path)

    def probe(self, need_bytes: int) -> None:
        """Fail now, not at the first checkpoint hours later: the checkpoint dir is writable
        and has room for ``need_bytes``."""
        ckpt_dir = self.path.parent
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            probe = ckpt_dir / f".probe-{os.getpid()}"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as err:
            raise ResumeRefused(
                f"cannot write checkpoints to {ckpt_dir} ({err.strerror or err}); fix the "
                "permissions or pick another hydra.run.dir"
            ) from None
        free = shutil.disk_usage(ckpt_dir).free
        if free < need_bytes:
            raise ResumeRefused(
                f"{ckpt_dir} has {free / 2**20:.0f} MiB free, and a checkpoint of this run "
                f"needs about {need_bytes / 2**20:.0f} MiB (networks, optimizer moments, replay "
                "buffer at capacity): free some space, lower replay.capacity, or pick another "
                "hydra.run.dir"
            )
