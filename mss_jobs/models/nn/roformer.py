"""BS-RoFormer and Mel-Band RoFormer: the community's vocal/instrumental separators, as plain
`torch.nn` modules built from the `model:` section of their ZFTurbo MSST YAML configs.

    build_bs_roformer(params)        BS-RoFormer (Lu et al. 2023, arXiv:2309.02612): fixed,
                                     contiguous bands (`freqs_per_bands`)
    build_mel_band_roformer(params)  Mel-Band RoFormer (Wang et al. 2023, arXiv:2310.01809):
                                     `num_bands` overlapping mel-scale bands

Both run the same path, STFT → per-band RMSNorm + Linear to `dim` → `depth` axial layers (a
rotary transformer along time inside each band, then one across bands inside each frame) →
one mask estimator per stem (per-band MLP + GLU giving a complex mask) → masked mixture
spectrogram → iSTFT. Waveform in, `(batch, stems, channels, samples)` out; STFT, masking and
iSTFT run in float32 even under fp16/bf16 autocast (`torch.stft`/`istft` with a periodic Hann
window of `stft_win_length`, centred, reflect-padded, like the reference).

Parameter names equal the community checkpoints' (lucidrains' layout, see `layers.py`). Two
quirks of those checkpoints are reproduced on purpose, because the weights depend on them:
- the Mel-Band mask-estimator MLP has `mask_estimator_depth` hidden layers, BS-RoFormer's has
  `mask_estimator_depth - 1` (splifft's `mask_estimator_depth` for a Mel model is ours + 1);
- BS-RoFormer has one RMSNorm after all layers (`final_norm`), Mel-Band RoFormer one at the end of
  every time/band transformer (`norm_output`) and none after the stack.

Stereo models fold the two channels into the band features: spectrogram rows are ordered
(bin, channel), so band `b` of a stereo model sees 2 · 2 · bins(b) reals per frame.

Supported MSST keys (anything else raises `ConfigError` naming it):
- architecture: dim, depth, stereo, num_stems, time_transformer_depth, freq_transformer_depth,
  linear_transformer_depth, dim_head, heads, stft_n_fft, stft_hop_length, stft_win_length,
  stft_normalized, mask_estimator_depth, mlp_expansion_factor, skip_connection; plus
  freqs_per_bands (BS) or num_bands, sample_rate (Mel); stft_window_fn only as null (Hann).
- accepted and ignored (training or kernel choices that do not change the function):
  attn_dropout, ff_dropout, flash_attn, sage_attention, use_torch_checkpoint, dim_freqs_in,
  multi_stft_resolution_loss_weight, multi_stft_resolutions_window_sizes, multi_stft_hop_size,
  multi_stft_normalized, multi_stft_window_fn, match_input_audio_length (Mel; the output
  always has the input's length).

Not supported (they need extra modules in the mask head or elsewhere; a config carrying their
keys is refused): unwa's "large v2" axial-refiner mask head and HyperACE residual heads, the
shared qkv/out biases and epsilon RMSNorm of some exported models (splifft `use_shared_bias`,
`rms_norm_eps`, e.g. BS-RoFormer SW), and lucidrains' later options (`zero_dc`, `use_pope`,
hyper-connections, value residuals).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, TypeVar, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError
from torch import Tensor, nn

from mss_jobs.errors import ConfigError
from mss_jobs.models.nn.layers import (
    BandSplit,
    MaskEstimator,
    RMSNorm,
    RotaryEmbedding,
    Transformer,
)

__all__ = [
    "DEFAULT_FREQS_PER_BANDS",
    "BSRoformer",
    "BSRoformerParams",
    "MelBandRoformer",
    "MelBandRoformerParams",
    "build_bs_roformer",
    "build_mel_band_roformer",
    "mel_band_membership",
]

# fmt: off
DEFAULT_FREQS_PER_BANDS: Final[tuple[int, ...]] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)
"""The 62 bands of the paper for n_fft 2048 (1025 bins), the MSST default and viperx's choice."""
# fmt: on

