"""The CLI tests start runs by forking a server that has imported torch (tests/forkserver.py).
A forked run must look to the script exactly like ``python SCRIPT ARGS`` from a shell: these
tests run one probe script both ways and compare what it saw and how it ended."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import forkserver
import pytest

PROBE = textwrap.dedent(
    """
    import atexit, json, os, sys
    mode = sys.argv[1]
    if mode == "report":  # (torch only here: a plain run of the other modes starts in 0.1 s)
        import numpy as np, torch
        import probe_pkg  # found only through PYTHONPATH
        print(json.dumps({
            "argv": sys.argv[1:], "cwd": os.getcwd(), "env": os.environ.get("PROBE_VAR"),
            "path0": sys.path[0], "pkg": probe_pkg.NAME, "main": __name__,
            "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                      ("lr_scheduler", "schedules", "training", "agents")),
            "stdin": sys.stdin.read(), "np": float(np.random.rand()),
            "torch": float(torch.rand(1)),
        }))
    elif mode == "raise":
        raise ValueError("boom")
    elif mode == "exit":
        atexit.register(lambda: print("atexit ran", flush=True))
        sys.exit(int(sys.argv[2]))
    elif mode == "message":
        sys.exit("a message")
    elif mode == "thread":  # the interpreter waits for a non-daemon thread before it exits
        import threading, time
        def late():
            time.sleep(0.3)
            print("thread done", flush=True)
        threading.Thread(target=late).start()
        atexit.register(lambda: print("atexit after the thread", flush=True))
    elif mode == "interrupt":
        raise KeyboardInterrupt
    elif mode == "sleep":
        print("ready", flush=True)
        import time
        time.sleep(60)
    """
)


@pytest.fixture()
def probe(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    pkg = tmp_path / "extra" / "probe_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("NAME = 'from PYTHONPATH'\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {**os.environ, "PROBE_VAR": "set", "PYTHONPATH": str(tmp_path / "extra")}
    return script, workdir, env


def both(script, args, workdir, env):
    """The same command through the fork server and as a plain subprocess."""
    forked = forkserver.run(script, args, cwd=workdir, env=env, timeout=60)
    plain = subprocess.run([sys.executable, str(script), *args], cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    return forked, plain


def test_a_forked_run_sees_its_own_argv_cwd_env_path_and_fresh_seeds(probe):
    script, workdir, env = probe
    forked, plain = both(script, ["report", "x=1"], workdir, env)
    assert forked.returncode == plain.returncode == 0, forked.stderr + plain.stderr
    seen, expected = json.loads(forked.stdout), json.loads(plain.stdout)
    for key in ("argv", "cwd", "env", "path0", "pkg", "main", "project_modules", "stdin"):
        assert seen[key] == expected[key], key
    assert seen["project_modules"] == []  # the server imported nothing of this project
    again = json.loads(forkserver.run(script, ["report"], cwd=workdir, env=env,
                                      timeout=60).stdout)  # fmt: skip
    assert (again["np"], again["torch"]) != (seen["np"], seen["torch"])  # seeded per run


@pytest.mark.parametrize(
    "args", [["raise"], ["exit", "3"], ["exit", "0"], ["exit", "300"], ["message"], ["thread"],
             ["interrupt"]],
)  # fmt: skip
def test_a_forked_run_ends_with_the_exit_code_and_output_python_gives(probe, args):
    script, workdir, env = probe
    forked, plain = both(script, args, workdir, env)
    assert forked.returncode == plain.returncode
    assert forked.stdout == plain.stdout  # atexit handlers ran
    assert forked.stderr.splitlines()[-1:] == plain.stderr.splitlines()[-1:]


def _when_ready(proc) -> None:
    deadline = time.time() + 30
    while b"ready" not in proc.stdout.read(5) and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_signal_reaches_the_forked_run_as_from_a_shell(probe, signum):
    script, workdir, env = probe
    forked = forkserver.start(script, ["sleep"], cwd=workdir, env=env)
    assert isinstance(forked, forkserver.ForkedRun)
    plain = subprocess.Popen([sys.executable, str(script), "sleep"], cwd=workdir, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    for proc in (forked, plain):
        _when_ready(proc)
        proc.send_signal(signum)
    assert forked.wait(timeout=30) == plain.wait(timeout=30) == -signum


def test_a_variable_read_at_start_up_gets_a_fresh_interpreter(probe):
    script, workdir, env = probe
    forkserver.run(script, ["exit", "0"], cwd=workdir, env=env, timeout=60)  # server started
    proc = forkserver.start(script, ["exit", "0"], cwd=workdir,
                            env={**env, "OMP_NUM_THREADS": "7"})  # fmt: skip
    assert isinstance(proc, subprocess.Popen)
    assert proc.wait(timeout=60) == 0
