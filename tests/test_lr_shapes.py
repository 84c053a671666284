"""Interval shapes at and around their boundaries, and compiled schedules end to end."""

import math

import numpy as np
import pytest

import lr_preview
import lr_scheduler as L


def compile_one(intervals, net_type=None, total_steps=None, base_lr=1e-4):
    spec = {"intervals": intervals} | ({"type": net_type} if net_type else {})
    return L.compile_schedules({"actor": spec}, base_lr=base_lr, total_steps=total_steps)["actor"]


def test_step_decay_is_piecewise_constant_and_half_open():
    s = compile_one(
        [{"start": 0, "end": 100, "lr": 1e-3}, {"start": 100, "end": 200, "lr": 5e-4}],
        "step_decay",
    )
    assert s(0) == s(99) == 1e-3
    assert s(100) == s(199) == 5e-4
    assert s(200) == s(10**9) == 5e-4  # holds the last value after the end


def test_exponential_decay_is_a_staircase_with_min_lr():
    s = compile_one(
        [{"start": 0, "end": 1000, "init_lr": 1.0, "decay_rate": 0.5, "decay_interval": 100,
          "min_lr": 0.1}],
        "exponential_decay",
    )  # fmt: skip
    assert s(0) == s(99) == 1.0
    assert s(100) == 0.5
    assert s(199) == 0.5 and s(200) == 0.25 and s(300) == 0.125
    assert s(400) == 0.1 and s(999) == 0.1  # floored at min_lr


def test_exponential_decay_restarts_its_staircase_at_its_own_start():
    s = compile_one(
        [
            {"start": 0, "end": 50, "lr": 1.0},
            {
                "type": "exponential_decay",
                "start": 50,
                "init_lr": 1.0,
                "decay_rate": 0.1,
                "decay_interval": 10,
            },
        ]  # fmt: skip
    )
    assert s(59) == 1.0 and s(60) == pytest.approx(0.1) and s(70) == pytest.approx(0.01)


def test_linear_and_cosine_hit_their_endpoints_and_midpoints():
    s = compile_one(
        [
            {"type": "linear", "start": 0, "end": 100, "init_lr": 1e-6, "final_lr": 1e-4},
            {"type": "cosine", "start": 100, "end": 300, "init_lr": 1e-4, "final_lr": 1e-6},
        ]
    )
    assert s(0) == 1e-6
    assert s(50) == pytest.approx((1e-6 + 1e-4) / 2)
    assert s(99) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.99)
    assert s(100) == 1e-4
    assert s(200) == pytest.approx((1e-4 + 1e-6) / 2)
    assert s(299) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 199 / 200)))
    assert s(300) == s(5000) == pytest.approx(1e-6)


def test_open_ended_last_interval_runs_to_the_end_of_training():
    s = compile_one(
        [{"type": "cosine", "start": 0, "init_lr": 1e-3, "final_lr": 1e-5}], total_steps=1000
    )
    assert s(500) == pytest.approx((1e-3 + 1e-5) / 2)
    assert s(1000) == pytest.approx(1e-5)


def test_lr_and_init_lr_are_synonyms():
    a = compile_one([{"start": 0, "end": 10, "lr": 3e-4}])
    b = compile_one([{"start": 0, "end": 10, "init_lr": 3e-4}])
    assert a == b


def test_type_switch_fills_documented_defaults():
    # gentle_decay-like step intervals switched to other shapes by one override.
    steps = [{"start": 0, "end": 1000, "lr": 1e-4}, {"start": 1000, "end": 3000, "lr": 5e-5}]
    lin = compile_one(steps, "linear")
    assert lin(0) == 1e-4 and lin(999) == pytest.approx(1e-4 - 5e-5 * 999 / 1000)
    assert lin(1000) == 5e-5 and lin(3000) == pytest.approx(5e-6)  # last: init_lr / 10
    exp = compile_one(steps, "exponential_decay")
    assert exp.intervals[0].decay_interval == 10  # 1/100 of the interval
    assert exp(1000 - 1) == pytest.approx(1e-4 * 0.5 ** (99 / 100))
    assert exp.intervals[0].value(1000) == pytest.approx(5e-5)  # reaches the next interval's lr


def test_relative_values_and_boundaries_follow_lr_and_run_length():
    spec = {
        "encoder": {
            "intervals": [
                {"start": 0, "end": "${run_frac:0.25}", "lr": "${base_lr:1.0}"},
                {"start": "${run_frac:0.25}", "lr": "${base_lr:0.1}"},
            ]
        }
    }
    small = L.compile_schedules(spec, base_lr=1e-4, total_steps=1000)["encoder"]
    big = L.compile_schedules(spec, base_lr=2e-4, total_steps=4000)["encoder"]
    assert small.boundaries == (0, 250) and big.boundaries == (0, 1000)
    assert small(0) == 1e-4 and small(250) == pytest.approx(1e-5)
    assert big(0) == 2e-4 and big(1000) == pytest.approx(2e-5)


