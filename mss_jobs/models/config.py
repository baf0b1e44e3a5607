"""Typed neural-model configs, read from the community's files. Pure parsing: no torch, no I/O
beyond reading the one file it is given.

A `ModelConfig` says which architecture to build, the hyperparameters its builder takes
(`mss_jobs.models.nn`: the `model:` section of ZFTurbo's Music-Source-Separation-Training
(MSST) YAML, same key names), and how the pipeline should run it: sample rate, channels, stems in
output order, chunking defaults and whether to normalize the mixture.

Two file formats, one reader each; this module picks one by suffix and re-exports their names:

    config_base.py     ModelConfig, Architecture, and the lookups both readers share
    config_msst.py     MSST YAML (`.yaml`/`.yml`): a safe YAML loader, MSST's sections and rules
    config_splifft.py  splifft JSON (`.json`): translated into the MSST vocabulary
    config_derived.py  a config's `derived_stems` section, checked against the model's stems

Every error is a `ConfigError` naming the file and key.
"""

from __future__ import annotations

from pathlib import Path

from mss_jobs.domain.units import WindowShape
from mss_jobs.errors import ConfigError
from mss_jobs.models.config_base import ARCHITECTURES, Architecture, ModelConfig
from mss_jobs.models.config_msst import (
    config_from_msst,
    detect_msst_architecture,
    read_msst_yaml,
    safe_load_yaml,
)
from mss_jobs.models.config_splifft import config_from_splifft, read_splifft_json

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
