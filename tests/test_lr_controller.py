"""The controller on both optimizer layouts, its state, the torch adapter, the builders."""

import pytest
import torch
from helpers import named_group_optimizer

import lr_scheduler as L

SPEC = {
    "encoder": {"intervals": [{"start": 0, "end": 100, "lr": 1e-3}, {"start": 100, "lr": 1e-4}]},
    "actor": {"type": "linear",
              "intervals": [{"start": 0, "end": 50, "lr": 1e-5, "final_lr": 1e-3}]},
    "critic": {"type": "exponential_decay",
               "intervals": [{"start": 0, "lr": 1e-3, "decay_rate": 0.5, "decay_interval": 30}]},
}  # fmt: skip


def sset(spec=SPEC, **kw):
    return L.compile_schedules(spec, base_lr=3e-4, total_steps=200, **kw)


def three_optimizers(lr=3e-4):
    """One Adam per network; a tensor ``lr`` is copied, so each holds its own."""
    nets = {n: torch.nn.Linear(2, 2) for n in L.NETWORKS}
    own = (lambda: lr.clone()) if isinstance(lr, torch.Tensor) else (lambda: lr)
    return {n: torch.optim.Adam(m.parameters(), lr=own()) for n, m in nets.items()}


def test_one_optimizer_per_network():
    opts = three_optimizers()
    ctl = L.LRController.for_optimizers(sset(), opts)
    for step in (0, 25, 99, 100, 160, 199, 500):
        lrs = ctl.apply(step)
        for name, opt in opts.items():
            assert opt.param_groups[0]["lr"] == lrs[name] == sset()[name](step)


def test_one_optimizer_with_named_groups():
    opt = named_group_optimizer()
    ctl = L.LRController.for_named_groups(sset(), opt)
    ctl.apply(120)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-3, 1e-3 * 0.5**4]


def test_missing_binding_is_reported():
    opts = three_optimizers()
    del opts["critic"]
    with pytest.raises(L.ScheduleError, match="critic"):
        L.LRController.for_optimizers(sset(), opts)


def test_apply_writes_only_when_the_value_changes_and_verify_catches_foreign_writes():
    opt = named_group_optimizer()
    ctl = L.LRController.for_named_groups(sset(), opt)
    ctl.apply(60)
    assert ctl.verify(60) == {"encoder": 1e-3, "actor": 1e-3, "critic": 1e-3 * 0.5**2}
    opt.param_groups[0]["lr"] = 42.0  # something else writes the encoder's LR
    ctl.apply(61)  # within a constant stretch: no write, so the foreign value stays ...
    with pytest.raises(L.LRMismatchError, match=r"encoder.*step 61.*expected 0\.001.*42"):
        ctl.verify(61)  # ... and is reported
    ctl.apply(100)
    assert opt.param_groups[0]["lr"] == 1e-4


LAYOUTS = {
    "one optimizer per network": lambda: three_optimizers(),
    "named groups": lambda: named_group_optimizer(),
    "tensor lrs": lambda: three_optimizers(lr=torch.tensor(3e-4)),
}


def bind(opts):
    if isinstance(opts, dict):
        return L.LRController.for_optimizers(sset(), opts)
    return L.LRController.for_named_groups(sset(), opts)


def group_lrs(opts) -> dict:
    if isinstance(opts, dict):
        return {n: float(o.param_groups[0]["lr"]) for n, o in opts.items()}
    return {g["name"]: float(g["lr"]) for g in opts.param_groups}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_controller_keeps_writing_the_optimizer_after_load_state_dict(layout):
    opts = LAYOUTS[layout]()
    ctl = bind(opts)
    ctl.apply(10)
    saved = (
        {n: o.state_dict() for n, o in opts.items()} if isinstance(opts, dict)
        else opts.state_dict()
    )  # fmt: skip
    ctl.apply(20)
    # Loading replaces every param-group dict of the optimizer (as a resume does).
    if isinstance(opts, dict):
        for n, o in opts.items():
            o.load_state_dict(saved[n])
    else:
        opts.load_state_dict(saved)
    for step in (20, 21, 99, 100, 150):
        ctl.apply(step)
        expected = {n: sset()[n](step) for n in L.NETWORKS}
        assert group_lrs(opts) == pytest.approx(expected, rel=1e-6), step
        assert ctl.verify(step) == pytest.approx(expected, rel=1e-6)


def test_tensor_lrs_are_updated_in_place():
    model = torch.nn.Linear(2, 2)
    lr = torch.tensor(3e-4)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tensor = opt.param_groups[0]["lr"]
    ctl = L.LRController.for_optimizers({"actor": sset()["actor"]}, {"actor": opt})
    ctl.apply(25)
    assert opt.param_groups[0]["lr"] is tensor
    assert tensor.item() == pytest.approx(sset()["actor"](25))


def test_state_round_trip_and_fingerprint_mismatch():
    ctl = L.LRController.for_optimizers(sset(), three_optimizers())
    ctl.apply(77)
    state = ctl.state_dict()
    again = L.LRController.for_optimizers(sset(), three_optimizers())
    again.load_state_dict(state)  # same schedule: accepted
    changed = dict(SPEC, encoder={"intervals": [{"start": 0, "lr": 2e-4}]})
    other = L.LRController.for_optimizers(sset(changed), three_optimizers())
    with pytest.raises(L.ScheduleMismatchError, match=r"encoder\.intervals\[0\]"):
        other.load_state_dict(state)
    other.load_state_dict(state, allow_change=True)
    other.load_state_dict({})  # an old checkpoint without schedule state loads


