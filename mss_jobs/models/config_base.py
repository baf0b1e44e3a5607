"""What both model-config readers share: the `ModelConfig` they produce and typed lookups whose
errors name the file and key. Pure: no torch, no I/O.

The readers themselves live in `config_msst` (MSST YAML) and `config_splifft` (splifft JSON);
`mss_jobs.models.config` is the public face that picks one by suffix and re-exports the names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mss_jobs.domain.units import WindowShape
from mss_jobs.errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_SAMPLE_RATE",
    "Architecture",
    "ModelConfig",
    "Section",
    "build_model_config",
]

Architecture = Literal["bs_roformer", "mel_band_roformer", "mdx23c", "htdemucs"]
ARCHITECTURES: Final[tuple[Architecture, ...]] = get_args(Architecture)

DEFAULT_SAMPLE_RATE: Final = 44100


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


def build_model_config(**fields: Any) -> ModelConfig:
    """`ModelConfig(**fields)`, with a validation failure turned into a ConfigError naming the
    file (`fields["source"]`)."""
    source = fields.get("source")
    try:
        return ModelConfig(**fields)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{source}: invalid model config: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# typed lookups that name the file and key
# ---------------------------------------------------------------------------------------------


class Section:
    """A mapping from a config file, with lookups whose errors say `<file>: <section>.<key>`."""

    def __init__(self, data: Mapping[str, Any], *, name: str, source: str) -> None:
        self.data = data
        self.name = name
        self.source = source

    @classmethod
    def of(cls, parent: Mapping[str, Any], name: str, *, source: str) -> Section:
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
