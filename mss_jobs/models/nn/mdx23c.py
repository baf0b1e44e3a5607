"""MDX23C (TFC-TDF-UNet v3) as the community trains and ships it: waveform in, stems out, with
state-dict keys equal to the community checkpoints (ZFTurbo's MSST, UVR's MDX23C models).

The network (Kim & Kim, SDX23 technical report, arXiv:2306.09382) works on the complex STFT as
real channels ("complex as channels"): the lowest `dim_f` bins are split into `num_subbands`
equal sub-bands stacked as channels, a U-Net of TFC-TDF blocks (3×3 convolutions plus a
bottlenecked fully-connected layer across frequency) predicts every stem's spectrogram directly
(not a mask), and the bins above `dim_f` come back as zeros before the inverse STFT. Norms and the
STFT run in float32 under autocast; the convolutions follow the autocast dtype.

`build_mdx23c(params)` takes one flat mapping because MSST spreads the hyperparameters over
three YAML sections (`mdx23c_params_from_msst` does the flattening):

    flat key            MSST YAML key                  notes
    num_channels        model.num_channels             base width of the U-Net
    num_subbands        model.num_subbands
    num_scales          model.num_scales
    scale               model.scale                    [time, frequency] down-scaling factors
    num_blocks_per_scale model.num_blocks_per_scale
    growth              model.growth                   channels added per scale
    bottleneck_factor   model.bottleneck_factor        TDF hidden size = bins // factor
    norm                model.norm                     default "InstanceNorm"
    act                 model.act                      default "gelu"
    n_fft               audio.n_fft
    hop_length          audio.hop_length
    dim_f               audio.dim_f                    bins fed to the network
    audio_channels      audio.num_channels             renamed: clashes with model.num_channels
    instruments         training.instruments           stems = [target_instrument] when that is
    target_instrument   training.target_instrument     set, else instruments (MSST's rule)

`chunk_size`, `dim_t`, `sample_rate` and `min_mean_abs` (inference settings from `audio:`) are
accepted and ignored; any other key raises `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812 (the universal alias)
from torch import nn

from mss_jobs.errors import ConfigError

__all__ = ["MDX23C", "Mdx23cConfig", "build_mdx23c", "mdx23c_params_from_msst"]

_MODEL_KEYS = (
    *("num_channels", "num_subbands", "num_scales", "scale", "num_blocks_per_scale"),
    *("growth", "bottleneck_factor", "norm", "act"),
)
_AUDIO_KEYS = ("n_fft", "hop_length", "dim_f")
_STEM_KEYS = ("instruments", "target_instrument")
_FLAT_KEYS = frozenset((*_MODEL_KEYS, *_AUDIO_KEYS, "audio_channels", *_STEM_KEYS))
_IGNORED_KEYS = frozenset({"chunk_size", "dim_t", "sample_rate", "min_mean_abs"})
_INT_KEYS = (
    *("num_channels", "num_subbands", "num_scales", "num_blocks_per_scale", "growth"),
    *("bottleneck_factor", "n_fft", "hop_length", "dim_f", "audio_channels"),
)


def _stem_count(params: Mapping[str, Any]) -> int:
    """MSST's rule: a set `target_instrument` means one stem, otherwise one per instrument."""
    if params.get("target_instrument"):
        return 1
    instruments = params.get("instruments")
    if isinstance(instruments, str) or not isinstance(instruments, Sequence) or not instruments:
        raise ConfigError(
            "MDX23C needs `target_instrument` or a non-empty `instruments` list, "
            f"got instruments={instruments!r}"
        )
    return len(instruments)


def _norm_factory(norm: str) -> Callable[[int], nn.Module]:
    """The reference's norm rule, names included: any name it does not know means no norm."""
    if norm == "BatchNorm":
        return _BatchNorm
    if norm == "InstanceNorm":
        return _InstanceNorm
    if "GroupNorm" in norm:
        try:
            groups = int(norm.replace("GroupNorm", ""))
        except ValueError:
            raise ConfigError(f"MDX23C norm {norm!r}: expected 'GroupNorm<groups>'") from None
        if groups < 1:
            raise ConfigError(f"MDX23C norm {norm!r}: groups must be positive")

        def group_norm(channels: int) -> nn.Module:
            if channels % groups:
                raise ConfigError(f"MDX23C norm {norm!r} cannot split {channels} channels")
            return _GroupNorm(groups, channels)

        return group_norm
    return lambda _channels: nn.Identity()


def _act_factory(act: str) -> Callable[[], nn.Module]:
    if act == "gelu":
        return nn.GELU
    if act == "relu":
        return nn.ReLU
    if act.startswith("elu"):
        try:
            alpha = float(act[3:]) if act[3:] else 1.0
        except ValueError:
            raise ConfigError(f"MDX23C act {act!r}: expected 'elu' or 'elu<alpha>'") from None
        return lambda: nn.ELU(alpha)
    raise ConfigError(f"unknown MDX23C act {act!r}; expected 'gelu', 'relu' or 'elu<alpha>'")


