"""The standard suites: gymnasium MuJoCo ids, the DeepMind Control Suite (state and pixels),
pixels from any env that renders, entry-point ids, experiment presets, and a missing extra.

Env shapes are checked on the envs the factory builds; the CLI runs check what a run did
(global steps in the checkpoint, episode ends in TensorBoard, the LRs inside the optimizers)."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
from cli import ROOT, TINY, latest, optimizer_lrs, result, run_cli, scalars

from envs.factory import make_env
from envs.suites import FrameStack, PixelObservation
from training.build import compose_config
from training.run import compile_run_schedules

DMC_CARTPOLE = {"suite": "dmc", "id": "dmc/cartpole-swingup", "domain": "cartpole",
                "task": "swingup", "curriculum": False}  # fmt: skip


def test_mujoco_state_env_is_gymnasiums_with_actions_in_unit_bounds():
    env = make_env({"id": "Hopper-v5", "obs_type": "state"})
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11,) and env.observation_space.shape == (11,)
    assert env.action_space.shape == (3,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.spec.max_episode_steps == 1000
    # A task whose actions are not [-1, 1] is rescaled: full throttle reaches the true bound.
    swimmer = make_env({"id": "InvertedPendulum-v5", "obs_type": "state"})  # torque in [-3, 3]
    assert np.all(swimmer.action_space.high == 1)
    assert swimmer.unwrapped.action_space.high[0] == 3.0
    assert swimmer.action(np.array([1.0], np.float32))[0] == pytest.approx(3.0)


def test_dmc_state_episode_is_1000_physics_steps_at_action_repeat_2():
    env = make_env({**DMC_CARTPOLE, "obs_type": "state"}, action_repeat=2)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (5,)  # position 3 + velocity 2
    assert env.action_space.shape == (1,) and env.action_space.high[0] == 1.0
    physics = env.unwrapped._env.physics
    steps, truncated, terminated = 0, False, False
    while not (truncated or terminated):
        _, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        assert 0.0 <= reward <= 2.0  # two physics steps of a reward in [0, 1]
        steps += 1
    assert (steps, truncated, terminated) == (500, True, False)  # a time limit, not an end
    assert physics.data.time == pytest.approx(10.0)  # 1000 steps of 0.01 s
    # Seeding: the same seed gives the same start, another seed another.
    first = env.reset(seed=3)[0]
    assert np.array_equal(first, env.reset(seed=3)[0])
    assert not np.array_equal(first, env.reset(seed=4)[0])


def test_dmc_pixels_are_three_stacked_84x84_uint8_frames_channels_first():
    env = make_env({**DMC_CARTPOLE, "obs_type": "pixels", "frame_stack": 3}, action_repeat=2)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == obs.shape == (9, 84, 84)
    assert obs.dtype == np.uint8 and obs.max() > obs.min()
    assert np.array_equal(obs[0:3], obs[6:9])  # an episode starts with copies of its frame
    frames = [obs]
    for _ in range(3):
        frames.append(env.step(np.ones(1, np.float32))[0])
    # The stack slides: the newest frame comes last, the older ones move up.
    assert np.array_equal(frames[2][3:6], frames[1][6:9])
    assert np.array_equal(frames[3][0:3], frames[1][6:9])
    assert not np.array_equal(frames[3][6:9], frames[0][6:9])  # the cart moved
    # Camera 0 is what a render from the physics shows.
    view = env.unwrapped._env.physics.render(84, 84, camera_id=0).transpose(2, 0, 1)
    assert np.array_equal(frames[3][6:9], view)


def test_gymnasium_mujoco_pixels_render_at_the_asked_size():
    env = make_env({"id": "Hopper-v5", "obs_type": "pixels", "pixel_size": 64, "frame_stack": 3})
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9, 64, 64) and obs.dtype == np.uint8
    assert env.unwrapped.width == 64  # rendered at that size, not resized
    nxt = env.step(env.action_space.sample())[0]
    assert np.array_equal(nxt[0:6], obs[3:9])


class _Painted(gym.Env):
    """Renders a 30x40 frame whose colour is the step count (no MuJoCo needed)."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode, self.t = render_mode, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 0.0, False, False, {}

    def render(self):
        return np.full((30, 40, 3), 10 * self.t, np.uint8)


