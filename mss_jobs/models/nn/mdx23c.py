"""MDX23C (TFC-TDF-UNet v3) as the community trains and ships it: waveform in, stems out, with
state-dict keys equal to the community checkpoints (ZFTurbo's MSST, UVR's MDX23C models).

The network (Kim & Kim, SDX23 technical report, arXiv:2306.09382) works on the complex STFT as
real channels ("complex as channels"): the lowest `dim_f` bins are split into `num_subbands`
equal sub-bands stacked as channels, a U-Net of TFC-TDF blocks (3×3 convolutions plus a
bottlenecked fully-connected layer across frequency) predicts every stem's spectrogram directly
(not a mask), and the bins above `dim_f` come back as zeros before the inverse STFT. Norms and the
STFT run in float32 under autocast; the convolutions follow the autocast dtype.

`build_mdx23c(params)` takes one flat mapping of MSST's hyperparameters; `mdx23c_config.py`
documents its keys, validates them (`Mdx23cConfig`) and flattens an MSST YAML into it
(`mdx23c_params_from_msst`, re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812 (the universal alias)
from torch import nn

from mss_jobs.errors import ConfigError
from mss_jobs.models.nn.mdx23c_config import (
    Mdx23cConfig,
    mdx23c_params_from_msst,
    parse_act,
    parse_norm,
)

__all__ = ["MDX23C", "Mdx23cConfig", "build_mdx23c", "mdx23c_params_from_msst"]


def _norm_factory(norm: str) -> Callable[[int], nn.Module]:
    """The norm layer `parse_norm` names, as a factory of one argument (the channels)."""
    kind, groups = parse_norm(norm)
    if kind == "batch":
        return _BatchNorm
    if kind == "instance":
        return _InstanceNorm
    if kind == "group":

        def group_norm(channels: int) -> nn.Module:
            if channels % groups:
                raise ConfigError(f"MDX23C norm {norm!r} cannot split {channels} channels")
            return _GroupNorm(groups, channels)

        return group_norm
    return lambda _channels: nn.Identity()


def _act_factory(act: str) -> Callable[[], nn.Module]:
    kind, alpha = parse_act(act)
    if kind == "gelu":
        return nn.GELU
    if kind == "relu":
        return nn.ReLU
    return lambda: nn.ELU(alpha)


# Norms compute in float32 whatever autocast says: statistics over a whole time × frequency plane
# lose precision in half types. Subclasses, not wrappers, so the state-dict keys stay the same.
class _InstanceNorm(nn.InstanceNorm2d):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


class _BatchNorm(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


class _GroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


@dataclass(frozen=True, slots=True)
class _Layers:
    norm: Callable[[int], nn.Module]
    act: Callable[[], nn.Module]

    def pre_activated(self, channels: int, layer: nn.Module) -> nn.Sequential:
        """norm → act → layer, the reference's layout (indices 0, 1, 2 in the state dict)."""
        return nn.Sequential(self.norm(channels), self.act(), layer)


