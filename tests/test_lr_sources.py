"""The source documents' spellings (shared/seeds 000, 001, 003, 004) work here as written, script
and module names aside, and give the LRs the documents describe. See LR_SCHEDULING.md,
"Coming from ...". Compose + compile is the CLI's own path (train_curriculum.compose_config /
compile_run_schedules); the few CLI runs are dry runs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from cli import run_cli

import lr_scheduler as L
from lr_preview import plot_lr_schedule, plot_schedules
from training import schema
from training.build import compose_config
from training.run import compile_run_schedules

RUN = 100_000  # default num_train_frames (action_repeat 1): global steps of a run
BASE = 1e-4  # default lr


def lrs(*overrides: str) -> L.ScheduleSet:
    return compile_run_schedules(compose_config(list(overrides)))


def compile_error(*overrides: str) -> str:
    with pytest.raises(L.ScheduleError) as err:
        lrs(*overrides)
    return str(err.value)


# --------------------------------------------------------------------------- the schema


def test_schema_knows_every_key_the_engine_knows():
    # The interval fields are built from the shape registry; the other two lists by hand.
    network = {f.name for f in dataclasses.fields(schema.NetworkScheduleConfig)}
    assert network == set(L.NETWORK_KEYS) | set(L.TARGET_KEYS)
    preset = {f.name for f in dataclasses.fields(schema.LRScheduleConfig)}
    assert preset == set(L.NETWORKS) | set(L.PRESET_KNOBS)


def test_a_new_shapes_keys_are_overridable_on_any_preset_without_plus():
    sset = compile_run_schedules(compose_config([
        "lr_schedule=gentle_decay", "lr_schedule.actor.type=one_cycle",
        "lr_schedule.actor.intervals.2.pct_start=0.5", "lr_schedule.critic.type=polynomial",
        "lr_schedule.critic.intervals.2.power=2.0",
    ]))  # fmt: skip
    assert sset["actor"].intervals[2].pct_start == 0.5
    assert sset["critic"].intervals[2].power == 2.0
    # critic's last interval: 2.5e-5 -> 2.5e-6 over [66667, 100000), (1 - p) ** 2 at p = 1/2
    assert sset["critic"](83333 + 1) == pytest.approx(2.5e-6 + 2.25e-5 * 0.25, rel=1e-3)
    with pytest.raises(Exception) as err:  # noqa: PT011 (Hydra's composition error)
        compose_config(["lr_schedule=gentle_decay", "lr_schedule.actor.intervals.0.powr=2"])
    assert "lr_schedule.actor.intervals[0].powr" in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("lr_schedule.actor.intervals.0.decay_rte=0.9", "lr_schedule.actor.intervals[0].decay_rte"),
        ("lr_schedule.actor.typ=cosine", "lr_schedule.actor.typ"),
        ("lr_schedule.warmup_step=1000", "lr_schedule.warmup_step"),
    ],
)
def test_a_misspelt_key_fails_at_compose_time_with_its_path(override, words):
    with pytest.raises(Exception) as err:  # noqa: PT011 (Hydra's composition error)
        compose_config(["lr_schedule=gentle_decay", override])
    assert words in str(err.value.__cause__ or err.value)


# --------------------------------------------------------------------------- 001 (user guide)


def test_001_decay_rate_override_on_a_preset_that_does_not_spell_it():
    # "Increase decay rate for exponential: decay_rate=0.9998"
    sset = lrs(
        "lr_schedule=exponential_smooth", "lr_schedule.encoder.intervals.0.decay_rate=0.9998"
    )
    stair = round(0.005 * RUN)  # exponential_smooth's decay_interval
    assert sset["encoder"](10 * stair) == pytest.approx(BASE * 0.9998**10)
    assert sset["actor"](10 * stair) == pytest.approx(BASE * 0.1 ** (10 / 200))  # untouched


def test_001_delay_first_decay_step_is_one_override_per_network():
    # "Delay first decay step": the boundary is spelled once, as the next interval's start.
    sset = lrs("lr_schedule=gentle_decay", "lr_schedule.actor.intervals.1.start=50000")
    assert sset["actor"](49_999) == BASE and sset["actor"](50_000) == BASE / 2
    assert sset["critic"](40_000) == BASE / 2  # the other networks keep theirs
    # Moving an end alone leaves the next start behind: the message names what to move.
    message = compile_error("lr_schedule=gentle_decay", "lr_schedule.actor.intervals.0.end=50000")
    assert message.startswith("lr_schedule.actor.intervals[1].start: overlaps interval 0")
    assert "must start at 50000" in message


@pytest.mark.parametrize(
    "line, expected",
    [
        ("lr_schedule=gentle_decay", {"actor": [(0, 1.0), (40_000, 0.5), (70_000, 0.25)]}),
        ("lr_schedule=aggressive_decay", {"critic": [(0, 1.0), (30_000, 0.5), (70_000, 0.05)]}),
        ("lr_schedule=stage_based_fixed", {"encoder": [(0, 1.0), (10_000, 0.8), (50_000, 0.3)]}),
        ("lr_schedule=constant", {"actor": [(0, 1.0), (99_999, 1.0)]}),
        ("", {"critic": [(0, 1.0), (99_999, 1.0)]}),
        (
            "lr_schedule=gentle_decay lr_schedule.encoder.intervals.0.lr=2.0e-4",
            {"encoder": [(0, 2.0), (40_000, 0.5)], "actor": [(0, 1.0)]},
        ),
        (
            "lr_schedule=gentle_decay curriculum_preset=balanced encoder_bundle@agent=enc_B",
            {"actor": [(0, 1.0), (40_000, 0.5)]},
        ),
        (
            "lr_schedule=aggressive_decay lr=2.0e-4 num_train_frames=3000000",
            {"actor": [(0, 2.0), (700_000, 1.0), (2_000_000, 0.1)]},
        ),
        (
            "lr_schedule=differential lr_schedule.encoder.intervals.0.lr=1.0e-4 "
            "lr_schedule.actor.intervals.0.init_lr=1.5e-4 lr_schedule.critic.intervals.0.lr=2.0e-4",
            {"encoder": [(0, 1.0), (60_000, 0.4)], "actor": [(0, 1.5)], "critic": [(0, 2.0)]},
        ),
        (
            "lr_schedule=stage_based_fixed curriculum_preset=conservative",
            {"actor": [(40_000, 0.3)]},
        ),
    ],
)
def test_001_command_lines(line, expected):
    sset = lrs(*line.split())
    for net, points in expected.items():
        for step, factor in points:
            assert sset[net](step) == pytest.approx(factor * BASE), (net, step)


def test_001_actor_type_switch_runs_as_a_dry_run(tmp_path):
    proc = run_cli(
        "lr_schedule=gentle_decay", "lr_schedule.actor.type=exponential_decay",
        "lr_schedule.encoder.intervals.0.decay_rate=0.9998", "dry_run=true", run_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    actor = proc.stdout.split("[actor]")[1].split("[critic]")[0]
    assert "exponential_decay [0, 33333)" in actor


def test_001_yaml_examples():
    per_network = {
        "encoder": {"type": "step_decay", "intervals": [
            {"start": 0, "end": 3000000, "lr": 8.0e-5}]},
        "actor": {"type": "exponential_decay", "intervals": [
            {"start": 0, "end": 2000000, "init_lr": 1.2e-4, "decay_rate": 0.999,
             "decay_interval": 5000}]},
        "critic": {"type": "step_decay", "intervals": [
            {"start": 0, "end": 1000000, "lr": 1.5e-4},
            {"start": 1000000, "end": 3000000, "lr": 5.0e-5}]},
    }  # fmt: skip
    sset = L.compile_schedules(per_network, base_lr=BASE, total_steps=6_000_000)
    assert sset["encoder"](2_999_999) == 8.0e-5
    assert sset["actor"](12_000) == pytest.approx(1.2e-4 * 0.999**2)
    assert sset["critic"](1_000_000) == 5.0e-5 and sset["critic"](5_000_000) == 5.0e-5


# --------------------------------------------------------------------------- 000 (PPO plan)

PLAN = {  # the plan's four configurations, inside one interval, base lr 3e-4
    "linear": ({"type": "linear", "final_lr_fraction": 0.1}, [(0, 1.0), (500, 0.55), (1000, 0.1)]),
    "cosine": ({"type": "cosine", "eta_min_fraction": 0.05}, [(0, 1), (500, 0.525), (1000, 0.05)]),
    "exponential": ({"type": "exponential", "gamma": 0.9995}, [(1, 0.9995), (100, 0.9995**100)]),
    "step": ({"type": "step", "step_size": 50, "gamma": 0.5}, [(49, 1.0), (50, 0.5), (149, 0.25)]),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(PLAN))
def test_000_types_and_kwargs_inside_an_interval(kind):
    keys, points = PLAN[kind]
    spec = {"actor": {"intervals": [{"start": 0, "end": 1000, "lr": 3e-4, **keys}]}}
    sset = L.compile_schedules(spec, base_lr=3e-4, total_steps=1000)
    for step, factor in points:
        assert sset["actor"](step) == pytest.approx(factor * 3e-4), step


def test_000_step_type_by_override_on_any_preset():
    sset = lrs(
        "lr_schedule=constant", "lr_schedule.actor.type=step",
        "lr_schedule.actor.intervals.0.step_size=50", "lr_schedule.actor.intervals.0.gamma=0.5",
    )  # fmt: skip
    assert [sset["actor"](t) / BASE for t in (0, 49, 50, 100)] == pytest.approx([1, 1, 0.5, 0.25])


@pytest.mark.parametrize(
    "keys, words",
    [
        ({"gamma": 0.9, "decay_rate": 0.9}, "intervals[0].gamma: gamma and decay_rate both given"),
        ({"step_size": 5, "decay_interval": 5}, "step_size and decay_interval both given"),
        ({"final_lr_fraction": 0.1, "final_lr": 1e-5}, "final_lr and final_lr_fraction both"),
        ({"eta_min_fraction": 0.0}, "intervals[0].eta_min_fraction: must be a finite number > 0"),
        ({"step_size": 0, "gamma": 0.5}, "intervals[0].step_size: must be > 0"),
    ],
)
def test_000_keys_mixed_with_ours_have_one_spelling_per_value(keys, words):
    spec = {"actor": {"type": "step", "intervals": [{"start": 0, "lr": 3e-4, **keys}]}}
    with pytest.raises(L.ScheduleError, match=r"^lr_schedule\.actor\.") as err:
        L.compile_schedules(spec, base_lr=3e-4, total_steps=1000)
    assert words in str(err.value)


# --------------------------------------------------------------------------- 003 (functional API)


def test_003_get_lr_scheduler_examples():
    scheduler = L.get_lr_scheduler(
        max_lr=1e-4, min_lr=1e-6, warmup_steps=1000, max_steps=50000, decay_type="cosine"
    )
    lr = scheduler(5000)
    assert isinstance(scheduler, L.Schedule)
    assert scheduler(0) == 1e-6 and scheduler(1000) == 1e-4 and scheduler(50000) == 1e-6
    assert lr == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 4000 / 49000)))
    linear = L.get_lr_scheduler(
        max_lr=1e-4, min_lr=1e-6, warmup_steps=1000, max_steps=50000, decay_type="linear"
    )
    assert linear(25500) == pytest.approx((1e-4 + 1e-6) / 2)
    exponential = L.get_lr_scheduler(
        max_lr=1e-4, min_lr=1e-6, warmup_steps=1000, max_steps=50000, decay_type="exponential"
    )
    assert exponential(25500) == pytest.approx(1e-5, rel=1e-3)  # halfway in log space
    assert exponential(50000) == pytest.approx(1e-6)
    divided = L.get_lr_scheduler(
        max_lr=1e-4, min_lr=None, warmup_steps=1000, max_steps=50000, final_div_factor=100
    )
    assert divided(50000) == pytest.approx(1e-6)
    positional = L.get_lr_scheduler(1e-4, 1e-6, 1000, 10000, decay_type="cosine")
    assert positional(10000) == pytest.approx(1e-6)


def test_003_combined_example_with_its_training_loop():
    schedulers = {
        (0, 10000): L.get_lr_scheduler(
            max_lr=1e-4, min_lr=1e-5, warmup_steps=1000, max_steps=10000
        ),
        (10000, 30000): L.get_lr_scheduler(
            max_lr=1e-5, min_lr=1e-6, warmup_steps=0, max_steps=20000
        ),
    }  # fmt: skip
    combined_scheduler = L.get_combined_lr_scheduler(schedulers)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    seen = []
    for step in range(30000):
        lr = combined_scheduler(step)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        seen.append(optimizer.param_groups[0]["lr"])
    assert isinstance(combined_scheduler, L.Schedule)
    assert seen[1000] == pytest.approx(1e-4) and seen[9999] == pytest.approx(1e-5, rel=1e-3)
    assert seen[10000] == pytest.approx(1e-5)  # the second range's clock starts at 0
    assert seen[20000] == pytest.approx(schedulers[(10000, 30000)](10000))
    with pytest.raises(L.ScheduleError, match=r"^segments\[\(5000, 30000\)\]: starts at 5000"):
        L.get_combined_lr_scheduler({(0, 10000): schedulers[(0, 10000)], (5000, 30000): seen.pop})


def test_003_combine_and_plot_accept_plain_functions(tmp_path):
    def inverse_sqrt(step):
        return 1e-3 / math.sqrt(step + 1)

    combined = L.get_combined_lr_scheduler({(0, 100): lambda step: 1e-3, (100, None): inverse_sqrt})
    assert combined(99) == 1e-3 and combined(100) == 1e-3 and combined(103) == 5e-4
    plot_schedules({"plain": inverse_sqrt, "joined": combined}, 1000, tmp_path / "a.png")
    plot_lr_schedule(combined, 1000, path=tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 5000 and (tmp_path / "b.png").exists()


def test_003_multi_step_example():
    scheduler = L.get_multi_step_lr_scheduler(
        max_lr=1e-4,
        warmup_steps=2000,
        total_tokens=300_000_000_000,  # 300B tokens
        tokens_per_step=2048 * 2048,  # batch_size * seq_len
        step_milestones=[0.5, 0.8, 0.9],  # Drop LR at 50%, 80%, and 90% of training
        step_factors=[0.5, 0.1, 0.01],  # LR factors at each milestone
    )
    total_steps = 300_000_000_000 // (2048 * 2048)  # the document leaves it undefined
    lrs_seen = [scheduler(step) for step in range(0, total_steps, 1000)]
    assert scheduler(2000) == 1e-4 and lrs_seen[0] < 1e-4
    at = [round(m * total_steps) for m in (0.5, 0.8, 0.9)]
    assert [scheduler(s + 1) for s in at] == pytest.approx([5e-5, 1e-5, 1e-6])  # not compounding
    assert scheduler(at[0] - 2) == 1e-4
    floored = L.get_multi_step_lr_scheduler(1e-4, 0, 1000, 1, [0.5], [0.01], min_lr=5e-6)
    assert floored(999) == 5e-6


def test_003_plot_and_comparison_examples(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scheduler = L.get_lr_scheduler(max_lr=1e-4, min_lr=1e-6, warmup_steps=1000, max_steps=50000)
    figure = plot_lr_schedule(
        lr_scheduler=scheduler,
        total_steps=50000,
        title="Cosine LR Schedule with Warmup",
        figsize=(12, 6),
    )
    figure.savefig(tmp_path / "plot.png")
    # The drawn curve is 003's: linear 1e-6 -> 1e-4 over 1000 steps, cosine to 1e-6 at 50000.
    x, y = figure.axes[0].get_lines()[0].get_data()
    p = np.clip((x - 1000) / 49000, 0, 1)
    formula = np.where(x < 1000, 1e-6 + 99e-6 * x / 1000,
                       1e-6 + 99e-6 * (1 + np.cos(np.pi * p)) / 2)  # fmt: skip
    assert {0, 1000, 50000} <= set(x.tolist()) and len(x) > 100
    np.testing.assert_allclose(y, formula, rtol=1e-9)
    steps = range(10000)
    schedulers = {
        "cosine": L.get_lr_scheduler(1e-4, 1e-6, 1000, 10000, decay_type="cosine"),
        "linear": L.get_lr_scheduler(1e-4, 1e-6, 1000, 10000, decay_type="linear"),
        "exponential": L.get_lr_scheduler(1e-4, 1e-6, 1000, 10000, decay_type="exponential"),
    }
    plt.figure(figsize=(12, 6))
    for name, scheduler in schedulers.items():
        lrs_seen = [scheduler(step) for step in steps]
        plt.plot(steps, lrs_seen, label=name)
    plt.legend()
    plt.savefig(tmp_path / "compare.png")
    plt.close("all")
    # At the middle of the decay (step 5500): cosine and linear at the midpoint, exponential at
    # the geometric mean of 1e-4 and 1e-6.
    middle = {name: scheduler(5500) for name, scheduler in schedulers.items()}
    assert middle == pytest.approx({"cosine": 5.05e-5, "linear": 5.05e-5, "exponential": 1e-5})


def test_003_schedule_through_target_in_a_three_line_preset(tmp_path):
    folder = tmp_path / "lr_schedule"
    folder.mkdir()
    (folder / "three.yaml").write_text(
        "# @package _global_\nlr_schedule:\n"
        '  actor: {_target_: lr_scheduler.get_lr_scheduler, max_lr: "${base_lr:1.0}", '
        'min_lr: "${base_lr:0.01}", warmup_steps: 1000, max_steps: "${run_frac:1.0}"}\n'
    )
    sset = lrs(f"hydra.searchpath=[file://{tmp_path}]", "lr_schedule=three", "lr=3e-4")
    assert sset["actor"](0) == pytest.approx(3e-6) and sset["actor"](1000) == 3e-4
    assert sset["actor"](RUN) == pytest.approx(3e-6) and sset["critic"](0) == 3e-4
    message = compile_error(
        f"hydra.searchpath=[file://{tmp_path}]",
        "lr_schedule=three",
        "lr_schedule.actor.max_steps=500",
    )
    assert message.startswith("lr_schedule.actor.warmup_steps: must be < max_steps (500)")


# --------------------------------------------------------------------------- 004 (feature card)


def test_004_warmup_frac_and_decay_flags():
    # --lr-warmup-frac 0.1 --lr-decay cosine
    sset = lrs(
        "lr_schedule=warmup_cosine", "lr_schedule.warmup_frac=0.1", "lr_schedule.decay=cosine"
    )
    actor = sset["actor"]
    assert actor(0) == pytest.approx(0.01 * BASE) and actor(10_000) == pytest.approx(BASE)
    assert actor(5_000) == pytest.approx((0.01 + 0.99 * 0.5) * BASE)
    assert actor(55_000) == pytest.approx((BASE + 0.01 * BASE) / 2)  # cosine midpoint


def test_004_warmup_steps_on_a_step_preset_ramps_into_its_schedule():
    sset = lrs("lr_schedule=gentle_decay", "lr_schedule.warmup_steps=1000")
    assert [sset["critic"](t) / BASE for t in (0, 500, 1000, 40_000)] == pytest.approx(
        [0.01, 0.505, 1.0, 0.5]
    )
    # A warmup that crosses a boundary multiplies each piece (stage_based_fixed drops at 8 %),
    # and so does a stage entered during the warmup (stage_based, stage 1 at step 8,000).
    for preset in ("stage_based_fixed", "stage_based"):
        staged = lrs(
            f"lr_schedule={preset}", "lr_schedule.warmup_frac=0.1", "lr_schedule.warmup_init=0.5"
        )
        if preset == "stage_based":
            assert staged["actor"](9_000) == pytest.approx((0.5 + 0.5 * 0.9) * BASE)
            staged = staged.at_stages({1: 8_000})
        assert staged["actor"](9_000) == pytest.approx(0.8 * (0.5 + 0.5 * 0.9) * BASE)


def test_004_decay_type_and_decay_steps_on_any_preset():
    sset = lrs("lr_schedule=constant", "lr_schedule.decay=linear", "lr_schedule.decay_steps=50000")
    actor = sset["actor"]
    assert actor(0) == BASE and actor(25_000) == pytest.approx(0.55 * BASE)
    assert actor(50_000) == actor(90_000) == pytest.approx(0.1 * BASE)  # held after
    frac = lrs("lr_schedule=warmup_cosine", "lr_schedule.decay_frac=0.5")
    assert frac["actor"](50_000) == frac["actor"](99_999) == pytest.approx(0.01 * BASE)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["lr_schedule.warmup_frac=0.1", "lr_schedule.warmup_steps=1000"],
         "lr_schedule.warmup_steps: warmup_frac and warmup_steps both given"),
        (["lr_schedule.warmup_init=0.1"], "lr_schedule.warmup_init: given without a warmup"),
        (["lr_schedule.warmup_frac=1.5"], "lr_schedule.warmup_frac: expected a fraction in (0, 1]"),
        (["lr_schedule.decay=cosin"], "lr_schedule.decay: unknown interval type 'cosin' (did you"),
        (["lr_schedule.decay_steps=20000"], "lr_schedule.decay_steps: the decay would end at step"),
    ],
)  # fmt: skip
def test_004_bad_knobs_are_rejected_with_their_path(overrides, words):
    assert words in compile_error("lr_schedule=gentle_decay", *overrides)


def test_004_default_stays_constant():
    sset = lrs()
    assert all(sset[n](t) == BASE for n in L.NETWORKS for t in (0, 1, 50_000, RUN))
    assert np.all(sset["actor"].values(np.arange(0, RUN, 997)) == BASE)


def test_the_003_plot_function_imports_from_the_engine_without_loading_matplotlib_first():
    """003 imports ``plot_lr_schedule`` beside ``get_lr_scheduler``; importing the engine alone
    must not pull matplotlib in (a training run never draws)."""
    import subprocess
    import sys

    import lr_preview
    from lr_scheduler import get_lr_scheduler, plot_lr_schedule  # noqa: F401

    assert plot_lr_schedule is lr_preview.plot_lr_schedule
    check = "import sys, lr_scheduler; assert 'matplotlib' not in sys.modules, 'loaded'"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=lr_preview.__file__.rsplit("/", 1)[0])  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "preset,default_frac", [("warmup_cosine", 0.05), ("recurrent_warmup", 0.25)]
)
def test_a_warmup_given_in_steps_replaces_the_presets_fraction(preset, default_frac):
    """The presets' comments offer `warmup_steps=...` as the other spelling of their default
    `warmup_frac`: one override of either replaces it (the default run is 100k steps)."""
    by_steps = lrs(f"lr_schedule={preset}", "lr_schedule.warmup_steps=1000")
    by_frac = lrs(f"lr_schedule={preset}", "lr_schedule.warmup_frac=0.01")  # 1000 steps too
    default = lrs(f"lr_schedule={preset}")
    for net in ("encoder", "actor", "critic"):
        assert by_steps[net](500) == pytest.approx(by_frac[net](500))
        assert by_steps[net](5000) == pytest.approx(by_frac[net](5000))
    # The preset's own warmup is longer: at step 1000 it is still ramping.
    assert default["actor"](1000) < by_steps["actor"](1000)
    assert default_frac * 100_000 > 1000
