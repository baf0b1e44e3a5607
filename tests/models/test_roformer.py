"""BS-RoFormer and Mel-Band RoFormer against splifft's implementation (the reference that loads
the community checkpoints): same state dict, same audio, same output."""

from __future__ import annotations

import warnings
from typing import Any

import librosa
import pytest
import torch
from splifft.config import MaskingConfig, StftConfig
from splifft.core import create_w2w_model
from splifft.models.bs_roformer import BSRoformer as ReferenceRoformer
from splifft.models.bs_roformer import BSRoformerParams as ReferenceParams
from splifft.models.bs_roformer import FixedBandsConfig, MelBandsConfig

from mss_jobs.errors import ConfigError
from mss_jobs.models.nn.roformer import (
    DEFAULT_FREQS_PER_BANDS,
    BSRoformer,
    MelBandRoformer,
    build_bs_roformer,
    build_mel_band_roformer,
    mel_band_membership,
)

SAMPLE_RATE = 44100
HOP = 441
N_FFT = 2048

# The `model:` sections of two published configs, verbatim apart from YAML syntax: viperx's
# BS-RoFormer 1297 (configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml in ZFTurbo's
# Music-Source-Separation-Training) and Kimberley Jensen's Mel-Band RoFormer vocals
# (configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml).
_LOSS_KEYS: dict[str, Any] = {
    "multi_stft_resolution_loss_weight": 1.0,
    "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256),
    "multi_stft_hop_size": 147,
    "multi_stft_normalized": False,
}
VIPERX_BS_ROFORMER: dict[str, Any] = {
    "dim": 512,
    "depth": 12,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "linear_transformer_depth": 0,
    "freqs_per_bands": DEFAULT_FREQS_PER_BANDS,
    "dim_head": 64,
    "heads": 8,
    "attn_dropout": 0.1,
    "ff_dropout": 0.1,
    "flash_attn": True,
    "dim_freqs_in": 1025,
    "stft_n_fft": 2048,
    "stft_hop_length": 441,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "mask_estimator_depth": 2,
    **_LOSS_KEYS,
}
KIM_MEL_ROFORMER: dict[str, Any] = {
    "dim": 384,
    "depth": 6,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "num_bands": 60,
    "dim_head": 64,
    "heads": 8,
    "attn_dropout": 0,
    "ff_dropout": 0,
    "flash_attn": True,
    "dim_freqs_in": 1025,
    "sample_rate": 44100,
    "stft_n_fft": 2048,
    "stft_hop_length": 441,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "mask_estimator_depth": 2,
    **_LOSS_KEYS,
}


_REFERENCE_KEYS = frozenset(  # MSST keys splifft's params take under the same name
    {
        "dim",
        "depth",
        "stereo",
        "time_transformer_depth",
        "freq_transformer_depth",
        "linear_transformer_depth",
        "dim_head",
        "heads",
        "stft_hop_length",
        "mask_estimator_depth",
    }
)


def _reference(*, mel: bool, chunk_size: int, stems: int, **params: Any) -> ReferenceRoformer:
    """splifft's module for MSST-style `params`. Its Mel-Band `mask_estimator_depth` counts
    linear layers, MSST's hidden layers, hence the + 1; `norm_output` is the Mel-Band layout."""
    params = dict(params)
    depth = params.pop("mask_estimator_depth", 1 if mel else 2)  # MSST defaults
    for key in ("num_stems", "num_bands", "freqs_per_bands"):
        params.pop(key, None)
    band_config = (
        MelBandsConfig(kind="mel", stft_n_fft=N_FFT, num_bands=60, sample_rate=SAMPLE_RATE)
        if mel
        else FixedBandsConfig(kind="fixed", freqs_per_bands=DEFAULT_FREQS_PER_BANDS)
    )
    return ReferenceRoformer(
        ReferenceParams(
            chunk_size=chunk_size,
            output_stem_names=tuple(f"stem{i}" for i in range(stems)),
            band_config=band_config,
            norm_output=mel,
            mask_estimator_depth=depth + 1 if mel else depth,
            **params,
        )
    )


