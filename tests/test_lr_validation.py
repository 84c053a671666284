"""Every rejected case of SPEC section 4: one ScheduleError naming the exact key path."""

import math

import pytest
from omegaconf import OmegaConf

import lr_scheduler as L

OK = [{"start": 0, "end": 100, "lr": 1e-4}, {"start": 100, "end": 200, "lr": 5e-5}]


def compile_actor(intervals, **net):
    return L.compile_schedules(
        {"actor": {"intervals": intervals, **net}}, base_lr=1e-4, total_steps=1000
    )


def with_second(**changes):
    return [OK[0], {**OK[1], **changes}]


CASES = {
    "overlap": (with_second(start=50), "actor.intervals[1].start", "overlaps interval 0"),
    "gap": (with_second(start=150), "actor.intervals[1].start", "gap"),
    "unsorted": (
        [OK[0], {"start": 300, "end": 400, "lr": 1e-4}, {"start": 100, "end": 300, "lr": 1e-4}],
        "actor.intervals[1].start", "gap",
    ),
    "unsorted_before": (
        [{"start": 0, "end": 100, "lr": 1e-4}, {"start": 200, "end": 300, "lr": 1e-4}][:1]
        + [{"start": 100, "end": 200, "lr": 1e-4}, {"start": 50, "end": 100, "lr": 1e-4}],
        "actor.intervals[2].start", "not sorted",
    ),
    "first_not_zero": ([{"start": 10, "end": 100, "lr": 1e-4}], "actor.intervals[0].start", "at 0"),
    "start_ge_end": ([{"start": 0, "end": 0, "lr": 1e-4}], "actor.intervals[0].start", "< end"),
    "negative_lr": (with_second(lr=-1e-4), "actor.intervals[1].lr", "> 0"),
    "zero_lr": (with_second(lr=0.0), "actor.intervals[1].lr", "> 0"),
    "nan_lr": (with_second(lr=math.nan), "actor.intervals[1].lr", "finite"),
    "inf_lr": (with_second(lr=math.inf), "actor.intervals[1].lr", "finite"),
    "zero_final_lr": (
        with_second(type="cosine", final_lr=0.0), "actor.intervals[1].final_lr", "> 0"
    ),
    "decay_rate_zero": (
        with_second(type="exponential_decay", decay_rate=0.0, decay_interval=5),
        "actor.intervals[1].decay_rate", "> 0",
    ),
    "decay_rate_negative": (
        with_second(type="exponential_decay", decay_rate=-0.5, decay_interval=5),
        "actor.intervals[1].decay_rate", "> 0",
    ),
    "decay_interval_zero": (
        with_second(type="exponential_decay", decay_rate=0.9, decay_interval=0),
        "actor.intervals[1].decay_interval", "> 0",
    ),
    "decay_interval_negative": (
        with_second(type="exponential_decay", decay_rate=0.9, decay_interval=-3),
        "actor.intervals[1].decay_interval", "whole number",
    ),
    "unknown_type": (with_second(type="cosine_annealing"), "actor.intervals[1].type", "accepted"),
    # OK[1] runs [100, 200): 100 stairs of one step. 1.5 ** 100 is finite, 1e4 ** 100 is not.
    "decay_rate_overflows": (
        with_second(type="exponential_decay", decay_rate=1e4, decay_interval=1),
        "actor.intervals[1].decay_rate", "past the largest float by step 200",
    ),
    "typo_key": (with_second(decay_rat=0.9), "actor.intervals[1].decay_rat", "decay_rate"),
    "missing_start": ([{"end": 100, "lr": 1e-4}], "actor.intervals[0].start", "missing"),
    "missing_lr": ([{"start": 0, "end": 100}], "actor.intervals[0].lr", "missing"),
    "wrong_type_lr": (with_second(lr="fast"), "actor.intervals[1].lr", "got 'fast'"),
    "wrong_type_start": (with_second(start="100"), "actor.intervals[1].start", "got '100'"),
    "fractional_step": (with_second(start=100.5), "actor.intervals[1].start", "whole number"),
    "bool_lr": (with_second(lr=True), "actor.intervals[1].lr", "got True"),
    "interval_not_mapping": ([1e-4], "actor.intervals[0]", "expected a mapping"),
    "lr_and_init_lr_differ": (with_second(init_lr=1e-3), "actor.intervals[1].init_lr", "same"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_rejected_with_key_path(case):
    intervals, path, words = CASES[case]
    with pytest.raises(L.ScheduleError) as err:
        compile_actor(intervals)
    message = str(err.value)
    assert message.startswith(f"lr_schedule.{path}: "), message
    assert words in message
    assert isinstance(err.value, ValueError)


def test_exponential_stairs_that_stay_finite_compile_even_when_they_grow():
    grows = compile_actor(with_second(type="exponential_decay", decay_rate=1.5, decay_interval=1))
    assert grows["actor"](199) == pytest.approx(5e-5 * 1.5**99)
    # Down to 0.0 in floating point, as torch's StepLR gets over a long run: allowed.
    vanishes = compile_actor(
        with_second(type="exponential_decay", decay_rate=1e-4, decay_interval=1)
    )
    assert vanishes["actor"](199) == 0.0
    with pytest.raises(L.ScheduleError, match=r"intervals\[0\]\.decay_rate: 1.01 > 1 on an open"):
        L.compile_schedules(  # open-ended, run length unknown: it would grow without bound
            {"actor": {"intervals": [
                {"type": "exponential_decay", "start": 0, "lr": 1e-4, "decay_rate": 1.01,
                 "decay_interval": 10},
            ]}}, base_lr=1e-4,
        )  # fmt: skip


def test_unknown_network_lists_accepted_names():
    with pytest.raises(L.ScheduleError) as err:
        L.compile_schedules({"critc": {"intervals": OK}}, base_lr=1e-4)
    assert str(err.value) == (
        "lr_schedule.critc: unknown network 'critc' (did you mean 'critic'?); "
        "accepted: encoder, actor, critic"
    )


def test_unknown_network_key_and_bad_network_type():
    with pytest.raises(L.ScheduleError, match=r"^lr_schedule\.actor\.interval: unknown key"):
        L.compile_schedules({"actor": {"interval": OK}}, base_lr=1e-4)
    with pytest.raises(L.ScheduleError, match=r"^lr_schedule\.actor\.type: unknown interval type"):
        L.compile_schedules({"actor": {"type": "warmup", "intervals": OK}}, base_lr=1e-4)
    with pytest.raises(L.ScheduleError, match=r"^lr_schedule\.actor\.intervals: missing"):
        L.compile_schedules({"actor": {"type": "cosine"}}, base_lr=1e-4)
    with pytest.raises(L.ScheduleError, match=r"^lr_schedule\.actor\.intervals: expected a non-e"):
        L.compile_schedules({"actor": {"intervals": []}}, base_lr=1e-4)
    with pytest.raises(L.ScheduleError, match=r"^lr_schedule\.actor: expected a mapping"):
        L.compile_schedules({"actor": 1e-4}, base_lr=1e-4)


def test_bad_base_lr_is_rejected():
    with pytest.raises(L.ScheduleError, match=r"^lr: learning rate must be"):
        L.compile_schedules(None, base_lr=-1.0)


def test_unresolvable_interpolation_names_its_key():
    spec = OmegaConf.create({"actor": {"intervals": [{"start": 0, "lr": "${base_lr:fast}"}]}})
    with pytest.raises(L.ScheduleError, match=r"^lr_schedule\.actor\.intervals\[0\]\.lr: cannot"):
        L.compile_schedules(spec, base_lr=1e-4)


def test_run_fraction_without_run_length_is_rejected():
    with pytest.raises(L.ScheduleError, match=r"intervals\[0\]\.end: cannot resolve"):
        L.compile_schedules(
            {"actor": {"intervals": [{"start": 0, "end": "${run_frac:0.5}", "lr": 1e-4}]}},
            base_lr=1e-4,
        )


def test_schedule_ending_before_training_is_allowed_and_holds_its_last_lr():
    actor = compile_actor(OK)["actor"]  # ends at 200 of a 1000-step run
    assert [actor(t) for t in (0, 100, 199, 200, 999, 1000)] == [1e-4, 5e-5, 5e-5, 5e-5, 5e-5, 5e-5]


def test_interpolations_reach_the_rest_of_the_config():
    context = OmegaConf.create({"lr_schedule": {"vars": {"shape": "linear", "ramp": 0.1}}})
    spec = {
        "vars": {"shape": "linear", "ramp": 0.1},
        "actor": {"intervals": [
            {"type": "linear", "start": 0, "end": "${run_frac:${lr_schedule.vars.ramp}}",
             "lr": "${base_lr:0.01}", "final_lr": "${base_lr:1.0}"},
            {"type": "${lr_schedule.vars.shape}", "start": "${run_frac:${lr_schedule.vars.ramp}}",
             "lr": "${base_lr:1.0}", "final_lr": "${base_lr:0.01}"},
        ]},
    }  # fmt: skip
    sset = L.compile_schedules(spec, base_lr=1e-3, total_steps=1000, context=context)
    assert sset["actor"].boundaries == (0, 100) and sset["actor"].intervals[1].ramp_end == 1000
    assert sset["actor"].intervals[1].type == "linear"
    assert sset.knobs == {"vars": {"shape": "linear", "ramp": 0.1}}
