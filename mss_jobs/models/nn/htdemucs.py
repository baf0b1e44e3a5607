"""Hybrid Transformer Demucs (HTDemucs, Demucs v4), built on the `demucs` package's own module.

We depend on `demucs` instead of porting it (see `docs/models-neural.md`, "HTDemucs"): the
module here is demucs' `HTDemucs` with a checked `forward`, so parameter names, numerics and
every community checkpoint stay exactly demucs'. This file adds what the service needs around
it: hyperparameters from the community's files, safe checkpoint reading, chunk defaults.

Checkpoints arrive in three shapes, one model comes out (`read_htdemucs_checkpoint` +
`load_htdemucs`):

- a demucs package `.th`: a torch pickle `{"klass", "args", "kwargs", "state", ...}` (what
  `demucs` downloads; MSST's "htdemucs (demucs original)" entries point at these files);
- a demucs ≥ 4.1 `.safetensors`: the weights, with `klass`/`args`/`kwargs` as JSON metadata;
- an MSST checkpoint: a bare state dict whose hyperparameters live in the MSST YAML
  (`msst_htdemucs_params`).

Packages are read with `torch.load(weights_only=True)`: the only globals allowed are
`fractions.Fraction` (the `segment` kwarg), numpy scalars and dtypes (the `metrics` demucs
stores) and the model class *name*, which maps to an inert marker — nothing a file names is
imported or called.
"""

from __future__ import annotations

import inspect
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, cast

import numpy as np
import torch
from demucs.htdemucs import HTDemucs

from mss_jobs.domain.units import BatchSize, OverlapRatio, StemName
from mss_jobs.errors import ConfigError
from mss_jobs.models.base import ChunkDefaults

__all__ = [
    "DEMUCS_CLASS",
    "HTDemucsCheckpoint",
    "HTDemucsModel",
    "build",
    "build_htdemucs",
    "checkpoint_from_object",
    "htdemucs_chunk_defaults",
    "htdemucs_kwargs",
    "load_htdemucs",
    "msst_htdemucs_params",
    "read_htdemucs_checkpoint",
]

DEMUCS_CLASS: Final = "demucs.htdemucs.HTDemucs"
"""The class name a demucs package must carry; other demucs models (v2/v3) are refused."""

_DEFAULTS: Final[dict[str, Any]] = {
    name: parameter.default for name, parameter in inspect.signature(HTDemucs).parameters.items()
}
"""demucs' constructor arguments in declaration order (`sources` first), with defaults."""

_MSST_ONLY: Final = frozenset({"num_subbands"})
"""Keys of MSST's copy of HTDemucs that demucs lacks; accepted when they change nothing."""


class HTDemucsModel(HTDemucs):
    """demucs' `HTDemucs` with a checked forward; parameters and state dict keys unchanged.

    `forward(mix (batch, channels, time)) -> (batch, sources, channels, time)`. With
    `use_train_segment` (demucs' default) the network always runs on `segment_samples`: a
    shorter chunk is zero-padded to it and trimmed back, a longer one cannot run, so chunk at
    exactly `segment_samples` (`htdemucs_chunk_defaults`).
    """

    @property
    def stems(self) -> tuple[StemName, ...]:
        return tuple(self.sources)

    @property
    def sample_rate(self) -> int:
        return int(self.samplerate)

    @property
    def segment_samples(self) -> int:
        """Chunk length the model was trained on, computed as demucs does."""
        return int(self.segment * self.samplerate)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        if mix.ndim != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(
                f"HTDemucs expects (batch, {self.audio_channels}, time), got {tuple(mix.shape)}"
            )
        if self.use_train_segment and not self.training and mix.shape[-1] > self.segment_samples:
            raise ConfigError(
                f"chunk of {mix.shape[-1]} samples is longer than this HTDemucs' training "
                f"segment ({self.segment_samples} samples = {self.segment} s at "
                f"{self.samplerate} Hz); use a chunk of at most that length"
            )
        separated: torch.Tensor = super().forward(mix)  # type: ignore[no-untyped-call]
        return separated


@dataclass(frozen=True, slots=True)
class HTDemucsCheckpoint:
    """What a checkpoint file holds, before any module is built."""

    kwargs: dict[str, Any] | None
    """Constructor arguments the file carries (demucs packages), None for a bare state dict."""
    state: dict[str, torch.Tensor]


