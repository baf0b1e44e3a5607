"""Edge: a job's `params` (JSON in the job row) validated into pipeline and output settings.

Torch-free, so the API can validate a request with the same model before it writes the row:

    {"chunk_seconds": 8.0, "overlap": 0.25, "window": "hann", "batch_size": 4,
     "stems": ["vocals", "instrumental"], "derived": ["instrumental=mixture-vocals"],
     "format": "flac", "bit_depth": 24, "sample_rate": 44100}

Every key is optional (None or absent: the model's default, the input's rate). Unknown keys and
wrong types are refused; the worker turns any refusal into `ConfigError` (a permanent failure).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mss_jobs.errors import ConfigError

if TYPE_CHECKING:
    from mss_jobs.core.pipeline import SeparationSettings
    from mss_jobs.models.base import Separator
    from mss_jobs.runner import OutputSpec

__all__ = ["JobParams", "parse_params"]


class JobParams(BaseModel):
    """What a client may choose per job; see the module docstring for an example."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    chunk_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    overlap: float | None = Field(default=None, ge=0, lt=1)
    window: Literal["hann", "hamming", "blackman", "bartlett", "rectangular"] | None = None
    batch_size: int | None = Field(default=None, gt=0, le=1024)
    stems: tuple[str, ...] | None = None
    derived: tuple[str, ...] = ()
    format: Literal["wav", "flac", "mp3"] = "flac"
    bit_depth: Literal[16, 24, 32] | None = None
    sample_rate: int | None = Field(default=None, gt=0, le=384_000)

    def separation_settings(self, separator: Separator) -> SeparationSettings:
        """Pipeline settings for `separator`; ConfigError (or a subclass) when they conflict."""
        from mss_jobs.core.derived import parse_derived
        from mss_jobs.core.pipeline import SeparationSettings

        return SeparationSettings.for_model(
            separator,
            chunk_seconds=self.chunk_seconds,
            overlap=self.overlap,
            window=self.window,
            batch_size=self.batch_size,
            derived=tuple(parse_derived(spec) for spec in self.derived),
            stems=self.stems,
        )

    def output_spec(self) -> OutputSpec:
        from mss_jobs.runner import OutputSpec

        return OutputSpec(
            format=self.format, bit_depth=self.bit_depth, sample_rate=self.sample_rate
        )


def parse_params(params: Mapping[str, Any]) -> JobParams:
    """Validate a job's params; raises `ConfigError` naming every offending key."""
    try:
        # Validated as the JSON it is stored as: strict types, and arrays are fine for tuples.
        return JobParams.model_validate_json(json.dumps(dict(params)))
    except (TypeError, ValueError) as exc:  # ValidationError is a ValueError
        if not isinstance(exc, ValidationError):
            raise ConfigError(f"job params are not JSON: {exc}") from exc
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'params'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid job params: {problems}") from exc