class TfcTdfBlock(nn.Module):
    """Residual TFC → (+TDF) → TFC over (batch, channels, frames, bins): the convolutions see
    local time-frequency patterns, the TDF mixes all bins of a frame through a bottleneck."""

    def __init__(
        self, in_channels: int, channels: int, *, bins: int, bottleneck: int, layers: _Layers
    ) -> None:
        super().__init__()
        self.tfc1 = layers.pre_activated(
            in_channels, nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        )
        hidden = bins // bottleneck
        self.tdf = nn.Sequential(
            layers.norm(channels),
            layers.act(),
            nn.Linear(bins, hidden, bias=False),
            layers.norm(channels),
            layers.act(),
            nn.Linear(hidden, bins, bias=False),
        )
        self.tfc2 = layers.pre_activated(
            channels, nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        )
        self.shortcut = nn.Conv2d(in_channels, channels, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(x)
        x = self.tfc1(x)
        x = x + self.tdf(x)
        return cast(torch.Tensor, self.tfc2(x) + skip)


class TfcTdf(nn.Module):
    """`count` TFC-TDF blocks in a row; only the first changes the channel count."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        count: int,
        bins: int,
        bottleneck: int,
        layers: _Layers,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TfcTdfBlock(
                in_channels if i == 0 else channels,
                channels,
                bins=bins,
                bottleneck=bottleneck,
                layers=layers,
            )
            for i in range(count)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Rescale(nn.Module):
    """norm → act → strided (transposed) convolution whose kernel equals its stride."""

    def __init__(self, channels: int, layer: nn.Module, layers: _Layers) -> None:
        super().__init__()
        self.conv = layers.pre_activated(channels, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.conv(x))


class _EncoderLevel(nn.Module):
    def __init__(self, tfc_tdf: TfcTdf, downscale: _Rescale) -> None:
        super().__init__()
        self.tfc_tdf = tfc_tdf
        self.downscale = downscale


class _DecoderLevel(nn.Module):
    def __init__(self, upscale: _Rescale, tfc_tdf: TfcTdf) -> None:
        super().__init__()
        self.upscale = upscale
        self.tfc_tdf = tfc_tdf


class MDX23C(nn.Module):
    """`forward(waveform (batch, audio_channels, samples)) → (batch, stems, channels, samples)`,
    float32. `samples // hop_length + 1` must be a multiple of `config.frames_multiple` (the
    community chunk sizes, e.g. 261120 = 255 · 1024, give 256 frames)."""

    def __init__(self, config: Mdx23cConfig) -> None:
        super().__init__()
        self.config = config
        layers = _Layers(_norm_factory(config.norm), _act_factory(config.act))
        spectral, scale = config.spectral_channels, config.scale
        channels, bins = config.num_channels, config.dim_f // config.num_subbands

        def stack(in_channels: int, out_channels: int, bins: int) -> TfcTdf:
            return TfcTdf(
                in_channels,
                out_channels,
                count=config.num_blocks_per_scale,
                bins=bins,
                bottleneck=config.bottleneck_factor,
                layers=layers,
            )

        self.first_conv = nn.Conv2d(spectral, channels, 1, 1, 0, bias=False)
        self.encoder_blocks = nn.ModuleList()
        for _ in range(config.num_scales):
            wider = channels + config.growth
            down = nn.Conv2d(channels, wider, scale, scale, bias=False)
            self.encoder_blocks.append(
                _EncoderLevel(stack(channels, channels, bins), _Rescale(channels, down, layers))
            )
            channels, bins = wider, bins // scale[1]
        self.bottleneck_block = stack(channels, channels, bins)
        self.decoder_blocks = nn.ModuleList()
        for _ in range(config.num_scales):
            narrower = channels - config.growth
            up = nn.ConvTranspose2d(channels, narrower, scale, scale, bias=False)
            upscale = _Rescale(channels, up, layers)
            channels, bins = narrower, bins * scale[1]
            # The skip connection doubles the input channels of the decoder's blocks.
            self.decoder_blocks.append(_DecoderLevel(upscale, stack(2 * channels, channels, bins)))
        self.final_conv = nn.Sequential(
            nn.Conv2d(channels + spectral, channels, 1, 1, 0, bias=False),
            layers.act(),
            nn.Conv2d(channels, config.num_stems * spectral, 1, 1, 0, bias=False),
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if waveform.ndim != 3 or waveform.shape[1] != cfg.audio_channels:
            raise ValueError(
                f"expected (batch, {cfg.audio_channels}, samples), got {tuple(waveform.shape)}"
            )
        samples = waveform.shape[-1]
        frames = samples // cfg.hop_length + 1
        if samples <= cfg.n_fft // 2 or frames % cfg.frames_multiple:
            raise ValueError(
                f"MDX23C needs more than {cfg.n_fft // 2} samples and a frame count "
                f"(samples // {cfg.hop_length} + 1) that is a multiple of {cfg.frames_multiple}; "
                f"got {samples=} ({frames} frames)"
            )
        mix = self._subbands(waveform)
        return self._waveforms(self._separate(mix), samples)

    def _window(self, device: torch.device) -> torch.Tensor:
        # Made per call, not a buffer: the community checkpoints hold no window, and a model cast
        # to half precision must still analyse with a float32 one.
        return torch.hann_window(self.config.n_fft, periodic=True, device=device)

    def _subbands(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, C, samples) → (B, C·2·subbands, dim_f / subbands, frames) float32: the lowest
        `dim_f` bins, real and imaginary parts as channels, each sub-band stacked as channels."""
        cfg = self.config
        batch, channels, samples = waveform.shape
        with torch.autocast(waveform.device.type, enabled=False):
            spec = torch.stft(
                waveform.reshape(batch * channels, samples).float(),
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                window=self._window(waveform.device),
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
        parts = torch.view_as_real(spec[:, : cfg.dim_f])  # (B·C, dim_f, frames, re/im)
        parts = parts.permute(0, 3, 1, 2)  # (B·C, re/im, dim_f, frames)
        # Channel order (audio channel, re/im, sub-band); frequency splits as (sub-band, bin).
        return parts.reshape(batch, cfg.spectral_channels, cfg.dim_f // cfg.num_subbands, -1)

    def _separate(self, mix: torch.Tensor) -> torch.Tensor:
        """The U-Net over (frames, bins): (B, D, bins, frames) → (B, stems·D, bins, frames)."""
        first = self.first_conv(mix)
        x = first.transpose(-1, -2)
        skips: list[torch.Tensor] = []
        for encoder in cast("Iterable[_EncoderLevel]", self.encoder_blocks):
            x = encoder.tfc_tdf(x)
            skips.append(x)
            x = encoder.downscale(x)
        x = self.bottleneck_block(x)
        for decoder in cast("Iterable[_DecoderLevel]", self.decoder_blocks):
            x = decoder.upscale(x)
            x = decoder.tfc_tdf(torch.cat([x, skips.pop()], 1))
        # Gating by the first convolution's output is the reference's artefact reduction.
        x = x.transpose(-1, -2) * first
        return cast(torch.Tensor, self.final_conv(torch.cat([mix, x], 1)))

    def _waveforms(self, out: torch.Tensor, samples: int) -> torch.Tensor:
        """(B, stems·C·2·subbands, bins, frames) → (B, stems, C, samples) float32."""
        cfg = self.config
        batch, frames = out.shape[0], out.shape[-1]
        parts = out.reshape(batch, cfg.num_stems, cfg.audio_channels, 2, cfg.dim_f, frames)
        with torch.autocast(out.device.type, enabled=False):
            parts = F.pad(parts.float(), (0, 0, 0, cfg.n_fft // 2 + 1 - cfg.dim_f))
            spec = torch.complex(parts[:, :, :, 0], parts[:, :, :, 1])
            wave = torch.istft(
                spec.reshape(-1, cfg.n_fft // 2 + 1, frames),
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                window=self._window(out.device),
                center=True,
                length=samples,
            )
        return wave.reshape(batch, cfg.num_stems, cfg.audio_channels, samples)


def build_mdx23c(params: Mapping[str, Any]) -> MDX23C:
    """Build MDX23C from the flat mapping described in `mdx23c_config` (ConfigError on an
    unknown key or an inconsistent geometry). Weights are random until a checkpoint is loaded."""
    return MDX23C(Mdx23cConfig.from_params(params))
