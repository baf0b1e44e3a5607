"""MDX23C against the reference (splifft's MDX23C wrapped in splifft's own STFT → model → iSTFT):
the same random weights, loaded with `strict=True`, must give the same stems."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from splifft.config import MaskingConfig, StftConfig
from splifft.core import create_w2w_model
from splifft.models import mdx23c as reference_mdx23c

from mss_jobs.errors import ConfigError
from mss_jobs.models.nn.mdx23c import MDX23C, build_mdx23c, mdx23c_params_from_msst

CPU = torch.device("cpu")
N_FFT, HOP, DIM_F = 512, 128, 192  # dim_f < 257 bins: the upper bins are cropped and zero-filled
SAMPLES = HOP * 343  # ≈ 1 s at 44.1 kHz; 344 frames, a multiple of 2 ** num_scales


def small_params(*, norm: str, act: str, stems: int, channels: int = 2) -> dict[str, Any]:
    return {
        "num_channels": 16,
        "num_subbands": 2,
        "num_scales": 2,
        "scale": [2, 2],
        "num_blocks_per_scale": 2,
        "growth": 8,
        "bottleneck_factor": 4,
        "norm": norm,
        "act": act,
        "n_fft": N_FFT,
        "hop_length": HOP,
        "dim_f": DIM_F,
        "audio_channels": channels,
        "instruments": [f"stem{i}" for i in range(stems)],
        "target_instrument": None,
    }


def reference_for(params: dict[str, Any], *, samples: int) -> reference_mdx23c.MDX23C:
    return reference_mdx23c.MDX23C(
        reference_mdx23c.MDX23CParams(
            chunk_size=samples,
            output_stem_names=tuple(params["instruments"]),
            dim_f=params["dim_f"],
            num_subbands=params["num_subbands"],
            num_scales=params["num_scales"],
            scale=tuple(params["scale"]),
            num_blocks_per_scale=params["num_blocks_per_scale"],
            hidden_channels=params["num_channels"],
            growth=params["growth"],
            bottleneck_factor=params["bottleneck_factor"],
            norm_type=params["norm"],
            act_type=params["act"],
            stereo=params["audio_channels"] == 2,
        )
    )


class Contiguous(torch.nn.Module):
    """Hands the reference's output on as a contiguous tensor: splifft's mono path otherwise
    fails in `view_as_complex` (its output is a permuted view). Numerically a no-op."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        return self.model(spectrogram).contiguous()


def randomize_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Default norms are the identity affine map with zero/one running statistics; random ones
    make a wrongly wired norm visible in the output."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or tensor.ndim != 1:
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)
            else:
                tensor.copy_(0.1 * noise)


@pytest.mark.parametrize(
    ("norm", "act", "stems", "channels", "samples"),
    [
        ("InstanceNorm", "gelu", 1, 2, SAMPLES),
        ("InstanceNorm", "gelu", 4, 2, SAMPLES + 77),  # not a multiple of the hop
        ("BatchNorm", "relu", 4, 2, SAMPLES),
        ("GroupNorm4", "elu0.5", 1, 2, SAMPLES),
        ("InstanceNorm", "elu", 2, 1, SAMPLES),  # mono
    ],
)
def test_matches_reference(norm: str, act: str, stems: int, channels: int, samples: int) -> None:
    generator = torch.Generator().manual_seed(stems * 10 + channels)
    torch.manual_seed(stems * 10 + channels)
    params = small_params(norm=norm, act=act, stems=stems, channels=channels)
    reference = reference_for(params, samples=samples)
    randomize_norms(reference, generator)
    reference.eval()
    reference_waveforms = create_w2w_model(
        Contiguous(reference),
        "spectrogram",
        "spectrogram",
        StftConfig(kind="stft", n_fft=N_FFT, hop_length=HOP, win_length=N_FFT),
        channels,
        samples,
        MaskingConfig(),
        io_device=CPU,
        model_device=CPU,
    )
    ours = build_mdx23c(params).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    mixture = 0.3 * torch.randn(2, channels, samples, generator=generator)

    with torch.inference_mode():
        expected = reference_waveforms(mixture)
        actual = ours(mixture)

    assert actual.shape == (2, stems, channels, samples)
    assert actual.dtype == torch.float32
    assert expected.abs().max() > 1e-2  # the comparison is not between two silences
    difference = (actual - expected).abs().max().item()
    print(f"MDX23C {norm}/{act}, {stems} stems, {channels} ch: max abs diff {difference:.2e}")
    assert difference <= 1e-4


def test_unknown_norm_means_no_norm_like_the_reference() -> None:
    params = small_params(norm="NoNorm", act="relu", stems=2)
    ours = build_mdx23c(params)
    ours.load_state_dict(reference_for(params, samples=SAMPLES).state_dict(), strict=True)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in ours.modules())


