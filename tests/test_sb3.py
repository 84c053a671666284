"""Stable-Baselines3 integration (integrations/sb3.py): every SB3 optimizer step uses the
schedule's LR for the model's global timestep, per network, and save / load / continue gives
the same LRs as one uninterrupted learn(). Tiny budgets: CartPole PPO and A2C (RMSprop),
Pendulum SAC and TD3 (the actor stepping every policy_delay-th update)."""

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
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402

from integrations.sb3 import attach_schedules  # noqa: E402
from lr_scheduler import ScheduleError, ScheduleMismatchError, get_lr_scheduler  # noqa: E402

DECAY = get_lr_scheduler(max_lr=1e-3, min_lr=1e-5, warmup_steps=0, max_steps=100)
PPO_STEPS = 512  # 8 updates of 64 steps; differential's boundaries fall at 154 and 256
SAC_STEPS = 160  # 110 updates after 50 random steps
A2C_STEPS = 128  # 16 updates of 8 steps; differential's boundaries fall at 38.4 and 64
TD3_STEPS = 120  # 104 critic updates after 16 random steps (differential's: 36 and 60)
TD3_LEARNING_STARTS = 16
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


def make_a2c() -> A2C:
    return A2C(
        "MlpPolicy", "CartPole-v1", n_steps=8, seed=0, device="cpu",
        policy_kwargs={"features_extractor_class": TinyEncoder, "net_arch": [16]},
    )  # fmt: skip


def make_td3() -> TD3:
    """TD3's default: actor and critic each with their own extractor, so ``encoder`` is a group
    of both optimizers."""
    return TD3(
        "MlpPolicy", "Pendulum-v1", learning_starts=TD3_LEARNING_STARTS, batch_size=16,
        buffer_size=TD3_STEPS, seed=0, device="cpu",
        policy_kwargs={"features_extractor_class": TinyEncoder, "net_arch": [16, 16]},
    )  # fmt: skip


def optimizers(model) -> dict[str, torch.optim.Optimizer]:
    if isinstance(model, PPO | A2C):
        return {"policy": model.policy.optimizer}
    found = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
    ent_coef = getattr(model, "ent_coef_optimizer", None)  # SAC's, with ent_coef="auto"
    return found if ent_coef is None else {**found, "ent_coef": ent_coef}


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


def learn_once(make, schedule, total: int, logdir=None):
    """One uninterrupted learn(total) with ``schedule`` attached (logging to CSV in ``logdir``
    if given): (schedules, recorded steps, final weights)."""
    model = make()
    scheduled = attach_schedules(model, schedule, total_timesteps=total)
    if logdir is not None:
        model.set_logger(configure(str(logdir), ["csv"]))
    steps = record_steps(model)
    model.learn(total)
    return scheduled, steps, weights(model)


def assert_same_optimizers(first, loaded) -> None:
    """``loaded`` (re-attached) has ``first``'s optimizers: class, groups (name, size), the
    parameters in each group and every parameter's state (Adam's moments, RMSprop's
    square_avg, the step counts)."""
    old_optimizers, new_optimizers = optimizers(first), optimizers(loaded)
    assert list(new_optimizers) == list(old_optimizers)
    for label, old in old_optimizers.items():
        new = new_optimizers[label]
        assert type(new) is type(old), label
        assert [(g["name"], len(g["params"])) for g in new.param_groups] == [
            (g["name"], len(g["params"])) for g in old.param_groups
        ]
        for g_old, g_new in zip(old.param_groups, new.param_groups, strict=True):
            for p_old, p_new in zip(g_old["params"], g_new["params"], strict=True):
                assert torch.equal(p_old, p_new), (label, g_old["name"])
                state_old, state_new = old.state[p_old], new.state[p_new]
                assert state_old and state_new.keys() == state_old.keys(), (label, g_old["name"])
                for key, value in state_old.items():
                    assert torch.equal(torch.as_tensor(state_new[key]), torch.as_tensor(value)), (
                        label, g_old["name"], key,
                    )  # fmt: skip


