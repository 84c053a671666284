"""The kill switch: ``LR_SCHEDULE_DISABLE=1`` runs every network at its base LR."""

from __future__ import annotations

import os

from schedules.errors import ScheduleError

DISABLE_ENV_VAR = "LR_SCHEDULE_DISABLE"
_DISABLE_ON, _DISABLE_OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _is_disabled() -> bool:
    """``LR_SCHEDULE_DISABLE`` = 1/true/yes/on disables every schedule, 0/false/no/off/empty
    (or unset) keeps them; any other value is an error, not a guess."""
    value = os.environ.get(DISABLE_ENV_VAR, "").strip().lower()
    if value in _DISABLE_ON:
        return True
    if value in _DISABLE_OFF:
        return False
    raise ScheduleError(
        DISABLE_ENV_VAR,
        f"environment variable set to {os.environ[DISABLE_ENV_VAR]!r}; accepted: "
        f"{'/'.join(_DISABLE_ON)} (run at the base lr) or {'/'.join(_DISABLE_OFF[1:])} or "
        "empty (follow the schedule)",
    )