def test_published_size_loads_community_layout() -> None:
    """ZFTurbo's MDX23C vocals config (= UVR's model_2_stem_full_band_8k): built, not run."""
    config = {
        "audio": {
            "chunk_size": 261120,
            "dim_f": 4096,
            "dim_t": 256,
            "hop_length": 1024,
            "n_fft": 8192,
            "num_channels": 2,
            "sample_rate": 44100,
            "min_mean_abs": 0.001,
        },
        "model": {
            "act": "gelu",
            "bottleneck_factor": 4,
            "growth": 128,
            "norm": "InstanceNorm",
            "num_blocks_per_scale": 2,
            "num_channels": 128,
            "num_scales": 5,
            "num_subbands": 4,
            "scale": [2, 2],
        },
        "training": {"instruments": ["Vocals", "Instrumental"], "target_instrument": None},
    }
    params = mdx23c_params_from_msst(config)
    reference = reference_for(params, samples=config["audio"]["chunk_size"])
    ours = build_mdx23c(params)
    ours.load_state_dict(reference.state_dict(), strict=True)

    ours_count = sum(p.numel() for p in ours.parameters())
    reference_count = sum(p.numel() for p in reference.parameters())
    print(f"MDX23C vocals parameters: ours {ours_count:,}, reference {reference_count:,}")
    assert ours_count == reference_count
    # The community checkpoint (MDX23C-8KFFT-InstVoc_HQ.ckpt) holds 319 tensors.
    assert len(ours.state_dict()) == 319
    assert ours.config.num_stems == 2
    assert ours.config.frames_multiple == 32
    assert (config["audio"]["chunk_size"] // 1024 + 1) % ours.config.frames_multiple == 0


def _two_stem_model_and_mixture(seed: int) -> tuple[MDX23C, torch.Tensor]:
    torch.manual_seed(seed)
    ours = build_mdx23c(small_params(norm="InstanceNorm", act="gelu", stems=2)).eval()
    return ours, 0.3 * torch.randn(2, 2, SAMPLES)


def test_autocast_bfloat16_stays_close_and_float32() -> None:
    ours, mixture = _two_stem_model_and_mixture(3)
    with torch.inference_mode():
        exact = ours(mixture)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            approximate = ours(mixture)
    assert approximate.dtype == torch.float32
    assert torch.isfinite(approximate).all()
    relative = ((approximate - exact).norm() / exact.norm()).item()
    assert relative < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_float16_autocast_matches_cpu() -> None:
    ours, mixture = _two_stem_model_and_mixture(4)
    with torch.inference_mode():
        exact = ours(mixture)
        gpu = ours.cuda()
        with torch.autocast("cuda", dtype=torch.float16):
            approximate = gpu(mixture.cuda()).cpu()
    assert approximate.dtype == torch.float32
    assert ((approximate - exact).norm() / exact.norm()).item() < 0.05


def test_target_instrument_means_one_stem() -> None:
    params = small_params(norm="InstanceNorm", act="gelu", stems=4)
    params["target_instrument"] = "stem2"
    assert build_mdx23c(params).config.num_stems == 1


def test_inference_keys_are_ignored() -> None:
    params = small_params(norm="InstanceNorm", act="gelu", stems=1)
    params.update(chunk_size=SAMPLES, dim_t=344, sample_rate=44100, min_mean_abs=0.001)
    assert isinstance(build_mdx23c(params), MDX23C)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mlp_expansion": 4}, "'mlp_expansion'"),
        ({"num_channels": 0}, "num_channels"),
        ({"growth": True}, "growth"),
        ({"scale": [2]}, "scale"),
        ({"scale": "22"}, "scale"),
        ({"dim_f": 258}, "dim_f"),
        ({"dim_f": 191}, "num_subbands"),
        ({"dim_f": 180}, "scale[1] ** num_scales"),
        ({"bottleneck_factor": 64}, "bottleneck_factor"),
        ({"act": "swish"}, "swish"),
        ({"act": "eluX"}, "eluX"),
        ({"norm": "GroupNormX"}, "GroupNormX"),
        ({"norm": "GroupNorm5"}, "GroupNorm5"),
        ({"instruments": []}, "instruments"),
        ({"instruments": "vocals"}, "instruments"),
        ({"n_fft": None}, "n_fft"),
    ],
)
def test_invalid_params_raise_config_error(change: dict[str, Any], message: str) -> None:
    params = {**small_params(norm="InstanceNorm", act="gelu", stems=2), **change}
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_mdx23c(params)


@pytest.mark.parametrize("key", ["num_scales", "scale", "dim_f"])
def test_missing_key_raises_config_error(key: str) -> None:
    params = small_params(norm="InstanceNorm", act="gelu", stems=2)
    del params[key]
    with pytest.raises(ConfigError, match=key):
        build_mdx23c(params)


def test_msst_flattening_rejects_misplaced_and_missing_keys() -> None:
    config: dict[str, Any] = {
        "model": {"num_channels": 16, "n_fft": 512},
        "audio": {"hop_length": 128, "dim_f": 192},
        "training": {"instruments": ["vocals"]},
    }
    with pytest.raises(ConfigError, match=r"model\.n_fft"):
        mdx23c_params_from_msst(config)
    del config["model"]["n_fft"]
    with pytest.raises(ConfigError, match=r"audio\.n_fft"):
        mdx23c_params_from_msst(config)
    with pytest.raises(ConfigError, match="training"):
        mdx23c_params_from_msst({"model": {}, "audio": {}})


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 1, SAMPLES), "expected"),
        ((2, 2, SAMPLES - HOP), "multiple of 4"),
        ((2, 2, 255), "more than 256 samples"),
    ],
)
def test_forward_rejects_bad_waveforms(shape: tuple[int, ...], message: str) -> None:
    ours = build_mdx23c(small_params(norm="InstanceNorm", act="gelu", stems=1))
    with torch.inference_mode(), pytest.raises(ValueError, match=message):
        ours(torch.zeros(shape))
