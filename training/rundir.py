"""A run dir belongs to one process at a time: ``<run dir>/.lock``.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on the
shared ones clusters use: NFSv3+, Lustre, GPFS), holding the holder's host, pid and SLURM job
id. While the run lives, a daemon thread touches it every `HEARTBEAT_S` seconds. A lock is
stale, and taken over with a warning, when its holder is on this host and its pid is gone, when
it belongs to the same SLURM job (a requeued job), or when its heartbeat is older than
`STALE_AFTER_S` (a holder on another host that died; this relies on the file server's clock
for mtimes). Otherwise the second run is refused, naming the dir and the holder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger("train")

HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0


class RunDirBusy(RuntimeError):
    """Another live process holds the run dir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.lock`` for the block (see module doc)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started": time.time(),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: judged by its age alone

    def _stale(self, holder: dict) -> str | None:
        """Why ``holder``'s lock is stale, or None if it may still be running."""
        if holder.get("host") == self.me["host"] and isinstance(holder.get("pid"), int):
            return None if _alive(holder["pid"]) else f"pid {holder['pid']} is gone"
        job = holder.get("slurm_job_id")
        if job and job == self.me["slurm_job_id"]:
            return f"it belongs to this SLURM job ({job}), requeued"
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "it was just released"
        if age > STALE_AFTER_S:
            return f"no heartbeat for {age:.0f} s"
        return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released in between: try again
                why = self._stale(holder)
                if why is None:
                    raise RunDirBusy(
                        f"run dir {self.path.parent} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')} (lock {self.path}); wait for it to finish, stop "
                        "it, or pick another hydra.run.dir"
                    ) from None
                log.warning("taking over the stale lock %s of pid %s on %s: %s",
                            self.path, holder.get("pid"), holder.get("host"), why)  # fmt: skip
                self.path.unlink(missing_ok=True)  # then O_EXCL decides who takes it
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            self._thread = threading.Thread(target=self._beat, name="run-lock", daemon=True)
            self._thread.start()
            return
        raise RunDirBusy(f"could not take the lock {self.path}: other processes keep taking it")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._holder()
        if holder and holder.get("pid") == self.me["pid"] and holder.get("host") == self.me["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
