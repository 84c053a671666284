"""The schedule engine behind :mod:`lr_scheduler` (which re-exports its public API): the model,
compilation and validation, preset knobs, the KL guard, the controller and the builders."""
