"""The search space in Hydra's sweep syntax, as Optuna distributions.

    lr: tag(log, interval(1e-5, 1e-3))     -> FloatDistribution(1e-5, 1e-3, log=True)
    lr_schedule.warmup_frac: interval(0.02, 0.3)
    agent.hidden_dim: tag(int, interval(32, 256)) or range(32, 257, 32) -> IntDistribution
    lr_schedule: choice(constant, warmup_cosine) or constant,warmup_cosine -> Categorical

Any config key can be searched (base ``lr``, schedule knobs, agent knobs, a preset group). A
value with no sweep syntax is a fixed override for every trial. ``range`` stops before its end,
as in Hydra's basic sweeper. Errors name the key as ``hydra.sweeper.params.<key>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from sweeps.study import SearchError

KNOWN_TAGS = {"log", "int"}


def parse_overrides(items: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(items)


def split(
    params: Mapping[str, Any], arguments: list[str]
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(key -> distribution, the fixed overrides, key -> where it was given) from the sweeper's
    ``params`` and the command line's overrides; a command-line value replaces the config's (a
    plain one fixes the key for every trial)."""
    searched: dict[str, tuple[Override, str]] = {}
    fixed: list[str] = []
    for override in parse_overrides([f"{k}={v}" for k, v in (params or {}).items()]):
        key = override.get_key_element()
        where = f"hydra.sweeper.params.{key}"
        if override.is_sweep_override():
            searched[key] = (override, where)
        else:
            fixed.append(f"{key}={override.get_value_element_as_str()}")
    for override in parse_overrides(list(arguments)):
        key = override.get_key_element()
        if override.is_sweep_override():
            searched[key] = (override, f"the command line's {key}")
        else:
            searched.pop(key, None)
            fixed = [f for f in fixed if f.split("=", 1)[0] != key]
            fixed.append(f"{key}={override.get_value_element_as_str()}")
    space = {key: distribution(o, where) for key, (o, where) in searched.items()}
    return space, fixed, {key: where for key, (_, where) in searched.items()}


def distribution(override: Override, where: str):
    """The Optuna distribution of one sweep override."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    tags = set(getattr(value, "tags", set()) or set())
    unknown = tags - KNOWN_TAGS
    if unknown:
        raise SearchError(f"{where}: unknown tag {sorted(unknown)}; accepted: log, int")
    if override.is_choice_sweep():
        choices = list(override.sweep_iterator())
        if len(choices) < 1:
            raise SearchError(f"{where}: choice() needs at least one value")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        points = list(value.range())
        if not points:
            raise SearchError(f"{where}: range({value.start}, {value.stop}, {value.step}) is empty")
        if all(isinstance(p, int) for p in (value.start, value.stop, value.step)):
            return IntDistribution(points[0], points[-1], step=int(value.step))
        return FloatDistribution(points[0], points[-1], step=float(value.step))
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise SearchError(f"{where}: interval({low}, {high}) needs low < high")
        log = "log" in tags
        if log and low <= 0:
            raise SearchError(f"{where}: a log interval needs low > 0, got {low}")
        if "int" in tags:
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if isinstance(value, ChoiceSweep):  # glob or shuffled choice: not a search space
        raise SearchError(f"{where}: {override.get_value_element_as_str()} is not a search space")
    raise SearchError(
        f"{where}: {override.get_value_element_as_str()!r} is not a search space; accepted: "
        "interval(a, b), tag(log, interval(a, b)), tag(int, interval(a, b)), range(a, b[, step]), "
        "choice(x, y, ...) or x,y,..."
    )


def grid(space: Mapping[str, Any], where: Mapping[str, str]) -> dict[str, list[Any]]:
    """The grid sampler's values per key: every searched key must be a list (choice or range)."""
    from optuna.distributions import CategoricalDistribution

    values = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif getattr(dist, "step", None) is not None and not getattr(dist, "log", False):
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            values[key] = [dist.low + k * dist.step for k in range(count)]
        else:
            raise SearchError(
                f"{where[key]}: the grid sampler needs a list of values (choice(...) or "
                "range(...)), not an interval; or pick another hydra.sweeper.sampler.name"
            )
    return values


def suggest(trial, key: str, dist) -> Any:
    """Ask ``trial`` for ``key`` from ``dist`` through Optuna's public suggest API."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, list(dist.choices))
    if isinstance(dist, IntDistribution):
        step = None if dist.log else dist.step
        return trial.suggest_int(key, dist.low, dist.high, step=step or 1, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def as_override(key: str, value: Any) -> str:
    """``key=value`` for a job's command line (floats in full precision)."""
    if isinstance(value, float):
        return f"{key}={value!r}"
    return f"{key}={value}"
