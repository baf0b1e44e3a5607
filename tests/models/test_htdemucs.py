"""HTDemucs: every checkpoint shape loads into our module and separates exactly like demucs'.

The reference is the `demucs` package itself (a freshly seeded `HTDemucs`, saved the way demucs
saves its packages); small configs keep each forward under a second or two on two CPU cores.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, load_model
from safetensors.torch import save_file

from mss_jobs.errors import ConfigError
from mss_jobs.models.nn.htdemucs import (
    HTDemucsCheckpoint,
    HTDemucsModel,
    build,
    build_htdemucs,
    checkpoint_from_object,
    htdemucs_chunk_defaults,
    load_htdemucs,
    msst_htdemucs_params,
    read_htdemucs_checkpoint,
)

FOUR_STEMS = ["drums", "bass", "other", "vocals"]
SIX_STEMS = [*FOUR_STEMS, "guitar", "piano"]
RATE = 44100
SEGMENT = Fraction(2)  # 88,200 samples
TOLERANCE = 1e-4

# Small but complete: both branches, DConv in encoder and decoder, bottom 1x1 convs, one
# cross-transformer layer. nfft 1024 keeps the frequency-branch attention short.
SMALL: dict[str, Any] = {
    "channels": 8,
    "depth": 3,
    "nfft": 1024,
    "t_layers": 1,
    "t_heads": 4,
    "dconv_mode": 3,
    "bottom_channels": 16,
    "samplerate": RATE,
    "segment": SEGMENT,
}

# The `htdemucs:` section of MSST's configs/config_musdb18_htdemucs.yaml (the published
# htdemucs hyperparameters; htdemucs_6s differs in bottom_channels: 0).
MSST_HTDEMUCS_SECTION: dict[str, Any] = {
    "channels": 48,
    "channels_time": None,
    "growth": 2,
    "num_subbands": 1,
    "nfft": 4096,
    "wiener_iters": 0,
    "end_iters": 0,
    "wiener_residual": False,
    "cac": True,
    "depth": 4,
    "rewrite": True,
    "multi_freqs": [],
    "multi_freqs_depth": 3,
    "freq_emb": 0.2,
    "emb_scale": 10,
    "emb_smooth": True,
    "kernel_size": 8,
    "stride": 4,
    "time_stride": 2,
    "context": 1,
    "context_enc": 0,
    "norm_starts": 4,
    "norm_groups": 4,
    "dconv_mode": 3,
    "dconv_depth": 2,
    "dconv_comp": 8,
    "dconv_init": "1e-3",  # PyYAML reads the YAML's `1e-3` as a string
    "bottom_channels": 512,
    "t_layers": 5,
    "t_hidden_scale": 4.0,
    "t_heads": 8,
    "t_dropout": 0.0,
    "t_layer_scale": True,
    "t_gelu": True,
    "t_emb": "sin",
    "t_max_positions": 10000,
    "t_max_period": 10000.0,
    "t_weight_pos_embed": 1.0,
    "t_cape_mean_normalize": True,
    "t_cape_augment": True,
    "t_cape_glob_loc_scale": [5000.0, 1.0, 1.4],
    "t_sin_random_shift": 0,
    "t_norm_in": True,
    "t_norm_in_group": False,
    "t_group_norm": False,
    "t_norm_first": True,
    "t_norm_out": True,
    "t_weight_decay": 0.0,
    "t_lr": None,
    "t_sparse_self_attn": False,
    "t_sparse_cross_attn": False,
    "t_mask_type": "diag",
    "t_mask_random_seed": 42,
    "t_sparse_attn_window": 400,
    "t_global_window": 100,
    "t_sparsity": 0.95,
    "t_auto_sparsity": False,
    "t_cross_first": False,
    "rescale": 0.1,
}


def _reference(sources: list[str], seed: int = 0, **overrides: Any) -> HTDemucs:
    torch.manual_seed(seed)
    return HTDemucs(sources=sources, **{**SMALL, **overrides}).eval()


def _package(model: HTDemucs, *, half: bool = False) -> dict[str, Any]:
    """A package as demucs' `serialize_model` writes it (without OmegaConf), with the numpy
    metrics the released files carry."""
    args, kwargs = model._init_args_kwargs
    return {
        "klass": type(model),
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=half),
        "training_args": {"dset": {"segment": 2.0}, "optim": {"lr": 3e-4}},
        "metrics": {"test": {"sdr": np.float64(9.2), "epoch": np.int64(359)}},
    }


def _mixture(batch: int = 2, samples: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234)
    length = int(SEGMENT * RATE) if samples is None else samples
    return torch.randn(batch, 2, length, generator=generator) * 0.3


def _outputs(
    ours: torch.nn.Module, reference: torch.nn.Module, mix: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Our output and its largest absolute difference from the reference's."""
    with torch.inference_mode():
        expected = reference(mix)
        actual = ours(mix)
    assert actual.shape == expected.shape
    return actual, float((actual - expected).abs().max())


