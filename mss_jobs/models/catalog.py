"""Torch-free facts about the built-in models: names, stems, descriptions.

The API lists and validates models with this table and never imports torch; the registry
(`registry.py`) pairs each name with a factory and may read its names and stems from here later.
Keep the two in step: a name here that the registry lacks fails the job with `model.unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mss_jobs.errors import UnknownModelError

__all__ = ["ModelInfo", "get_model_info", "list_model_infos"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    description: str
    stems: tuple[str, ...]


_CATALOG: dict[str, ModelInfo] = {
    info.name: info
    for info in (
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
}


def list_model_infos() -> tuple[ModelInfo, ...]:
    return tuple(_CATALOG.values())


def get_model_info(name: str) -> ModelInfo:
    """The model called `name`; `UnknownModelError` naming the known ones otherwise."""
    try:
        return _CATALOG[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_CATALOG))}"
        ) from None
