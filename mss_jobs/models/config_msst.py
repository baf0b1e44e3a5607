"""Reading ZFTurbo's Music-Source-Separation-Training (MSST) YAML configs into a `ModelConfig`.
Pure parsing: no torch, no I/O (the caller hands over the file's text).

An MSST YAML (`.yaml`/`.yml`) has sections `audio` (chunk_size, sample_rate, num_channels,
n_fft …), `model` (the architecture's hyperparameters; for HTDemucs `model: htdemucs` plus an
`htdemucs:` section), `training` (instruments, target_instrument; samplerate, channels,
segment for HTDemucs) and `inference` (batch_size, num_overlap, normalize). MSST writes
tuples as `!!python/tuple`; the loader here is PyYAML's *safe* loader taught that one tag
(and YAML 1.2 floats such as `1e-3`), never the unsafe one. The architecture is not in the
file (MSST takes it on the command line): pass it, or it is told from the model keys.

Chunking follows MSST: `num_overlap` N means chunks start every chunk/N samples (overlap
1 - 1/N); HTDemucs chunks are `segment` seconds (MSST's demucs mode). Every error is a
`ConfigError` naming the file and key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import yaml

from mss_jobs.errors import ConfigError
from mss_jobs.models.config_base import (
    ARCHITECTURES,
    DEFAULT_SAMPLE_RATE,
    Architecture,
    ModelConfig,
    Section,
    build_model_config,
)

__all__ = [
    "config_from_msst",
    "detect_msst_architecture",
    "mdx23c_params",
    "read_msst_yaml",
    "safe_load_yaml",
]

_ROFORMERS: Final = ("bs_roformer", "mel_band_roformer")
_MSST_DEFAULT_NUM_OVERLAP: Final = 2
_MSST_DEFAULT_BATCH: Final = 1


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


class _MsstLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus `!!python/tuple` (→ tuple) and YAML 1.2 exponent floats.

    Subclassed so the extra tag and resolver never leak into `yaml.SafeLoader` itself.
    """


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/tuple must tag a sequence", node.start_mark
        )
    return tuple(loader.construct_sequence(node, deep=True))


_MsstLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)
# YAML 1.1 (PyYAML) reads `1e-3` as a string; MSST configs mean a float (dconv_init: 1e-3).
_MsstLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load_yaml(text: str, *, source: str) -> Any:
    """Parse YAML with the safe loader above; ConfigError naming `source` on any error."""
    try:
        return yaml.load(text, Loader=_MsstLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not a valid MSST YAML config: {exc}") from exc


def read_msst_yaml(
    text: str, *, source: str, architecture: Architecture | None = None
) -> ModelConfig:
    data = safe_load_yaml(text, source=source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level")
    return config_from_msst(data, source=source, architecture=architecture)


# ---------------------------------------------------------------------------------------------
# sections → ModelConfig
# ---------------------------------------------------------------------------------------------


def detect_msst_architecture(data: Mapping[str, Any], *, source: str) -> Architecture:
    """Tell the architecture from the keys of an MSST config (MSST itself is told by a flag)."""
    model = data.get("model")
    if isinstance(model, str):
        if model == "htdemucs":
            return "htdemucs"
        raise ConfigError(f"{source}: `model: {model}` is not supported (only htdemucs)")
    if isinstance(model, Mapping):
        if "num_bands" in model:
            return "mel_band_roformer"
        if "freqs_per_bands" in model:
            return "bs_roformer"
        if {"num_scales", "num_subbands", "growth"} <= set(model):
            return "mdx23c"
    raise ConfigError(
        f"{source}: cannot tell the model's architecture from its keys; name it "
        f"(one of {', '.join(ARCHITECTURES)})"
    )


def config_from_msst(
    data: Mapping[str, Any], *, source: str, architecture: Architecture | None = None
) -> ModelConfig:
    """A `ModelConfig` from a parsed MSST YAML document (see the module docstring)."""
    if architecture is None:
        architecture = detect_msst_architecture(data, source=source)
    elif architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")
    audio = Section.of(data, "audio", source=source)
    training = Section.of(data, "training", source=source)
    inference = Section.of(data, "inference", source=source)

    if architecture == "htdemucs":
        return _msst_htdemucs(data, audio, training, inference, source=source)

    model = Section.of(data, "model", source=source)
    if not model.data:
        raise ConfigError(f"{source}: the `model:` section is missing or empty")
    stems = _msst_stems(training)
    sample_rate = audio.get_int("sample_rate", DEFAULT_SAMPLE_RATE)
    if architecture in _ROFORMERS:
        channels = 2 if model.get_bool("stereo", False) else 1
        num_stems = model.get_int("num_stems", 1)
        if num_stems != len(stems):
            raise ConfigError(
                f"{model.where('num_stems')} is {num_stems} but the config names "
                f"{len(stems)} output stem(s) {list(stems)} (training.target_instrument / "
                "training.instruments)"
            )
        if architecture == "mel_band_roformer" and "sample_rate" in model:
            model_rate = model.get_int("sample_rate")
            if model_rate != sample_rate:
                raise ConfigError(
                    f"{model.where('sample_rate')} is {model_rate} Hz but "
                    f"`audio.sample_rate` is {sample_rate} Hz"
                )
        params = dict(model.data)
    else:  # mdx23c: its builder takes one flat mapping over three sections
        channels = audio.get_int("num_channels", 2)
        params = mdx23c_params(data, source=source)
    if "num_channels" in audio and audio.get_int("num_channels") != channels:
        raise ConfigError(
            f"{audio.where('num_channels')} is {audio.get_int('num_channels')} but the model "
            f"takes {channels} channel(s)"
        )
    return build_model_config(
        architecture=architecture,
        params=params,
        sample_rate=sample_rate,
        channels=channels,
        stems=stems,
        chunk_size=audio.get_int("chunk_size"),
        overlap=_msst_overlap(inference),
        batch_size=inference.get_int("batch_size", _MSST_DEFAULT_BATCH),
        normalize=inference.get_bool("normalize", False),
        source=source,
    )


def _msst_stems(training: Section) -> tuple[str, ...]:
    """MSST's rule: a set `target_instrument` is the one output, else every instrument."""
    target = training.data.get("target_instrument")
    if target is not None:
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{training.where('target_instrument')} must be a name or null")
        return (target,)
    return training.get_names("instruments")


def _msst_overlap(inference: Section) -> float:
    return 1.0 - 1.0 / inference.get_int("num_overlap", _MSST_DEFAULT_NUM_OVERLAP)


def mdx23c_params(data: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """MDX23C's flat builder mapping from an MSST-shaped document (splifft's reader builds one
    too), with errors prefixed by `source`."""
    from mss_jobs.models.nn.mdx23c_config import mdx23c_params_from_msst

    try:
        return mdx23c_params_from_msst(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _msst_htdemucs(
    data: Mapping[str, Any],
    audio: Section,
    training: Section,
    inference: Section,
    *,
    source: str,
) -> ModelConfig:
    """MSST builds HTDemucs from the `htdemucs:` section plus sources, channels, rate and
    segment from `training:` (`msst_htdemucs_params` does that flattening) and separates in
    `audio.chunk_size` chunks (`samplerate × segment` when that is absent)."""
    from mss_jobs.models.nn.htdemucs import msst_htdemucs_params

    stems = training.get_names("instruments")
    sample_rate = training.get_int("samplerate", DEFAULT_SAMPLE_RATE)
    channels = training.get_int("channels", 2)
    if "chunk_size" in audio:
        chunk_size = audio.get_int("chunk_size")
    else:
        chunk_size = round(training.get_number("segment") * sample_rate)
    try:
        params = msst_htdemucs_params(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return build_model_config(
        architecture="htdemucs",
        params=params,
        sample_rate=sample_rate,
        channels=channels,
        stems=stems,
        chunk_size=chunk_size,
        overlap=_msst_overlap(inference),
        batch_size=inference.get_int("batch_size", _MSST_DEFAULT_BATCH),
        # HTDemucs standardizes each chunk itself; MSST's flag still applies on top.
        normalize=inference.get_bool("normalize", False),
        source=source,
    )