def test_networks_not_named_keep_the_base_lr():
    sset = L.compile_schedules(
        {"actor": {"intervals": [{"start": 0, "lr": 1e-3}]}}, base_lr=3e-4, total_steps=10
    )
    assert sset["encoder"](5) == sset["critic"](5) == 3e-4
    assert sset.scheduled == ("actor",)
    assert L.compile_schedules(None, base_lr=3e-4)["actor"](0) == 3e-4


def test_values_at_many_steps_are_the_documented_numbers():
    s = compile_one(
        [
            {"type": "linear", "start": 0, "end": 100, "init_lr": 1e-6, "final_lr": 1e-4},
            {
                "type": "exponential_decay",
                "start": 100,
                "end": 500,
                "init_lr": 1e-4,
                "decay_rate": 0.9,
                "decay_interval": 7,
                "min_lr": 3e-5,
            },
            {"type": "cosine", "start": 500, "end": 900, "init_lr": 1e-4, "final_lr": 1e-6},
            {"type": "step_decay", "start": 900, "end": 950, "lr": 2e-6},
        ]  # fmt: skip
    )
    steps = np.array([[0, 50, 99, 100, 106], [107, 114, 499, 500, 700], [899, 900, 949, 950, 5000]])
    expected = [
        [1e-6, 5.05e-5, 9.901e-5, 1e-4, 1e-4],  # linear: 1e-6 + 99e-6 x t / 100
        [9e-5, 8.1e-5, 3e-5, 1e-4, 5.05e-5],  # stairs of 7 steps x 0.9, floored at 3e-5; cosine
        [1.0015266965829117e-06, 2e-6, 2e-6, 2e-6, 2e-6],  # cosine at 399/400; step; the hold
    ]
    values = s.values(steps)
    assert values.shape == (3, 5)
    np.testing.assert_allclose(values, expected, rtol=1e-9)


def test_polynomial_decays_by_the_closed_formula():
    # final + (init - final) x (1 - p) ** power, p = (t - start) / (end - start)
    s = compile_one(
        [{"type": "polynomial", "start": 0, "end": 1000, "lr": 1e-3, "final_lr": 1e-5, "power": 2}]
    )
    assert [s(t) for t in (0, 250, 500, 900, 1000, 10**6)] == pytest.approx(
        [1e-3, 5.66875e-4, 2.575e-4, 1.99e-5, 1e-5, 1e-5], rel=1e-12
    )
    linear = compile_one([{"type": "polynomial", "start": 0, "end": 1000, "lr": 1e-3}])
    assert linear.intervals[0].power == 1.0  # the default: linear (BERT's), to lr / 10
    assert [linear(t) for t in (0, 500, 1000)] == pytest.approx([1e-3, 5.5e-4, 1e-4], rel=1e-12)
    sqrt = compile_one([{"start": 0, "lr": 1e-3}, {"type": "polynomial", "start": 100, "lr": 4e-4,
                         "final_lr": 1e-4, "power": 0.5}], total_steps=500)  # fmt: skip
    assert sqrt(300) == pytest.approx(1e-4 + 3e-4 * 0.5**0.5, rel=1e-12)  # open: to the run's end


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("total, pct", [(1000, 0.3), (97, 0.25), (5000, 0.5)])
def test_one_cycle_is_torchs_one_cycle_lr(anneal, total, pct):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=total, pct_start=pct, anneal_strategy=anneal,
        div_factor=20.0, final_div_factor=500.0, cycle_momentum=False,
    )  # fmt: skip
    torch_lrs = []
    for _ in range(total):
        torch_lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    ours = compile_one([{"type": "one_cycle", "start": 0, "end": total, "lr": 3e-3,
                         "pct_start": pct, "anneal": anneal, "div_factor": 20,
                         "final_div_factor": 500}])  # fmt: skip
    np.testing.assert_allclose(ours.values(np.arange(total)), torch_lrs, rtol=1e-12)
    assert ours(total) == ours(10 * total) == pytest.approx(3e-3 / 20 / 500)  # held at the end


def test_one_cycle_defaults_are_torchs_and_it_follows_a_warmup_exactly():
    s = compile_one([{"type": "one_cycle", "start": 0, "lr": 1e-3}], total_steps=10_000)
    iv = s.intervals[0]
    assert (iv.pct_start, iv.div_factor, iv.final_div_factor, iv.anneal) == (0.3, 25.0, 1e4, "cos")
    assert s(0) == pytest.approx(4e-5) and s(2999) == pytest.approx(1e-3)
    assert s(9999) == pytest.approx(4e-9)
    warm = L.with_warmup(s, 1000)
    assert [warm(t) for t in (1000, 2500, 7000)] == [s(t) for t in (1000, 2500, 7000)]


def test_an_unknown_type_is_refused_never_computed_as_another():
    refused = r"intervals\[0\]\.type: unknown interval type 'polynom' \(did you mean 'polynomial'"
    with pytest.raises(L.ScheduleError, match=refused):
        compile_one([{"type": "polynom", "start": 0, "end": 10, "lr": 1e-3}])
    with pytest.raises(L.ScheduleError, match="unknown interval type 'cosin'"):
        L.Interval("cosin", 0, 10, 1e-3)
    assert (
        set(L.INTERVAL_TYPES)
        == set(L.SHAPES)
        == {"step_decay", "exponential_decay", "linear", "cosine", "polynomial", "one_cycle"}
    )
    assert L.SHAPES["polynomial"].name == "polynomial" and L.SHAPES["cosine"].name == "cosine"
    with pytest.raises(ValueError, match="already registered"):

        @L.register
        class Another(L.Shape):
            name = "cosine"


