"""Curriculum advancement rules, checkpoint round trip and the shipped presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from envs import CurriculumManager, GimbalEnv

PRESET_DIR = Path(__file__).resolve().parents[1] / "cfgs" / "curriculum_preset"
PRESETS = ["balanced", "conservative", "aggressive"]

STAGES = [
    {"name": "easy", "target_range": 0.2},
    {"name": "medium", "target_range": 0.5},
    {"name": "hard", "target_range": 0.8},
]


def make(**kwargs) -> CurriculumManager:
    return CurriculumManager(STAGES, **{"window": 4, "min_episodes": 3, **kwargs})


def test_starts_at_first_stage() -> None:
    curriculum = make()
    assert (curriculum.stage, curriculum.stage_name, curriculum.num_stages) == (0, "easy", 3)
    assert curriculum.params == {"target_range": 0.2}
    assert not curriculum.is_final
    assert curriculum.success_rate == 0.0


def test_waits_for_min_episodes_even_when_all_succeed() -> None:
    curriculum = make(min_episodes=3)
    assert curriculum.record_episode(True) is False
    assert curriculum.record_episode(True) is False
    assert curriculum.record_episode(True) is True
    assert curriculum.stage_name == "medium"


def test_advancement_clears_window() -> None:
    curriculum = make()
    for _ in range(3):
        curriculum.record_episode(True)
    assert curriculum.success_rate == 0.0
    assert curriculum.episodes_in_stage == 0
    # The new stage must prove itself on its own min_episodes.
    assert [curriculum.record_episode(True) for _ in range(3)] == [False, False, True]


def test_success_rate_uses_only_the_window() -> None:
    curriculum = make(window=4, min_episodes=1, success_threshold=0.75)
    # A stage-0 window of 4 holding one failure has rate 0.75 only once the failure is
    # the oldest entry; failures older than the window no longer count.
    outcomes = [False, False, True, True, True]
    advanced = [curriculum.record_episode(s) for s in outcomes]
    assert advanced == [False, False, False, False, True]


def test_below_threshold_stays() -> None:
    curriculum = make(window=4, min_episodes=4, success_threshold=0.8)
    for success in [True, True, True, False] * 5:
        assert curriculum.record_episode(success) is False
    assert curriculum.success_rate == 0.75
    assert curriculum.stage == 0


def test_final_stage_is_never_left() -> None:
    curriculum = CurriculumManager(STAGES[:1], window=2, min_episodes=1)
    assert curriculum.is_final
    assert not any(curriculum.record_episode(True) for _ in range(10))
    assert curriculum.stage == 0


def test_stage_history_records_episode_and_global_step() -> None:
    curriculum = make(min_episodes=1, window=1)
    curriculum.record_episode(False, global_step=200)
    curriculum.record_episode(True, global_step=400)
    curriculum.record_episode(True, global_step=600)
    assert curriculum.stage_history == [(0, 0, 0), (1, 2, 400), (2, 3, 600)]
    assert curriculum.stage_history[1].global_step == 400
    assert curriculum.is_final


def test_state_round_trip_is_plain_data_and_continues_identically() -> None:
    original = make()
    for success in [True, True, True, True, False]:
        original.record_episode(success, global_step=100)
    state = original.state_dict()
    # Plain JSON-able data: safe for torch.load(weights_only=True).
    state = json.loads(json.dumps(state))

    restored = make()
    restored.load_state_dict(state)
    assert restored.state_dict() == original.state_dict()
    assert restored.stage_history == original.stage_history
    for success in [True, True, True]:
        assert restored.record_episode(success) == original.record_episode(success)
    assert restored.stage == original.stage


def test_load_rejects_state_from_a_different_curriculum() -> None:
    state = make().state_dict()
    with pytest.raises(ValueError, match="2 stages"):
        CurriculumManager(STAGES[:2]).load_state_dict(state)


@pytest.mark.parametrize(
    ("stages", "kwargs", "message"),
    [
        ([], {}, "empty"),
        ([{"target_range": 0.1}], {}, r"stages\[0\].name"),
        ([{"name": "a"}, {"name": "a"}], {}, "used by an earlier stage"),
        (STAGES, {"success_threshold": 0.0}, "success_threshold"),
        (STAGES, {"success_threshold": 1.5}, "success_threshold"),
        (STAGES, {"window": 0}, "window"),
        (STAGES, {"min_episodes": 0}, "min_episodes"),
    ],
)
def test_rejects_bad_input(stages: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CurriculumManager(stages, **kwargs)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_a_curriculum_whose_knobs_the_env_accepts(preset: str) -> None:
    path = PRESET_DIR / f"{preset}.yaml"
    assert path.read_text().startswith("# @package curriculum\n")
    config = OmegaConf.load(path)
    # Built straight from the DictConfig, as the trainer's `curriculum` node would be.
    curriculum = CurriculumManager(**config)
    env = GimbalEnv()
    while True:
        env.set_difficulty(**curriculum.params)
        env.reset(seed=0)
        if curriculum.is_final:
            break
        for _ in range(curriculum.min_episodes):
            curriculum.record_episode(True)
    # Every preset ends on the full task, the env's defaults.
    assert env.difficulty == GimbalEnv().difficulty


def test_presets_rise_in_strictness() -> None:
    configs = {name: OmegaConf.load(PRESET_DIR / f"{name}.yaml") for name in PRESETS}
    order = [configs[name] for name in ("aggressive", "balanced", "conservative")]
    for key in ("window", "min_episodes", "success_threshold"):
        values = [config[key] for config in order]
        assert values == sorted(values) and len(set(values)) == 3, key
    assert [len(config.stages) for config in order] == [3, 4, 6]


@pytest.mark.parametrize("fracs", [[0.5], [0.3, 0.2, 0.4], [0.1, 0.2, 1.0], [0.1, "0.2", 0.3]])
def test_expected_entry_fracs_must_be_one_increasing_fraction_per_later_stage(fracs) -> None:
    stages = [{"name": f"s{i}"} for i in range(4)]
    with pytest.raises(ValueError, match="3 increasing fractions in"):
        CurriculumManager(stages, expected_entry_fracs=fracs)
    assert CurriculumManager(stages, expected_entry_fracs=[0.1, 0.2, 0.3]).expected_entry_fracs == (
        0.1, 0.2, 0.3,
    )  # fmt: skip
