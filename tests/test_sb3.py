"""Stable-Baselines3 integration (integrations/sb3.py): every SB3 optimizer step uses the
schedule's LR for the model's global timestep, per network, and save / load / continue gives
the same LRs as one uninterrupted learn(). Tiny budgets: CartPole PPO, Pendulum SAC."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip(
    "stable_baselines3", reason="Stable-Baselines3 is not installed: pip install -e '.[sb3]'"
)

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3  # noqa: E402
from stable_baselines3.common.logger import Logger, configure  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402

from integrations.sb3 import attach_schedules  # noqa: E402
from lr_scheduler import ScheduleError, ScheduleMismatchError, get_lr_scheduler  # noqa: E402

DECAY = get_lr_scheduler(max_lr=1e-3, min_lr=1e-5, warmup_steps=0, max_steps=100)
PPO_STEPS = 512  # 8 updates of 64 steps; differential's boundaries fall at 154 and 256
SAC_STEPS = 160  # 110 updates after 50 random steps
# differential-style for SAC: each network its own shape, plus the entropy coefficient.
SAC_SCHEDULE = {
    "encoder": {"intervals": [{"start": 0, "lr": "${base_lr:0.8}"}]},
    "actor": {
        "type": "exponential_decay",
        "intervals": [
            {"start": 0, "init_lr": "${base_lr:1.2}", "decay_rate": 0.8, "decay_interval": 20}
        ],
    },
    "critic": {
        "intervals": [
            {"start": 0, "lr": "${base_lr:1.5}"},
            {"start": "${run_frac:0.6}", "lr": "${base_lr:0.5}"},
        ]
    },
    "ent_coef": {
        "type": "cosine",
        "intervals": [{"start": 0, "lr": "${base_lr:1.0}", "final_lr": "${base_lr:0.1}"}],
    },
}


class TinyEncoder(BaseFeaturesExtractor):
    """A features extractor with weights, so PPO's ``encoder`` group has something to train."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 8):
        super().__init__(observation_space, features_dim)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(observation_space.shape[0], features_dim), torch.nn.Tanh()
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def make_ppo(**kwargs) -> PPO:
    return PPO(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu",
        policy_kwargs={"features_extractor_class": TinyEncoder, "net_arch": [16]}, **kwargs,
    )  # fmt: skip


def make_sac() -> SAC:
    return SAC(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=16, seed=0, device="cpu",
        policy_kwargs={"net_arch": [16, 16]},
    )  # fmt: skip


def optimizers(model) -> dict[str, torch.optim.Optimizer]:
    if isinstance(model, PPO):
        return {"policy": model.policy.optimizer}
    found = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
    return {**found, "ent_coef": model.ent_coef_optimizer}


def record_steps(model) -> list[tuple[int, str, dict[str, float]]]:
    """(global timestep, optimizer, group name -> lr) at the moment of every optimizer step:
    the LRs each step actually used."""
    steps: list[tuple[int, str, dict[str, float]]] = []
    for label, optimizer in optimizers(model).items():
        optimizer.register_step_pre_hook(
            lambda opt, _args, _kwargs, label=label: steps.append(
                (model.num_timesteps, label, {g["name"]: float(g["lr"]) for g in opt.param_groups})
            )
        )
    return steps


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def assert_follows(steps, schedules, networks) -> None:
    """Every group held its schedule's value at every step, and the schedule really moved."""
    assert steps, "no optimizer step was recorded"
    seen: dict[str, set[float]] = {}
    for t, _label, lrs in steps:
        for name, lr in lrs.items():
            assert lr == pytest.approx(schedules[name](t), rel=1e-9, abs=0), (name, t)
            seen.setdefault(name, set()).add(lr)
    assert sorted(seen) == sorted(networks)
    assert all(len(values) >= 2 for values in seen.values()), seen  # each schedule moved
    assert len({tuple(sorted(lrs.values())) for _, _, lrs in steps}) > 1


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """One uninterrupted learn() with the shipped differential preset, logging to CSV."""
    model = make_ppo()
    scheduled = attach_schedules(model, "differential", total_timesteps=PPO_STEPS)
    logdir = tmp_path_factory.mktemp("ppo_log")
    model.set_logger(configure(str(logdir), ["csv"]))
    steps = record_steps(model)
    model.learn(PPO_STEPS)
    rows = list(csv.DictReader(open(logdir / "progress.csv")))
    return scheduled, steps, weights(model), rows