_IGNORED_KEYS: Final = frozenset(
    {
        "attn_dropout",
        "ff_dropout",
        "flash_attn",
        "sage_attention",
        "use_torch_checkpoint",
        "dim_freqs_in",
        "multi_stft_resolution_loss_weight",
        "multi_stft_resolutions_window_sizes",
        "multi_stft_hop_size",
        "multi_stft_normalized",
        "multi_stft_window_fn",
    }
)
"""MSST keys with no effect on inference: dropout, attention kernel choice (flash and
SageAttention compute the same attention; we always use `scaled_dot_product_attention`),
activation checkpointing, the loss, and `dim_freqs_in` (unused by the reference)."""

_BandBins = Annotated[int, Field(strict=True, gt=0)]


# ---------------------------------------------------------------------------------------------
# hyperparameters
# ---------------------------------------------------------------------------------------------


class _RoformerParams(BaseModel):
    """Keys shared by both architectures; names and defaults are MSST's."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    dim: PositiveInt
    depth: PositiveInt
    stereo: bool = False
    num_stems: PositiveInt = 1
    time_transformer_depth: PositiveInt = 2
    freq_transformer_depth: PositiveInt = 2
    linear_transformer_depth: NonNegativeInt = 0
    dim_head: PositiveInt = 64
    heads: PositiveInt = 8
    stft_n_fft: PositiveInt = 2048
    stft_hop_length: PositiveInt = 512
    stft_win_length: PositiveInt = 2048
    stft_normalized: bool = False
    stft_window_fn: None = None
    mlp_expansion_factor: PositiveInt = 4
    skip_connection: bool = False

    @property
    def audio_channels(self) -> int:
        return 2 if self.stereo else 1

    @property
    def num_bins(self) -> int:
        return self.stft_n_fft // 2 + 1


class BSRoformerParams(_RoformerParams):
    freqs_per_bands: tuple[_BandBins, ...] = Field(default=DEFAULT_FREQS_PER_BANDS, strict=False)
    """Bins per band, low to high; must sum to stft_n_fft // 2 + 1. Lax so YAML lists work."""
    mask_estimator_depth: PositiveInt = 2
    """Linear layers per band MLP (depth - 1 hidden layers)."""


class MelBandRoformerParams(_RoformerParams):
    num_bands: PositiveInt = 60
    sample_rate: PositiveInt = 44100
    """Only places the mel bands; the audio must already be at the model's rate."""
    mask_estimator_depth: PositiveInt = 1
    """Hidden layers per band MLP (MSST's Mel-Band quirk: depth + 1 linear layers)."""
    match_input_audio_length: bool = False
    """Accepted for compatibility; the output always has the input's length."""


_P = TypeVar("_P", bound=_RoformerParams)


def _parse_params(cls: type[_P], params: Mapping[str, Any], *, architecture: str) -> _P:
    """Validate an MSST `model:` mapping; every problem becomes a ConfigError naming its key."""
    kept = {key: value for key, value in params.items() if key not in _IGNORED_KEYS}
    try:
        return cls.model_validate(kept)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "<params>"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown {architecture} parameter {key!r}")
            elif error["type"] == "missing":
                problems.append(f"missing {architecture} parameter {key!r}")
            else:
                problems.append(f"{architecture} parameter {key!r}: {error['msg']}")
        raise ConfigError("; ".join(problems)) from None


def _check_stft(params: _RoformerParams, architecture: str) -> None:
    if params.stft_win_length > params.stft_n_fft:
        raise ConfigError(
            f"{architecture}: stft_win_length={params.stft_win_length} exceeds "
            f"stft_n_fft={params.stft_n_fft}"
        )
    if params.dim_head % 2:
        raise ConfigError(f"{architecture}: dim_head={params.dim_head} must be even (rotary)")


# ---------------------------------------------------------------------------------------------
# mel bands
# ---------------------------------------------------------------------------------------------

_F_SP: Final = 200.0 / 3  # Hz per mel below the break
_MIN_LOG_HZ: Final = 1000.0
_MIN_LOG_MEL: Final = (_MIN_LOG_HZ - 0.0) / _F_SP
_LOGSTEP: Final = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    """Slaney's mel scale (Auditory Toolbox): linear to 1 kHz, logarithmic above."""
    if hz >= _MIN_LOG_HZ:
        return float(_MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOGSTEP)
    return (hz - 0.0) / _F_SP


