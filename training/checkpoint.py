"""Checkpoints as plain data: state_dicts, numbers, strings, tensors. Written atomically.

A checkpoint loads with ``torch.load(weights_only=True)``: numpy arrays (replay buffer, numpy RNG
state) are stored as tensors under a marker and turned back into arrays on load, and nothing is
pickled as an object, so renaming a class never breaks an old checkpoint.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 3  # 1: no schedule state (older runs); 2: adds lr_schedule; 3: adds tb_purge_step
_ARRAY = "__ndarray__"


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        # No copy: saving is synchronous, so a view of the live replay cannot change
        # mid-write, and a pixel buffer is gigabytes.
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_encode(v) for v in obj)
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            return obj[_ARRAY].numpy()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_decode(v) for v in obj)
    return obj


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or written; the message names the file and what to do."""


class NewerFormat(CheckpointError):
    """The checkpoint was written by a newer version of this project, in a format this one
    cannot read faithfully; nothing was loaded."""


class NonFiniteState(CheckpointError):
    """The state to save holds NaN or inf: saving it would make the run unrecoverable."""


def nonfinite(state: Any, path: str = "") -> list[str]:
    """Key paths of floating-point tensors or arrays in ``state`` holding NaN or inf."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return [path] if bad else []
    if isinstance(state, np.ndarray):
        bad = np.issubdtype(state.dtype, np.floating) and not bool(np.isfinite(state).all())
        return [path] if bad else []
    if isinstance(state, dict):
        return [p for k, v in state.items() for p in nonfinite(v, f"{path}.{k}" if path else k)]
    if isinstance(state, list | tuple):
        return [p for i, v in enumerate(state) for p in nonfinite(v, f"{path}[{i}]")]
    return []


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept (``latest.pt`` -> ``previous.pt``)."""
    return Path(path).with_name("previous.pt")


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` so that ``path`` is always either the old or the new file;
    the old one becomes `previous_path` (a checkpoint to fall back on).

    Raises:
        CheckpointError: if a tensor in ``state`` is NaN or inf (nothing is written, the last
            good checkpoints stay), or the file cannot be written (disk full, permissions).
    """
    path = Path(path)
    bad = nonfinite(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteState(
            f"not writing {path}: non-finite values in {shown}; the last good checkpoint stays"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(_encode({"format": FORMAT, **state}), f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        free = shutil.disk_usage(path.parent).free
        reason = "the disk is full" if free < (64 << 20) else f"{type(err).__name__}: {err}"
        raise CheckpointError(
            f"could not write {path}: {reason} ({free / 2**20:.0f} MiB free in {path.parent}); "
            "the previous checkpoint is intact"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the renames themselves durable
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete ``.*.tmp-PID`` files a process killed mid-write left behind."""
    for tmp in Path(directory).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (format 1 to `FORMAT`).

    Raises:
        NewerFormat: the file's ``format`` is newer than `FORMAT` (nothing is guessed).
        CheckpointError: naming the file and what is wrong with it, in plain words.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): its write was cut off")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and torch errors all mean "not readable"
        # Only the error's kind: torch's own text advises weights_only=False, which would
        # execute whatever the file holds.
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable checkpoint of this project: truncated, "
            f"corrupted or another program's file ({type(err).__name__})"
        ) from None
    if not isinstance(state, dict) or "global_step" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this project (no global_step in it)")
    written = state.get("format", 1)  # format 1 did not record itself
    if not isinstance(written, int) or written > FORMAT:
        raise NewerFormat(
            f"{path} is in checkpoint format {written!r}, newer than this version reads (up to "
            f"{FORMAT}): resume it with the version that wrote it, or upgrade"
        )
    return _decode(state)


def rng_state() -> dict[str, Any]:
    """Global RNG states of python, numpy and torch."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])


def _as_tuples(obj: Any) -> Any:
    # random.setstate wants the nested tuples it produced; a round trip may turn them into lists.
    return tuple(_as_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj
