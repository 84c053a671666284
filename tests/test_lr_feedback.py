"""Schedules that listen, in the engine: the KL guard (lr = schedule x scale, never above the
schedule) and stage starts (``start: {stage: k}``), their state, and their validation."""

from __future__ import annotations

import math

import pytest
from helpers import named_group_optimizer
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lr_properties import interval_lists

import lr_scheduler as L

STAGED = {
    "actor": {"intervals": [
        {"start": 0, "lr": 1e-3},
        {"start": {"stage": 1}, "lr": 5e-4},
        {"start": {"stage": 3}, "lr": 1e-4},
    ]},
}  # fmt: skip


def held(opt) -> dict[str, float]:
    return {g["name"]: float(g["lr"]) for g in opt.param_groups}


def guarded(spec=None, total=10_000, **guard):
    return L.compile_schedules(
        spec, base_lr=1e-3, total_steps=total, networks=L.NETWORKS,
    ) if not guard else L.compile_schedules(
        {**(spec or {}), "kl_guard": {"enabled": True, **guard}}, base_lr=1e-3, total_steps=total
    )  # fmt: skip


# --------------------------------------------------------------------------- KL guard


def test_guard_shrinks_above_high_recovers_below_low_within_its_bounds():
    guard = L.KLGuard(L.KLGuardSpec(target=0.01, high=2.0, low=0.5, factor=2.0, min_scale=0.25))
    scales = []
    for kl in (0.03, 0.03, 0.03, 0.012, 0.001, 0.001, 0.001):
        guard.observe(kl)
        scales.append(guard.scale)
    # > 0.02 halves (floored at 0.25); 0.005..0.02 leaves it; < 0.005 doubles (capped at 1).
    assert scales == [0.5, 0.25, 0.25, 0.25, 0.5, 1.0, 1.0]
    assert guard.summary() == {"updates": 7, "scaled_updates": 5, "min_scale_reached": 0.25,
                               "scale": 1.0}  # fmt: skip


def test_guard_writes_schedule_times_scale_and_only_into_its_networks():
    sset = guarded(networks=["actor"], factor=2.0)
    opt = named_group_optimizer()
    ctl = L.LRController.for_named_groups(sset, opt)
    ctl.apply(0)
    assert held(opt) == {"encoder": 1e-3, "actor": 1e-3, "critic": 1e-3}
    ctl.observe_kl(0.5)
    ctl.apply(0)  # the range cache must not hide the new scale
    assert held(opt) == {"encoder": 1e-3, "actor": 5e-4, "critic": 1e-3}
    assert ctl.verify(0)["actor"] == 5e-4  # the guard's LR is what the check expects
    opt.param_groups[1]["lr"] = 1e-3  # the schedule's value is now wrong: the guard owns it
    with pytest.raises(L.LRMismatchError, match="KL guard"):
        ctl.verify(0)


def test_guard_state_round_trips_through_the_controller():
    sset = guarded(min_scale=0.1)
    first = L.LRController.for_named_groups(sset, named_group_optimizer())
    for kl in (1.0, 1.0, 1.0):
        first.observe_kl(kl)
    state = first.state_dict()
    assert state["kl_guard"]["scale"] == pytest.approx(1 / 1.5**3)
    opt = named_group_optimizer()
    second = L.LRController.for_named_groups(sset, opt)
    second.load_state_dict(state)
    second.apply(100)
    assert held(opt)["actor"] == pytest.approx(1e-3 / 1.5**3)
    assert second.guard.summary() == first.guard.summary()


@settings(max_examples=100, deadline=None)
@given(
    rows=interval_lists(),
    kls=st.lists(st.floats(0, 1.0), min_size=1, max_size=60),
    factor=st.floats(1.01, 4.0),
    min_scale=st.floats(0.001, 1.0),
    data=st.data(),
)
def test_the_guard_never_raises_the_lr_above_the_schedule(rows, kls, factor, min_scale, data):
    spec = {"critic": {"intervals": rows}, "actor": {"intervals": rows}}
    sset = guarded(spec, total=rows[-1]["end"], factor=factor, min_scale=min_scale)
    opt = named_group_optimizer()
    ctl = L.LRController.for_named_groups(sset, opt)
    steps = sorted(data.draw(st.lists(st.integers(0, rows[-1]["end"] + 100),
                                      min_size=len(kls), max_size=len(kls))))  # fmt: skip
    for step, kl in zip(steps, kls, strict=True):
        ctl.apply(step)
        for name, lr in held(opt).items():
            cap = sset[name](step)
            assert lr <= cap * (1 + 1e-12)
            assert lr >= cap * min_scale * (1 - 1e-12)
        ctl.observe_kl(kl)


