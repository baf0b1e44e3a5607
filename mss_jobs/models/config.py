"""Typed neural-model configs, read from the community's files. Pure parsing: no torch, no I/O
beyond reading the one file it is given.

A `ModelConfig` says which architecture to build, the hyperparameters its builder takes
(`mss_jobs.models.nn`: the `model:` section of ZFTurbo's Music-Source-Separation-Training
(MSST) YAML, same key names), and how the pipeline should run it: sample rate, channels, stems in
output order, chunking defaults and whether to normalize the mixture.

Two file formats:

- **MSST YAML** (`.yaml`/`.yml`): sections `audio` (chunk_size, sample_rate, num_channels,
  n_fft …), `model` (the architecture's hyperparameters; for HTDemucs `model: htdemucs` plus an
  `htdemucs:` section), `training` (instruments, target_instrument; samplerate, channels,
  segment for HTDemucs) and `inference` (batch_size, num_overlap, normalize). MSST writes
  tuples as `!!python/tuple`; the loader here is PyYAML's *safe* loader taught that one tag
  (and YAML 1.2 floats such as `1e-3`), never the unsafe one. The architecture is not in the
  file (MSST takes it on the command line): pass it, or it is told from the model keys.
- **splifft JSON** (`.json`): `model_type` + a `model` section in splifft's own vocabulary
  (`output_stem_names`, `band_config`, `hidden_channels` …), `transform`, `inference`,
  `waveform_chunking`, `normalization`, `audio_io`. It is translated into the MSST vocabulary
  (the table in `_splifft_roformer`/`_splifft_mdx23c`); what MSST cannot express is refused.

Chunking defaults follow each tool: MSST's `num_overlap` N means chunks start every chunk/N
samples (overlap 1 - 1/N); splifft's `overlap_ratio` is the overlap itself. HTDemucs chunks are
`segment` seconds (MSST's demucs mode). Every error is a `ConfigError` naming the file and key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mss_jobs.errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ModelConfig",
    "WindowShape",
    "config_from_msst",
    "config_from_splifft",
    "detect_msst_architecture",
    "load_model_config",
    "read_msst_yaml",
    "read_splifft_json",
    "safe_load_yaml",
]

Architecture = Literal["bs_roformer", "mel_band_roformer", "mdx23c", "htdemucs"]
WindowShape = Literal["hann", "hamming", "blackman", "bartlett", "rectangular"]
"""`mss_jobs.types.WindowShape`, restated so this module stays torch-free (a test keeps the two
equal)."""
ARCHITECTURES: Final[tuple[Architecture, ...]] = get_args(Architecture)

_ROFORMERS: Final = ("bs_roformer", "mel_band_roformer")
_DEFAULT_SAMPLE_RATE: Final = 44100
_MSST_DEFAULT_NUM_OVERLAP: Final = 2
_MSST_DEFAULT_BATCH: Final = 1
_SPLIFFT_DEFAULT_BATCH: Final = 8  # splifft's InferenceConfig default
_SPLIFFT_DEFAULT_OVERLAP: Final = 0.5


class ModelConfig(BaseModel):
    """Everything needed to build a neural model and run it through the pipeline.

    `params` goes to the architecture's builder as is (treat it as read-only; the registry
    hands builders a copy). `chunk_size` is in samples at `sample_rate`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    architecture: Architecture
    params: dict[str, Any]
    sample_rate: int = Field(gt=0)
    channels: int = Field(gt=0)
    stems: tuple[str, ...] = Field(min_length=1)
    """Output stems in the order the model returns them."""
    chunk_size: int = Field(gt=0)
    overlap: float = Field(ge=0.0, lt=1.0)
    window: WindowShape = "hann"
    batch_size: int = Field(default=1, gt=0)
    normalize: bool = False
    """Whether the pipeline standardizes the mixture first (MSST's `inference.normalize`)."""
    source: str | None = None
    """The file it was read from, for messages."""

    @field_validator("stems")
    @classmethod
    def _unique_stems(cls, stems: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(stems)) != len(stems) or not all(stems):
            raise ValueError(f"stems must be unique non-empty names, got {list(stems)}")
        return stems

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_size / self.sample_rate


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def load_model_config(path: Path, *, architecture: Architecture | None = None) -> ModelConfig:
    """Read an MSST YAML (`.yaml`/`.yml`) or splifft JSON (`.json`) config file."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from exc
    if suffix in (".yaml", ".yml"):
        return read_msst_yaml(text, source=str(path), architecture=architecture)
    if suffix == ".json":
        config = read_splifft_json(text, source=str(path))
        if architecture is not None and config.architecture != architecture:
            raise ConfigError(
                f"{path}: describes a {config.architecture} model, expected {architecture}"
            )
        return config
    raise ConfigError(f"model config {path}: unknown suffix {suffix!r}; expected .yaml or .json")


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


def read_splifft_json(text: str, *, source: str) -> ModelConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    return config_from_splifft(data, source=source)


# ---------------------------------------------------------------------------------------------
# typed lookups that name the file and key
# ---------------------------------------------------------------------------------------------


class _Section:
    """A mapping from a config file, with lookups whose errors say `<file>: <section>.<key>`."""

    def __init__(self, data: Mapping[str, Any], *, name: str, source: str) -> None:
        self.data = data
        self.name = name
        self.source = source

    @classmethod
    def of(cls, parent: Mapping[str, Any], name: str, *, source: str) -> _Section:
        value = parent.get(name)
        if value is None:
            return cls({}, name=name, source=source)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: `{name}` must be a mapping, got {value!r}")
        return cls(value, name=name, source=source)

    def where(self, key: str) -> str:
        return f"{self.source}: `{self.name}.{key}`"

    def __contains__(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get_int(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise ConfigError(f"{self.where(key)} is missing")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{self.where(key)} must be an integer >= {minimum}, got {value!r}")
        return value

    def get_number(self, key: str, default: float | None = None) -> float:
        value = self.data.get(key, default)
        if value is None:
            raise ConfigError(f"{self.where(key)} is missing")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{self.where(key)} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{self.where(key)} must be finite, got {value!r}")
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)} must be true or false, got {value!r}")
        return value

    def get_names(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if isinstance(value, str) or not isinstance(value, Sequence) or not value:
            raise ConfigError(f"{self.where(key)} must be a non-empty list of names, got {value!r}")
        if not all(isinstance(item, str) and item for item in value):
            raise ConfigError(f"{self.where(key)} must hold names (strings), got {list(value)!r}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{self.where(key)} names a stem twice: {list(value)!r}")
        return tuple(value)


# ---------------------------------------------------------------------------------------------
# MSST
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
    audio = _Section.of(data, "audio", source=source)
    training = _Section.of(data, "training", source=source)
    inference = _Section.of(data, "inference", source=source)

    if architecture == "htdemucs":
        return _msst_htdemucs(data, audio, training, inference, source=source)

    model = _Section.of(data, "model", source=source)
    if not model.data:
        raise ConfigError(f"{source}: the `model:` section is missing or empty")
    stems = _msst_stems(training)
    sample_rate = audio.get_int("sample_rate", _DEFAULT_SAMPLE_RATE)
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
        params = _mdx23c_params(data, source=source)
    if "num_channels" in audio and audio.get_int("num_channels") != channels:
        raise ConfigError(
            f"{audio.where('num_channels')} is {audio.get_int('num_channels')} but the model "
            f"takes {channels} channel(s)"
        )
    return _build(
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


def _msst_stems(training: _Section) -> tuple[str, ...]:
    """MSST's rule: a set `target_instrument` is the one output, else every instrument."""
    target = training.data.get("target_instrument")
    if target is not None:
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{training.where('target_instrument')} must be a name or null")
        return (target,)
    return training.get_names("instruments")