def htdemucs_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validated keyword arguments for demucs' `HTDemucs` from `params` (its constructor's own
    names, as demucs packages and MSST configs spell them).

    Unknown keys raise `ConfigError` naming them. Training-only constructor arguments
    (`t_lr`, `t_weight_decay`, `end_iters` …) are accepted: they do not change inference.
    """
    unknown = sorted(key for key in params if key not in _DEFAULTS and key not in _MSST_ONLY)
    if unknown:
        raise ConfigError(f"unknown HTDemucs parameter(s): {', '.join(map(repr, unknown))}")
    subbands = params.get("num_subbands", 1)
    if subbands != 1:
        raise ConfigError(
            f"num_subbands={subbands!r} is not supported: only MSST's copy of HTDemucs splits "
            "sub-bands and demucs' module (which we run) has no such layers; only 1 is"
        )
    kwargs = {key: _plain(value) for key, value in params.items() if key not in _MSST_ONLY}

    sources = kwargs.get("sources")
    if (
        not isinstance(sources, list)
        or not sources
        or not all(isinstance(name, str) and name for name in sources)
        or len(set(sources)) != len(sources)
    ):
        raise ConfigError(
            f"HTDemucs needs 'sources', a non-empty list of distinct stem names; got {sources!r}"
        )
    for flag in ("t_sparse_self_attn", "t_sparse_cross_attn"):
        if kwargs.get(flag):
            raise ConfigError(f"{flag}=True needs xformers' sparse attention, not supported")
    if kwargs.get("wiener_iters", 0) != kwargs.get("end_iters", 0):
        raise ConfigError(
            f"wiener_iters={kwargs.get('wiener_iters', 0)!r} must equal "
            f"end_iters={kwargs.get('end_iters', 0)!r} (demucs requires it)"
        )
    for name, value in kwargs.items():
        # PyYAML reads `1e-3` (no dot) as a string; demucs' own configs are full of them.
        if isinstance(_DEFAULTS[name], float) and isinstance(value, str):
            try:
                kwargs[name] = float(value)
            except ValueError:
                raise ConfigError(f"HTDemucs parameter {name}={value!r} is not a number") from None
    samples = _segment_samples(kwargs)
    if samples <= 0:
        raise ConfigError(f"HTDemucs segment must be positive, got {samples} samples")
    return kwargs


def build_htdemucs(params: Mapping[str, Any]) -> HTDemucsModel:
    """An `HTDemucsModel` in eval mode, randomly initialized, from `params`.

    `params` are demucs' constructor arguments: a package's `kwargs`, or the flat mapping
    `msst_htdemucs_params` makes of an MSST YAML (`htdemucs:` section + `sources`,
    `audio_channels`, `samplerate`, `segment` from `training:`).
    """
    kwargs = htdemucs_kwargs(params)
    try:
        model = HTDemucsModel(**kwargs)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError, RuntimeError) as exc:
        # demucs checks its arguments with asserts and fails deep inside layer constructors.
        raise ConfigError(f"invalid HTDemucs parameters: {exc!r}") from exc
    return cast(HTDemucsModel, model.eval())


build = build_htdemucs
"""The architecture interface of `mss_jobs.models.nn`: `build(params) -> nn.Module`."""


def msst_htdemucs_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flat `build_htdemucs` params from a whole MSST YAML config, as MSST's `get_model` does:
    the `htdemucs:` section plus `sources` = `training.instruments`, `audio_channels` =
    `training.channels`, `samplerate` = `training.samplerate`, `segment` = `training.segment`.

    MSST's copy of HTDemucs defaults `use_train_segment` to False (demucs: True), so that default
    is kept; the network then runs on any length, and `segment` is set to MSST's inference chunk
    (`audio.chunk_size`) so `segment_samples` is the length MSST separates with.
    """
    model_name = config.get("model", "htdemucs")
    if model_name != "htdemucs":
        raise ConfigError(f"MSST config is for model {model_name!r}, not 'htdemucs'")
    section = _section(config, "htdemucs")
    training = _section(config, "training")
    clash = sorted({"sources", "audio_channels", "samplerate", "segment"} & set(section))
    if clash:
        raise ConfigError(f"htdemucs section sets {clash}, which MSST takes from 'training'")
    missing = [
        key for key in ("instruments", "channels", "samplerate", "segment") if key not in training
    ]
    if missing:
        raise ConfigError(f"MSST config lacks training.{missing[0]} (HTDemucs needs it)")
    instruments = training["instruments"]
    if not isinstance(instruments, Sequence) or isinstance(instruments, str):
        raise ConfigError(f"training.instruments must be a list, got {instruments!r}")
    params: dict[str, Any] = dict(section)
    params["use_train_segment"] = bool(section.get("use_train_segment", False))
    params["sources"] = list(instruments)
    params["audio_channels"] = training["channels"]
    params["samplerate"] = training["samplerate"]
    params["segment"] = training["segment"]
    audio = config.get("audio")
    chunk_size = audio.get("chunk_size") if isinstance(audio, Mapping) else None
    if not params["use_train_segment"] and isinstance(chunk_size, int) and chunk_size > 0:
        params["segment"] = Fraction(chunk_size, int(training["samplerate"]))
    return params


