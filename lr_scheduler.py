"""Per-network learning-rate schedules that are pure functions of the global step.

The data path is one line: a config (OmegaConf node or plain dict) goes through
:func:`compile_schedules`, which validates it and returns a :class:`ScheduleSet` of immutable
:class:`Schedule` objects, one per network; an :class:`LRController` binds those to optimizer
param groups and writes ``schedule(global_step)`` into them. Nothing is counted anywhere, so a
resumed run cannot jump: the step is the only state.

Relative values use OmegaConf resolvers registered on import:

* ``${base_lr:0.5}``  -> 0.5 x the base learning rate (top-level ``lr``)
* ``${run_frac:0.25}`` -> 25 % of the run, in global steps (``num_train_frames / action_repeat``);
  ``${run_frac:f,s}`` is ``f x s`` of the run (e.g. a fraction of a preset knob)
* ``${warmup_end:}`` -> the warmup's end in steps (``lr_schedule.warmup_steps`` or
  ``warmup_frac`` of the run); ``${warmup_end:0.1}`` a tenth of it

Library users without Hydra can use the functional API :func:`get_lr_scheduler`,
:func:`get_combined_lr_scheduler`, :func:`get_multi_step_lr_scheduler`, the builders
:func:`warmup_decay`, :func:`join`, :func:`multi_step` and :func:`with_warmup`, the
``torch.optim`` adapter :class:`ScheduledLR`; the preview table and plots are in
:mod:`lr_preview` (which imports this module, never the other way round).

The engine lives in the package :mod:`schedules`, by role: ``errors``, ``shapes`` (one class
per interval type, registered by name), ``model``, ``intervals``, ``knobs``, ``guard``,
``resolvers``, ``killswitch``, ``schedule_set``, ``compile``, ``compat``, ``controller``,
``builders``. This module is its public face:
the names users, presets (``_target_: lr_scheduler.get_lr_scheduler``) and the source documents
import.
"""

from __future__ import annotations

from schedules.builders import (
    JoinedFunction,
    get_combined_lr_scheduler,
    get_lr_scheduler,
    get_multi_step_lr_scheduler,
    join,
    multi_step,
    warmup_decay,
)
from schedules.compat import check_schedule_state, describe_difference
from schedules.compile import PRESET_KNOBS, TARGET_KEYS, compile_schedules
from schedules.controller import LRController, LRMismatchError, ScheduledLR
from schedules.errors import ScheduleError, ScheduleMismatchError
from schedules.guard import KL_GUARD_KEYS, KLGuard, KLGuardSpec
from schedules.intervals import (
    FINAL_FRACTION_KEYS,
    INTERVAL_KEYS,
    KEY_SYNONYMS,
    NETWORK_KEYS,
    Stages,
)
from schedules.killswitch import DISABLE_ENV_VAR
from schedules.knobs import DEFAULT_WARMUP_INIT, warmup_length, with_warmup
from schedules.model import NETWORKS, Schedule
from schedules.registry import (
    DEFAULT_DECAY_STEPS,
    DEFAULT_LAST_FINAL_FACTOR,
    DEFAULT_TYPE,
    SHAPES,
    TYPE_ALIASES,
    WARMUP_CHORDS,
    WARMUP_MAX_STAIRS,
    Interval,
    Key,
    Shape,
    register,
)
from schedules.resolvers import run_steps
from schedules.schedule_set import ScheduleSet
from schedules.shapes import INTERVAL_TYPES


def __getattr__(name: str):
    """``plot_lr_schedule`` and ``plot_schedules`` resolve here too, where the 003 document
    imports them from, without importing matplotlib until one is asked for."""
    if name in ("plot_lr_schedule", "plot_schedules"):
        import lr_preview

        return getattr(lr_preview, name)
    raise AttributeError(f"module 'lr_scheduler' has no attribute {name!r}")


__all__ = [
    "DEFAULT_DECAY_STEPS", "DEFAULT_LAST_FINAL_FACTOR", "DEFAULT_TYPE", "DEFAULT_WARMUP_INIT",
    "DISABLE_ENV_VAR", "FINAL_FRACTION_KEYS", "INTERVAL_KEYS", "INTERVAL_TYPES", "KEY_SYNONYMS",
    "KL_GUARD_KEYS", "NETWORKS", "NETWORK_KEYS", "PRESET_KNOBS", "SHAPES", "TARGET_KEYS",
    "TYPE_ALIASES", "WARMUP_CHORDS", "WARMUP_MAX_STAIRS", "Interval", "JoinedFunction", "KLGuard",
    "KLGuardSpec", "Key", "LRController", "LRMismatchError", "Schedule", "ScheduleError",
    "ScheduleMismatchError", "ScheduleSet", "ScheduledLR", "Shape", "Stages",
    "check_schedule_state", "compile_schedules", "describe_difference",
    "get_combined_lr_scheduler", "get_lr_scheduler", "get_multi_step_lr_scheduler", "join",
    "multi_step", "register", "run_steps", "warmup_decay", "warmup_length", "with_warmup",
]  # fmt: skip
