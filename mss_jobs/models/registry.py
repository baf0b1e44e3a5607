"""The model registry: separators by name, created lazily so listing models loads nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mss_jobs.errors import UnknownModelError
from mss_jobs.models.base import Separator
from mss_jobs.types import StemName

__all__ = ["ModelSpec", "create_separator", "get_spec", "list_models"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    description: str
    stems: tuple[StemName, ...]
    factory: Callable[[torch.device], Separator]


def _identity(device: torch.device) -> Separator:
    from mss_jobs.models.identity import IdentitySeparator

    return IdentitySeparator(device=device)


def _hpss(device: torch.device) -> Separator:
    from mss_jobs.models.hpss import create_hpss

    return create_hpss(device=device)


_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="identity",
            description="one stem 'mixture' equal to the input; measures pipeline overhead",
            stems=("mixture",),
            factory=_identity,
        ),
        ModelSpec(
            name="dsp-hpss",
            description="harmonic/percussive separation by soft masks from median-filtered "
            "spectrograms (no weights)",
            stems=("harmonic", "percussive"),
            factory=_hpss,
        ),
    )
}


def list_models() -> tuple[ModelSpec, ...]:
    return tuple(_MODELS.values())


def get_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}"
        ) from None


def create_separator(name: str, *, device: torch.device | None = None) -> Separator:
    """A ready-to-run separator for `name` on `device` (CPU by default)."""
    return get_spec(name).factory(device or torch.device("cpu"))
