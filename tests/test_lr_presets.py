"""Every shipped preset (cfgs/lr_schedule/*.yaml) at the breakpoints LR_SCHEDULING.md documents,
as literal numbers worked out from the documented formulas (base lr 1e-4, a 100k-step run: the
defaults), a type switch by one override on every preset against the documented defaults, and
the fingerprints checkpoints written before the shape registry carry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import lr_scheduler as L
from training.build import compose_config
from training.run import compile_run_schedules

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "cfgs" / "lr_schedule").glob("*.yaml"))
EVERY = ("encoder", "actor", "critic")


def compiled(preset: str, *overrides: str):
    return compile_run_schedules(compose_config([f"lr_schedule={preset}", *overrides]))


def cosine(a: float, b: float, p: float) -> float:
    return b + (a - b) * (1 + math.cos(math.pi * p)) / 2


# preset (+ overrides) -> networks -> [(global step, LR)], from the LR_SCHEDULING.md table.
TABLE = {
    ("constant",): {EVERY: [(0, 1e-4), (50_000, 1e-4), (100_000, 1e-4), (10**7, 1e-4)]},
    # 1x -> 0.5x -> 0.25x at 1/3 and 2/3 (${run_frac:0.333333} = 33333, 0.666667 -> 66667)
    ("gentle_decay",): {EVERY: [(0, 1e-4), (33_332, 1e-4), (33_333, 5e-5), (66_666, 5e-5),
                                (66_667, 2.5e-5), (100_000, 2.5e-5)]},
    # 1x -> 0.5x -> 0.2x -> 0.05x at 20 %, 40 %, 60 %
    ("aggressive_decay",): {EVERY: [(0, 1e-4), (19_999, 1e-4), (20_000, 5e-5), (40_000, 2e-5),
                                    (59_999, 2e-5), (60_000, 5e-6), (100_000, 5e-6)]},
    # 1x -> 0.1x, a stair every 0.5 % (500 steps): 1e-4 x 0.1 ** (stairs / 200)
    ("exponential_smooth",): {EVERY: [(0, 1e-4), (499, 1e-4), (500, 9.885530946569389e-05),
                                      (50_000, 3.1622776601683795e-05), (100_000, 1e-5)]},
    # stage_based before any entry: 1x (the drops wait for the curriculum)
    ("stage_based",): {EVERY: [(0, 1e-4), (99_999, 1e-4)]},
    # the same LRs at 8 %, 32 %, 39 %
    ("stage_based_fixed",): {EVERY: [(0, 1e-4), (7_999, 1e-4), (8_000, 8e-5), (32_000, 5e-5),
                                     (38_999, 5e-5), (39_000, 3e-5), (100_000, 3e-5)]},
    # encoder 0.8x halved at 50 %; actor exponential 1.2x -> 0.3x (stairs of 1 %:
    # 1.2e-4 x 0.25 ** (stairs / 100)); critic 1.5x -> 0.5x at 30 %
    ("differential",): {
        ("encoder",): [(0, 8e-5), (49_999, 8e-5), (50_000, 4e-5), (100_000, 4e-5)],
        ("actor",): [(0, 1.2e-4), (999, 1.2e-4), (1_000, 1.1834792453920311e-04),
                     (50_000, 6e-5), (100_000, 3e-5)],
        ("critic",): [(0, 1.5e-4), (29_999, 1.5e-4), (30_000, 5e-5), (100_000, 5e-5)],
    },
    # 0.01x -> 1x over 5 % (a linear ramp: 1e-4 x (0.01 + 0.99 t / 5000)), then cosine to 0.01x
    # (at 3/4 of the decay: 1e-6 + 99e-6 x (1 + cos(3 pi / 4)) / 2)
    ("warmup_cosine",): {EVERY: [(0, 1e-6), (2_500, 5.05e-5), (5_000, 1e-4), (52_500, 5.05e-5),
                                 (76_250, 1.54982143312659e-05), (100_000, 1e-6)]},
    # the one-knob overrides: a 10 % warmup, then a linear decay to 0.01x
    ("warmup_cosine", "lr_schedule.warmup_frac=0.1", "lr_schedule.decay=linear"): {
        EVERY: [(0, 1e-6), (5_000, 5.05e-5), (10_000, 1e-4), (55_000, 5.05e-5), (77_500, 2.575e-5),
                (100_000, 1e-6)]
    },
    # 0.01x -> 0.1x over 2.5 %, 0.1x -> 1x until 25 %, then linear decay to 0.01x
    ("recurrent_warmup",): {EVERY: [(0, 1e-6), (1_250, 5.5e-6), (2_500, 1e-5), (13_750, 5.5e-5),
                                    (25_000, 1e-4), (62_500, 5.05e-5), (100_000, 1e-6)]},
    # 1x -> 0.001x over the run
    ("linear_anneal",): {EVERY: [(0, 1e-4), (50_000, 5.005e-5), (100_000, 1e-7)]},
}  # fmt: skip


def test_the_table_covers_every_shipped_preset():
    assert {key[0] for key in TABLE} == set(PRESETS)


@pytest.mark.parametrize("key", list(TABLE), ids=lambda key: " ".join(key))
def test_every_preset_at_its_documented_breakpoints(key):
    sset = compiled(*key)
    for networks, rows in TABLE[key].items():
        for net in networks:
            got = [(t, sset[net](t)) for t, _ in rows]
            assert got == [(t, pytest.approx(lr, rel=1e-9)) for t, lr in rows], net


def test_stage_based_drops_at_each_entry():
    # 1x in stage 0, 0.8x from stage 1, 0.5x from stage 2, 0.3x from stage 3
    sset = compiled("stage_based").at_stages({1: 10_000, 2: 30_000, 3: 50_000})
    rows = [(9_999, 1e-4), (10_000, 8e-5), (29_999, 8e-5), (30_000, 5e-5), (50_000, 3e-5),
            (100_000, 3e-5)]  # fmt: skip
    for net in EVERY:
        assert [(t, sset[net](t)) for t, _ in rows] == [(t, pytest.approx(v)) for t, v in rows]


# The actor's last interval as compiled from the preset (start, lr, final_lr given or None,
# decay_interval given or None), over a 100k-step run: the inputs of the documented defaults.
LAST_ACTOR_INTERVAL = {
    "aggressive_decay": (60_000, 5e-6, None, None),
    "constant": (0, 1e-4, None, None),
    "differential": (0, 1.2e-4, 3e-5, 1_000),
    "exponential_smooth": (0, 1e-4, 1e-5, 500),
    "gentle_decay": (66_667, 2.5e-5, None, None),
    "linear_anneal": (0, 1e-4, 1e-7, None),
    "recurrent_warmup": (25_000, 1e-4, 1e-6, None),
    "stage_based": (0, 1e-4, 8e-5, None),  # runs on toward stage 1's lr until it is entered
    "stage_based_fixed": (39_000, 3e-5, None, None),
    "warmup_cosine": (5_000, 1e-4, 1e-6, None),
}


def documented(kind: str, start: int, lr: float, final: float | None, every: int | None, t: int):
    """The LR at ``t`` of an interval switched to ``kind``, by LR_SCHEDULING.md's formulas and
    defaults: final_lr = lr / 10 on the last interval, decay_interval = 1/100 of the interval,
    decay_rate reaching final_lr at the end; one_cycle as torch's OneCycleLR defaults."""
    end = 100_000
    final = lr / 10 if final is None else final
    span, x = end - start, t - start
    p = x / span
    if kind == "step_decay":
        return lr
    if kind in ("linear", "polynomial"):  # polynomial's default power is 1
        return lr + (final - lr) * p
    if kind == "cosine":
        return cosine(lr, final, p)
    if kind == "exponential_decay":
        every = every or span // 100
        return lr * ((final / lr) ** (every / span)) ** (x // every)
    assert kind == "one_cycle"
    low, rise_end = lr / 25, 0.3 * span - 1
    if x <= rise_end:
        return cosine(low, lr, x / rise_end)
    return cosine(lr, low / 1e4, (x - rise_end) / (span - 1 - rise_end))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", L.INTERVAL_TYPES)
def test_every_preset_survives_a_type_switch_by_one_override(preset, kind):
    original = compiled(preset)
    switched = compiled(preset, f"lr_schedule.actor.type={kind}")
    start, lr, final, every = LAST_ACTOR_INTERVAL[preset]
    last = switched["actor"].intervals[-1]
    assert (last.type, last.start) == (kind, start)
    for t in (start, start + 7_321, (start + 100_000) // 2, 99_999):
        expected = documented(kind, start, lr, final, every, t)
        assert switched["actor"](t) == pytest.approx(expected, rel=1e-9), t
    # The other networks do not move.
    assert [switched[n] for n in ("encoder", "critic")] == [
        original[n] for n in ("encoder", "critic")
    ]


# Fingerprints of the shipped presets as the engine computed them before shapes were classes
# (commit 47775ec): checkpoints written then carry these, and must still resume.
OLD_FINGERPRINTS = {
    ("aggressive_decay",): "401ab30743558288",
    ("constant",): "645f947508e7eebc",
    ("differential",): "32bfb62a6d4c1401",
    ("exponential_smooth",): "0a3d51831e989b6e",
    ("gentle_decay",): "0e23c657b557996d",
    ("linear_anneal",): "f285fc1b20e6eb3a",
    ("recurrent_warmup",): "031f3b8ec132fbe5",
    ("stage_based",): "42c3b9a0ede684ea",
    ("stage_based_fixed",): "bb06ebc368596360",
    ("warmup_cosine",): "b4c9585fe2470c52",
    (
        "warmup_cosine",
        "lr_schedule.warmup_frac=0.1",
        "lr_schedule.decay=linear",
    ): "7d4369e58f080e03",
    ("gentle_decay", "lr_schedule.warmup_steps=1000"): "1cbfa0665b261d97",
}


@pytest.mark.parametrize("key", list(OLD_FINGERPRINTS), ids=lambda key: " ".join(key))
def test_checkpoints_of_the_shipped_presets_keep_their_fingerprint(key):
    sset = compiled(*key)
    assert sset.fingerprint == OLD_FINGERPRINTS[key]
    L.check_schedule_state(sset, {"fingerprint": OLD_FINGERPRINTS[key], "spec": {}})
