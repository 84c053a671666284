"""The LR each optimizer step really used, inferred from the parameter change.

Plain SGD (no momentum, no weight decay) moves a parameter by ``lr x grad``; with a loss whose
gradient is a known constant the LR of every step is read off the weights, whatever the param
groups say. Checked against the compiled schedule at every step: for one optimizer per network,
for one optimizer with named groups, for a float or a tensor LR, eager or through
``torch.compile``, and for an optimizer rebuilt from a checkpoint file mid-run.
"""

from __future__ import annotations

import pytest
import torch

import lr_scheduler as L
from agents.base import load_optimizer_state
from training import checkpoint

STEPS, RESUME_AT = 40, 17
SPEC = {
    "actor": {"type": "cosine", "intervals": [
        {"start": 0, "end": 10, "type": "linear", "lr": 1e-3, "final_lr": 4e-2},
        {"start": 10, "lr": 4e-2, "final_lr": 2e-3},
    ]},
    "critic": {"type": "exponential_decay", "intervals": [
        {"start": 0, "lr": 5e-2, "decay_rate": 0.5, "decay_interval": 7},
    ]},
}  # fmt: skip
GRAD = {"actor": 0.5, "critic": 2.0}  # d loss / d w of every weight of each network


def schedules() -> L.ScheduleSet:
    return L.compile_schedules(SPEC, base_lr=1e-3, total_steps=STEPS, networks=list(SPEC))


def build(shared: bool, tensor_lr: bool):
    """Networks (one weight vector each) and their optimizers as an agent exposes them."""
    weights = {n: torch.nn.Parameter(torch.zeros(3)) for n in SPEC}

    def lr():  # a tensor LR per group, as the agents build them
        return torch.tensor(0.123) if tensor_lr else 0.123

    if shared:
        groups = [{"name": n, "params": [w], "lr": lr()} for n, w in weights.items()]
        return weights, dict.fromkeys(SPEC, torch.optim.SGD(groups, lr=0.123))
    return weights, {n: torch.optim.SGD([w], lr=lr()) for n, w in weights.items()}


def train(weights, optimizers, steps, compiled: bool) -> list[dict[str, float]]:
    """Steps ``steps`` (global steps), the controller writing the LRs first; returns the LR each
    network's step used, inferred from its weights."""
    controller = L.LRController(schedules(), optimizers)
    unique = list({id(o): o for o in optimizers.values()}.values())
    stepper = [torch.compile(o.step, backend="eager") if compiled else o.step for o in unique]
    used = []
    for step in steps:
        controller.apply(step)
        before = {n: w.detach().clone() for n, w in weights.items()}
        for opt in unique:
            opt.zero_grad()
        sum(GRAD[n] * w.sum() for n, w in weights.items()).backward()
        for do_step in stepper:
            do_step()
        used.append({n: float((before[n] - w.detach()).mean()) / GRAD[n]
                     for n, w in weights.items()})  # fmt: skip
    return used


def assert_schedule_used(used, steps):
    expected = schedules()
    for step, lrs in zip(steps, used, strict=True):
        for name, lr in lrs.items():
            assert lr == pytest.approx(expected[name](step), rel=1e-4), (name, step)


# A compiled step runs with tensor LRs only (a float is baked into the graph as a constant;
# the agents use tensors under compile).
LAYOUTS = [(shared, tensor, compiled) for shared in (False, True) for tensor, compiled in
           ((False, False), (True, False), (True, True))]  # fmt: skip


@pytest.mark.parametrize("shared,tensor_lr,compiled", LAYOUTS, ids=[
    f"{'named-groups' if s else 'per-network'}-{'tensor' if t else 'float'}-lr"
    f"{'-compiled' if c else ''}" for s, t, c in LAYOUTS])  # fmt: skip
def test_each_step_uses_the_schedules_lr_also_after_a_restore_from_file(
    tmp_path, shared, tensor_lr, compiled
):
    steps = list(range(STEPS))
    weights, optimizers = build(shared, tensor_lr)
    assert_schedule_used(train(weights, optimizers, steps, compiled), steps)

    # The same run stopped at RESUME_AT and rebuilt from the checkpoint file.
    weights, optimizers = build(shared, tensor_lr)
    train(weights, optimizers, steps[:RESUME_AT], compiled)
    unique = {id(o): o for o in optimizers.values()}
    checkpoint.save_atomic({
        "global_step": RESUME_AT,
        "weights": {n: w.detach() for n, w in weights.items()},
        "optimizers": [o.state_dict() for o in unique.values()],
    }, tmp_path / "latest.pt")  # fmt: skip
    state = checkpoint.load(tmp_path / "latest.pt")
    weights, optimizers = build(shared, tensor_lr)
    with torch.no_grad():
        for name, w in weights.items():
            w.copy_(state["weights"][name])
    for opt, saved in zip({id(o): o for o in optimizers.values()}.values(),
                          state["optimizers"], strict=True):  # fmt: skip
        load_optimizer_state(opt, saved)
    rest = steps[state["global_step"] :]
    assert_schedule_used(train(weights, optimizers, rest, compiled), rest)


def test_the_inference_sees_a_step_taken_at_a_stale_lr():
    """The oracle itself: an optimizer that ignores what is written to its groups is caught."""
    weights, optimizers = build(shared=False, tensor_lr=False)
    real_step = torch.optim.SGD.step

    def stale(self, *args, **kwargs):
        written = [g["lr"] for g in self.param_groups]
        for g in self.param_groups:
            g["lr"] = 0.123  # the constructor's LR, whatever the controller wrote
        out = real_step(self, *args, **kwargs)
        for g, lr in zip(self.param_groups, written, strict=True):
            g["lr"] = lr
        return out

    for opt in optimizers.values():
        opt.step = stale.__get__(opt)
    with pytest.raises(AssertionError):
        assert_schedule_used(train(weights, optimizers, range(5), False), range(5))


def test_one_lr_tensor_shared_by_groups_with_different_schedules_is_refused():
    """``SGD(groups, lr=torch.tensor(x))`` gives every group the same tensor: writing the actor's
    LR into it would move the critic too, so binding refuses it, naming the networks."""
    weights = {n: torch.nn.Parameter(torch.zeros(3)) for n in SPEC}
    groups = [{"name": n, "params": [w]} for n, w in weights.items()]
    opt = torch.optim.SGD(groups, lr=torch.tensor(0.1))
    with pytest.raises(L.ScheduleError, match="same LR tensor") as err:
        L.LRController(schedules(), dict.fromkeys(SPEC, opt))
    assert "critic" in str(err.value) and "actor" in str(err.value)