@pytest.mark.parametrize("sources", [FOUR_STEMS, SIX_STEMS], ids=["4stems", "6stems"])
def test_demucs_package_file_matches_reference(tmp_path: Path, sources: list[str]) -> None:
    reference = _reference(sources)
    path = tmp_path / "955717e8-8726e21a.th"
    torch.save(_package(reference), path)

    model = load_htdemucs(read_htdemucs_checkpoint(path))

    assert isinstance(model, HTDemucsModel)
    assert not model.training
    assert model.stems == tuple(sources)
    assert model.segment == SEGMENT
    assert model.segment_samples == 88200
    assert model.state_dict().keys() == reference.state_dict().keys()
    separated, difference = _outputs(model, reference, _mixture())
    assert separated.shape == (2, len(sources), 2, 88200)
    assert difference <= TOLERANCE


def test_half_precision_package_matches_demucs_own_loader(tmp_path: Path) -> None:
    """The released files store fp16 weights; demucs' `load_model` is the reference."""
    package = _package(_reference(FOUR_STEMS, seed=3), half=True)
    path = tmp_path / "released.th"
    torch.save(package, path)

    model = load_htdemucs(read_htdemucs_checkpoint(path))
    reference = load_model(package).eval()

    assert next(model.parameters()).dtype == torch.float32
    assert _outputs(model, reference, _mixture(batch=1))[1] <= TOLERANCE


def test_safetensors_release_matches_reference(tmp_path: Path) -> None:
    """demucs ≥ 4.1 publishes weights as safetensors, class and kwargs as JSON metadata."""
    reference = _reference(SIX_STEMS, seed=5, segment=Fraction(39, 20))
    kwargs = dict(reference._init_args_kwargs[1])
    kwargs["segment"] = {"_type": "fraction", "numerator": 39, "denominator": 20}
    metadata = {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(kwargs)}
    path = tmp_path / "5c90dfd2.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path, metadata)

    checkpoint = read_htdemucs_checkpoint(path)
    model = load_htdemucs(checkpoint)

    assert checkpoint.kwargs is not None
    assert checkpoint.kwargs["segment"] == Fraction(39, 20)
    assert model.segment_samples == int(Fraction(39, 20) * RATE)
    mix = _mixture(batch=1, samples=model.segment_samples)
    assert _outputs(model, reference, mix)[1] <= TOLERANCE


def test_msst_config_and_bare_state_dict_match_reference(tmp_path: Path) -> None:
    """MSST trains its own copy of HTDemucs (use_train_segment off) and saves a bare state dict;
    the YAML supplies the hyperparameters."""
    section = {
        **MSST_HTDEMUCS_SECTION,
        **{k: v for k, v in SMALL.items() if k not in ("samplerate", "segment")},
    }
    config = {
        "audio": {"chunk_size": 66150, "hop_length": 1024},
        "training": {
            "instruments": ["vocals", "other"],
            "channels": 2,
            "samplerate": RATE,
            "segment": 11,
            "batch_size": 8,
            "use_amp": True,
        },
        "inference": {"num_overlap": 2},
        "model": "htdemucs",
        "htdemucs": section,
    }
    reference = _reference(["vocals", "other"], seed=7, use_train_segment=False, segment=11)
    path = tmp_path / "model_htdemucs_vocals.ckpt"
    torch.save(reference.state_dict(), path)

    checkpoint = read_htdemucs_checkpoint(path)
    params = msst_htdemucs_params(config)
    model = load_htdemucs(checkpoint, params)

    assert checkpoint.kwargs is None
    assert params["dconv_init"] == "1e-3"
    assert model.use_train_segment is False
    assert model.segment_samples == 66150  # MSST separates with audio.chunk_size
    # Without the train-segment padding the network runs on any length, as in MSST.
    assert _outputs(model, reference, _mixture(batch=1, samples=70001))[1] <= TOLERANCE