def _msst_overlap(inference: _Section) -> float:
    return 1.0 - 1.0 / inference.get_int("num_overlap", _MSST_DEFAULT_NUM_OVERLAP)


def _mdx23c_params(data: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    from mss_jobs.models.nn.mdx23c import mdx23c_params_from_msst

    try:
        return mdx23c_params_from_msst(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _msst_htdemucs(
    data: Mapping[str, Any],
    audio: _Section,
    training: _Section,
    inference: _Section,
    *,
    source: str,
) -> ModelConfig:
    """MSST builds HTDemucs from the `htdemucs:` section plus sources, channels, rate and
    segment from `training:` (`msst_htdemucs_params` does that flattening) and separates in
    `audio.chunk_size` chunks (`samplerate × segment` when that is absent)."""
    from mss_jobs.models.nn.htdemucs import msst_htdemucs_params

    stems = training.get_names("instruments")
    sample_rate = training.get_int("samplerate", _DEFAULT_SAMPLE_RATE)
    channels = training.get_int("channels", 2)
    if "chunk_size" in audio:
        chunk_size = audio.get_int("chunk_size")
    else:
        chunk_size = round(training.get_number("segment") * sample_rate)
    try:
        params = msst_htdemucs_params(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return _build(
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


def _build(**fields: Any) -> ModelConfig:
    source = fields.get("source")
    try:
        return ModelConfig(**fields)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{source}: invalid model config: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# splifft
# ---------------------------------------------------------------------------------------------

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
    model = _Section.of(data, "model", source=source)
    transform = _Section.of(data, "transform", source=source)
    inference = _Section.of(data, "inference", source=source)
    chunking = _Section.of(data, "waveform_chunking", source=source)
    audio_io = _Section.of(data, "audio_io", source=source)
    normalization = _Section.of(data, "normalization", source=source)

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
    return _build(
        architecture=architecture,
        params=params,
        sample_rate=audio_io.get_int("target_sample_rate", _DEFAULT_SAMPLE_RATE),
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
    model: _Section, transform: _Section, stems: tuple[str, ...]
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
    band = _Section.of(model.data, "band_config", source=model.source)
    band = _Section(band.data, name="model.band_config", source=model.source)
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
        params["sample_rate"] = band.get_int("sample_rate", _DEFAULT_SAMPLE_RATE)
    else:
        bands = band.data.get("freqs_per_bands", _DEFAULT_FREQS_PER_BANDS)
        if isinstance(bands, str) or not isinstance(bands, Sequence) or not bands:
            raise ConfigError(f"{band.where('freqs_per_bands')} must be a list of bin counts")
        params["freqs_per_bands"] = tuple(bands)
    return architecture, params


def _splifft_mdx23c(
    data: Mapping[str, Any],
    model: _Section,
    transform: _Section,
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
    return _mdx23c_params(msst, source=source)
