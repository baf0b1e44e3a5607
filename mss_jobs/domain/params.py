"""`JobParams`: what a client chooses per job. One model, three readers: the API validates a
request with it before the row is written, the database stores its JSON (`jobs.params`), and the
worker reads it back into pipeline and output settings (`SeparationSettings.for_job`,
`OutputSpec.for_job`).

    {"chunk_seconds": 8.0, "overlap": 0.25, "window": "hann", "batch_size": 4,
     "stems": ["vocals", "instrumental"], "derived": ["instrumental=mixture-vocals"],
     "format": "flac", "bit_depth": 24, "sample_rate": 44100}

Every key is optional (None or absent: the model's default, the input's rate). Unknown keys and
wrong types are refused with `ConfigError` (a permanent failure for a job).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mss_jobs.domain.units import BitDepth, OutputFormat, WindowShape
from mss_jobs.domain.validation import describe_validation_error
from mss_jobs.errors import ConfigError

__all__ = ["JobParams", "parse_params"]


class JobParams(BaseModel):
    """What a client may choose per job; see the module docstring for an example."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    chunk_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    overlap: float | None = Field(default=None, ge=0, lt=1)
    window: WindowShape | None = None
    batch_size: int | None = Field(default=None, gt=0, le=1024)
    stems: tuple[str, ...] | None = None
    derived: tuple[str, ...] = ()
    format: OutputFormat = "flac"
    bit_depth: BitDepth | None = None
    sample_rate: int | None = Field(default=None, gt=0, le=384_000)


def parse_params(params: Mapping[str, Any]) -> JobParams:
    """Validate a job's params; raises `ConfigError` naming every offending key."""
    try:
        # Validated as the JSON it is stored as: strict types, and arrays are fine for tuples.
        return JobParams.model_validate_json(json.dumps(dict(params)))
    except ValidationError as exc:
        problems = describe_validation_error(exc, "params")
        raise ConfigError(f"invalid job params: {problems}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"job params are not JSON: {exc}") from exc