def test_pixels_of_any_rgb_rendering_env_are_resized_and_stacked():
    env = FrameStack(PixelObservation(_Painted(render_mode="rgb_array"), 16), 2)
    obs, _ = env.reset()
    assert obs.shape == (6, 16, 16) and obs.dtype == np.uint8 and obs.max() == 0
    obs = env.step(0)[0]
    assert np.all(obs[:3] == 0) and np.all(obs[3:] == 10)
    with pytest.raises(ValueError, match="renders rgb arrays"):
        PixelObservation(_Painted(render_mode=None), 16)


def test_an_entry_point_id_from_a_users_module_builds():
    env = make_env({"id": "corridor_env:Corridor-v0", "obs_type": "state"})
    assert type(env.unwrapped).__name__ == "Corridor"
    assert np.all(env.action_space.high == 1)  # its [-2, 2] actions rescaled like any other


def test_experiment_ppo_mujoco_is_cleanrls_setting_and_overrides_win():
    cfg = compose_config(["experiment=ppo_mujoco", "env.id=Walker2d-v5"])
    a = cfg.agent
    assert cfg.env.id == "Walker2d-v5" and a._target_ == "agents.ppo.PPOAgent"
    published = {"num_envs": 1, "num_steps": 2048, "update_epochs": 10, "num_minibatches": 32,
                 "gamma": 0.99, "gae_lambda": 0.95, "clip_coef": 0.2, "clip_vloss": True,
                 "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5, "norm_adv": True,
                 "norm_obs": True, "norm_reward": True, "clip_obs": 10.0, "clip_reward": 10.0,
                 "hidden_dim": 64}  # fmt: skip
    assert {k: a[k] for k in published} == published
    assert (cfg.lr, cfg.num_train_frames) == (3e-4, 1_000_000)
    schedules = compile_run_schedules(cfg)
    for net in ("encoder", "actor", "critic"):  # annealed linearly: half way is half the LR
        assert schedules[net](0) == pytest.approx(3e-4)
        assert schedules[net](500_000) == pytest.approx(3e-4 * (1 + 1e-3) / 2)
    mine = compose_config(["experiment=ppo_mujoco", "lr_schedule=warmup_cosine", "lr=1e-3",
                           "agent.num_envs=4"])  # fmt: skip
    assert (mine.lr, mine.agent.num_envs) == (1e-3, 4)
    assert compile_run_schedules(mine)["actor"](0) == pytest.approx(1e-5)  # warmup from 0.01x


def test_experiment_drqv2_dmc_pixels_is_drqv2s_setting():
    cfg = compose_config(["experiment=drqv2_dmc_pixels"])
    assert (cfg.env.suite, cfg.env.domain, cfg.env.task) == ("dmc", "cartpole", "swingup")
    assert (cfg.env.obs_type, cfg.env.pixel_size, cfg.env.frame_stack) == ("pixels", 84, 3)
    assert (cfg.action_repeat, cfg.lr, cfg.num_seed_frames) == (2, 1e-4, 4000)
    assert (cfg.replay.batch_size, cfg.replay.nstep, cfg.agent.hidden_dim) == (256, 3, 1024)
    assert cfg.agent.stddev_schedule == "linear(1.0,0.1,100000)"
    state = compose_config(["experiment=drqv2_dmc_state", "env.domain=walker", "env.task=walk"])
    assert (state.env.obs_type, state.env.domain, state.action_repeat) == ("state", "walker", 2)


