"""Small helpers several test files share (the CLI ones are in tests/cli.py)."""

from __future__ import annotations

import torch

import lr_scheduler as L

NO_ENV = "env.id=DoesNotExist-v0"  # a run that built the env would fail on this id


def named_group_optimizer(lr=3e-4) -> torch.optim.Optimizer:
    """One Adam whose param groups are named encoder / actor / critic (PPO's layout)."""
    groups = [{"params": torch.nn.Linear(2, 2).parameters(), "name": n} for n in L.NETWORKS]
    return torch.optim.Adam(groups, lr=lr)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