def assert_save_load_continue_matches(make, env_id, schedule, total, uninterrupted, tmp_path):
    """learn(total // 2), save (with the replay buffer, off-policy), load, re-attach, and
    learn(total // 2, reset_num_timesteps=False): the loaded optimizers are the saved ones and
    every step of both halves, every group, has the LR of the uninterrupted run."""
    first = make()
    scheduled = attach_schedules(first, schedule, total_timesteps=total)
    steps = record_steps(first)
    first.learn(total // 2)
    first.save(tmp_path / "model.zip")
    off_policy = isinstance(first, OffPolicyAlgorithm)
    if off_policy:
        first.save_replay_buffer(tmp_path / "replay.pkl")

    loaded = type(first).load(tmp_path / "model.zip", env=gym.make(env_id), device="cpu")
    if off_policy:
        loaded.load_replay_buffer(tmp_path / "replay.pkl")
    assert loaded.num_timesteps == total // 2
    again = attach_schedules(loaded, schedule, total_timesteps=total)
    assert_same_optimizers(first, loaded)
    assert again.lrs() == scheduled.lrs()
    resumed = record_steps(loaded)
    loaded.learn(total // 2, reset_num_timesteps=False)
    assert resumed and steps + resumed == uninterrupted  # every step, every group
    return loaded


def assert_continued_learn_equals_one_learn(make, schedule, total, uninterrupted, final_weights):
    """learn(total // 2) then learn(total // 2, reset_num_timesteps=False) in-process: the same
    steps, LRs and final weights as one learn(total) (SB3 on CPU with a seed is deterministic)."""
    model = make()
    attach_schedules(model, schedule, total_timesteps=total)
    steps = record_steps(model)
    model.learn(total // 2)
    model.learn(total // 2, reset_num_timesteps=False)
    assert steps == uninterrupted
    assert torch.equal(weights(model), final_weights)


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """One uninterrupted learn() with the shipped differential preset, logging to CSV."""
    logdir = tmp_path_factory.mktemp("ppo_log")
    scheduled, steps, final_weights = learn_once(make_ppo, "differential", PPO_STEPS, logdir)
    rows = list(csv.DictReader(open(logdir / "progress.csv")))
    return scheduled, steps, final_weights, rows


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
    assert_save_load_continue_matches(
        make_ppo, "CartPole-v1", "differential", PPO_STEPS, uninterrupted, tmp_path
    )


def test_ppo_continued_learn_equals_one_learn_weights_included(ppo_run):
    _, uninterrupted, final_weights, _ = ppo_run
    assert_continued_learn_equals_one_learn(
        make_ppo, "differential", PPO_STEPS, uninterrupted, final_weights
    )


@pytest.fixture(scope="module")
def a2c_run():
    return learn_once(make_a2c, "differential", A2C_STEPS)


def test_a2c_every_group_steps_with_its_networks_schedule(a2c_run):
    scheduled, steps, _ = a2c_run
    assert isinstance(scheduled.model.policy.optimizer, torch.optim.RMSprop)  # A2C's default
    assert scheduled.networks == ("encoder", "actor", "critic") and not scheduled.unused
    assert [t for t, _, _ in steps] == list(range(8, A2C_STEPS + 1, 8))  # one step per rollout
    assert_follows(steps, scheduled.schedules, ("encoder", "actor", "critic"))
    base = 7e-4  # A2C's default learning_rate is the preset's base
    assert steps[0][2]["encoder"] == pytest.approx(0.8 * base)
    assert steps[0][2]["critic"] == pytest.approx(1.5 * base)
    assert steps[-1][2]["critic"] == pytest.approx(0.5 * base)  # after run_frac 0.3
    assert steps[-1][2]["encoder"] == pytest.approx(0.4 * base)  # after run_frac 0.5


def test_a2c_save_load_continue_gives_the_uninterrupted_lrs(a2c_run, tmp_path):
    _, uninterrupted, _ = a2c_run
    assert_save_load_continue_matches(
        make_a2c, "CartPole-v1", "differential", A2C_STEPS, uninterrupted, tmp_path
    )  # RMSprop's square_avg included


def test_a2c_continued_learn_equals_one_learn_weights_included(a2c_run):
    _, uninterrupted, final_weights = a2c_run
    assert_continued_learn_equals_one_learn(
        make_a2c, "differential", A2C_STEPS, uninterrupted, final_weights
    )


@pytest.fixture(scope="module")
def sac_run():
    scheduled, steps, _ = learn_once(make_sac, SAC_SCHEDULE, SAC_STEPS)
    return scheduled, steps


def test_sac_every_group_steps_with_its_networks_schedule(sac_run):
    scheduled, steps = sac_run
    assert scheduled.networks == ("actor", "critic", "ent_coef")
    assert scheduled.unused == ("encoder",)  # MlpPolicy's FlattenExtractor has no weights
    assert_follows(steps, scheduled.schedules, ("actor", "critic", "ent_coef"))
    assert {label for _, label, _ in steps} == {"actor", "critic", "ent_coef"}


def test_sac_save_load_continue_gives_the_uninterrupted_lrs(sac_run, tmp_path):
    _, uninterrupted = sac_run
    assert_save_load_continue_matches(
        make_sac, "Pendulum-v1", SAC_SCHEDULE, SAC_STEPS, uninterrupted, tmp_path
    )


@pytest.fixture(scope="module")
def td3_run():
    return learn_once(make_td3, "differential", TD3_STEPS)


def test_td3_actor_and_critic_each_step_with_their_networks_schedule(td3_run):
    """The critic steps once per timestep after learning_starts, the actor every policy_delay-th
    of those updates: each optimizer's groups (encoder in both) hold the schedule's LR for the
    timesteps at which that optimizer steps."""
    scheduled, steps, _ = td3_run
    model = scheduled.model
    assert scheduled.networks == ("encoder", "actor", "critic") and not scheduled.unused
    assert [g["name"] for g in model.actor.optimizer.param_groups] == ["encoder", "actor"]
    assert [g["name"] for g in model.critic.optimizer.param_groups] == ["encoder", "critic"]
    actor = [s for s in steps if s[1] == "actor"]
    critic = [s for s in steps if s[1] == "critic"]
    assert len(actor) + len(critic) == len(steps)
    critic_times = [t for t, _, _ in critic]
    assert critic_times == list(range(TD3_LEARNING_STARTS + 1, TD3_STEPS + 1))
    delay = model.policy_delay
    assert delay == 2 and [t for t, _, _ in actor] == critic_times[delay - 1 :: delay]
    assert_follows(actor, scheduled.schedules, ("encoder", "actor"))
    assert_follows(critic, scheduled.schedules, ("encoder", "critic"))
    base = 1e-3  # TD3's default learning_rate is the preset's base
    assert critic[-1][2] == pytest.approx({"encoder": 0.4 * base, "critic": 0.5 * base})
    assert actor[-1][2] == pytest.approx({"encoder": 0.4 * base, "actor": 0.3 * base})


def test_td3_save_load_continue_gives_the_uninterrupted_lrs(td3_run, tmp_path):
    _, uninterrupted, _ = td3_run
    loaded = assert_save_load_continue_matches(
        make_td3, "Pendulum-v1", "differential", TD3_STEPS, uninterrupted, tmp_path
    )  # the actor's steps included: the saved _n_updates keeps policy_delay's phase
    assert loaded._n_updates == TD3_STEPS - TD3_LEARNING_STARTS


def test_td3_continued_learn_equals_one_learn_weights_included(td3_run):
    _, uninterrupted, final_weights = td3_run
    assert_continued_learn_equals_one_learn(
        make_td3, "differential", TD3_STEPS, uninterrupted, final_weights
    )


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
