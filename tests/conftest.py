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
