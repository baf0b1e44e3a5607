"""Building blocks of the band-split roformers: RMSNorm, rotary position embedding, gated
attention, linear (cross-covariance) attention, feed-forward, the pre-norm residual stack, and
the per-band input projection (BandSplit) and mask heads (MaskEstimator).

Pure `torch.nn` modules, inference-only (dropout slots are `nn.Identity`). Attribute names and
`nn.Sequential` positions reproduce lucidrains' BS-RoFormer, which every community checkpoint
(ZFTurbo's Music-Source-Separation-Training) was saved from, so a checkpoint loads by name:

    Transformer      layers.{k}.0 = Attention | LinearAttention,  layers.{k}.1 = FeedForward,
                     norm.gamma (only with `norm_output`)
    Attention        norm.gamma, to_qkv.weight, to_gates.{weight,bias}, to_out.0.weight,
                     rotary_embed.freqs
    LinearAttention  norm.gamma, to_qkv.0.weight, temperature, to_out.1.weight
    FeedForward      net.0.gamma, net.1.{weight,bias}, net.4.{weight,bias}
    BandSplit        to_features.{band}.0.gamma, to_features.{band}.1.{weight,bias}
    MaskEstimator    to_freqs.{band}.0.{0,2,4,…}.{weight,bias}  (Linear layers between Tanh)

Mixed precision: norms and rotary rotations run in float32 and hand back the input's dtype, so
the modules can run under fp16/bf16 autocast with matmuls in half precision and everything that
loses range (squares, sums, sines) in full precision.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812 (the universal alias)
from torch import Tensor, nn

__all__ = [
    "Attention",
    "BandSplit",
    "FeedForward",
    "LinearAttention",
    "MaskEstimator",
    "RMSNorm",
    "RotaryEmbedding",
    "Transformer",
]


class RMSNorm(nn.Module):
    """`x / ‖x‖ · √dim · gamma` over the last axis: RMS normalisation written as an L2
    normalisation (lucidrains' form, no epsilon inside the root beyond `F.normalize`'s 1e-12).

    Computed in float32 whatever the input dtype: the squared sum overflows fp16 easily.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = F.normalize(x.float(), dim=-1) * self.scale * self.gamma.float()
        return y.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) in the interleaved layout of
    `rotary-embedding-torch`: feature pairs (2i, 2i+1) rotate by angle `position · freqs[i]`,
    `freqs[i] = theta^(-2i / dim_head)`.

    `freqs` is a persistent buffer because community checkpoints carry it (as
    `...rotary_embed.freqs`, once per attention layer that shares this module). State dicts
    without it (splifft's modules keep no such entry) load too: a pre-hook fills the missing
    entry with the value this module computed, which is the same formula. Angles are computed per
    call for the sequence at hand, in float32, so any sequence length works.
    """

    freqs: Tensor

    def __init__(self, dim_head: int, *, theta: float = 10000.0) -> None:
        super().__init__()
        if dim_head % 2:
            raise ValueError(f"rotary embedding needs an even {dim_head=}")
        exponents = torch.arange(0, dim_head, 2, dtype=torch.float32) / dim_head
        self.register_buffer("freqs", 1.0 / theta**exponents)
        self.register_load_state_dict_pre_hook(_fill_missing_rotary_freqs)  # type: ignore[no-untyped-call]

    def rotate(self, x: Tensor) -> Tensor:
        """Rotate `x` of shape (..., seq, dim_head) by its positions 0 … seq-1 along dim -2."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
        freqs = self.freqs.to(device=x.device, dtype=torch.float32)
        angles = positions[:, None] * freqs[None, :]
        cos, sin = angles.cos(), angles.sin()
        even, odd = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
        rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1)
        return rotated.flatten(-2).to(x.dtype)


def _fill_missing_rotary_freqs(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any
) -> None:
    """Load-state-dict pre-hook: supply `freqs` when a state dict lacks it (see RotaryEmbedding).
    `load_state_dict` hands hooks its own shallow copy, so the caller's dict is not modified."""
    key = prefix + "freqs"
    if key not in state_dict:
        state_dict[key] = module.get_buffer("freqs").detach().clone()


class FeedForward(nn.Module):
    """Pre-norm MLP: RMSNorm → Linear(dim, mult·dim) → GELU → Linear(mult·dim, dim)."""

    def __init__(self, dim: int, *, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        # Identity where the reference had Dropout keeps the Linear layers at net.1 and net.4.
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Linear(dim, inner),
            nn.GELU(),
            nn.Identity(),
            nn.Linear(inner, dim),
            nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions and a sigmoid gate per head.

    `F.scaled_dot_product_attention` picks a fused kernel (flash / memory-efficient on CUDA), so
    the (seq × seq) score matrix is never materialised there. The gate, `sigmoid(W_g x)` of shape
    (seq, heads), scales each head's output before the output projection (no bias there, none on
    qkv: the community checkpoints have none).
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int,
        rotary_embed: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False))
        self.rotary_embed = rotary_embed

    def forward(self, x: Tensor) -> Tensor:
        """(batch, seq, dim) → (batch, seq, dim)."""
        x = self.norm(x)
        qkv = self.to_qkv(x).unflatten(-1, (3, self.heads, self.dim_head))
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, dim_head)
        if self.rotary_embed is not None:
            q = self.rotary_embed.rotate(q)
            k = self.rotary_embed.rotate(k)
        out = F.scaled_dot_product_attention(q, k, v)
        gates = self.to_gates(x).sigmoid().transpose(1, 2).unsqueeze(-1)  # (b, heads, seq, 1)
        out = (out * gates).transpose(1, 2).flatten(2)
        result: Tensor = self.to_out(out)
        return result