def test_bare_state_dict_needs_params() -> None:
    state = _reference(FOUR_STEMS).state_dict()
    checkpoint = checkpoint_from_object({"state": state})  # MSST unwraps packages this way too
    with pytest.raises(ConfigError, match="bare state dict"):
        load_htdemucs(checkpoint)
    assert load_htdemucs(checkpoint, {"sources": FOUR_STEMS, **SMALL}).stems == tuple(FOUR_STEMS)


def test_checkpoint_of_another_size_is_refused_with_the_keys() -> None:
    checkpoint = HTDemucsCheckpoint(kwargs=None, state=_reference(FOUR_STEMS).state_dict())
    with pytest.raises(ConfigError, match=r"missing .*of another shape"):
        load_htdemucs(checkpoint, {"sources": SIX_STEMS, **SMALL, "t_layers": 2})


_CALLS: list[str] = []


def _record(text: str) -> str:
    _CALLS.append(text)
    return text


class _Payload:
    """Unpickling this calls `_record`, standing for any code a file could make us run."""

    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return (_record, ("pwned",))


def _rename_global(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite a torch zip file with one GLOBAL in its pickle renamed."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    assert sum(data.count(old) for name, data in entries if name.endswith("data.pkl")) == 1
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            archive.writestr(name, data.replace(old, new) if name.endswith("data.pkl") else data)


def test_package_with_arbitrary_globals_is_refused_without_running_them(tmp_path: Path) -> None:
    package = _package(_reference(FOUR_STEMS))
    package["training_args"] = _Payload()
    path = tmp_path / "evil.th"
    torch.save(package, path)

    with pytest.raises(ConfigError, match="cannot read HTDemucs checkpoint"):
        read_htdemucs_checkpoint(path)
    assert _CALLS == []


def test_the_class_name_reaches_only_an_inert_marker(tmp_path: Path) -> None:
    """A file calling `demucs.htdemucs.HTDemucs(...)` must not build (or import) anything."""
    path = tmp_path / "calls_the_class.th"
    torch.save({"klass": _Payload(), "state": {"w": torch.zeros(1)}}, path)
    _rename_global(
        path, f"{_record.__module__}\n_record\n".encode(), b"demucs.htdemucs\nHTDemucs\n"
    )

    with pytest.raises(ConfigError, match="cannot read HTDemucs checkpoint"):
        read_htdemucs_checkpoint(path)
    assert _CALLS == []


def test_other_demucs_models_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    package = {"klass": HDemucs, "args": (), "kwargs": {"sources": FOUR_STEMS}, "state": {}}
    path = tmp_path / "hdemucs_mmi.th"
    torch.save(package, path)
    with pytest.raises(ConfigError, match=r"demucs\.hdemucs\.HDemucs"):
        read_htdemucs_checkpoint(path)


def test_quantized_package_is_refused() -> None:
    package = _package(_reference(FOUR_STEMS))
    package["state"] = {"__quantized": True, "quantized": torch.zeros(3)}
    with pytest.raises(ConfigError, match="quantized"):
        checkpoint_from_object(package)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hidden_size": 3}, "unknown HTDemucs parameter.*'hidden_size'"),
        ({"num_subbands": 4}, "num_subbands=4 is not supported"),
        ({"sources": []}, "non-empty list of distinct stem names"),
        ({"sources": ["vocals", "vocals"]}, "distinct"),
        ({"t_sparse_self_attn": True}, "xformers"),
        ({"wiener_iters": 1}, "must equal end_iters"),
        ({"dconv_init": "tiny"}, "dconv_init='tiny' is not a number"),
        ({"segment": 0}, "segment must be positive"),
        ({"t_heads": 5}, "invalid HTDemucs parameters"),
    ],
)
def test_invalid_params_raise_config_error(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_htdemucs({"sources": FOUR_STEMS, **SMALL, **override})


def test_msst_config_errors_name_the_missing_piece() -> None:
    with pytest.raises(ConfigError, match="not 'htdemucs'"):
        msst_htdemucs_params({"model": "mdx23c"})
    with pytest.raises(ConfigError, match="'htdemucs' section"):
        msst_htdemucs_params({"model": "htdemucs", "training": {}})
    with pytest.raises(ConfigError, match=r"training\.instruments"):
        msst_htdemucs_params({"htdemucs": {}, "training": {"channels": 2}})


def test_forward_checks_length_and_channels() -> None:
    model = build({"sources": FOUR_STEMS, **SMALL})
    with pytest.raises(ConfigError, match="longer than this HTDemucs' training segment"):
        model(_mixture(batch=1, samples=88201))
    with pytest.raises(ValueError, match=r"expects \(batch, 2, time\)"):
        model(torch.zeros(1, 1, 1000))
    with torch.inference_mode():
        short = model(_mixture(batch=1, samples=30000))  # padded to the segment, trimmed back
    assert short.shape == (1, 4, 2, 30000)


def test_chunk_defaults_give_exactly_the_training_segment() -> None:
    """htdemucs' segment is 39/5 s: the pipeline's round(seconds · rate) must land on it."""
    model = build({"sources": FOUR_STEMS, **SMALL, "segment": Fraction(39, 5)})
    defaults = htdemucs_chunk_defaults(model)
    assert round(defaults.chunk_seconds * model.sample_rate) == model.segment_samples == 343980
    assert (defaults.overlap, defaults.window, defaults.normalize) == (0.25, "bartlett", True)


def test_bf16_autocast_runs_and_returns_float32() -> None:
    model = build({"sources": FOUR_STEMS, **SMALL})
    mix = _mixture(batch=1)
    with torch.inference_mode():
        exact = model(mix)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            approximate = model(mix)
    assert approximate.dtype == torch.float32
    assert torch.isfinite(approximate).all()
    assert float((approximate - exact).abs().max()) < 0.1 * float(exact.abs().max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_and_fp16_autocast() -> None:
    model = build({"sources": FOUR_STEMS, **SMALL})
    mix = _mixture(batch=1)
    with torch.inference_mode():
        on_cpu = model(mix)
        model = model.to("cuda")
        on_gpu = model(mix.to("cuda"))
        with torch.autocast("cuda", dtype=torch.float16):
            half = model(mix.to("cuda"))
    assert float((on_gpu.cpu() - on_cpu).abs().max()) <= 1e-3
    assert half.dtype == torch.float32
    assert torch.isfinite(half).all()


@pytest.mark.parametrize(
    ("sources", "bottom_channels", "expected_parameters"),
    [(FOUR_STEMS, 512, 41_984_456), (SIX_STEMS, 0, 27_414_996)],
    ids=["htdemucs", "htdemucs_6s"],
)
def test_published_sizes_load_strictly(
    sources: list[str], bottom_channels: int, expected_parameters: int
) -> None:
    """Build (never run) the released sizes from MSST's YAML and load a demucs reference."""
    section = {**MSST_HTDEMUCS_SECTION, "bottom_channels": bottom_channels}
    config = {
        "audio": {"chunk_size": 485100},
        "training": {"instruments": sources, "channels": 2, "samplerate": RATE, "segment": 11},
        "model": "htdemucs",
        "htdemucs": section,
    }
    model = build(msst_htdemucs_params(config))
    reference_kwargs = {k: v for k, v in section.items() if k != "num_subbands"}
    reference_kwargs["dconv_init"] = 1e-3
    reference = HTDemucs(sources=sources, **reference_kwargs)

    model.load_state_dict(reference.state_dict(), strict=True)

    ours = sum(p.numel() for p in model.parameters())
    theirs = sum(p.numel() for p in reference.parameters())
    print(f"{len(sources)} stems: ours {ours:,} parameters, demucs {theirs:,}")
    assert ours == theirs == expected_parameters
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[name]), name
