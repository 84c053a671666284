"""Pixel observations through the real CLI: a tiny DrQ-v2 run on the gimbal's camera view."""

from __future__ import annotations

import json

from cli import run_cli, scalars

from training import checkpoint

# 16x16 frames, a two-layer strided encoder and a tiny budget: a few seconds on a CPU.
TINY_PIXELS = [
    "env.obs_type=pixels", "env.kwargs.pixel_size=16", "encoder_bundle@agent=enc_B",
    "agent.encoder.conv_channels=[8,8]", "agent.hidden_dim=32", "agent.feature_dim=16",
    "replay.batch_size=16", "replay.capacity=5000", "num_train_frames=1000",
    "num_seed_frames=200", "eval_every_frames=500", "num_eval_episodes=1",
    "log_every_frames=250", "checkpoint_every_frames=500", "progress=lines",
]  # fmt: skip


def test_tiny_pixel_run_trains_and_checkpoints_its_frames(tmp_path):
    done = run_cli(*TINY_PIXELS, run_dir=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed" and result["global_step"] == 1000
    losses = [v for _, v in scalars(tmp_path, "train/critic_loss")]
    assert losses and all(v == v for v in losses)  # updates ran, no NaN
    replay = checkpoint.load(tmp_path / "checkpoints" / "latest.pt")["replay"]
    assert replay["obs"].shape == (1000, 3, 16, 16) and str(replay["obs"].dtype) == "uint8"