@dataclass(frozen=True, slots=True)
class Mdx23cConfig:
    """Validated MDX23C hyperparameters (names as in `build_mdx23c`'s flat mapping)."""

    num_channels: int
    num_subbands: int
    num_scales: int
    scale: tuple[int, int]
    num_blocks_per_scale: int
    growth: int
    bottleneck_factor: int
    n_fft: int
    hop_length: int
    dim_f: int
    num_stems: int
    audio_channels: int = 2
    norm: str = "InstanceNorm"
    act: str = "gelu"

    def __post_init__(self) -> None:
        for name in (*_INT_KEYS, "num_stems"):
            if getattr(self, name) < 1:
                raise ConfigError(f"MDX23C {name} must be positive, got {getattr(self, name)}")
        if len(self.scale) != 2 or min(self.scale) < 1:
            raise ConfigError(f"MDX23C scale must be two positive integers, got {self.scale}")
        _norm_factory(self.norm)
        _act_factory(self.act)
        if self.dim_f > self.n_fft // 2 + 1:
            raise ConfigError(
                f"{self.dim_f=} exceeds the {self.n_fft // 2 + 1} bins of {self.n_fft=}"
            )
        if self.dim_f % self.num_subbands:
            raise ConfigError(f"{self.dim_f=} is not divisible by {self.num_subbands=}")
        # Each scale floors the bins; the decoder's transposed convolutions only restore them when
        # no flooring happened, otherwise the skip connections would not line up.
        bins, step = self.dim_f // self.num_subbands, self.scale[1] ** self.num_scales
        if bins % step:
            raise ConfigError(
                f"{self.dim_f=} / {self.num_subbands=} = {bins} bins per sub-band must be "
                f"divisible by scale[1] ** num_scales = {step}"
            )
        if bins // step < self.bottleneck_factor:
            raise ConfigError(
                f"{self.bottleneck_factor=} leaves no features at the deepest scale "
                f"({bins // step} bins)"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Mdx23cConfig:
        unknown = sorted(set(params) - _FLAT_KEYS - _IGNORED_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown MDX23C parameter {unknown[0]!r}; known: {', '.join(sorted(_FLAT_KEYS))}"
            )
        values = {"audio_channels": 2, "norm": "InstanceNorm", "act": "gelu", **params}
        missing = sorted({*_INT_KEYS, "scale"} - set(values))
        if missing:
            raise ConfigError(f"MDX23C parameter {missing[0]!r} is missing")
        ints = {key: values[key] for key in _INT_KEYS}
        for key, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"MDX23C parameter {key!r} must be an integer, got {value!r}")
        scale, norm, act = values["scale"], values["norm"], values["act"]
        if (
            isinstance(scale, str)
            or not isinstance(scale, Sequence)
            or len(scale) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in scale)
        ):
            raise ConfigError(f"MDX23C `scale` must be two integers, got {scale!r}")
        if not isinstance(norm, str) or not isinstance(act, str):
            raise ConfigError(f"MDX23C `norm` and `act` must be strings, got {norm!r}, {act!r}")
        return cls(
            **ints,
            scale=(scale[0], scale[1]),
            num_stems=_stem_count(params),
            norm=norm,
            act=act,
        )

    @property
    def frames_multiple(self) -> int:
        """The STFT frame count (`samples // hop_length + 1`) must be a multiple of this."""
        return int(self.scale[0] ** self.num_scales)

    @property
    def spectral_channels(self) -> int:
        """Channels entering the network: (audio channel, real/imaginary, sub-band)."""
        return self.audio_channels * 2 * self.num_subbands


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
    """Build MDX23C from the flat mapping described in the module docstring (ConfigError on an
    unknown key or an inconsistent geometry). Weights are random until a checkpoint is loaded."""
    return MDX23C(Mdx23cConfig.from_params(params))


def mdx23c_params_from_msst(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a whole MSST YAML config (sections `model`, `audio`, `training`) into the mapping
    `build_mdx23c` takes. Every `model:` key is passed on (so an unknown one is reported); from
    `audio:` and `training:` only the keys listed in the module docstring are read."""
    sections: dict[str, Mapping[str, Any]] = {}
    for name in ("model", "audio", "training"):
        section = config.get(name)
        if not isinstance(section, Mapping):
            raise ConfigError(f"MSST config for MDX23C needs a `{name}:` section, got {section!r}")
        sections[name] = section
    model, audio, training = sections["model"], sections["audio"], sections["training"]
    clashes = sorted(set(model) & (_FLAT_KEYS - set(_MODEL_KEYS)))
    if clashes:
        raise ConfigError(f"`model.{clashes[0]}` is not an MDX23C model key (it lives elsewhere)")
    flat = dict(model)
    for key in _AUDIO_KEYS:
        if key not in audio:
            raise ConfigError(f"MSST config for MDX23C is missing `audio.{key}`")
        flat[key] = audio[key]
    flat["audio_channels"] = audio.get("num_channels", 2)
    for key in _STEM_KEYS:
        flat[key] = training.get(key)
    return flat
