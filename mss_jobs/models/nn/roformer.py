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

The MSST keys each architecture takes (and those it accepts and ignores, or refuses) are listed
in `roformer_config.py`, which validates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from mss_jobs.errors import ConfigError
from mss_jobs.models.nn.layers import (
    BandSplit,
    MaskEstimator,
    RMSNorm,
    RotaryEmbedding,
    Transformer,
)
from mss_jobs.models.nn.roformer_config import (
    DEFAULT_FREQS_PER_BANDS,
    BSRoformerParams,
    MelBandRoformerParams,
    RoformerParams,
    check_stft,
    mel_band_membership,
    parse_roformer_params,
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


# ---------------------------------------------------------------------------------------------
# the models
# ---------------------------------------------------------------------------------------------


class _AxialBandRoformer(nn.Module):
    """What both architectures share; subclasses choose the bands and how masks map to bins."""

    def __init__(
        self,
        params: RoformerParams,
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
    parsed = parse_roformer_params(BSRoformerParams, params, architecture="bs_roformer")
    check_stft(parsed, "bs_roformer")
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
    parsed = parse_roformer_params(MelBandRoformerParams, params, architecture="mel_band_roformer")
    check_stft(parsed, "mel_band_roformer")
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
