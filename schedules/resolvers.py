"""The OmegaConf resolvers of relative values (``${base_lr:x}``, ``${run_frac:x}``,
``${warmup_end:}``, ``${unless_given:...}``), registered on import, and :func:`run_steps`, the
one place the run length in global steps is computed from a config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from schedules.knobs import warmup_length


def run_steps(cfg: Mapping[str, Any]) -> int:
    """Run length in global steps: ``num_train_frames // action_repeat`` (agent env steps,
    summed over parallel envs). ``cfg`` is the run's config (a DictConfig or a mapping).

    Raises:
        ValueError: when ``cfg`` has no ``num_train_frames``.
    """
    frames = cfg.get("num_train_frames")
    if frames is None:
        raise ValueError("${run_frac:...} needs the run length (num_train_frames)")
    return int(frames) // int(cfg.get("action_repeat", 1) or 1)


def _resolve_base_lr(factor: Any = 1.0, *, _root_: Any) -> float:
    return float(factor) * float(_root_.lr)


def _resolve_run_frac(frac: Any, scale: Any = 1.0, *, _root_: Any) -> int:
    return int(round(float(frac) * float(scale) * run_steps(_root_)))


def _resolve_warmup_end(scale: Any = 1.0, *, _root_: Any) -> int:
    knobs = _root_.get("lr_schedule") or {}
    steps = warmup_length(knobs, run_steps(_root_) if "num_train_frames" in _root_ else None)
    return int(round(float(scale) * steps))


def _resolve_unless_given(other: str, default: Any, *, _root_: Any) -> Any:
    """A preset's default for a knob with two spellings: ``default``, or nothing when the other
    spelling (``lr_schedule.<other>``) is given, so one override of either replaces it."""
    knobs = _root_.get("lr_schedule") or {}
    return None if knobs.get(other) is not None else default


for _name, _fn in (
    ("base_lr", _resolve_base_lr), ("run_frac", _resolve_run_frac),
    ("warmup_end", _resolve_warmup_end), ("unless_given", _resolve_unless_given),
):  # fmt: skip
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