# --------------------------------------------------------------------------- stage starts


def test_a_stage_start_begins_at_the_entry_step_and_nothing_before_it_moves():
    template = L.compile_schedules(STAGED, base_lr=1e-3, total_steps=10_000, num_stages=4)
    assert template.stages_used == (1, 3)
    assert [iv.start for iv in template["actor"].intervals] == [0]  # stage 1 not yet entered
    one = template.at_stages({1: 2_345})
    both = template.at_stages({1: 2_345, 2: 3_000, 3: 7_001})
    for t in (0, 2_344):
        assert one["actor"](t) == both["actor"](t) == template["actor"](t) == 1e-3
    assert one["actor"](2_345) == one["actor"](9_999) == 5e-4  # stage 3 not entered: runs on
    assert both["actor"](7_000) == 5e-4 and both["actor"](7_001) == 1e-4
    assert both.fingerprint == template.fingerprint  # the same preset, resolved further


def test_a_ramp_before_a_stage_start_is_laid_over_the_rest_of_the_run_and_cut_there():
    spec = {"actor": {"type": "linear", "intervals": [
        {"start": 0, "lr": 1e-3}, {"start": {"stage": 1}, "lr": 1e-4}]}}  # fmt: skip
    template = L.compile_schedules(spec, base_lr=1e-3, total_steps=1_000, num_stages=2)
    entered = template.at_stages({1: 400})
    # Toward the next interval's lr over [0, 1000), whenever the stage comes.
    for t in (0, 250, 399):
        assert entered["actor"](t) == pytest.approx(template["actor"](t))
        assert template["actor"](t) == pytest.approx(1e-3 + (1e-4 - 1e-3) * t / 1_000)
    assert entered["actor"](400) == pytest.approx(1e-4)


def test_a_stage_entered_before_a_fixed_start_begins_there_and_skips_that_interval():
    spec = {"actor": {"intervals": [
        {"start": 0, "lr": 1e-3}, {"start": 500, "lr": 5e-4}, {"start": {"stage": 1}, "lr": 1e-4},
    ]}}  # fmt: skip
    early = L.compile_schedules(spec, base_lr=1e-3, total_steps=1_000).at_stages({1: 200})
    assert [(iv.start, iv.init_lr) for iv in early["actor"].intervals] == [(0, 1e-3), (500, 1e-4)]


def test_controller_enters_a_stage_and_writes_the_new_lr():
    template = L.compile_schedules(STAGED, base_lr=1e-3, total_steps=10_000, num_stages=4)
    opt = named_group_optimizer()
    ctl = L.LRController.for_named_groups(template, opt)
    ctl.apply(1_000)
    assert held(opt)["actor"] == 1e-3
    assert ctl.enter_stage(2, 1_500) is False  # no interval starts at stage 2
    assert ctl.enter_stage(1, 2_000) is True
    ctl.apply(1_999)
    assert held(opt)["actor"] == 1e-3
    ctl.apply(2_000)
    assert held(opt)["actor"] == 5e-4 and ctl.verify(2_000)["actor"] == 5e-4
    assert ctl.schedules.stage_entries == {1: 2_000}
    assert ctl.fingerprint == template.fingerprint


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.integers(1, 3_000), min_size=3, max_size=3), data=st.data())
def test_stage_entries_never_change_the_lr_before_them(gaps, data):
    entries = {1: gaps[0], 2: gaps[0] + gaps[1], 3: sum(gaps)}
    kind = data.draw(st.sampled_from(L.INTERVAL_TYPES))
    spec = {"actor": {"type": kind, "intervals": [
        {"start": 0, "lr": 1e-3, "decay_rate": 0.9, "decay_interval": 100},
        {"start": {"stage": 1}, "lr": 5e-4, "decay_rate": 0.9, "decay_interval": 100},
        {"start": {"stage": 3}, "lr": 1e-4},
    ]}}  # fmt: skip
    template = L.compile_schedules(spec, base_lr=1e-3, total_steps=10_000, num_stages=4)
    known: dict[int, int] = {}
    previous = template
    for stage in (1, 2, 3):
        known[stage] = entries[stage]
        now = template.at_stages(dict(known))
        for t in data.draw(st.lists(st.integers(0, entries[stage] - 1), min_size=1, max_size=8)):
            assert now["actor"](t) == pytest.approx(previous["actor"](t), rel=1e-12)
        previous = now