def _mel_to_hz(mels: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, Any]:
    hz = 0.0 + _F_SP * mels
    log_region = mels >= _MIN_LOG_MEL
    hz[log_region] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_region] - _MIN_LOG_MEL))
    return hz


def mel_band_membership(*, sample_rate: int, n_fft: int, num_bands: int) -> Tensor:
    """(num_bands, n_fft // 2 + 1) bool: which STFT bins each mel band covers.

    A bin belongs to band i when the band's triangular filter (Slaney scale and area norm, from
    0 Hz to Nyquist: librosa's `filters.mel` defaults, which the checkpoints were trained with)
    is positive there, i.e. strictly between the band's outer edges; the reference then forces
    bin 0 into the first band and the Nyquist bin into the last. Computed in float64 with the
    same formulas as librosa, so the band sizes (and hence the checkpoint's layer shapes) agree
    exactly; torchaudio's float32 filters can differ by a bin at rare settings.
    """
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges_mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), num_bands + 2)
    edges_hz = _mel_to_hz(edges_mel)
    member = (bin_hz[None, :] > edges_hz[:-2, None]) & (bin_hz[None, :] < edges_hz[2:, None])
    member[0, 0] = True
    member[-1, -1] = True
    return torch.from_numpy(member)


# ---------------------------------------------------------------------------------------------
# the models
# ---------------------------------------------------------------------------------------------


