"""SPEC section 3: the schedule's clock is the global step, the env steps the agent has taken
summed over parallel envs. Updating more often, running more envs, or repeating actions longer
(with the frame budget scaled so the run keeps its steps) must not move the schedule: at the same
global step the optimizers hold the same LRs.

Each run counts its env steps at the env itself (not the loop's counter) and records, at every
optimizer step, that count and the LRs in the optimizer's param groups. PPO spreads a rollout's
gradient steps over the rollout's global steps (`agent.step_on`), so there the key is the global
step the LR was computed for, checked to lie inside the rollout just collected."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli import TINY

from training.build import workspace_from_overrides

# DrQ-v2: 300 steps, updates from step 100; PPO: 512 steps. A warmup then a cosine decay, so the
# LR differs at almost every step.
DRQV2 = [
    *TINY, "lr_schedule=warmup_cosine", "lr_schedule.warmup_frac=0.3", "num_train_frames=300",
    "num_seed_frames=100", "eval_every_frames=100000", "resume.enabled=false",
]  # fmt: skip
PPO = [
    "agent=ppo", "env=cartpole", "lr_schedule=warmup_cosine", "lr_schedule.warmup_frac=0.3",
    "agent.num_steps=32", "num_train_frames=512", "eval_every_frames=100000", "progress=lines",
    "resume.enabled=false",
]  # fmt: skip


def lrs_by_env_step(overrides: list[str], run_dir: Path) -> dict[int, dict[str, float]]:
    """Train; returns env steps taken (counted at the env) -> network -> LR, at every optimizer
    step."""
    ws = workspace_from_overrides(overrides, run_dir)
    taken = [0]
    if hasattr(ws, "envs"):  # on-policy: one vector step is a step of every env
        env, per_call = ws.envs, ws.num_envs
    else:  # off-policy: one call is one agent action (action_repeat frames)
        env, per_call = ws.env, 1
    step = env.step

    def counting_step(action):
        taken[0] += per_call
        return step(action)

    env.step = counting_step
    clock = [None]
    if hasattr(ws, "envs"):
        apply = ws.lr.apply

        def remember(step):
            clock[0] = step
            return apply(step)

        ws.lr.apply = remember
    seen: dict[int, dict[str, float]] = {}
    optimizers = getattr(ws.agent, "optimizers", None) or {"": ws.agent.optimizer}
    for label, optimizer in optimizers.items():

        def record(opt, args, kwargs, label=label):
            at = taken[0]
            if clock[0] is not None:  # on-policy: within the rollout just collected
                assert at - ws.num_envs * ws.agent.num_steps <= clock[0] < at
                at = clock[0]
            lrs = seen.setdefault(at, {})
            for group in opt.param_groups:
                lrs[group.get("name", label)] = float(group["lr"])

        optimizer.register_step_pre_hook(record)
    ws.train()
    return seen


@pytest.mark.parametrize(
    "base,variant",
    [
        pytest.param(DRQV2, ["update_every_steps=1"], id="drqv2-update_every_steps"),
        pytest.param(
            DRQV2,
            ["action_repeat=2", "num_train_frames=600", "num_seed_frames=200"],
            id="drqv2-action_repeat",
        ),
        pytest.param(PPO, ["agent.num_envs=2"], id="ppo-num_envs"),
    ],
)
def test_the_lr_at_a_global_step_does_not_depend_on_how_the_steps_are_taken(
    tmp_path, base, variant
):
    reference = lrs_by_env_step(base, tmp_path / "reference")
    changed = lrs_by_env_step([*base, *variant], tmp_path / "changed")
    common = sorted(set(reference) & set(changed))
    assert len(common) >= 4, (sorted(reference)[:5], sorted(changed)[:5])
    for step in common:
        assert changed[step] == reference[step], step
    assert len({lrs["actor"] for lrs in reference.values()}) >= 4  # the schedule moved
