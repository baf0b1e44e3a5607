"""Torch-free facts about every model the service can run: names, stems, descriptions, and
whether a neural model's files are on this machine.

The API lists and validates models with this table and never imports torch; the registry
(`registry.py`) pairs each name with a factory. Built-in DSP models are listed here; community
neural models come from `known.py`, so the two tables cannot drift apart for them. Keep the
built-ins in step with the registry: a name here that the registry lacks fails the job with
`model.unknown` (a test compares the two).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from mss_jobs.errors import UnknownModelError
from mss_jobs.models.known import KNOWN_MODELS, KnownModel
from mss_jobs.models.weights import cache_path

__all__ = [
    "ModelInfo",
    "ModelKind",
    "get_model_info",
    "is_available",
    "list_model_infos",
    "model_named",
]

_Entry = TypeVar("_Entry")

ModelKind = Literal["builtin", "neural"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    description: str
    stems: tuple[str, ...]
    kind: ModelKind = "builtin"
    architecture: str | None = None
    """The neural architecture (bs_roformer, mel_band_roformer, mdx23c, htdemucs), or None."""
    license: str | None = None
    """What is known of the weights' license (neural models)."""


_BUILTINS: tuple[ModelInfo, ...] = (
    ModelInfo(
        name="identity",
        description="one stem 'mixture' equal to the input; measures pipeline overhead",
        stems=("mixture",),
    ),
    ModelInfo(
        name="dsp-hpss",
        description="harmonic/percussive separation by soft masks from median-filtered "
        "spectrograms (no weights)",
        stems=("harmonic", "percussive"),
    ),
)


def _neural_info(model: KnownModel) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        description=model.description,
        stems=model.stems,
        kind="neural",
        architecture=model.architecture,
        license=model.license,
    )


def _catalog() -> dict[str, ModelInfo]:
    # Built per call from the model table (a handful of entries), so the two cannot disagree.
    return {
        info.name: info
        for info in (*_BUILTINS, *(_neural_info(model) for model in KNOWN_MODELS.values()))
    }


def list_model_infos() -> tuple[ModelInfo, ...]:
    return tuple(_catalog().values())


def get_model_info(name: str) -> ModelInfo:
    """The model called `name`; `UnknownModelError` naming the known ones otherwise."""
    return model_named(_catalog(), name)


def model_named(models: Mapping[str, _Entry], name: str) -> _Entry:
    """`models[name]`; `UnknownModelError` naming the known ones otherwise (the registry's
    lookup too, so both say the same)."""
    try:
        return models[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(models))}"
        ) from None


def is_available(name: str, *, model_dir: Path) -> bool:
    """Whether `name` can run here without downloading anything: built-ins always; a neural
    model when its config and every checkpoint are in the model cache `model_dir`.

    A few `stat` calls, no hashing: a file in the cache was verified when it was written.
    """
    info = get_model_info(name)
    if info.kind == "builtin":
        return True
    return all(
        cache_path(model_dir, resource).is_file() for resource in KNOWN_MODELS[name].resources
    )
