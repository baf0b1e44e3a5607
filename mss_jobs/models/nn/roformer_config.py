"""BS-RoFormer's and Mel-Band RoFormer's hyperparameters and mel bands: the validated form of
an MSST `model:` mapping (`BSRoformerParams`, `MelBandRoformerParams`) and which STFT bins each
mel band covers (`mel_band_membership`). The networks built from them live in `roformer.py`.

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

from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError
from pydantic_core import ErrorDetails
from torch import Tensor

from mss_jobs.domain.validation import describe_validation_error
from mss_jobs.errors import ConfigError

__all__ = [
    "DEFAULT_FREQS_PER_BANDS",
    "BSRoformerParams",
    "MelBandRoformerParams",
    "RoformerParams",
    "check_stft",
    "mel_band_membership",
    "parse_roformer_params",
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


class RoformerParams(BaseModel):
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


class BSRoformerParams(RoformerParams):
    freqs_per_bands: tuple[_BandBins, ...] = Field(default=DEFAULT_FREQS_PER_BANDS, strict=False)
    """Bins per band, low to high; must sum to stft_n_fft // 2 + 1. Lax so YAML lists work."""
    mask_estimator_depth: PositiveInt = 2
    """Linear layers per band MLP (depth - 1 hidden layers)."""


class MelBandRoformerParams(RoformerParams):
    num_bands: PositiveInt = 60
    sample_rate: PositiveInt = 44100
    """Only places the mel bands; the audio must already be at the model's rate."""
    mask_estimator_depth: PositiveInt = 1
    """Hidden layers per band MLP (MSST's Mel-Band quirk: depth + 1 linear layers)."""
    match_input_audio_length: bool = False
    """Accepted for compatibility; the output always has the input's length."""


_P = TypeVar("_P", bound=RoformerParams)


def parse_roformer_params(cls: type[_P], params: Mapping[str, Any], *, architecture: str) -> _P:
    """Validate an MSST `model:` mapping; every problem becomes a ConfigError naming its key."""
    kept = {key: value for key, value in params.items() if key not in _IGNORED_KEYS}
    try:
        return cls.model_validate(kept)
    except ValidationError as exc:

        def describe(error: ErrorDetails, key: str) -> str:
            if error["type"] == "extra_forbidden":
                return f"unknown {architecture} parameter {key!r}"
            if error["type"] == "missing":
                return f"missing {architecture} parameter {key!r}"
            return f"{architecture} parameter {key!r}: {error['msg']}"

        raise ConfigError(describe_validation_error(exc, "<params>", describe=describe)) from None


def check_stft(params: RoformerParams, architecture: str) -> None:
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