class LinearAttention(nn.Module):
    """Cross-covariance attention (El-Nouby et al. 2021, XCiT): attention between the
    `dim_head` feature channels of each head instead of between positions, so the cost is linear
    in sequence length. Queries and keys are L2-normalised along the sequence, queries scaled by
    a learned per-head temperature (`exp(temperature)`) and the scores by a fixed 8.

    Used by roformers with `linear_transformer_depth > 0` over the whole (time × band) plane.
    """

    _SCORE_SCALE = 8.0

    def __init__(self, dim: int, *, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(nn.Linear(dim, 3 * inner, bias=False))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        # The reference keeps a reshape at to_out.0; Identity holds its place so the projection
        # stays at to_out.1.
        self.to_out = nn.Sequential(nn.Identity(), nn.Linear(inner, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """(batch, seq, dim) → (batch, seq, dim)."""
        x = self.norm(x)
        qkv = self.to_qkv(x).unflatten(-1, (3, self.heads, self.dim_head))
        q, k, v = qkv.permute(2, 0, 3, 4, 1).unbind(0)  # each (batch, heads, dim_head, seq)
        # Normalised in float32: the sums of squares run over the whole sequence.
        q = (F.normalize(q.float(), dim=-1) * self.temperature.float().exp()).to(v.dtype)
        k = F.normalize(k.float(), dim=-1).to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v, scale=self._SCORE_SCALE)
        result: Tensor = self.to_out(out.permute(0, 3, 1, 2).flatten(2))
        return result


class Transformer(nn.Module):
    """`depth` pre-norm residual blocks `x += attn(x); x += ff(x)`, then an optional RMSNorm.

    BS-RoFormer checkpoints have no output norm here (one final norm after all layers instead);
    Mel-Band RoFormer checkpoints have one per transformer (`norm_output=True`).
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        heads: int,
        dim_head: int,
        ff_mult: int = 4,
        norm_output: bool,
        rotary_embed: RotaryEmbedding | None = None,
        linear_attn: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            attn: nn.Module
            if linear_attn:
                attn = LinearAttention(dim, heads=heads, dim_head=dim_head)
            else:
                attn = Attention(dim, heads=heads, dim_head=dim_head, rotary_embed=rotary_embed)
            self.layers.append(nn.ModuleList([attn, FeedForward(dim, mult=ff_mult)]))
        self.norm: nn.Module = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(batch, seq, dim) → (batch, seq, dim)."""
        for block in self.layers:
            attn, ff = cast(nn.ModuleList, block)
            x = attn(x) + x
            x = ff(x) + x
        out: Tensor = self.norm(x)
        return out


# ---------------------------------------------------------------------------------------------
# band split and mask estimation (the per-band ends of a band-split model)
# ---------------------------------------------------------------------------------------------


class BandSplit(nn.Module):
    """Per band: RMSNorm + Linear from its (bins · channels · re/im) reals to `dim`."""

    def __init__(self, dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(width), nn.Linear(width, dim)) for width in self.widths
        )

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, sum(widths)) → (batch, frames, bands, dim)."""
        parts = torch.split(x, list(self.widths), dim=-1)
        return torch.stack(
            [net(part) for net, part in zip(self.to_features, parts, strict=True)], dim=-2
        )


def _band_mlp(dim: int, width: int, *, hidden: int, hidden_layers: int) -> nn.Sequential:
    """Linear/Tanh stack dim → hidden (× hidden_layers) → 2 · width, then GLU to `width`.

    Nested as Sequential(Sequential(Linear, Tanh, …, Linear), GLU) so the checkpoint keys read
    `to_freqs.{band}.0.{0,2,4,…}`."""
    sizes = (dim, *(hidden,) * hidden_layers, 2 * width)
    stack: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(itertools.pairwise(sizes)):
        if index:
            stack.append(nn.Tanh())
        stack.append(nn.Linear(size_in, size_out))
    return nn.Sequential(nn.Sequential(*stack), nn.GLU(dim=-1))


class MaskEstimator(nn.Module):
    """One stem's complex mask: a separate MLP per band, outputs concatenated over bands."""

    def __init__(self, dim: int, widths: Sequence[int], *, hidden: int, hidden_layers: int) -> None:
        super().__init__()
        self.to_freqs = nn.ModuleList(
            _band_mlp(dim, width, hidden=hidden, hidden_layers=hidden_layers) for width in widths
        )

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, bands, dim) → (batch, frames, sum(widths))."""
        bands = x.unbind(dim=-2)
        return torch.cat(
            [mlp(band) for mlp, band in zip(self.to_freqs, bands, strict=True)], dim=-1
        )
