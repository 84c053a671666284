"""Config -> validated :class:`ScheduleSet`: the spec made plain data once (interpolations
resolved), its keys sorted into networks and preset knobs, the knobs applied, every network
compiled (:mod:`schedules.intervals`), and the kill switch.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from schedules.errors import ScheduleError, _accepted, _first_line, _fraction, _lr
from schedules.guard import _kl_guard
from schedules.killswitch import DISABLE_ENV_VAR, _is_disabled
from schedules.knobs import DEFAULT_WARMUP_INIT, _apply_decay_knobs, _one_of_name, warmup_length
from schedules.model import NETWORKS, Schedule
from schedules.resolvers import run_steps  # importing it registers ${base_lr:}, ${run_frac:}, ...
from schedules.schedule_set import ScheduleSet, _Plan

# Parameters of the builder functions a network may name with `_target_` (flat, as Hydra).
TARGET_KEYS = (
    "_target_", "max_lr", "min_lr", "warmup_steps", "max_steps", "decay_type", "final_div_factor",
    "total_tokens", "tokens_per_step", "step_milestones", "step_factors", "verbose",
)  # fmt: skip
# Scalar keys next to the networks. `vars` holds a custom preset's own values (interpolation).
PRESET_KNOBS = (
    "warmup_frac", "warmup_steps", "warmup_init", "decay", "decay_steps", "decay_frac",
    "stage_fracs", "vars", "kl_guard",
)  # fmt: skip

log = logging.getLogger("lr_scheduler")  # one logger for the engine, whatever module


# --------------------------------------------------------------------------- plain data, once


def _resolve(node: Any, path: str) -> Any:
    """Plain python from an OmegaConf node, resolving interpolations one key at a time so a
    failing ``${...}`` is reported at its own key path."""
    if isinstance(node, DictConfig):
        out = {}
        for key in node.keys():
            sub = f"{path}.{key}" if path else str(key)
            try:
                value = node[key]
            except Exception as exc:  # OmegaConf raises several types; all mean "unresolvable"
                raw = OmegaConf.to_container(node, resolve=False).get(key)
                raise ScheduleError(sub, f"cannot resolve {raw!r}: {_first_line(exc)}") from None
            out[key] = _resolve(value, sub)
        return out
    if isinstance(node, ListConfig):
        out_list = []
        for i in range(len(node)):
            try:
                value = node[i]
            except Exception as exc:
                raise ScheduleError(f"{path}[{i}]", f"cannot resolve: {_first_line(exc)}") from None
            out_list.append(_resolve(value, f"{path}[{i}]"))
        return out_list
    return node


def _resolved(node: DictConfig, path: str) -> Any:
    """``node`` as plain data, resolved in one pass; where that fails, the key that fails."""
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception as exc:  # noqa: BLE001 (find and name the failing key instead)
        _resolve(node, path)
        raise ScheduleError(path, f"cannot resolve: {_first_line(exc)}") from None


def _has_interpolation(value: Any) -> bool:
    """Whether a plain config holds any ``${...}`` (only then is OmegaConf needed to resolve)."""
    try:
        return "${" in json.dumps(value, default=str)
    except ValueError:  # a circular structure: let OmegaConf report it
        return True


def _copy_plain(value: Any) -> Any:
    """A copy of nested dicts and lists (the leaves are immutable): deepcopy, minus its cost."""
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_plain(v) for v in value]
    return value


def _in_its_run_config(spec: Any, context: Any, path: str, base_lr: float, total: Any) -> bool:
    """Whether ``spec`` is the node at ``path`` of ``context`` and the context's ``lr`` and run
    length are the ones compiled with: then it resolves where it is, with no copy."""
    if not isinstance(spec, DictConfig) or not isinstance(context, DictConfig):
        return False
    if OmegaConf.select(context, path) is not spec or context.get("lr") != base_lr:
        return False
    try:
        return run_steps(context) == total
    except (ValueError, TypeError):
        return False


def _plain_spec(spec: Any, path: str, base_lr: float, total_steps: int | None, context: Any) -> Any:
    """The ``lr_schedule`` config as plain data with every interpolation resolved, converted
    once: resolved in its own run config when it comes from one (the CLI), copied when it is
    plain data without ``${...}`` (a library user, a huge exported preset), else resolved
    against ``context`` with ``lr`` and the run length set to those compiled with."""
    if spec is None:
        return {}
    if _in_its_run_config(spec, context, path, base_lr, total_steps):
        return _resolved(spec, path)
    fresh = isinstance(spec, DictConfig)  # converted here: a copy nobody else holds
    if fresh:
        spec = OmegaConf.to_container(spec, resolve=False)
    if not _has_interpolation(spec):
        return spec if fresh else _copy_plain(spec)
    top = path.split(".")[0]  # replaced by ``spec`` below: not worth copying
    if isinstance(context, DictConfig):
        keep = [k for k in context.keys() if k != top]
        context = OmegaConf.to_container(OmegaConf.masked_copy(context, keep), resolve=False)
    root: dict[str, Any] = copy.deepcopy({k: v for k, v in (context or {}).items() if k != top})
    # The resolvers read the base lr and the run length (frames / action_repeat) from the root.
    root.update(lr=base_lr, num_train_frames=total_steps, action_repeat=1)
    parent = root
    *heads, leaf = path.split(".")
    for head in heads:
        parent = parent.setdefault(head, {})
    parent[leaf] = spec
    return _resolved(OmegaConf.select(OmegaConf.create(root), path), path)


# --------------------------------------------------------------------------- compile + validate


def compile_schedules(
    spec: Mapping[str, Any] | DictConfig | None,
    *,
    base_lr: float | Mapping[str, float],
    total_steps: int | None = None,
    networks: Sequence[str] = NETWORKS,
    path: str = "lr_schedule",
    context: Mapping[str, Any] | DictConfig | None = None,
    num_stages: int | None = None,
) -> ScheduleSet:
    """Validate a schedule config and compile it into one :class:`Schedule` per network.

    Args:
        spec: the ``lr_schedule`` mapping (network -> ``{type, intervals}`` or
            ``{_target_, ...}``, plus the preset knobs of ``PRESET_KNOBS``), or ``None`` for a
            constant LR everywhere. ``null`` values count as not given.
        base_lr: the base LR (``lr``), or one per network; networks the spec does not name
            keep it, and ``${base_lr:x}`` multiplies it.
        total_steps: run length in global steps; resolves ``${run_frac:x}`` and open ends.
        networks: the agent's network names; any other mapping key is rejected.
        path: the key path of ``spec`` in the user's config, used in error messages.
        context: the rest of the config, so interpolations like ``${lr_schedule.decay}`` resolve.
        num_stages: stages of the run's curriculum, so ``start: {stage: k}`` is checked
            (0: the run has no curriculum, and a stage start is an error; None: unchecked).

    Raises:
        ScheduleError: with the exact key path, what is wrong and what would be accepted.
    """
    base = {n: float(base_lr[n] if isinstance(base_lr, Mapping) else base_lr) for n in networks}
    for name, value in base.items():
        _lr(value, f"base lr of {name}" if isinstance(base_lr, Mapping) else "lr")
    resolved = _plain_spec(spec, path, base[networks[0]], total_steps, context)
    if not isinstance(resolved, Mapping):
        raise ScheduleError(path, f"expected a mapping of network schedules, got {resolved!r}")

    nets: dict[str, Any] = {}
    knobs: dict[str, Any] = {}
    for key, value in resolved.items():
        if key in networks:
            nets[key] = value
        elif key not in PRESET_KNOBS:
            if isinstance(value, Mapping):
                raise ScheduleError(
                    f"{path}.{key}", f"unknown network '{key}'{_accepted(str(key), networks)}"
                )
            accepted = _accepted(str(key), tuple(networks) + PRESET_KNOBS)
            raise ScheduleError(f"{path}.{key}", f"unknown key '{key}'{accepted}")
        elif value is not None and value != {} and key != "kl_guard":
            knobs[key] = value
    if "vars" in knobs and not isinstance(knobs["vars"], Mapping):
        raise ScheduleError(
            f"{path}.vars", f"expected a mapping of your own values, got {knobs['vars']!r}"
        )
    _apply_decay_knobs(nets, knobs, total_steps, path)
    warmup = warmup_length(knobs, total_steps, path)
    if "warmup_init" in knobs and not warmup:
        raise ScheduleError(
            f"{path}.warmup_init", "given without a warmup: set warmup_frac or warmup_steps too"
        )
    warmup_init = DEFAULT_WARMUP_INIT
    if "warmup_init" in knobs:
        warmup_init = _fraction(knobs["warmup_init"], f"{path}.warmup_init")

    guard = _kl_guard(resolved.get("kl_guard"), f"{path}.kl_guard", networks)
    if "decay_steps" in knobs or "decay_frac" in knobs:
        for name, net in nets.items():
            last = (net or {}).get("intervals") if isinstance(net, Mapping) else None
            if isinstance(last, list) and last and isinstance(last[-1], Mapping):
                if isinstance(last[-1].get("start"), Mapping):
                    key = _one_of_name(knobs, "decay_steps", "decay_frac")
                    raise ScheduleError(
                        f"{path}.{key}",
                        f"{name}'s last interval starts at a curriculum stage, so a fixed "
                        "decay end may come before it; give that interval its own shape",
                    )
    plan = _Plan.compile(
        {k: v for k, v in nets.items() if v is not None}, path=path, total_steps=total_steps,
        base=base, networks=networks, warmup=warmup, warmup_init=warmup_init,
        stage_count=num_stages,
    )  # fmt: skip
    schedules = plan.build({})
    stage_starts = dict(plan.stage_starts)
    disabled = _is_disabled()
    if disabled:
        log.warning(
            "%s=%s: ignoring %s; every network uses its base lr",
            DISABLE_ENV_VAR, os.environ[DISABLE_ENV_VAR], path,
        )  # fmt: skip
        schedules = {n: Schedule.constant(base[n]) for n in networks}
        guard, stage_starts = None, {}
    return ScheduleSet(
        schedules, base_lr=base_lr, total_steps=total_steps,
        scheduled=() if disabled else plan.scheduled, disabled=disabled, knobs=knobs,
        kl_guard=guard, stage_starts=stage_starts, plan=plan if stage_starts else None,
    )  # fmt: skip