def test_ppo_every_group_steps_with_its_networks_schedule(ppo_run):
    scheduled, steps, _, rows = ppo_run
    assert scheduled.networks == ("encoder", "actor", "critic")
    assert_follows(steps, scheduled.schedules, ("encoder", "actor", "critic"))
    base = 3e-4  # PPO's default learning_rate is the preset's base
    assert steps[-1][2]["critic"] == pytest.approx(0.5 * base)  # after run_frac 0.3
    assert steps[-1][2]["encoder"] == pytest.approx(0.4 * base)  # after run_frac 0.5
    # The logged LRs are the groups' (SB3 dumps an update's values with the next rollout, so
    # the last update's are never written).
    updates = list({t: lrs for t, _, lrs in steps}.values())  # one entry per train()
    logged = [r for r in rows if r.get("train/lr_actor")]
    assert len(logged) == len(updates) - 1
    for row, lrs in zip(logged, updates, strict=False):
        for name in ("encoder", "actor", "critic"):
            assert float(row[f"train/lr_{name}"]) == pytest.approx(lrs[name], rel=1e-12)
    assert "train/learning_rate" not in rows[-1] or not rows[-1]["train/learning_rate"]


def test_ppo_save_load_continue_gives_the_uninterrupted_lrs(ppo_run, tmp_path):
    _, uninterrupted, _, _ = ppo_run
    first = make_ppo()
    scheduled = attach_schedules(first, "differential", total_timesteps=PPO_STEPS)
    steps = record_steps(first)
    first.learn(PPO_STEPS // 2)
    first.save(tmp_path / "ppo.zip")

    loaded = PPO.load(tmp_path / "ppo.zip", env=gym.make("CartPole-v1"), device="cpu")
    assert loaded.num_timesteps == PPO_STEPS // 2
    again = attach_schedules(loaded, "differential", total_timesteps=PPO_STEPS)
    # The same groups, parameters and Adam moments as before the save.
    old, new = first.policy.optimizer, loaded.policy.optimizer
    assert [(g["name"], len(g["params"])) for g in new.param_groups] == [
        (g["name"], len(g["params"])) for g in old.param_groups
    ]
    for p_old, p_new in zip(first.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert torch.equal(p_old, p_new)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(old.state[p_old][key], new.state[p_new][key])
    assert again.lrs() == scheduled.lrs()
    resumed = record_steps(loaded)
    loaded.learn(PPO_STEPS // 2, reset_num_timesteps=False)
    assert resumed and steps + resumed == uninterrupted  # every step, every group


def test_ppo_continued_learn_equals_one_learn_weights_included(ppo_run):
    _, uninterrupted, final_weights, _ = ppo_run
    model = make_ppo()
    attach_schedules(model, "differential", total_timesteps=PPO_STEPS)
    steps = record_steps(model)
    model.learn(PPO_STEPS // 2)
    model.learn(PPO_STEPS // 2, reset_num_timesteps=False)
    assert steps == uninterrupted
    assert torch.equal(weights(model), final_weights)  # SB3 on CPU with a seed is deterministic


@pytest.fixture(scope="module")
def sac_run():
    model = make_sac()
    scheduled = attach_schedules(model, SAC_SCHEDULE, total_timesteps=SAC_STEPS)
    steps = record_steps(model)
    model.learn(SAC_STEPS)
    return scheduled, steps


def test_sac_every_group_steps_with_its_networks_schedule(sac_run):
    scheduled, steps = sac_run
    assert scheduled.networks == ("actor", "critic", "ent_coef")
    assert scheduled.unused == ("encoder",)  # MlpPolicy's FlattenExtractor has no weights
    assert_follows(steps, scheduled.schedules, ("actor", "critic", "ent_coef"))
    assert {label for _, label, _ in steps} == {"actor", "critic", "ent_coef"}


def test_sac_save_load_continue_gives_the_uninterrupted_lrs(sac_run, tmp_path):
    _, uninterrupted = sac_run
    first = make_sac()
    attach_schedules(first, SAC_SCHEDULE, total_timesteps=SAC_STEPS)
    steps = record_steps(first)
    first.learn(SAC_STEPS // 2)
    first.save(tmp_path / "sac.zip")
    first.save_replay_buffer(tmp_path / "replay.pkl")

    loaded = SAC.load(tmp_path / "sac.zip", env=gym.make("Pendulum-v1"), device="cpu")
    loaded.load_replay_buffer(tmp_path / "replay.pkl")
    attach_schedules(loaded, SAC_SCHEDULE, total_timesteps=SAC_STEPS)
    assert [g["name"] for g in loaded.critic.optimizer.param_groups] == ["critic"]
    resumed = record_steps(loaded)
    loaded.learn(SAC_STEPS // 2, reset_num_timesteps=False)
    assert resumed and steps + resumed == uninterrupted


@pytest.mark.parametrize(
    ("algorithm", "env", "groups"),
    [
        (A2C, "Pendulum-v1", {"policy.optimizer": ["actor", "critic"]}),
        (TD3, "Pendulum-v1", {"actor.optimizer": ["actor"], "critic.optimizer": ["critic"]}),
    ],
)
def test_a2c_and_td3_groups(algorithm, env, groups):
    model = algorithm("MlpPolicy", env, device="cpu", policy_kwargs={"net_arch": [8]})
    before = {name: list(_get(model, name).param_groups[0]["params"]) for name in groups}
    attach_schedules(model, "differential", total_timesteps=1000)
    for name, expected in groups.items():
        optimizer = _get(model, name)
        assert [g["name"] for g in optimizer.param_groups] == expected
        held = [p for g in optimizer.param_groups for p in g["params"]]
        assert sorted(map(id, held)) == sorted(map(id, before[name]))  # each param once
    if algorithm is A2C:  # the Gaussian log_std is the actor's
        actor = model.policy.optimizer.param_groups[0]["params"]
        assert any(p is model.policy.log_std for p in actor)


def _get(model, path):
    for part in path.split("."):
        model = getattr(model, part)
    return model


@pytest.mark.parametrize(
    ("schedule", "kwargs", "message"),
    [
        ({"ent_coef": {"intervals": [{"start": 0, "lr": 1e-3}]}}, {}, "lr_schedule.ent_coef"),
        (
            {"actor": {"intervals": [{"start": 0, "lr": 1e-3}, {"start": 0, "lr": 1e-4}]}},
            {},
            "lr_schedule.actor.intervals[1].start",
        ),
        ("stage_based", {}, "stage"),
        ("no_such_preset", {}, "gentle_decay"),
        ({"actor": DECAY, "value": DECAY}, {}, "unknown network 'value'"),
        ("differential", {"total_timesteps": 0}, "total_timesteps"),
    ],
)
def test_bad_input_is_one_clear_error_and_leaves_the_model_alone(schedule, kwargs, message):
    model = make_ppo()
    with pytest.raises(ScheduleError, match=message.replace("[", r"\[")):
        attach_schedules(model, schedule, **{"total_timesteps": 1000, **kwargs})
    assert len(model.policy.optimizer.param_groups) == 1


def test_unsupported_algorithm_and_double_attach_are_refused():
    with pytest.raises(ScheduleError, match="supports PPO, A2C, SAC, TD3"):
        attach_schedules(DQN("MlpPolicy", "CartPole-v1", device="cpu"), None, total_timesteps=10)
    model = make_ppo()
    attach_schedules(model, None, total_timesteps=1000)
    with pytest.raises(ScheduleError, match="already has schedules attached"):
        attach_schedules(model, None, total_timesteps=1000)


def test_a_loaded_model_refuses_a_different_schedule_unless_allowed(tmp_path):
    model = make_ppo()
    attach_schedules(model, "differential", total_timesteps=1000)
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
    with pytest.raises(ScheduleMismatchError, match="differs from the checkpoint"):
        attach_schedules(loaded, "gentle_decay", total_timesteps=1000)
    assert len(loaded.policy.optimizer.param_groups) == 1
    scheduled = attach_schedules(loaded, "gentle_decay", total_timesteps=1000, allow_change=True)
    assert scheduled.lrs() == {"encoder": 3e-4, "actor": 3e-4, "critic": 3e-4}
    # SB3's set_parameters loads the file's one-group layout into the attached groups.
    loaded.set_parameters(str(tmp_path / "ppo.zip"), device="cpu")
    groups = loaded.policy.optimizer.param_groups
    assert [g["name"] for g in groups] == ["encoder", "actor", "critic"]
    assert scheduled.apply() == {"encoder": 3e-4, "actor": 3e-4, "critic": 3e-4}


def test_detach_gives_back_sb3s_single_lr():
    model = make_ppo()
    order = list(model.policy.optimizer.param_groups[0]["params"])
    scheduled = attach_schedules(model, "differential", total_timesteps=1000)
    scheduled.detach()
    model.set_parameters(model.get_parameters())  # no hook of the schedules is left to act
    groups = model.policy.optimizer.param_groups
    assert len(groups) == 1 and groups[0]["params"] == order
    model.set_logger(Logger(None, []))
    model._update_learning_rate(model.policy.optimizer)  # SB3's own method again
    assert groups[0]["lr"] == 3e-4
