"""The schedule engine behind :mod:`lr_scheduler` (which re-exports its public API): the model,
compilation and validation, preset knobs, the KL guard, the controller and the builders."""

import schedules.shapes  # noqa: E402, F401 (registers the built-in shapes before any is looked up)
