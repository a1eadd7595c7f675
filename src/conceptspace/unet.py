"""The conditional U-Net that predicts the noise eps in the VDM (docs/study.md "The model").

Layout, following the authors' code (every size configurable; paper values in brackets):

    conv_in 3x3 -> for each level i (at image_size / 2^i px) [64, 128, 256 channels]:
        blocks_per_level residual blocks [2]; then a stride-2 conv down (kernel 2), except
        after the last level
    middle, at the lowest resolution: residual block -> self-attention [4 heads] -> residual
    for each level, lowest first: transposed conv up (kernel 2, stride 2) to the level's
        channels, concatenated with the skip saved at that level on the way down (the
        lowest level has none); then blocks_per_level residual blocks
    GroupNorm -> GELU -> conv_out 3x3 (zero-initialised); the output is added to the input.

A residual block is GroupNorm -> GELU -> conv 3x3, then + time projection + h embedding
(both (B, C), broadcast over space), then GroupNorm -> GELU -> dropout -> conv 3x3 (zero-
initialised), plus a skip (1x1 conv when the channel count changes). With every block's
last conv and conv_out zero-initialised, the initial network returns its input exactly.

Time: a 64-d sinusoidal embedding of 1000 t -> Linear(time_dim) -> GELU ->
Linear(time_dim) -> GELU, shared by all blocks; each block projects it with its own MLP
Linear(C) -> GELU -> Linear(C) -> GELU (the code's "mlp" conditioning projection, used
for time and h alike).

Embedding module (the code's "sep_mlp"): every residual block (down, middle and up, in
that order; 14 for the paper config) has its own MLP h -> Linear(C) -> GELU -> Linear(C)
-> GELU. They live together in ``net.embedding`` (an nn.ModuleList), which is what
interventions act on (``net.embed(h, intervention=...)``) and what patching swaps
(``net(z, t, embeddings=donor.embed(h))``).

Their first Linear's initial scale (config ``model.h_init_fan_in``): PyTorch draws a
Linear's weights and biases from U(+-1/sqrt(fan_in)). The authors' h has 11 slots, most
unused (their ``v_conditioning_dims: [11]``); this project's has the layout's own (4 for
the 2x2), so by default its first layer starts sqrt(11/4) = 1.66 times larger than
theirs. ``h_init_fan_in`` = n draws it as for an h zero-padded to n slots: the default
draws scaled by sqrt(h_dim / n), which is U(+-1/sqrt(n)) exactly. Zero-padded slots would
multiply zeros (no effect on the output, no gradient), so this is the padded model
without changing h, the checkpoints' shapes or the interventions' direction vectors, and
the rest of the network keeps the same random draws. The authors also ran an
init-scale ablation: the scale matters to these dynamics.

Linear latent intervention (docs/study.md "Prompting methods", the authors' code): in
every block, with e the block's embedding of the prompt and u_color, u_size the block's
normalised embeddings of an h holding only the color direction and only the size
direction,
    e'  = e  + alpha (e . u_color) u_color
    e'' = e' - beta  (e' . u_size) u_size
alpha and beta are per row, so one batch can mix interventions with plain prompts. h's
embedding does not depend on time, so the intervention acts at every sampling step.

Precision: ``net.set_precision("bf16")`` runs the forward pass under bf16 autocast and
hands float32 back (the VDM's loss and sampler arithmetic stay in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conceptspace.io import ConceptspaceError

SINUSOIDAL_DIM = 64  # size of the sinusoidal time embedding [code]
TIME_SCALE = 1000.0  # the embedding sees 1000 t, as in the VDM code [code]
MAX_TIMESCALE = 10_000.0
NORM_EPS = 1e-6  # GroupNorm epsilon [code]
CONFIG_KEYS = ("channels", "blocks_per_level", "groups", "attention_heads", "dropout", "time_dim")
# Optional: a config without it (a checkpoint older than the key) draws PyTorch's default.
H_INIT_KEY = "h_init_fan_in"


def sinusoidal_embedding(t: torch.Tensor, dim: int = SINUSOIDAL_DIM) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim): [sin(1000 t f_k), cos(1000 t f_k)] with
    frequencies f_k spaced geometrically from 1 to 1/10000 (Transformer / VDM style)."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(MAX_TIMESCALE) * torch.arange(half, device=t.device) / max(half - 1, 1)
    )
    angles = TIME_SCALE * t.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def mlp(in_features: int, out_features: int) -> nn.Sequential:
    """Linear -> GELU -> Linear -> GELU: the time MLP and every conditioning projection."""
    return nn.Sequential(
        nn.Linear(in_features, out_features),
        nn.GELU(),
        nn.Linear(out_features, out_features),
        nn.GELU(),
    )


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def intervene(
    e: torch.Tensor,
    u_color: torch.Tensor,
    u_size: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
) -> torch.Tensor:
    """e (B, C) -> e'' with e' = e + alpha (e.u_color) u_color, e'' = e' - beta (e'.u_size)
    u_size; u_color and u_size are unit vectors (C,), alpha and beta (B,) per row."""
    e = e + (alpha * (e @ u_color))[:, None] * u_color
    return e - (beta * (e @ u_size))[:, None] * u_size


@dataclass(frozen=True)
class LinearIntervention:
    """The latent intervention applied by ``UNet.embed``: per-row alpha and beta (B,),
    and the h vectors whose embeddings give the directions (``color_h`` holds only the
    color, e.g. (0.05, 0.05, 0.95, 0); ``size_h`` only the size, e.g. (0, 0, 0, 0.6))."""

    alpha: torch.Tensor
    beta: torch.Tensor
    color_h: torch.Tensor
    size_h: torch.Tensor

    def apply(self, embedding_mlp: nn.Module, e: torch.Tensor) -> torch.Tensor:
        """Intervene on one block's embeddings e (B, C), directions from its own MLP."""
        directions = torch.stack([self.color_h, self.size_h]).to(e.device, e.dtype)
        u_color, u_size = F.normalize(embedding_mlp(directions), dim=1)
        alpha = self.alpha.to(e.device, e.dtype)
        beta = self.beta.to(e.device, e.dtype)
        return intervene(e, u_color, u_size, alpha, beta)


class ResidualBlock(nn.Module):
    """Conv block conditioned on time and h; the h embedding comes from ``net.embedding``."""

    def __init__(
        self, in_channels: int, out_channels: int, time_dim: int, groups: int, dropout: float
    ):
        super().__init__()
        self.out_channels = out_channels
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.time_projection = mlp(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(conv3x3(out_channels, out_channels))
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1)
        )

    def forward(
        self, x: torch.Tensor, time_embedding: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.conv1(F.gelu(self.norm1(x)))
        conditioning = self.time_projection(time_embedding) + embedding  # (B, C)
        hidden = hidden + conditioning[:, :, None, None]
        hidden = self.conv2(self.dropout(F.gelu(self.norm2(hidden))))
        return self.skip(x) + hidden


class SelfAttention(nn.Module):
    """Residual multi-head self-attention over the positions of a feature map."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.projection = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, -1, height * width)
        q, k, v = (part.transpose(-1, -2) for part in qkv.unbind(1))  # (B, heads, HW, d)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(-1, -2).reshape(batch, channels, height, width)
        return x + self.projection(attended)


class UNet(nn.Module):
    """eps_hat = net(z_t, t_input, h): the noise-prediction network of the VDM."""

    def __init__(
        self,
        h_dim: int,
        image_size: int,
        channels: Sequence[int] = (64, 128, 256),
        blocks_per_level: int = 2,
        groups: int = 8,
        attention_heads: int = 4,
        dropout: float = 0.1,
        time_dim: int = 256,
        image_channels: int = 3,
        h_init_fan_in: int | None = None,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        check_sizes(image_size, channels, blocks_per_level, groups, attention_heads)
        if h_init_fan_in is not None and h_init_fan_in < h_dim:
            raise ConceptspaceError(
                f"model.h_init_fan_in {h_init_fan_in} is below h's {h_dim} slots; it draws the "
                "embedding MLPs' first layer as for h zero-padded to that many slots: use a "
                f"value >= {h_dim}, or null for PyTorch's default"
            )
        self.h_dim = h_dim
        self.image_size = image_size
        self.image_channels = image_channels
        self.channels = channels
        levels = len(channels)

        def block(in_channels: int, out_channels: int) -> ResidualBlock:
            return ResidualBlock(in_channels, out_channels, time_dim, groups, dropout)

        self.time_mlp = mlp(SINUSOIDAL_DIM, time_dim)
        self.conv_in = conv3x3(image_channels, channels[0])

        # Down: level i runs at image_size / 2^i; a stride-2 conv leads to the next level.
        self.down_levels = nn.ModuleList()
        in_channels = channels[0]
        for out_channels in channels:
            blocks = [block(in_channels, out_channels)]
            blocks += [block(out_channels, out_channels) for _ in range(blocks_per_level - 1)]
            self.down_levels.append(nn.ModuleList(blocks))
            in_channels = out_channels
        self.downsamples = nn.ModuleList(
            nn.Conv2d(c, c, kernel_size=2, stride=2) for c in channels[:-1]
        )

        # Middle, at the lowest resolution: residual -> attention -> residual.
        lowest = channels[-1]
        self.middle = nn.ModuleList([block(lowest, lowest), block(lowest, lowest)])
        self.middle_attention = SelfAttention(lowest, attention_heads, groups)

        # Up, lowest level first; every level but the lowest starts with the upsampled
        # features concatenated to the skip saved on the way down (2 C channels).
        self.up_levels = nn.ModuleList()
        for level in reversed(range(levels)):
            c = channels[level]
            first_in = c if level == levels - 1 else 2 * c
            blocks = [block(first_in, c)] + [block(c, c) for _ in range(blocks_per_level - 1)]
            self.up_levels.append(nn.ModuleList(blocks))
        self.upsamples = nn.ModuleList(
            nn.ConvTranspose2d(channels[level], channels[level - 1], kernel_size=2, stride=2)
            for level in reversed(range(1, levels))
        )

        self.norm_out = nn.GroupNorm(groups, channels[0], eps=NORM_EPS)
        self.conv_out = zero_init(conv3x3(channels[0], image_channels))

        # One embedding MLP per residual block, in the order the forward pass meets them.
        self.embedding = nn.ModuleList(
            mlp(h_dim, residual.out_channels) for residual in self.residual_blocks()
        )
        if h_init_fan_in is not None:
            # U(+-1/sqrt(h_dim)) -> U(+-1/sqrt(h_init_fan_in)), weights and biases alike
            # (PyTorch's Linear init); no new draws, so the rest of the network is unchanged
            with torch.no_grad():
                for embedding_mlp in self.embedding:
                    for parameter in embedding_mlp[0].parameters():
                        parameter.mul_(math.sqrt(h_dim / h_init_fan_in))
        self.autocast_bf16 = False  # set_precision; not state, so checkpoints are unchanged

    @classmethod
    def from_config(cls, model_cfg: Mapping[str, Any], h_dim: int, image_size: int) -> "UNet":
        """Build from the config's ``model`` section (its VDM keys are ignored)."""
        missing = [key for key in CONFIG_KEYS if key not in model_cfg]
        if missing:
            raise ConceptspaceError(
                f"model config lacks {', '.join(missing)}; add them to the config's model "
                "section (see config.yaml)"
            )
        return cls(
            h_dim,
            image_size,
            channels=tuple(model_cfg["channels"]),
            blocks_per_level=int(model_cfg["blocks_per_level"]),
            groups=int(model_cfg["groups"]),
            attention_heads=int(model_cfg["attention_heads"]),
            dropout=float(model_cfg["dropout"]),
            time_dim=int(model_cfg["time_dim"]),
            h_init_fan_in=None if model_cfg.get(H_INIT_KEY) is None else int(model_cfg[H_INIT_KEY]),
        )

    def residual_blocks(self) -> list[ResidualBlock]:
        """All residual blocks in forward order: down, middle, up."""
        down = [block for level in self.down_levels for block in level]
        up = [block for level in self.up_levels for block in level]
        return down + list(self.middle) + up

    def set_precision(self, precision: str) -> None:
        """ "bf16": run forward under bf16 autocast (output float32); "fp32": plain."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.autocast_bf16 = precision == "bf16"

    def embed(
        self, h: torch.Tensor, intervention: LinearIntervention | None = None
    ) -> list[torch.Tensor]:
        """h (B, h_dim) -> one embedding (B, C_i) per residual block, in forward order,
        with ``intervention`` applied in every block if given."""
        embeddings = []
        for embedding_mlp in self.embedding:
            e = embedding_mlp(h)
            if intervention is not None:
                e = intervention.apply(embedding_mlp, e)
            embeddings.append(e)
        return embeddings

    def forward(
        self,
        z: torch.Tensor,
        t_input: torch.Tensor,
        h: torch.Tensor | None = None,
        embeddings: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """eps_hat for z (B, C, S, S) at network time t_input (B,) in [0, 1].

        Give exactly one of ``h`` (B, h_dim) or ``embeddings`` (the list ``embed`` returns,
        possibly transformed: the hook for latent interventions).
        """
        if (h is None) == (embeddings is None):
            raise ValueError("give exactly one of h or embeddings")
        if self.autocast_bf16:
            with torch.autocast(z.device.type, dtype=torch.bfloat16):
                return self._forward(z, t_input, h, embeddings).float()
        return self._forward(z, t_input, h, embeddings)

    def _forward(
        self,
        z: torch.Tensor,
        t_input: torch.Tensor,
        h: torch.Tensor | None,
        embeddings: Sequence[torch.Tensor] | None,
    ) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.embed(h)
        if len(embeddings) != len(self.embedding):
            raise ValueError(f"expected {len(self.embedding)} embeddings, got {len(embeddings)}")
        batch = z.shape[0]
        time_embedding = self.time_mlp(sinusoidal_embedding(t_input.reshape(-1).expand(batch)))
        embeddings = iter(embeddings)

        x = self.conv_in(z)
        skips = []
        for level, blocks in enumerate(self.down_levels):
            for block in blocks:
                x = block(x, time_embedding, next(embeddings))
            if level < len(self.downsamples):
                skips.append(x)
                x = self.downsamples[level](x)

        x = self.middle[0](x, time_embedding, next(embeddings))
        x = self.middle_attention(x)
        x = self.middle[1](x, time_embedding, next(embeddings))

        for index, blocks in enumerate(self.up_levels):
            if index > 0:
                x = torch.cat([self.upsamples[index - 1](x), skips.pop()], dim=1)
            for block in blocks:
                x = block(x, time_embedding, next(embeddings))

        return z + self.conv_out(F.gelu(self.norm_out(x)))


def check_sizes(
    image_size: int,
    channels: Sequence[int],
    blocks_per_level: int,
    groups: int,
    attention_heads: int,
) -> None:
    """Refuse sizes the U-Net cannot be built with, naming the fix."""
    if not channels or blocks_per_level < 1:
        raise ConceptspaceError(
            "model.channels needs at least one level and model.blocks_per_level >= 1"
        )
    factor = 2 ** (len(channels) - 1)
    if image_size % factor != 0:
        raise ConceptspaceError(
            f"data.image_size {image_size} cannot be halved {len(channels) - 1} times "
            f"(model.channels has {len(channels)} levels); use an image size divisible by "
            f"{factor} or fewer levels"
        )
    if any(c % groups for c in channels):
        raise ConceptspaceError(
            f"model.groups {groups} must divide every entry of model.channels {list(channels)}"
        )
    if channels[-1] % attention_heads:
        raise ConceptspaceError(
            f"model.attention_heads {attention_heads} must divide the lowest level's "
            f"channels {channels[-1]}"
        )