class _AxialBandRoformer(nn.Module):
    """What both architectures share; subclasses choose the bands and how masks map to bins."""

    def __init__(
        self,
        params: _RoformerParams,
        *,
        band_bins: Sequence[int],
        norm_output: bool,
        mask_hidden_layers: int,
    ) -> None:
        super().__init__()
        self.params = params
        self.audio_channels = params.audio_channels
        self.num_stems = params.num_stems

        def transformer(
            depth: int, rotary: RotaryEmbedding | None = None, *, linear: bool = False
        ) -> Transformer:
            return Transformer(
                params.dim,
                depth=depth,
                heads=params.heads,
                dim_head=params.dim_head,
                norm_output=norm_output,
                rotary_embed=rotary,
                linear_attn=linear,
            )

        # One rotary module per axis, shared by every layer (as in the checkpoints).
        time_rotary = RotaryEmbedding(params.dim_head)
        band_rotary = RotaryEmbedding(params.dim_head)
        self.layers = nn.ModuleList()
        for _ in range(params.depth):
            block: list[nn.Module] = []
            if params.linear_transformer_depth:
                block.append(transformer(params.linear_transformer_depth, linear=True))
            block.append(transformer(params.time_transformer_depth, time_rotary))
            block.append(transformer(params.freq_transformer_depth, band_rotary))
            self.layers.append(nn.ModuleList(block))

        widths = tuple(2 * self.audio_channels * bins for bins in band_bins)
        self.band_split = BandSplit(params.dim, widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(
                params.dim,
                widths,
                hidden=params.dim * params.mlp_expansion_factor,
                hidden_layers=mask_hidden_layers,
            )
            for _ in range(params.num_stems)
        )

    def _weight_dtype(self) -> torch.dtype:
        """The parameters' dtype: float32 normally (autocast then picks the matmul precision),
        float16/bfloat16 after `.half()`/`.to(dtype)`, when inputs must match it."""
        return next(self.band_split.parameters()).dtype

    # -- hooks --------------------------------------------------------------------------------

    def _select_rows(self, spec: Tensor) -> Tensor:
        """Spectrogram rows (bin, channel) that feed the bands, in band order."""
        return spec

    def _spread_masks(self, masks: Tensor) -> Tensor:
        """Band-ordered complex masks (batch, stems, rows', frames) → one per spectrogram row."""
        return masks

    def _final_norm(self, x: Tensor) -> Tensor:
        return x

    # -- forward ------------------------------------------------------------------------------

    def forward(self, waveform: Tensor) -> Tensor:
        """(batch, channels, samples) float waveform → (batch, stems, channels, samples) float32.

        `channels` must be 2 for a stereo model and 1 for a mono one. Any length longer than
        n_fft // 2 works; the output has the input's length.
        """
        if waveform.ndim != 3 or waveform.shape[1] != self.audio_channels:
            raise ValueError(
                f"expected (batch, {self.audio_channels}, samples) audio, "
                f"got shape {tuple(waveform.shape)}"
            )
        samples = waveform.shape[-1]
        device_type = waveform.device.type
        with torch.autocast(device_type, enabled=False):
            window = torch.hann_window(
                self.params.stft_win_length, device=waveform.device, dtype=torch.float32
            )
            spec = self._stft(waveform.float(), window)
            features = torch.view_as_real(self._select_rows(spec))  # (b, rows', frames, 2)
            features = features.transpose(1, 2).flatten(2)  # (b, frames, rows' · 2)

        x = self.band_split(features.to(self._weight_dtype()))
        x = self._final_norm(self._axial(x))
        masks = torch.stack([estimator(x) for estimator in self.mask_estimators], dim=1)

        with torch.autocast(device_type, enabled=False):
            # (b, stems, frames, rows' · 2) → complex (b, stems, rows', frames)
            masks = masks.float().reshape(*masks.shape[:-1], -1, 2).transpose(2, 3).contiguous()
            full = self._spread_masks(torch.view_as_complex(masks))
            return self._istft(spec.unsqueeze(1) * full, window, samples)

    def _axial(self, x: Tensor) -> Tensor:
        """(batch, frames, bands, dim): each layer attends along time within every band, then
        across bands within every frame."""
        batch, frames, bands, dim = x.shape
        previous: list[Tensor] = []
        for block in self.layers:
            *linear, time_transformer, band_transformer = cast(nn.ModuleList, block)
            if linear:
                x = linear[0](x.reshape(batch, frames * bands, dim)).reshape(x.shape)
            if self.params.skip_connection:
                for earlier in previous:
                    x = x + earlier
            x = x.transpose(1, 2).reshape(batch * bands, frames, dim)
            x = time_transformer(x).reshape(batch, bands, frames, dim).transpose(1, 2)
            x = band_transformer(x.reshape(batch * frames, bands, dim))
            x = x.reshape(batch, frames, bands, dim)
            if self.params.skip_connection:
                previous.append(x)
        return x

    def _stft(self, audio: Tensor, window: Tensor) -> Tensor:
        """(batch, channels, samples) → complex (batch, bins · channels, frames), rows ordered
        (bin, channel) as the reference folds stereo into frequency."""
        batch, channels, samples = audio.shape
        spec = torch.stft(
            audio.reshape(batch * channels, samples),
            n_fft=self.params.stft_n_fft,
            hop_length=self.params.stft_hop_length,
            win_length=self.params.stft_win_length,
            window=window,
            center=True,
            pad_mode="reflect",
            normalized=self.params.stft_normalized,
            onesided=True,
            return_complex=True,
        )
        bins, frames = spec.shape[-2:]
        return spec.reshape(batch, channels, bins, frames).transpose(1, 2).flatten(1, 2)

    def _istft(self, spec: Tensor, window: Tensor, samples: int) -> Tensor:
        """complex (batch, stems, bins · channels, frames) → (batch, stems, channels, samples)."""
        batch, stems, rows, frames = spec.shape
        channels = self.audio_channels
        per_channel = spec.reshape(batch, stems, rows // channels, channels, frames)
        per_channel = per_channel.transpose(2, 3).reshape(-1, rows // channels, frames)
        audio = torch.istft(
            per_channel,
            n_fft=self.params.stft_n_fft,
            hop_length=self.params.stft_hop_length,
            win_length=self.params.stft_win_length,
            window=window,
            center=True,
            normalized=self.params.stft_normalized,
            onesided=True,
            length=samples,
        )
        return audio.reshape(batch, stems, channels, samples)


class BSRoformer(_AxialBandRoformer):
    """Band-Split RoFormer: contiguous bands of `freqs_per_bands` bins, one final RMSNorm."""

    def __init__(self, params: BSRoformerParams) -> None:
        super().__init__(
            params,
            band_bins=params.freqs_per_bands,
            norm_output=False,
            mask_hidden_layers=params.mask_estimator_depth - 1,
        )
        self.final_norm = RMSNorm(params.dim)

    def _final_norm(self, x: Tensor) -> Tensor:
        out: Tensor = self.final_norm(x)
        return out


class MelBandRoformer(_AxialBandRoformer):
    """Mel-Band RoFormer: `num_bands` overlapping mel bands. Each band gathers its bins (a bin
    may sit in two bands); a bin's final mask is the mean of the masks its bands estimate."""

    def __init__(self, params: MelBandRoformerParams) -> None:
        membership = mel_band_membership(
            sample_rate=params.sample_rate, n_fft=params.stft_n_fft, num_bands=params.num_bands
        )
        super().__init__(
            params,
            band_bins=membership.sum(dim=1).tolist(),
            norm_output=True,
            mask_hidden_layers=params.mask_estimator_depth,
        )
        channels = params.audio_channels
        _, bin_of = membership.nonzero(as_tuple=True)  # band-major, bins ascending in a band
        rows = (bin_of[:, None] * channels + torch.arange(channels)).flatten()
        bands_per_row = membership.sum(dim=0).repeat_interleave(channels)
        # Integer buffers: follow .to(device) but stay exact through .half().
        self.register_buffer("row_indices", rows, persistent=False)
        self.register_buffer("bands_per_row", bands_per_row, persistent=False)

    def _select_rows(self, spec: Tensor) -> Tensor:
        return spec.index_select(1, self.get_buffer("row_indices"))

    def _spread_masks(self, masks: Tensor) -> Tensor:
        # Summed on the real view: index_add_ over float32 is supported (and deterministic
        # when asked) on every backend, complex support varies.
        parts = torch.view_as_real(masks)  # (batch, stems, rows', frames, 2)
        counts = self.get_buffer("bands_per_row")
        summed = parts.new_zeros(*parts.shape[:2], counts.shape[0], *parts.shape[3:])
        summed.index_add_(2, self.get_buffer("row_indices"), parts)
        return torch.view_as_complex(summed / counts.to(torch.float32)[:, None, None])


# ---------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------


def build_bs_roformer(params: Mapping[str, Any]) -> BSRoformer:
    """A BS-RoFormer (eval mode, random weights) from an MSST `model:` mapping.

    Raises ConfigError for an unknown or invalid key, or bands that do not tile the spectrum.
    """
    parsed = _parse_params(BSRoformerParams, params, architecture="bs_roformer")
    _check_stft(parsed, "bs_roformer")
    if len(parsed.freqs_per_bands) < 2 or sum(parsed.freqs_per_bands) != parsed.num_bins:
        raise ConfigError(
            f"bs_roformer: freqs_per_bands must have 2+ bands summing to stft_n_fft // 2 + 1 = "
            f"{parsed.num_bins}; got {len(parsed.freqs_per_bands)} bands summing to "
            f"{sum(parsed.freqs_per_bands)}"
        )
    return BSRoformer(parsed).eval()


def build_mel_band_roformer(params: Mapping[str, Any]) -> MelBandRoformer:
    """A Mel-Band RoFormer (eval mode, random weights) from an MSST `model:` mapping.

    Raises ConfigError for an unknown or invalid key, or mel bands that leave a bin uncovered
    or cover none.
    """
    parsed = _parse_params(MelBandRoformerParams, params, architecture="mel_band_roformer")
    _check_stft(parsed, "mel_band_roformer")
    membership = mel_band_membership(
        sample_rate=parsed.sample_rate, n_fft=parsed.stft_n_fft, num_bands=parsed.num_bands
    )
    if not bool(membership.any(dim=0).all()) or not bool(membership.any(dim=1).all()):
        raise ConfigError(
            f"mel_band_roformer: num_bands={parsed.num_bands} mel bands over "
            f"stft_n_fft={parsed.stft_n_fft} at sample_rate={parsed.sample_rate} leave a band "
            "empty or a bin uncovered; use fewer bands or a larger n_fft"
        )
    return MelBandRoformer(parsed).eval()