def test_dmc_state_run_counts_action_repeat_in_the_global_step(tmp_path):
    """2,000 frames at action repeat 2: 1,000 global steps, two 500-step episodes, and the
    schedule's boundaries (thirds of the run) at global steps."""
    args = [*TINY, "env=dmc", "env.domain=cartpole", "env.task=swingup",
            "num_train_frames=2000", "num_seed_frames=400", "eval_every_frames=4000",
            "lr_schedule=gentle_decay"]  # fmt: skip
    done = run_cli(*args, run_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = latest(tmp_path)
    assert state["global_step"] == 1000
    # The replay's own episode ends (what n-step targets stop at): after steps 500 and 1000.
    assert np.flatnonzero(state["replay"]["episode_end"]).tolist() == [499, 999]
    schedules = compile_run_schedules(compose_config(args))
    assert optimizer_lrs(state) == pytest.approx({n: schedules[n](1000) for n in schedules})
    logged = dict(scalars(tmp_path, "lr_actor"))
    assert logged[333] == pytest.approx(schedules["actor"](333)) != logged[0]
    assert result(tmp_path)["status"] == "completed"


def test_dmc_pixels_train_through_the_cli(tmp_path):
    """DrQ-v2 on cartpole_swingup from stacked frames (32x32 to keep it quick; the 84x84
    framing is checked on the env above), 2-second episodes: 100 agent steps."""
    args = [*TINY, "env=dmc", "env.domain=cartpole", "env.task=swingup", "env.obs_type=pixels",
            "+env.kwargs.time_limit=2", "env.pixel_size=32", "num_train_frames=400",
            "num_seed_frames=200", "eval_every_frames=4000", "replay.batch_size=16"]  # fmt: skip
    done = run_cli(*args, run_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = latest(tmp_path)
    assert state["global_step"] == 200
    stored = state["replay"]["obs"]  # what the agent learned from
    assert stored.shape[1:] == (9, 32, 32) and stored.dtype == np.uint8
    assert np.flatnonzero(state["replay"]["episode_end"]).tolist() == [99, 199]
    assert "EGL" in (tmp_path / "train_curriculum.log").read_text()  # said at start-up


def test_ppo_on_a_mujoco_task_through_the_cli(tmp_path):
    args = ["experiment=ppo_mujoco", "env.id=Hopper-v5", "agent.num_steps=256",
            "agent.num_minibatches=4", "agent.update_epochs=2", "num_train_frames=1024",
            "eval_every_frames=100000", "num_eval_episodes=1", "checkpoint_every_frames=512",
            "log_every_frames=256", "progress=lines"]  # fmt: skip
    done = run_cli(*args, run_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = latest(tmp_path)
    assert state["global_step"] == 1024
    schedules = compile_run_schedules(compose_config(args))
    assert optimizer_lrs(state) == pytest.approx({n: schedules[n](1024) for n in schedules})
    stats = state["normalization"]["obs"]
    assert tuple(stats["mean"].shape) == (11,)
    assert stats["count"] == pytest.approx(1e-4 + 1 + 1024)  # the reset, then one per step


def test_a_users_entry_point_env_trains(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    done = run_cli("agent=ppo", "env=mujoco", "env.id=corridor_env:Corridor-v0",
                   "agent.num_steps=64", "num_train_frames=512", "eval_every_frames=100000",
                   "num_eval_episodes=1", "progress=lines", run_dir=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert latest(tmp_path)["global_step"] == 512


@pytest.mark.parametrize("module,args", [
    ("mujoco", ["agent=ppo", "env=mujoco", "env.id=Walker2d-v5"]),
    ("dm_control", ["env=dmc", "env.domain=walker", "env.task=walk"]),
])  # fmt: skip
def test_a_missing_extra_exits_2_with_the_pip_command_and_writes_nothing(tmp_path, module, args):
    shim = tmp_path / "shim" / module
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(f"raise ImportError('No module named {module}')\n")
    run_dir = tmp_path / "run"
    done = run_cli(*args, run_dir=run_dir, env={"PYTHONPATH": str(shim.parent)})
    assert done.returncode == 2, done.stderr[-2000:]
    extra = {"mujoco": "mujoco", "dm_control": "dmc"}[module]
    assert f'pip install -e ".[{extra}]"' in done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert not run_dir.exists() or list(run_dir.iterdir()) == []


def test_headless_rendering_is_chosen_only_without_a_display(monkeypatch):
    from envs import suites

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    suites.headless_rendering()
    assert "MUJOCO_GL" not in os.environ  # a display: leave the choice to mujoco
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    suites.headless_rendering()
    assert os.environ["MUJOCO_GL"] == "egl" and os.environ["PYOPENGL_PLATFORM"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    suites.headless_rendering()
    assert os.environ["MUJOCO_GL"] == "osmesa"  # the user's choice stands


def test_gymnasium_mujoco_pixels_train_drqv2_through_the_cli(tmp_path):
    """Any rendering gymnasium env as pixels: InvertedPendulum (torque in [-3, 3]) from stacked
    32x32 renders; DrQ-v2 acts in [-1, 1], rescaled to the env's bounds."""
    args = [*TINY, "env=mujoco", "env.id=InvertedPendulum-v5", "env.obs_type=pixels",
            "env.pixel_size=32", "num_train_frames=300", "num_seed_frames=150",
            "eval_every_frames=1000", "replay.batch_size=16"]  # fmt: skip
    done = run_cli(*args, run_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = latest(tmp_path)
    assert state["global_step"] == 300
    replay = state["replay"]
    assert replay["obs"].shape[1:] == (9, 32, 32) and replay["obs"].dtype == np.uint8
    actions = replay["action"]
    assert np.abs(actions).max() <= 1.0 and np.abs(actions).max() > 0.5
    assert replay["episode_end"].sum() > 1  # the pole falls: episodes end