def test_a_shape_is_one_class_with_its_keys():
    class Constant3(L.Shape):
        name = "tripled"
        keys = {"factor": L.Key(3.0, "multiplies lr")}
        params = ("factor",)

        @classmethod
        def read(cls, item, layout):
            return {"factor": float(item.get("factor", 3.0))}

        @classmethod
        def function(cls, iv):
            return lambda t: iv.init_lr * iv.factor

        @classmethod
        def constant(cls, iv):
            return True

    L.register(Constant3)
    try:
        import schedules.intervals as intervals

        assert "factor" in intervals.interval_key_docs()
        s = compile_one([{"type": "tripled", "start": 0, "end": 10, "lr": 1e-3}])
        assert s(5) == pytest.approx(3e-3) and s.intervals[0].to_dict()["factor"] == 3.0
    finally:
        del L.SHAPES["tripled"]


def test_kill_switch_gives_base_lr_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("LR_SCHEDULE_DISABLE", "1")
    sset = L.compile_schedules(
        {"actor": {"intervals": [{"start": 0, "lr": 1e-3}]}}, base_lr=3e-4, total_steps=10
    )
    assert sset.disabled and sset["actor"](0) == 3e-4
    assert "LR_SCHEDULE_DISABLE" in caplog.text
    assert "LR_SCHEDULE_DISABLE" in lr_preview.format_preview(sset)


def test_kill_switch_still_validates(monkeypatch):
    monkeypatch.setenv("LR_SCHEDULE_DISABLE", "1")
    with pytest.raises(L.ScheduleError, match=r"lr_schedule\.actor\.intervals\[0\]\.lr"):
        L.compile_schedules(
            {"actor": {"intervals": [{"start": 0, "lr": -1}]}}, base_lr=3e-4, total_steps=10
        )


def test_preview_reports_schedule_ending_before_training_and_unreached_intervals():
    sset = L.compile_schedules(
        {"actor": {"intervals": [{"start": 0, "end": 100, "lr": 1e-3},
                                 {"start": 100, "end": 5000, "lr": 1e-4}]}},
        base_lr=3e-4, total_steps=50,
    )  # fmt: skip
    text = lr_preview.format_preview(sset)
    assert "never reached" in text
    short = L.compile_schedules(
        {"actor": {"intervals": [{"start": 0, "end": 100, "lr": 1e-3}]}},
        base_lr=3e-4, total_steps=400,
    )  # fmt: skip
    text = lr_preview.format_preview(short)
    assert "ends at step 100, before training ends at 400" in text
    assert "min 1.0000e-03" in text and "[encoder]  (not in the schedule: base lr)" in text


def test_plots_draw_the_schedules_and_write_pngs(tmp_path):
    from matplotlib.image import imread

    sset = L.compile_schedules(
        {"actor": {"type": "cosine", "intervals": [{"start": 0, "lr": 1e-3, "final_lr": 1e-5}]}},
        base_lr=3e-4, total_steps=1000,
    )  # fmt: skip
    fig = lr_preview.plot_schedules(sset, path=tmp_path / "one.png")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    x, y = lines["actor"].get_data()
    assert x[0] == 0 and x[-1] == 1000 and len(x) > 100
    np.testing.assert_allclose(y, [sset["actor"](int(t)) for t in x], rtol=1e-12)
    assert set(lines["critic"].get_ydata()) == {3e-4}  # not scheduled: the base lr
    assert fig.axes[0].get_yscale() == "log"
    other = L.warmup_decay(max_lr=1e-3, min_lr=1e-5, warmup_steps=100, max_steps=1000)
    fig = lr_preview.plot_comparison(
        {"a": sset, "b": other}, total_steps=1000, path=tmp_path / "two.png"
    )
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    for name in ("one.png", "two.png"):
        pixels = imread(tmp_path / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.std() > 0.05  # not blank


def test_a_preset_with_thousands_of_intervals_plots_a_thinned_figure(tmp_path):
    from matplotlib.collections import LineCollection

    rows = [{"start": 100 * k, "lr": 1e-4 * (1 - k / 4000)} for k in range(3000)]
    sset = L.compile_schedules({"actor": {"intervals": rows}}, base_lr=1e-4, total_steps=300_000)
    assert len(sset["actor"].intervals) == 3000 and sset["actor"](150) == rows[1]["lr"]
    fig = lr_preview.plot_schedules(sset, path=tmp_path / "huge.png")
    marks = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert len(marks) == 1 and len(marks[0].get_segments()) == lr_preview.MAX_MARKS
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "actor")
    x, y = line.get_data()
    np.testing.assert_allclose(y, [sset["actor"](int(t)) for t in x], rtol=1e-12)
