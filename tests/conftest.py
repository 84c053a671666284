import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _no_kill_switch(monkeypatch):
    """Tests decide themselves whether the kill switch is on."""
    monkeypatch.delenv("LR_SCHEDULE_DISABLE", raising=False)


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MPLBACKEND", "Agg")


# Names whose call starts the real CLI (or a sweep) in a subprocess: seconds each.
_SUBPROCESS_RUNNERS = {"run_cli", "start_cli", "kill_then_rerun", "finished_run", "run_sweep",
                       "subprocess"}  # fmt: skip


def _starts_a_process(func, depth: int = 3) -> bool:
    """Whether a test (or a fixture it uses) calls one of the runners, directly or through the
    test files' own helpers (followed ``depth`` calls deep)."""
    code = getattr(func, "__code__", None)
    if code is None:
        return False
    names = set(code.co_names)
    if _SUBPROCESS_RUNNERS & names:
        return True
    if depth == 0:
        return False
    scope = getattr(func, "__globals__", {})
    helpers = (scope.get(n) for n in names)
    return any(
        _starts_a_process(h, depth - 1) for h in helpers
        if callable(h) and getattr(h, "__module__", "").split(".")[0] in _TEST_MODULES
    )  # fmt: skip


_TEST_MODULES = {p.stem for p in Path(__file__).parent.glob("*.py")}


def pytest_collection_modifyitems(config, items):
    """``slow``: every test that runs the CLI in a subprocess, itself or through a fixture, so
    ``pytest -m "not slow"`` is the quick loop (unit and property tests)."""
    for item in items:
        func = getattr(item, "function", None)
        fixtures = getattr(item, "_fixtureinfo", None)
        defs = []
        if fixtures is not None:
            for name in fixtures.names_closure:
                defs += [d.func for d in fixtures.name2fixturedefs.get(name, ())]
        if any(_starts_a_process(f) for f in (func, *defs)):
            item.add_marker(pytest.mark.slow)
