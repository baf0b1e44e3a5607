"""Reading splifft's JSON model configs into a `ModelConfig`, by translating them into MSST's
vocabulary. Pure parsing: no torch, no I/O (the caller hands over the file's text).

A splifft JSON (`.json`) has `model_type` + a `model` section in splifft's own vocabulary
(`output_stem_names`, `band_config`, `hidden_channels` …), `transform`, `inference`,
`waveform_chunking`, `normalization`, `audio_io`. It is translated into the MSST vocabulary
that the builders in `mss_jobs.models.nn` take (the table in `_splifft_roformer` /
`_splifft_mdx23c`); what MSST cannot express is refused.

Chunking follows splifft: `overlap_ratio` is the overlap itself (MSST's `num_overlap` N is
1 - 1/N). A `derived_stems` section is checked in full (`config_derived.read_derived_stems`: its
shape, names and expressions, and its rules against the model's stems) and refused when it is
malformed, but not applied: a job asks for its derived stems itself (the `derived` param). Every
error is a `ConfigError` naming the file and key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, get_args

from mss_jobs.domain.units import WindowShape
from mss_jobs.errors import ConfigError
from mss_jobs.models.config_base import (
    DEFAULT_SAMPLE_RATE,
    Architecture,
    ModelConfig,
    Section,
    build_model_config,
)
from mss_jobs.models.config_derived import read_derived_stems
from mss_jobs.models.config_msst import mdx23c_params

__all__ = ["config_from_splifft", "read_splifft_json"]

_SPLIFFT_DEFAULT_BATCH: Final = 8  # splifft's InferenceConfig default
_SPLIFFT_DEFAULT_OVERLAP: Final = 0.5


def read_splifft_json(text: str, *, source: str) -> ModelConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    return config_from_splifft(data, source=source)


_SPLIFFT_SECTIONS: Final = frozenset(
    {
        "identifier",
        "model_type",
        "model",
        "transform",
        "audio_io",
        "inference",
        "normalization",
        "waveform_chunking",
        "masking",
        "derived_stems",
        "output",
        "experimental",
    }
)
# splifft's roformer keys that MSST spells the same way, with splifft's defaults (written out:
# MSST's differ for some, e.g. stereo false and 2-layer time/frequency transformers).
_ROFORMER_SAME_KEYS: Final[dict[str, Any]] = {
    "stereo": True,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "linear_transformer_depth": 0,
    "dim_head": 64,
    "heads": 8,
    "stft_hop_length": 512,
    "mlp_expansion_factor": 4,
    "skip_connection": False,
}
_ROFORMER_REQUIRED_KEYS: Final = ("dim", "depth")
# Copied when present: training and kernel choices MSST also knows (its builder ignores them).
_ROFORMER_OPTIONAL_KEYS: Final = ("attn_dropout", "ff_dropout", "flash_attn", "sage_attention")
# splifft-only knobs of numerics or training that do not change the weights' meaning.
_ROFORMER_DROPPED_KEYS: Final = frozenset(
    {
        "chunk_size",
        "output_stem_names",
        "use_torch_checkpoint",
        "rotary_embed_dtype",
        "transformer_residual_dtype",
        "debug",
    }
)
_ROFORMER_CHECKED_KEYS: Final = frozenset(
    {"band_config", "norm_output", "ff_mult", "use_shared_bias", "mask_estimator",
     "mask_estimator_depth", "rms_norm_eps"}
)  # fmt: skip
_MDX23C_RENAMED: Final = {
    "hidden_channels": "num_channels",
    "norm_type": "norm",
    "act_type": "act",
    "num_subbands": "num_subbands",
    "num_scales": "num_scales",
    "scale": "scale",
    "num_blocks_per_scale": "num_blocks_per_scale",
    "growth": "growth",
    "bottleneck_factor": "bottleneck_factor",
}
# BS-RoFormer's published band split (splifft's default for `band_config: {kind: fixed}`):
# 24 bands of 2 bins, 12 of 4, 8 of 12, 8 of 24, 8 of 48, then 128 and 129 = 1025 bins.
_DEFAULT_FREQS_PER_BANDS: Final = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


def config_from_splifft(data: Mapping[str, Any], *, source: str) -> ModelConfig:
    """A `ModelConfig` from a parsed splifft JSON config, translated to MSST's vocabulary."""
    unknown = sorted(set(data) - _SPLIFFT_SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key `{unknown[0]}` in a splifft config")
    model = Section.of(data, "model", source=source)
    transform = Section.of(data, "transform", source=source)
    inference = Section.of(data, "inference", source=source)
    chunking = Section.of(data, "waveform_chunking", source=source)
    audio_io = Section.of(data, "audio_io", source=source)
    normalization = Section.of(data, "normalization", source=source)

    model_type = data.get("model_type")
    stems = model.get_names("output_stem_names")
    requested = inference.data.get("requested_stems")
    if requested is not None and tuple(requested) != stems:
        raise ConfigError(
            f"{inference.where('requested_stems')}: selecting model heads is not supported; "
            "ask for stems per job instead"
        )
    if transform.data and transform.data.get("kind") != "stft":
        raise ConfigError(f"{transform.where('kind')} must be 'stft' for a separation model")
    if transform.data.get("window_shape", "hann") != "hann":
        raise ConfigError(f"{transform.where('window_shape')}: only 'hann' is supported")
    if data.get("derived_stems") is not None:
        read_derived_stems(data["derived_stems"], stems, source=source)

    if model_type == "bs_roformer":
        architecture, params = _splifft_roformer(model, transform, stems)
        channels = 2 if model.get_bool("stereo", True) else 1
    elif model_type == "mdx23c":
        architecture = "mdx23c"
        params = _splifft_mdx23c(data, model, transform, stems, source=source)
        channels = 2 if model.get_bool("stereo", True) else 1
    else:
        raise ConfigError(
            f"{source}: `model_type` {model_type!r} is not a supported separation model "
            "(bs_roformer, mdx23c)"
        )
    window = chunking.data.get("window_shape", "hann")
    if window not in get_args(WindowShape):
        raise ConfigError(f"{chunking.where('window_shape')}: unknown window {window!r}")
    overlap = chunking.data.get("overlap_ratio", _SPLIFFT_DEFAULT_OVERLAP)
    if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0 <= overlap < 1:
        raise ConfigError(f"{chunking.where('overlap_ratio')} must be in [0, 1), got {overlap!r}")
    return build_model_config(
        architecture=architecture,
        params=params,
        sample_rate=audio_io.get_int("target_sample_rate", DEFAULT_SAMPLE_RATE),
        channels=channels,
        stems=stems,
        chunk_size=model.get_int("chunk_size"),
        overlap=float(overlap),
        window=window,
        batch_size=inference.get_int("batch_size", _SPLIFFT_DEFAULT_BATCH),
        normalize=normalization.get_bool("enabled", False),
        source=source,
    )


def _splifft_roformer(
    model: Section, transform: Section, stems: tuple[str, ...]
) -> tuple[Architecture, dict[str, Any]]:
    """splifft's merged roformer params → MSST `model:` keys of BS- or Mel-Band RoFormer.

    splifft reconciles two quirks of the original code with explicit fields that MSST implies
    by architecture: Mel-Band RoFormer normalizes each transformer's output (`norm_output`
    true) and its mask-estimator MLP has one more hidden layer than its `mask_estimator_depth`
    says, so splifft's depth is MSST's + 1 there.
    """
    known = {*_ROFORMER_SAME_KEYS, *_ROFORMER_REQUIRED_KEYS, *_ROFORMER_OPTIONAL_KEYS}
    unknown = sorted(set(model.data) - known - _ROFORMER_DROPPED_KEYS - _ROFORMER_CHECKED_KEYS)
    if unknown:
        raise ConfigError(f"{model.where(unknown[0])}: unknown splifft roformer key")
    band = Section.of(model.data, "band_config", source=model.source)
    band = Section(band.data, name="model.band_config", source=model.source)
    kind = band.data.get("kind")
    if kind not in ("fixed", "mel"):
        raise ConfigError(f"{band.where('kind')} must be 'fixed' or 'mel', got {kind!r}")
    architecture: Architecture = "bs_roformer" if kind == "fixed" else "mel_band_roformer"
    is_mel = architecture == "mel_band_roformer"

    if model.get_bool("norm_output", False) != is_mel:
        raise ConfigError(
            f"{model.where('norm_output')} must be {str(is_mel).lower()} for a "
            f"{architecture} (MSST's {architecture} cannot express anything else)"
        )
    if model.get_int("ff_mult", 4) != 4:
        raise ConfigError(f"{model.where('ff_mult')}: only 4 is supported")
    if model.get_bool("use_shared_bias", False):
        raise ConfigError(f"{model.where('use_shared_bias')}: shared biases are not supported")
    if "rms_norm_eps" in model:
        raise ConfigError(f"{model.where('rms_norm_eps')}: an RMSNorm epsilon is not supported")
    estimator = model.data.get("mask_estimator")
    if estimator is not None and (
        not isinstance(estimator, Mapping) or estimator.get("kind", "baseline") != "baseline"
    ):
        raise ConfigError(f"{model.where('mask_estimator')}: only the baseline head is supported")

    for key in _ROFORMER_REQUIRED_KEYS:
        model.get_int(key)  # raises naming the key when missing or invalid
    params: dict[str, Any] = {
        key: model.data[key]
        for key in (*_ROFORMER_REQUIRED_KEYS, *_ROFORMER_OPTIONAL_KEYS)
        if key in model
    }
    for key, default in _ROFORMER_SAME_KEYS.items():
        value = model.data.get(key)
        params[key] = default if value is None else value
    params["num_stems"] = len(stems)
    depth = model.get_int("mask_estimator_depth", 2) - (1 if is_mel else 0)
    if depth < 1:
        raise ConfigError(f"{model.where('mask_estimator_depth')} is too small for {architecture}")
    params["mask_estimator_depth"] = depth

    n_fft = transform.get_int("n_fft", 2048)
    hop = transform.get_int("hop_length", 512)
    if model.get_int("stft_hop_length", 512) != hop:
        raise ConfigError(
            f"{model.where('stft_hop_length')} differs from `transform.hop_length` ({hop})"
        )
    params.update(
        stft_n_fft=n_fft,
        stft_hop_length=hop,
        stft_win_length=transform.get_int("win_length", 2048),
        stft_normalized=transform.get_bool("normalized", False),
        dim_freqs_in=n_fft // 2 + 1,
    )
    if is_mel:
        band_fft = band.get_int("stft_n_fft", 2048)
        if band_fft != n_fft:
            raise ConfigError(f"{band.where('stft_n_fft')} differs from `transform.n_fft`")
        params["num_bands"] = band.get_int("num_bands", 60)
        params["sample_rate"] = band.get_int("sample_rate", DEFAULT_SAMPLE_RATE)
    else:
        bands = band.data.get("freqs_per_bands", _DEFAULT_FREQS_PER_BANDS)
        if isinstance(bands, str) or not isinstance(bands, Sequence) or not bands:
            raise ConfigError(f"{band.where('freqs_per_bands')} must be a list of bin counts")
        params["freqs_per_bands"] = tuple(bands)
    return architecture, params


def _splifft_mdx23c(
    data: Mapping[str, Any],
    model: Section,
    transform: Section,
    stems: tuple[str, ...],
    *,
    source: str,
) -> dict[str, Any]:
    """splifft's MDX23C params → an MSST-shaped document → the builder's flat mapping."""
    unknown = sorted(set(model.data) - set(_MDX23C_RENAMED) - {"chunk_size",
                     "output_stem_names", "dim_f", "stereo"})  # fmt: skip
    if unknown:
        raise ConfigError(f"{model.where(unknown[0])}: unknown splifft MDX23C key")
    n_fft = transform.get_int("n_fft", 2048)
    if transform.get_int("win_length", n_fft) != n_fft:
        raise ConfigError(f"{transform.where('win_length')} must equal `transform.n_fft`")
    msst = {
        "model": {
            msst_key: model.data[key] for key, msst_key in _MDX23C_RENAMED.items() if key in model
        },
        "audio": {
            "chunk_size": model.get_int("chunk_size"),
            "n_fft": n_fft,
            "hop_length": transform.get_int("hop_length", 512),
            "dim_f": model.get_int("dim_f"),
            "num_channels": 2 if model.get_bool("stereo", True) else 1,
        },
        "training": {"instruments": list(stems), "target_instrument": None},
    }
    return mdx23c_params(msst, source=source)