def _reference_separate(model: ReferenceRoformer, audio: torch.Tensor) -> torch.Tensor:
    """splifft's own waveform → STFT → masks → iSTFT wrapper around its roformer."""
    cpu = torch.device("cpu")
    wrapper = create_w2w_model(
        model=model,
        model_input_type="spectrogram",
        model_output_type="spectrogram_mask",
        stft_cfg=StftConfig(kind="stft", n_fft=N_FFT, hop_length=HOP, win_length=N_FFT),
        num_channels=audio.shape[1],
        chunk_size=audio.shape[-1],
        masking_cfg=MaskingConfig(),
        io_device=cpu,
        model_device=cpu,
    )
    with torch.inference_mode():
        out: torch.Tensor = wrapper(audio)
    return out


def _perturb_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Default init leaves every RMSNorm gain at 1 and temperatures at 1; randomise them so a
    gain loaded into the wrong place shows in the output."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("gamma", "temperature")):
                noise = torch.randn(param.shape, generator=generator)
                param.copy_(1 + 0.2 * noise)


def _small(stereo: bool, stems: int, **extra: Any) -> dict[str, Any]:
    return {
        "dim": 32,
        "depth": 2,
        "stereo": stereo,
        "num_stems": stems,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "dim_head": 16,
        "heads": 2,
        "stft_hop_length": HOP,
        "mlp_expansion_factor": 2,
        **extra,
    }


def _parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("mel", "stereo", "stems", "samples", "extra"),
    [
        pytest.param(False, True, 1, 44100, {}, id="bs-stereo-1stem"),
        pytest.param(False, False, 2, 44100, {}, id="bs-mono-2stems"),
        pytest.param(
            False,
            True,
            3,
            44100 + 123,
            {"linear_transformer_depth": 1, "skip_connection": True, "mask_estimator_depth": 1},
            id="bs-stereo-3stems-linear-skip-oddlength",
        ),
        pytest.param(True, True, 1, 44100, {}, id="mel-stereo-1stem"),
        pytest.param(True, False, 2, 44100, {"mask_estimator_depth": 2}, id="mel-mono-2stems"),
        pytest.param(
            True,
            True,
            2,
            88200,
            {"linear_transformer_depth": 1, "skip_connection": True},
            id="mel-stereo-2stems-linear-skip",
        ),
    ],
)
def test_matches_splifft_with_its_state_dict(
    mel: bool, stereo: bool, stems: int, samples: int, extra: dict[str, Any]
) -> None:
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    params = _small(stereo, stems, **extra)
    reference = _reference(mel=mel, chunk_size=samples, stems=stems, **params).eval()
    _perturb_norms(reference, generator)
    ours = (build_mel_band_roformer if mel else build_bs_roformer)(params)
    ours.load_state_dict(reference.state_dict(), strict=True)

    audio = 0.5 * torch.randn(2, 2 if stereo else 1, samples, generator=generator)
    expected = _reference_separate(reference, audio)
    with torch.inference_mode():
        actual = ours(audio)

    assert actual.shape == (2, stems, audio.shape[1], samples)
    assert actual.dtype == torch.float32
    assert expected.abs().max() > 1e-2  # a mask of zeros would match anything
    diff = (actual - expected).abs().max().item()
    print(f"max abs diff {diff:.3g} (output peak {expected.abs().max().item():.3g})")
    assert diff <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mel", "config", "chunk_size"),
    [
        pytest.param(False, VIPERX_BS_ROFORMER, 352800, id="bs-roformer-viperx-1297"),
        pytest.param(True, KIM_MEL_ROFORMER, 352800, id="mel-roformer-kim-vocals"),
    ],
)
def test_published_sizes_load_strictly(mel: bool, config: dict[str, Any], chunk_size: int) -> None:
    """Built at the published sizes, not run (too slow on CPU)."""
    reference_params = {k: v for k, v in config.items() if k in _REFERENCE_KEYS}
    reference = _reference(mel=mel, chunk_size=chunk_size, stems=1, **reference_params)
    ours = (build_mel_band_roformer if mel else build_bs_roformer)(config)
    ours.load_state_dict(reference.state_dict(), strict=True)

    print(f"parameters: ours {_parameter_count(ours):,}, splifft {_parameter_count(reference):,}")
    assert _parameter_count(ours) == _parameter_count(reference)
    # Community checkpoints also carry each attention's rotary frequencies; nothing else differs.
    extra = set(ours.state_dict()) - set(reference.state_dict())
    assert extra == {
        f"layers.{layer}.{axis}.layers.0.0.rotary_embed.freqs"
        for layer in range(config["depth"])
        for axis in (0, 1)
    }
    assert ours.state_dict()["layers.0.0.layers.0.0.rotary_embed.freqs"].shape == (32,)


