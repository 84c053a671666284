"""CLI runs for the tests, started by forking a process that has already imported torch.

Much of a tiny CLI run's time is importing torch: ``import torch`` (1-2 s of about 2.5 s for a
run that exits on a bad config) and ``torch._dynamo`` (about 1 s more for one that trains: the
first optimizer imports it), paid again by every run. Here one clean server process per pytest
worker imports the heavy third-party libraries once and nothing of this project (so every run
imports the code as it is, and no in-process test's state can leak into it), then forks one
child per run. The child becomes what ``python train_curriculum.py ARGS`` would be: its own
pid, its own environment, working dir and ``sys.path`` (``PYTHONPATH`` included), stdin from
/dev/null, stdout and stderr to files, fresh RNG seeds, default signal handlers, and a normal
interpreter exit (atexit handlers run, exit code as Python gives it). Signals go straight to
that pid. tests/test_forkserver.py checks each of these against a plain subprocess.

``RL_TESTS_NO_FORKSERVER=1`` runs every CLI call as a plain subprocess instead.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

# Imported once by the server. Third-party only: this project's modules are imported by each
# run, as from a shell. Not mujoco or dm_control (they pick a GL backend from the environment).
PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",  # imported by the first optimizer a run builds: about 1 s
    "torch.utils.tensorboard",
    "gymnasium",
    "omegaconf",
    "hydra",
    "hydra.utils",
    "tensorboard.backend.event_processing.event_accumulator",
)
# Read by the interpreter or by a preloaded library at start-up: a run that sets one of these
# needs a fresh interpreter.
STARTUP_ENV_PREFIXES = ("PYTHON", "TORCH", "OMP_", "MKL_", "OPENBLAS_", "CUDA_")
STARTUP_ENV_OK = ("PYTHONPATH", "PYTHONUNBUFFERED")


def enabled() -> bool:
    return os.environ.get("RL_TESTS_NO_FORKSERVER", "") in ("", "0")


# --------------------------------------------------------------------------- the client side


class ForkedRun:
    """A run started by the server, with the part of :class:`subprocess.Popen` the tests use:
    ``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``, ``terminate``, ``returncode``, and
    ``stdout`` / ``stderr`` as binary files read from the start (the run writes them as it
    goes)."""

    def __init__(self, args: list[str], pid: int, status_fd: int, stdout: IO, stderr: IO):
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self.stdout, self.stderr = stdout, stderr
        self._status_fd = status_fd

    def poll(self) -> int | None:
        return self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _collect(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._status_fd], [], [], timeout)
            if not ready:
                return None
            status = int(_read_line(self._status_fd))
            os.close(self._status_fd)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def output(self) -> tuple[str, str]:
        """All of stdout and stderr as text."""
        texts = []
        for f in (self.stdout, self.stderr):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
        return texts[0], texts[1]

    def __del__(self):
        self.stdout.close()
        self.stderr.close()
        if self.returncode is None:
            os.close(self._status_fd)


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            raise RuntimeError("the fork server went away")
        data += chunk
    return data.decode()


def _output_file() -> tuple[IO, IO]:
    """An anonymous temp file: one end for the run to write, one to read it from the start.
    Two open file descriptions (a reopen, not a dup), so reading never moves the writer."""
    writer = tempfile.TemporaryFile()  # noqa: SIM115 (closed once handed to the run)
    reader = open(f"/proc/self/fd/{writer.fileno()}", "rb")  # noqa: SIM115
    return writer, reader


class ForkServer:
    """One server process per pytest worker, started on first use, and the socket to it."""

    def __init__(self):
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._env: dict[str, str] = {}

    def fits(self, env: dict[str, str]) -> bool:
        """Whether a run with ``env`` can be forked from the server (same start-up variables)."""
        if self._proc is None:
            return True
        keys = {k for k in set(env) | set(self._env)
                if k.startswith(STARTUP_ENV_PREFIXES) and k not in STARTUP_ENV_OK}  # fmt: skip
        return all(env.get(k) == self._env.get(k) for k in keys)

    def start(self, script: Path, args: list[str], *, cwd: Path, env: dict[str, str]) -> ForkedRun:
        if self._proc is None or self._proc.poll() is not None:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._proc = subprocess.Popen(
                [sys.executable, __file__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            theirs.close()
            self._sock, self._env = mine, dict(env)
        (out_w, out_r), (err_w, err_r) = _output_file(), _output_file()
        status_r, status_w = os.pipe()
        request = {"script": str(script), "args": args, "cwd": str(cwd), "env": env}
        socket.send_fds(self._sock, [json.dumps(request).encode()],
                        [status_w, out_w.fileno(), err_w.fileno()])  # fmt: skip
        os.close(status_w)  # the server holds its own copies now
        out_w.close()
        err_w.close()
        pid = int(_read_line(status_r))
        return ForkedRun([str(script), *args], pid, status_r, out_r, err_r)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the server reads end-of-file and exits
            self._proc.wait(timeout=30)
            self._sock = self._proc = None


SERVER = ForkServer()
atexit.register(SERVER.close)


def start(
    script: Path, args: list[str], *, cwd: Path, env: dict[str, str]
) -> ForkedRun | subprocess.Popen:
    """``python SCRIPT ARGS`` started in the background, output piped (to files when forked)."""
    if enabled() and SERVER.fits(env):
        return SERVER.start(script, args, cwd=cwd, env=env)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def run(
    script: Path, args: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """What ``subprocess.run(..., capture_output=True, text=True, timeout=...)`` returns."""
    if not (enabled() and SERVER.fits(env)):
        return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    proc = SERVER.start(script, args, cwd=cwd, env=env)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    stdout, stderr = proc.output()
    return subprocess.CompletedProcess(proc.args, code, stdout, stderr)


# --------------------------------------------------------------------------- the server side


def _serve(sock_fd: int) -> None:
    """Import PRELOAD, then fork one child per request until the client closes the socket.
    The child returns from here and runs the script (see :func:`_become`)."""
    for name in PRELOAD:
        importlib.import_module(name)
    sock = socket.socket(fileno=sock_fd)
    base_path = [p for p in sys.path[1:] if p not in _pythonpath(os.environ)]
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
        if not message:
            return
        status_w, out_fd, err_fd = fds
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            _become(json.loads(message), out_fd, err_fd, base_path)
            return
        os.close(out_fd)
        os.close(err_fd)
        os.write(status_w, f"{pid}\n".encode())
        threading.Thread(target=_report, args=(pid, status_w), daemon=True).start()


def _report(pid: int, status_w: int) -> None:
    _, status = os.waitpid(pid, 0)
    os.write(status_w, f"{status}\n".encode())
    os.close(status_w)


def _pythonpath(env: dict[str, str]) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _become(request: dict[str, Any], out_fd: int, err_fd: int, base_path: list[str]) -> None:
    """Turn this fresh fork into ``python SCRIPT ARGS`` run in ``cwd`` with ``env``."""
    import io
    import random

    import numpy as np
    import torch

    null = os.open(os.devnull, os.O_RDONLY)
    for src, dst in ((null, 0), (out_fd, 1), (err_fd, 2)):
        os.dup2(src, dst)
        os.close(src)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=unbuffered
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
        write_through=True,
    )  # fmt: skip
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    script = request["script"]
    sys.argv = [script, *request["args"]]
    sys.path[:] = [os.path.dirname(script), *_pythonpath(os.environ), *base_path]
    # Seeds as a fresh interpreter has them (random reseeds itself after a fork).
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    torch.seed()
    random.seed()
    _run_as_main(script)


def _run_as_main(script: str) -> None:
    """Run ``script`` as ``__main__`` and end the process as the interpreter would: the exit
    code from ``SystemExit`` (a message printed, code 1), a traceback and code 1 for an
    uncaught exception, death by SIGINT for an uncaught KeyboardInterrupt; then wait for
    non-daemon threads, run the atexit handlers and flush stdio. What is skipped is the
    teardown of every module (about 1 s with torch loaded): nothing a script can observe."""
    import atexit
    import runpy
    import threading

    code, interrupted = 0, False
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code, interrupted = 1, isinstance(sys.exc_info()[1], KeyboardInterrupt)
    threading._shutdown()  # what the interpreter does first at exit: join non-daemon threads
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if interrupted:  # as Python does since 3.8, so the parent sees "killed by SIGINT"
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