def htdemucs_chunk_defaults(
    model: HTDemucsModel, *, overlap: OverlapRatio = 0.25, batch_size: BatchSize = 4
) -> ChunkDefaults:
    """Chunking that reproduces demucs' `apply_model`: chunks of exactly `segment_samples`,
    overlap 0.25 and a triangular ("bartlett") cross-fade, track-level normalization on."""
    return ChunkDefaults(
        chunk_seconds=model.segment_samples / model.sample_rate,
        overlap=overlap,
        window="bartlett",
        batch_size=batch_size,
        normalize=True,
    )


def read_htdemucs_checkpoint(path: Path) -> HTDemucsCheckpoint:
    """Read a demucs package (`.th`, any torch pickle), a demucs `.safetensors` or a bare state
    dict (MSST `.ckpt`) without unpickling anything but tensors and plain values."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, pickle.UnpicklingError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise ConfigError(f"cannot read HTDemucs checkpoint {path.name!r}: {exc}") from exc
    return checkpoint_from_object(loaded)


def checkpoint_from_object(loaded: object) -> HTDemucsCheckpoint:
    """Split what a checkpoint file unpickled to: a demucs package (`klass`, `args`, `kwargs`,
    `state`), `{"state": …}` alone, or a bare state dict."""
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"HTDemucs checkpoint holds a {type(loaded).__name__}, not a dict")
    if "state" not in loaded:
        return HTDemucsCheckpoint(kwargs=None, state=_state_dict(loaded))
    state = _state_dict(loaded["state"])
    if "klass" not in loaded:
        return HTDemucsCheckpoint(kwargs=None, state=state)
    klass = loaded["klass"]
    accepted = klass is _PickledClassRef or (
        isinstance(klass, type) and issubclass(klass, HTDemucs)
    )
    if not accepted:
        raise ConfigError(f"demucs package is for {klass!r}; only {DEMUCS_CLASS} is supported")
    return HTDemucsCheckpoint(
        kwargs=_bind_arguments(loaded.get("args", ()), loaded.get("kwargs", {})), state=state
    )


def load_htdemucs(
    checkpoint: HTDemucsCheckpoint, params: Mapping[str, Any] | None = None
) -> HTDemucsModel:
    """Build the model and load the checkpoint's weights strictly.

    `params` (from an MSST config) win when given — MSST builds from its YAML and takes only
    the weights even from a demucs package; otherwise the package's own kwargs are used.
    """
    source = params if params is not None else checkpoint.kwargs
    if source is None:
        raise ConfigError(
            "this HTDemucs checkpoint is a bare state dict: its hyperparameters must come from "
            "the MSST config it was trained with"
        )
    model = build_htdemucs(source)
    expected = model.state_dict()
    missing = sorted(expected.keys() - checkpoint.state.keys())
    unexpected = sorted(checkpoint.state.keys() - expected.keys())
    reshaped = sorted(
        key
        for key in expected.keys() & checkpoint.state.keys()
        if expected[key].shape != checkpoint.state[key].shape
    )
    if missing or unexpected or reshaped:
        raise ConfigError(
            "checkpoint does not fit these HTDemucs parameters: "
            f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected "
            f"{unexpected[:3]}, {len(reshaped)} of another shape {reshaped[:3]}"
        )
    model.load_state_dict(checkpoint.state, strict=True)  # fp16 packages are cast to fp32
    return model


class _PickledClassRef:
    """Stands in for the class a demucs package names while it is unpickled: the name is all
    we check, and nothing it points to is imported or called."""

    __slots__ = ()


def _numpy_scalar_globals() -> list[Any]:
    """numpy scalars and their dtypes, under both module names (numpy 1 wrote `numpy.core`)."""
    reconstruct = cast(tuple[Any, ...], np.float64(0.0).__reduce__())[0]
    numeric: tuple[type[np.generic], ...] = (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
    return [
        (reconstruct, "numpy.core.multiarray.scalar"),
        (reconstruct, "numpy._core.multiarray.scalar"),
        np.dtype,
        *(type(np.dtype(kind)) for kind in numeric),
    ]


_SAFE_GLOBALS: Final[list[Any]] = [
    (_PickledClassRef, DEMUCS_CLASS),
    Fraction,
    *_numpy_scalar_globals(),
]


def _read_safetensors(path: Path) -> HTDemucsCheckpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            state = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"cannot read HTDemucs checkpoint {path.name!r}: {exc}") from exc
    if "structure" in metadata:
        raise ConfigError(f"{path.name!r} holds a quantized (diffq) state, not supported")
    if "klass" not in metadata:
        return HTDemucsCheckpoint(kwargs=None, state=state)
    if metadata["klass"] != DEMUCS_CLASS:
        raise ConfigError(f"{path.name!r} is for {metadata['klass']!r}; only {DEMUCS_CLASS}")
    try:
        args = _decode_json(json.loads(metadata.get("args", "[]")))
        kwargs = _decode_json(json.loads(metadata.get("kwargs", "{}")))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path.name!r} has malformed metadata: {exc}") from exc
    return HTDemucsCheckpoint(kwargs=_bind_arguments(args, kwargs), state=state)


def _decode_json(value: Any) -> Any:
    """demucs' JSON metadata: fractions are `{"_type": "fraction", numerator, denominator}`."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {key: _decode_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_json(item) for item in value]
    return value