def test_checkpoint_rotary_freqs_are_loaded() -> None:
    """A community state dict carries `rotary_embed.freqs`; the stored values are used."""
    model = build_bs_roformer(_small(stereo=True, stems=1))
    state = model.state_dict()
    key = "layers.1.1.layers.0.0.rotary_embed.freqs"
    state[key] = torch.full_like(state[key], 0.5)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.state_dict()[key], torch.full_like(state[key], 0.5))


def test_mel_bands_equal_librosa() -> None:
    """Band membership decides layer shapes, so it must match the training code's librosa
    filters exactly (including settings where float32 filters would differ by a bin)."""
    for sample_rate in (16000, 32000, 44100, 48000):
        for n_fft in (512, 2048, 8192):
            for num_bands in (32, 60, 80, 128):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # librosa warns about empty filters
                    filters = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_bands)
                filters[0, 0] = filters[-1, -1] = 1.0
                ours = mel_band_membership(
                    sample_rate=sample_rate, n_fft=n_fft, num_bands=num_bands
                )
                assert torch.equal(ours, torch.from_numpy(filters > 0)), (
                    sample_rate,
                    n_fft,
                    num_bands,
                )


@pytest.mark.parametrize(
    ("builder", "params", "fragment"),
    [
        (build_bs_roformer, {"dim": 32, "depth": 1, "use_pope": True}, "'use_pope'"),
        (build_mel_band_roformer, {"dim": 32, "depth": 1, "zero_dc": True}, "'zero_dc'"),
        (build_bs_roformer, {"dim": 32, "depth": 1, "num_bands": 60}, "'num_bands'"),
        (build_mel_band_roformer, {"dim": 32, "depth": 1, "freqs_per_bands": (1025,)}, "freqs"),
        (build_bs_roformer, {"depth": 1}, "missing bs_roformer parameter 'dim'"),
        (build_bs_roformer, {"dim": 32, "depth": 1, "stereo": "yes"}, "'stereo'"),
        (build_bs_roformer, {"dim": 32, "depth": 1, "freqs_per_bands": (512, 512)}, "1025"),
        (build_bs_roformer, {"dim": 32, "depth": 1, "stft_window_fn": "hamming"}, "window"),
        (
            build_mel_band_roformer,
            {"dim": 8, "depth": 1, "stft_n_fft": 64, "stft_win_length": 64},
            "num_bands=60",
        ),
        (build_bs_roformer, {"dim": 8, "depth": 1, "stft_win_length": 4096}, "stft_win_length"),
    ],
)
def test_invalid_params_raise_config_error(
    builder: Any, params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        builder(params)
    assert fragment in str(info.value)


def test_training_only_keys_are_accepted() -> None:
    model = build_mel_band_roformer(
        _small(
            stereo=True,
            stems=1,
            attn_dropout=0.1,
            ff_dropout=0.1,
            flash_attn=False,
            sage_attention=True,
            use_torch_checkpoint=True,
            match_input_audio_length=True,
            **_LOSS_KEYS,
        )
    )
    assert isinstance(model, MelBandRoformer)
    assert not model.training


@pytest.mark.parametrize("mel", [False, True], ids=["bs", "mel"])
def test_runs_under_bf16_autocast(mel: bool) -> None:
    torch.manual_seed(3)
    params = _small(stereo=True, stems=2, linear_transformer_depth=1)
    model: BSRoformer | MelBandRoformer = (
        build_mel_band_roformer(params) if mel else build_bs_roformer(params)
    )
    audio = 0.5 * torch.randn(2, 2, 22050)
    with torch.inference_mode():
        full = model(audio)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(audio)
    assert mixed.dtype == torch.float32
    assert mixed.shape == full.shape
    assert torch.isfinite(mixed).all()
    # bf16 keeps ~3 significant digits; the result must still be the same function.
    assert ((mixed - full).norm() / full.norm()).item() < 0.05


def test_wrong_channel_count_is_refused() -> None:
    model = build_bs_roformer(_small(stereo=True, stems=1))
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        model(torch.zeros(1, 1, 8192))
