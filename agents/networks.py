"""Network building blocks shared by the agents: encoders, actor, critic, init, augmentation.

Encoders come in two *bundles*, each a complete design for both observation kinds
(state: a 1-D float vector; pixels: a ``(C, H, W)`` uint8 image). ``make_encoder`` picks the
design from the observation shape, so a config names a bundle once and works for either kind.

- Bundle ``A`` (the DrQ-v2 baseline): a plain 2-layer ReLU MLP for states, and for pixels four
  3x3 convolutions (stride 2 then 1) that keep most of the spatial resolution. Strong and well
  understood; its pixel representation is large (about 20k features at 64x64), which makes the
  actor/critic trunks the dominant cost.
- Bundle ``B`` (deeper state model, lighter pixel model): a pre-LayerNorm residual MLP for states,
  which stays trainable with more depth and badly scaled inputs, and for pixels strided 4x4
  convolutions that downsample 2x per layer (about 2.3k features at 64x64, ~9x fewer than A).
  Pick it for larger images, for CPU runs, or when the critic overfits to A's big representation.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def orthogonal_init_(module: nn.Module) -> None:
    """Orthogonal weights and zero biases, for use with ``module.apply``.

    Orthogonal init keeps activation scale stable through depth, which matters more in RL than
    in supervised learning because early Q-value blow-ups feed back into the targets.
    """
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)


class RandomShiftsAug(nn.Module):
    """Shift each image by an independent random integer offset in ``[-pad, pad]`` pixels.

    The border is replicate-padded, so the shifted image has no black bands that the encoder
    could use to tell augmented from clean frames. Works on any dtype: shifting the uint8 frames
    before the float conversion moves a quarter of the bytes.
    """

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        self.pad = pad

    def draw_offsets(self, n: int, device: torch.device) -> torch.Tensor:
        """``(n, 2)`` integer (row, column) shifts in ``[-pad, pad]``, from torch's global RNG."""
        return torch.randint(-self.pad, self.pad + 1, (n, 2), device=device)

    def forward(self, images: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Return a shifted copy of an ``(N, C, H, W)`` batch (``offsets`` drawn if not given)."""
        n, _, h, w = images.shape
        if offsets is None:
            offsets = self.draw_offsets(n, images.device)
        padded = F.pad(images, (self.pad,) * 4, mode="replicate")
        # Every (2 pad + 1)^2 window of each image as a view, then one window per image: a copy
        # of whole H x W planes, ~5x faster on CPU than gathering pixel by pixel.
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)
        start = offsets + self.pad
        return windows[torch.arange(n, device=images.device), :, start[:, 0], start[:, 1]]


def _scale_pixels(obs: torch.Tensor) -> torch.Tensor:
    # Centred inputs let the first conv start near its linear regime. A uint8 batch is scaled in
    # place in its fresh float copy (one buffer instead of three); the values are the same.
    if obs.dtype == torch.uint8:
        return obs.float().div_(255.0).sub_(0.5)
    return obs.float() / 255.0 - 0.5


def _conv_output_dim(convnet: nn.Module, obs_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return int(convnet(torch.zeros(1, *obs_shape)).numel())


class StateMLPEncoder(nn.Module):
    """Bundle A, state observations: ``Linear -> ReLU -> Linear -> ReLU``."""

    def __init__(self, obs_shape: Sequence[int], mlp_hidden_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_shape[0], mlp_hidden_dim),
            nn.ReLU(),
            nn.Linear(mlp_hidden_dim, mlp_hidden_dim),
            nn.ReLU(),
        )
        self.repr_dim = mlp_hidden_dim
        self.apply(orthogonal_init_)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class ConvEncoder(nn.Module):
    """Bundle A, pixel observations: DrQ-style stack of 3x3 convolutions.

    The first layer halves the resolution; the rest keep it (no padding), so fine spatial detail
    survives into the flattened representation.
    """

    def __init__(
        self, obs_shape: Sequence[int], conv_channels: int = 32, conv_layers: int = 4
    ) -> None:
        super().__init__()
        # In-place ReLUs: a convolution's backward does not need its output, so overwriting it
        # saves one activation-sized buffer per layer and leaves the gradients unchanged.
        layers: list[nn.Module] = [
            nn.Conv2d(obs_shape[0], conv_channels, 3, stride=2),
            nn.ReLU(inplace=True),
        ]
        for _ in range(conv_layers - 1):
            layers += [nn.Conv2d(conv_channels, conv_channels, 3, stride=1), nn.ReLU(inplace=True)]
        self.convnet = nn.Sequential(*layers, nn.Flatten())
        self.repr_dim = _conv_output_dim(self.convnet, obs_shape)
        self.apply(orthogonal_init_)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convnet(_scale_pixels(obs))


class _ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualMLPEncoder(nn.Module):
    """Bundle B, state observations: input projection, pre-LayerNorm residual blocks, LayerNorm.

    The identity path keeps gradients flowing with more depth, and the final LayerNorm bounds the
    features' scale whatever the raw observation units are.
    """

    def __init__(self, obs_shape: Sequence[int], mlp_width: int = 128, mlp_blocks: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_shape[0], mlp_width),
            *(_ResidualBlock(mlp_width) for _ in range(mlp_blocks)),
            nn.LayerNorm(mlp_width),
        )
        self.repr_dim = mlp_width
        self.apply(orthogonal_init_)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class StridedConvEncoder(nn.Module):
    """Bundle B, pixel observations: 4x4 stride-2 convolutions, one per entry of ``conv_channels``.

    Every layer halves the resolution, so the representation is small and cheap for the trunks.
    """

    def __init__(
        self, obs_shape: Sequence[int], conv_channels: Sequence[int] = (32, 64, 64)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = obs_shape[0]
        for out_channels in conv_channels:
            layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.convnet = nn.Sequential(*layers, nn.Flatten())
        self.repr_dim = _conv_output_dim(self.convnet, obs_shape)
        self.apply(orthogonal_init_)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convnet(_scale_pixels(obs))


ENCODER_BUNDLES: dict[str, dict[str, type[nn.Module]]] = {
    "A": {"state": StateMLPEncoder, "pixels": ConvEncoder},
    "B": {"state": ResidualMLPEncoder, "pixels": StridedConvEncoder},
}


def _knobs(encoder_cls: type[nn.Module]) -> set[str]:
    params = inspect.signature(encoder_cls.__init__).parameters
    return {name for name in params if name not in ("self", "obs_shape")}


def make_encoder(obs_shape: Sequence[int], bundle: str, **kwargs: object) -> nn.Module:
    """Build bundle ``bundle``'s encoder for observations of shape ``obs_shape``.

    A 1-D shape selects the bundle's state encoder, a ``(C, H, W)`` shape its pixel encoder.
    ``kwargs`` are the bundle's design knobs; a knob that belongs to the other observation kind of
    the same bundle is accepted and ignored, so one bundle config serves both kinds.
    The returned module has an integer attribute ``repr_dim`` (its output width).
    """
    if bundle not in ENCODER_BUNDLES:
        raise ValueError(
            f"encoder.bundle={bundle!r} is unknown; expected one of {sorted(ENCODER_BUNDLES)}"
        )
    if len(obs_shape) == 1:
        kind = "state"
    elif len(obs_shape) == 3:
        kind = "pixels"
    else:
        raise ValueError(
            f"obs_shape={tuple(obs_shape)} is neither a state vector (D,) nor an image (C, H, W)"
        )
    designs = ENCODER_BUNDLES[bundle]
    accepted = set().union(*(_knobs(cls) for cls in designs.values()))
    unknown = set(kwargs) - accepted
    if unknown:
        raise TypeError(
            f"encoder bundle {bundle} got unknown knob(s) {sorted(unknown)}; "
            f"accepted: {sorted(accepted)}"
        )
    encoder_cls = designs[kind]
    own = _knobs(encoder_cls)
    return encoder_cls(tuple(obs_shape), **{k: v for k, v in kwargs.items() if k in own})


def _trunk(repr_dim: int, feature_dim: int) -> nn.Sequential:
    # LayerNorm + tanh squash the (possibly huge) representation into a bounded feature vector,
    # which is what keeps DrQ-style critics stable on pixels.
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class Actor(nn.Module):
    """Deterministic policy: trunk (Linear + LayerNorm + tanh), then a 2-hidden-layer MLP + tanh.

    Exploration noise is added by the agent, so the network only outputs the mean action.
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = _trunk(repr_dim, feature_dim)
        self.policy = _mlp(feature_dim, hidden_dim, action_dim)
        self.apply(orthogonal_init_)

    def forward(self, obs_repr: torch.Tensor) -> torch.Tensor:
        """Return the mean action in ``[-1, 1]`` for a batch of encoder outputs."""
        return torch.tanh(self.policy(self.trunk(obs_repr)))


class Critic(nn.Module):
    """Twin Q-functions over a shared trunk; the agent bootstraps from their minimum."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = _trunk(repr_dim, feature_dim)
        self.q1 = _mlp(feature_dim + action_dim, hidden_dim, 1)
        self.q2 = _mlp(feature_dim + action_dim, hidden_dim, 1)
        self.apply(orthogonal_init_)

    def forward(
        self, obs_repr: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(q1, q2)``, each of shape ``(N, 1)``."""
        features_action = torch.cat([self.trunk(obs_repr), action], dim=-1)
        return self.q1(features_action), self.q2(features_action)
