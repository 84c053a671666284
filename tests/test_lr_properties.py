"""Property tests: random valid schedules agree with a direct formula; broken ones are rejected."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lr_scheduler as L

lrs = st.floats(min_value=1e-7, max_value=1e-1, allow_nan=False)
kinds = st.sampled_from(L.INTERVAL_TYPES)


@st.composite
def interval_lists(draw):
    lengths = draw(st.lists(st.integers(1, 5000), min_size=1, max_size=6))
    rows, start = [], 0
    for length in lengths:
        kind = draw(kinds)
        if kind == "one_cycle":
            length = max(length, 50)  # its rise must last more than one step at pct_start 0.05
        row = {"type": kind, "start": start, "end": start + length, "lr": draw(lrs)}
        if kind in ("linear", "cosine", "polynomial"):
            row["final_lr"] = draw(lrs)
        if kind == "polynomial":
            row["power"] = draw(st.floats(0.1, 4.0))
        if kind == "one_cycle":
            row["pct_start"] = draw(st.floats(0.05, 0.95))
            row["div_factor"] = draw(st.floats(1.0, 100.0))
            row["final_div_factor"] = draw(st.floats(1.0, 1e4))
            row["anneal"] = draw(st.sampled_from(["cos", "linear"]))
        if kind == "exponential_decay":
            row["decay_rate"] = rate = draw(st.floats(0.05, 1.5))
            row["decay_interval"] = every = draw(st.integers(1, 2000))
            # The LR must stay a finite number > 0 (else the schedule is refused): at most
            # ~e^600 of growth or decay over the interval (float64 ends near e^709, e^-745).
            row["decay_interval"] = max(every, math.ceil(length * abs(math.log(rate)) / 600))
            if draw(st.booleans()):
                row["min_lr"] = draw(lrs)
        rows.append(row)
        start += length
    return rows


def direct(rows, t):
    """The SPEC formulas, written independently of the library."""
    row = next((r for r in rows if r["start"] <= t < r["end"]), None)
    if row is None:  # after the last interval: hold the value at its end
        row, t = rows[-1], rows[-1]["end"]
    x = t - row["start"]
    if row["type"] == "step_decay":
        return row["lr"]
    if row["type"] == "exponential_decay":
        lr = row["lr"] * row["decay_rate"] ** math.floor(x / row["decay_interval"])
        return max(lr, row.get("min_lr", 0.0))
    n = row["end"] - row["start"]
    if row["type"] == "one_cycle":  # torch's OneCycleLR phases, counted from the start
        peak = row["lr"]
        low = peak / row["div_factor"]
        up_end, last = row["pct_start"] * n - 1, n - 1
        if x <= up_end:
            a, b, q = low, peak, x / up_end
        else:
            a, b, q = (
                peak,
                low / row["final_div_factor"],
                min(x - up_end, last - up_end) / (last - up_end),
            )
        if row["anneal"] == "linear":
            return a + (b - a) * q
        return b + (a - b) / 2 * (math.cos(math.pi * q) + 1)
    p = x / n
    if row["type"] == "polynomial":
        return row["final_lr"] + (row["lr"] - row["final_lr"]) * (1 - p) ** row["power"]
    if row["type"] == "linear":
        return row["lr"] + (row["final_lr"] - row["lr"]) * p
    return row["final_lr"] + (row["lr"] - row["final_lr"]) * (1 + math.cos(math.pi * p)) / 2


def compile_rows(rows):
    return L.compile_schedules({"critic": {"intervals": rows}}, base_lr=1e-4)["critic"]


@settings(max_examples=150, deadline=None)
@given(rows=interval_lists(), data=st.data())
def test_compiled_schedule_agrees_with_direct_formula(rows, data):
    schedule = compile_rows(rows)
    end = rows[-1]["end"]
    for t in data.draw(st.lists(st.integers(0, end + 1000), min_size=1, max_size=20)):
        assert schedule(t) == pytest.approx(direct(rows, t), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(rows=interval_lists(), data=st.data())
def test_linear_and_cosine_are_continuous_inside_an_interval(rows, data):
    schedule = compile_rows(rows)
    for row in rows:
        if row["type"] not in ("linear", "cosine") or row["end"] - row["start"] < 2:
            continue
        t = data.draw(st.integers(row["start"], row["end"] - 2))
        a, b = schedule(t), schedule(t + 1)
        span = abs(row["final_lr"] - row["lr"])
        # One step moves the LR by at most the ramp's largest per-step slope.
        assert abs(b - a) <= span * math.pi / 2 / (row["end"] - row["start"]) + 1e-15
        assert (
            min(row["lr"], row["final_lr"]) - 1e-15 <= a <= max(row["lr"], row["final_lr"]) + 1e-15
        )


@settings(max_examples=100, deadline=None)
@given(rows=interval_lists().filter(lambda r: len(r) >= 2), data=st.data())
def test_overlaps_and_gaps_are_rejected_at_the_moved_start(rows, data):
    i = data.draw(st.integers(1, len(rows) - 1))
    shift = data.draw(st.integers(-rows[i - 1]["end"], 1000).filter(lambda s: s != 0))
    rows[i]["start"] += shift
    with pytest.raises(L.ScheduleError) as err:
        compile_rows(rows)
    assert f"lr_schedule.critic.intervals[{i}]." in str(err.value)


@settings(max_examples=100, deadline=None)
@given(
    rows=interval_lists(),
    data=st.data(),
    bad=st.sampled_from([0.0, -1e-4, math.nan, math.inf, -math.inf, "1e-4", None, True]),
)
def test_bad_learning_rates_are_rejected(rows, data, bad):
    i = data.draw(st.integers(0, len(rows) - 1))
    rows[i]["lr"] = bad
    with pytest.raises(L.ScheduleError) as err:
        compile_rows(rows)
    assert str(err.value).startswith(f"lr_schedule.critic.intervals[{i}].lr: ")
