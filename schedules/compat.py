"""Whether a checkpoint's schedule is the one being resumed: :func:`check_schedule_state`
compares fingerprints and :func:`describe_difference` says what changed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from schedules.errors import ScheduleMismatchError
from schedules.model import Schedule

log = logging.getLogger("lr_scheduler")  # one logger for the engine, whatever module


class _Fingerprinted(Protocol):
    """A compiled schedule set, or a controller holding one (``.schedules``)."""

    fingerprint: str | None


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Human-readable summary of how two resolved specs (``ScheduleSet.to_spec()``) differ."""
    lines = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"{name}: {'added' if a is None else 'removed'}")
            continue
        for i in range(max(len(a), len(b))):
            ia = a[i] if i < len(a) else None
            ib = b[i] if i < len(b) else None
            if ia != ib:
                lines.append(f"{name}.intervals[{i}]: {ia} -> {ib}")
                break
    return "; ".join(lines) or "the kill switch changed"


def check_schedule_state(
    current: _Fingerprinted, saved: Mapping[str, Any] | None, allow_change: bool = False
) -> None:
    """Compare a checkpoint's schedule state (``LRController.state_dict()``) with ``current``
    (a ``ScheduleSet`` or an ``LRController``).

    A state without a fingerprint (older checkpoint) is accepted. A different schedule raises
    :class:`ScheduleMismatchError` naming what changed, unless ``allow_change``.
    """
    if not saved or "fingerprint" not in saved:
        log.info("checkpoint has no schedule state (older format); using the current schedule")
        return
    if saved["fingerprint"] == current.fingerprint:
        return
    schedules: Mapping[str, Schedule] = getattr(current, "schedules", current)
    spec = {n: s.to_spec() for n, s in schedules.items()}
    diff = describe_difference(saved.get("spec", {}), spec)
    if not allow_change:
        raise ScheduleMismatchError(
            "lr_schedule", f"differs from the checkpoint's schedule ({diff})"
        )
    log.warning("resuming with a changed schedule (%s)", diff)