# --------------------------------------------------------------------------- validation


def stage_spec(*rows):
    return {"actor": {"intervals": [{"start": 0, "lr": 1e-3}, *rows]}}


BAD = {
    "no_curriculum": (stage_spec({"start": {"stage": 1}, "lr": 1e-4}), 0,
                      "lr_schedule.actor.intervals[1].start.stage", "no curriculum"),
    "missing_stage": (stage_spec({"start": {"stage": 4}, "lr": 1e-4}), 4,
                      "lr_schedule.actor.intervals[1].start.stage", "accepted: 1..3"),
    "stage_zero": (stage_spec({"start": {"stage": 0}, "lr": 1e-4}), 4,
                   "lr_schedule.actor.intervals[1].start.stage", ">= 1"),
    "stage_typo": (stage_spec({"start": {"stag": 1}, "lr": 1e-4}), 4,
                   "lr_schedule.actor.intervals[1].start.stag", "did you mean 'stage'"),
    "out_of_order": (stage_spec({"start": {"stage": 2}, "lr": 1e-4},
                                {"start": {"stage": 1}, "lr": 1e-5}), 4,
                     "lr_schedule.actor.intervals[2].start.stage", "stages are entered in order"),
    "fixed_after_stage": (stage_spec({"start": {"stage": 1}, "lr": 1e-4},
                                     {"start": 5000, "lr": 1e-5}), 4,
                          "lr_schedule.actor.intervals[2].start", "fixed step after a stage"),
    "end_before_stage": ({"actor": {"intervals": [{"start": 0, "end": 100, "lr": 1e-3},
                                                  {"start": {"stage": 1}, "lr": 1e-4}]}}, 4,
                         "lr_schedule.actor.intervals[0].end", "leave it out"),
    "bad_lr_after_stage": (stage_spec({"start": {"stage": 2}, "lr": -1.0}), 4,
                           "lr_schedule.actor.intervals[1].lr", "> 0"),
    "guard_key": ({"kl_guard": {"enabled": True, "targt": 0.01}}, None,
                  "lr_schedule.kl_guard.targt", "did you mean 'target'"),
    "guard_band": ({"kl_guard": {"enabled": True, "low": 1.0, "high": 1.0}}, None,
                   "lr_schedule.kl_guard.low", "must be below high"),
    "guard_floor": ({"kl_guard": {"enabled": True, "min_scale": 0}}, None,
                    "lr_schedule.kl_guard.min_scale", "(0, 1]"),
    "guard_factor": ({"kl_guard": {"enabled": True, "factor": 1.0}}, None,
                     "lr_schedule.kl_guard.factor", "> 1"),
    "guard_knob_while_off": ({"kl_guard": {"target": 0.01}}, None,
                             "lr_schedule.kl_guard.target", "lr_schedule.kl_guard.enabled=true"),
    "guard_network": ({"kl_guard": {"enabled": True, "networks": ["actr"]}}, None,
                      "lr_schedule.kl_guard.networks[0]", "did you mean 'actor'"),
    "guard_enabled": ({"kl_guard": {"enabled": "yes"}}, None,
                      "lr_schedule.kl_guard.enabled", "true or false"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_stage_starts_and_guards_name_the_key_path(case):
    spec, stages, path, words = BAD[case]
    with pytest.raises(L.ScheduleError) as err:
        L.compile_schedules(spec, base_lr=1e-3, total_steps=10_000, num_stages=stages)
    assert err.value.path == path and words in err.value.problem, str(err.value)


def test_decay_knobs_refuse_a_last_interval_that_starts_at_a_stage():
    spec = {**stage_spec({"start": {"stage": 1}, "lr": 1e-4}), "decay_frac": 0.9}
    with pytest.raises(L.ScheduleError) as err:
        L.compile_schedules(spec, base_lr=1e-3, total_steps=10_000, num_stages=4)
    assert err.value.path == "lr_schedule.decay_frac"


def test_guard_off_or_absent_keeps_the_fingerprint_of_the_plain_schedule():
    plain = L.compile_schedules(None, base_lr=1e-3)
    off = L.compile_schedules({"kl_guard": {"enabled": False}}, base_lr=1e-3)
    on = L.compile_schedules({"kl_guard": {"enabled": True}}, base_lr=1e-3)
    assert plain.fingerprint == off.fingerprint != on.fingerprint
    assert off.kl_guard is None and on.kl_guard == L.KLGuardSpec()
    assert math.isclose(on.kl_guard.target * on.kl_guard.high, 0.02)  # acts from 002's 0.02