def test_fingerprint_follows_resolved_values_not_spelling():
    half = "${run_frac:0.5}"
    relative = {"actor": {"intervals": [{"start": 0, "end": half, "lr": "${base_lr:2}"},
                                        {"start": half, "lr": 1e-4}]}}  # fmt: skip
    absolute = {"actor": {"intervals": [{"start": 0, "end": 100, "lr": 6e-4},
                                        {"start": 100, "lr": 1e-4}]}}  # fmt: skip
    assert sset(relative).fingerprint == sset(absolute).fingerprint
    bigger = L.compile_schedules(relative, base_lr=3e-4, total_steps=400)
    assert bigger.fingerprint != sset(absolute).fingerprint


def test_kill_switch_in_controller_for_library_schedules(monkeypatch):
    monkeypatch.setenv("LR_SCHEDULE_DISABLE", "1")
    opts = three_optimizers(lr=5e-4)
    built = {n: L.warmup_decay(max_lr=1e-3, min_lr=1e-5, warmup_steps=10, max_steps=100)
             for n in L.NETWORKS}  # fmt: skip
    ctl = L.LRController.for_optimizers(built, opts)
    ctl.apply(50)
    assert ctl.disabled and {o.param_groups[0]["lr"] for o in opts.values()} == {5e-4}


def test_adapter_is_an_lr_scheduler_and_round_trips():
    schedule = L.warmup_decay(max_lr=1e-2, min_lr=1e-4, warmup_steps=10, max_steps=100)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = L.ScheduledLR(opt, schedule)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    seen = []
    for _ in range(30):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([schedule(t) for t in range(1, 31)])
    state = sched.state_dict()
    opt2 = torch.optim.SGD(model.parameters(), lr=1.0)
    sched2 = L.ScheduledLR(opt2, schedule)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == schedule(30)
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == schedule(31) and sched2.get_last_lr() == [schedule(31)]
    other = L.ScheduledLR(torch.optim.SGD(model.parameters(), lr=1.0), L.Schedule.constant(1e-3))
    with pytest.raises(L.ScheduleMismatchError):
        other.load_state_dict(state)


def test_adapter_with_named_groups():
    opt = named_group_optimizer()
    sched = L.ScheduledLR(opt, sset())
    for _ in range(120):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [sset()[n](120) for n in L.NETWORKS]


def test_warmup_decay_builder():
    for decay in ("cosine", "linear", "exponential"):
        s = L.warmup_decay(max_lr=1e-3, final_div_factor=100, warmup_steps=100, max_steps=1000,
                           decay=decay)  # fmt: skip
        assert s(0) == pytest.approx(1e-5) and s(100) == 1e-3
        assert s(999) > s(1000) == pytest.approx(1e-5) == s(10**6)
        assert s(50) == pytest.approx((1e-5 + 1e-3) / 2)
    with pytest.raises(L.ScheduleError, match="^warmup_steps"):
        L.warmup_decay(max_lr=1e-3, min_lr=1e-5, warmup_steps=1000, max_steps=1000)
    with pytest.raises(L.ScheduleError, match="^decay"):
        L.warmup_decay(max_lr=1e-3, min_lr=1e-5, max_steps=1000, decay="step")


def test_join_restarts_each_segments_clock_and_cuts_it():
    warm = L.warmup_decay(max_lr=1e-4, min_lr=1e-5, warmup_steps=1000, max_steps=10000)
    fine = L.warmup_decay(max_lr=1e-5, min_lr=1e-6, max_steps=20000, decay="linear")
    joined = L.join({(0, 10000): warm, (10000, 30000): fine})
    assert joined(500) == warm(500)
    assert joined(15000) == pytest.approx(fine(5000))
    assert joined(30000) == pytest.approx(1e-6)
    cut = L.join([(0, 5000, warm), (5000, None, L.Schedule.constant(2e-5))])
    assert cut(4999) == pytest.approx(warm(4999)) and cut(5000) == 2e-5
    held = L.join([(0, 20000, warm), (20000, None, fine)])  # warm ends at 10000 and holds
    assert held(15000) == pytest.approx(1e-5)
    with pytest.raises(
        L.ScheduleError, match=r"segments\[\(200, 300\)\]: starts at 200: leaves a gap"
    ):
        L.join([(0, 100, warm), (200, 300, fine)])


def test_multi_step_builder():
    s = L.multi_step(1e-3, milestones=[0.5, 0.75], factors=[0.1, 0.5], total_steps=1000)
    assert (s(499), s(500), s(749), s(750)) == pytest.approx((1e-3, 1e-4, 1e-4, 5e-5))
    with pytest.raises(L.ScheduleError, match="^milestones"):
        L.multi_step(1e-3, milestones=[0.75, 0.5], total_steps=1000)


def test_schedules_pickle():
    import pickle

    s = sset()
    assert pickle.loads(pickle.dumps(s["critic"])) == s["critic"]