def _bind_arguments(args: object, kwargs: object) -> dict[str, Any]:
    """A package's positional `args` and `kwargs` as one keyword mapping."""
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise ConfigError(f"demucs package has malformed args/kwargs: {args!r}, {kwargs!r}")
    names = list(_DEFAULTS)
    if len(args) > len(names):
        raise ConfigError(f"demucs package has {len(args)} positional args, HTDemucs takes fewer")
    bound: dict[str, Any] = dict(zip(names, args, strict=False))
    twice = sorted(bound.keys() & set(kwargs))
    if twice:
        raise ConfigError(f"demucs package gives {twice} both positionally and by keyword")
    bound.update({str(key): value for key, value in kwargs.items()})
    return bound


def _state_dict(value: object) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"HTDemucs state is a {type(value).__name__}, not a dict of tensors")
    if value.get("__quantized"):
        raise ConfigError("HTDemucs state is diffq-quantized, not supported")
    bad = [key for key, tensor in value.items() if not isinstance(tensor, torch.Tensor)]
    if bad or not value:
        raise ConfigError(f"HTDemucs state must map names to tensors; bad entries: {bad[:3]}")
    return {str(key): tensor for key, tensor in value.items()}


def _plain(value: Any) -> Any:
    """numpy scalars (from pickles) as Python numbers; lists and tuples element-wise."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _segment_samples(kwargs: Mapping[str, Any]) -> int:
    segment = kwargs.get("segment", _DEFAULTS["segment"])
    samplerate = kwargs.get("samplerate", _DEFAULTS["samplerate"])
    try:
        return int(segment * samplerate)
    except TypeError:
        raise ConfigError(
            f"HTDemucs segment={segment!r} / samplerate={samplerate!r} must be numbers"
        ) from None


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name)
    if not isinstance(section, Mapping):
        raise ConfigError(f"MSST config lacks its {name!r} section")
    return section
