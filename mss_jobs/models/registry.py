"""The model registry: separators by name, created lazily so listing models loads nothing.

Built-in DSP models are constructed directly. A community neural model (`known.py`) is
resolved in four steps, each its own function so a custom model can enter at any of them:

    config      the MSST YAML (or splifft JSON) from the model store → `ModelConfig`
    weights     checkpoint file(s) from the store → state dict(s)         (`weights.py`)
    module      the architecture's builder (`mss_jobs.models.nn`, imported lazily by dotted
                path) + a strict `load_state_dict`                          (`build_module`)
    separator   `NeuralSeparator` around the module                        (`neural.py`)

HTDemucs is the exception in step 2-3: its checkpoints may be demucs packages that carry their
own hyperparameters (no config file), and several of them form a bag (`htdemucs_ft`); the
architecture module reads those (`read_htdemucs_checkpoint`, `load_htdemucs`).

The model store decides whether missing files may be downloaded; callers at the edges (worker,
CLI) pass one built from their settings. Without one, the process settings are read here, so
`create_separator("htdemucs")` works from a plain script too.
"""

from __future__ import annotations

import copy
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mss_jobs.domain.units import StemName
from mss_jobs.errors import CheckpointError, ConfigError
from mss_jobs.models.base import Separator
from mss_jobs.models.catalog import ModelKind, model_named
from mss_jobs.models.checkpoints import load_state_dict
from mss_jobs.models.config import Architecture, ModelConfig, load_model_config
from mss_jobs.models.known import KNOWN_MODELS, KnownModel
from mss_jobs.models.neural import NeuralSeparator, StemBag
from mss_jobs.models.weights import ModelStore

if TYPE_CHECKING:
    from mss_jobs.models.nn.htdemucs import HTDemucsModel

__all__ = [
    "ARCHITECTURE_BUILDERS",
    "Builder",
    "LoadOptions",
    "ModelSpec",
    "build_module",
    "builder_for",
    "create_separator",
    "get_spec",
    "list_models",
    "load_known_model",
    "load_neural_model",
    "load_weights",
]

log = logging.getLogger(__name__)

Builder = Callable[[Mapping[str, Any]], nn.Module]

ARCHITECTURE_BUILDERS: dict[str, str | Builder] = {
    "bs_roformer": "mss_jobs.models.nn.roformer:build_bs_roformer",
    "mel_band_roformer": "mss_jobs.models.nn.roformer:build_mel_band_roformer",
    "mdx23c": "mss_jobs.models.nn.mdx23c:build_mdx23c",
    "htdemucs": "mss_jobs.models.nn.htdemucs:build_htdemucs",
}
"""Architecture → builder, or the `module:function` path of one (imported on first use, so the
registry loads no architecture it does not run). Tests swap in stand-ins here."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to load a separator: where, in what compute dtype, and from which model store."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    store: ModelStore | None = None
    """Where model files come from; None: built from the process settings when needed."""
    dtype: torch.dtype = torch.float32
    """Compute dtype for neural models on CUDA (float32 elsewhere)."""
    compile: bool = False
    tta: bool = False


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    description: str
    stems: tuple[StemName, ...]
    factory: Callable[[LoadOptions], Separator]
    kind: ModelKind = "builtin"


# ---------------------------------------------------------------------------------------------
# built-ins
# ---------------------------------------------------------------------------------------------


def _identity(options: LoadOptions) -> Separator:
    from mss_jobs.models.identity import IdentitySeparator

    return IdentitySeparator(device=options.device)


def _hpss(options: LoadOptions) -> Separator:
    from mss_jobs.models.hpss import create_hpss

    return create_hpss(device=options.device)


def _neural_spec(known: KnownModel) -> ModelSpec:
    def factory(options: LoadOptions) -> Separator:
        return load_known_model(known, options)

    return ModelSpec(
        name=known.name,
        description=known.description,
        stems=known.stems,
        factory=factory,
        kind="neural",
    )


_BUILTINS: dict[str, ModelSpec] = {
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


def _specs() -> dict[str, ModelSpec]:
    # The neural entries follow the model table (`known.py`) as it is at the call.
    return {**_BUILTINS, **{name: _neural_spec(known) for name, known in KNOWN_MODELS.items()}}


def list_models() -> tuple[ModelSpec, ...]:
    return tuple(_specs().values())


def get_spec(name: str) -> ModelSpec:
    return model_named(_specs(), name)


def create_separator(
    name: str,
    *,
    device: torch.device | None = None,
    store: ModelStore | None = None,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    tta: bool = False,
) -> Separator:
    """A ready-to-run separator for `name` on `device` (CPU by default).

    Neural models read their files from `store` (downloading them when it allows), so this can
    take a while and raise `ModelUnavailableError`, `ModelDownloadError` or `CheckpointError`.
    """
    options = LoadOptions(
        device=device or torch.device("cpu"), store=store, dtype=dtype, compile=compile, tta=tta
    )
    return get_spec(name).factory(options)


# ---------------------------------------------------------------------------------------------
# neural models
# ---------------------------------------------------------------------------------------------


def builder_for(architecture: str) -> Builder:
    """The builder of `architecture`, importing its module on first use."""
    try:
        entry = ARCHITECTURE_BUILDERS[architecture]
    except KeyError:
        raise ConfigError(
            f"no builder for architecture {architecture!r}; known: "
            f"{', '.join(sorted(ARCHITECTURE_BUILDERS))}"
        ) from None
    if not isinstance(entry, str):
        return entry
    module_name, _, function = entry.partition(":")
    builder: Builder = getattr(importlib.import_module(module_name), function)
    return builder


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """`module.load_state_dict(state, strict=True)`, with a `CheckpointError` that names the
    first missing, unexpected and mis-shaped keys instead of torch's wall of text."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = [
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in sorted(expected.keys() & state.keys())
        if expected[key].shape != state[key].shape
    ]
    if missing or unexpected or reshaped:
        raise CheckpointError(
            f"{source} does not fit the model its config describes: {len(missing)} missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(reshaped)} of "
            f"another shape {reshaped[:3]}"
        )
    module.load_state_dict(state, strict=True)


def build_module(config: ModelConfig, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The config's architecture built from (a copy of) its params, with `state` loaded."""
    module = builder_for(config.architecture)(copy.deepcopy(config.params))
    if state is not None:
        load_weights(module, state, source=config.source or "checkpoint")
    return module


def load_neural_model(
    config: ModelConfig | None,
    checkpoints: Sequence[Path],
    *,
    name: str,
    architecture: Architecture | None = None,
    bag_weights: Sequence[Sequence[float]] | None = None,
    options: LoadOptions | None = None,
) -> NeuralSeparator:
    """A separator from a config and checkpoint files already on disk.

    Several checkpoints form a bag (`bag_weights`, default equal shares). `config` may be None
    only for HTDemucs packages, which carry their hyperparameters.
    """
    options = options or LoadOptions()
    if not checkpoints:
        raise ConfigError(f"{name}: no checkpoint given")
    architecture = architecture or (config.architecture if config is not None else None)
    if architecture == "htdemucs":
        module, config = _load_htdemucs(config, checkpoints, bag_weights)
    else:
        if config is None:
            raise ConfigError(f"{name}: a {architecture or 'neural'} model needs a config file")
        modules = [build_module(config, load_state_dict(path)) for path in checkpoints]
        module = _bag(modules, bag_weights, stems=len(config.stems))
    dtype = options.dtype if options.device.type == "cuda" else torch.float32
    return NeuralSeparator.from_config(
        module,
        config,
        name=name,
        device=options.device,
        dtype=dtype,
        compile=options.compile,
        tta=options.tta,
    )


def load_known_model(known: KnownModel, options: LoadOptions | None = None) -> NeuralSeparator:
    """A community model by its table entry: files from the store, then `load_neural_model`."""
    options = options or LoadOptions()
    store = options.store or _default_store()
    config = None
    if known.config is not None:
        config = load_model_config(store.get(known.config), architecture=known.architecture)
    paths = [store.get(resource) for resource in known.checkpoints]
    separator = load_neural_model(
        config,
        paths,
        name=known.name,
        architecture=known.architecture,
        bag_weights=known.bag_weights,
        options=options,
    )
    if set(separator.stems) != set(known.stems):
        raise CheckpointError(
            f"{known.name}: its files give stems {list(separator.stems)}, the model table "
            f"promises {list(known.stems)} (has the published config changed?)"
        )
    return separator


def _bag(
    modules: Sequence[nn.Module], weights: Sequence[Sequence[float]] | None, *, stems: int
) -> nn.Module:
    if len(modules) == 1 and weights is None:
        return modules[0]
    rows = weights if weights is not None else [[1.0] * stems for _ in modules]
    return StemBag(modules, rows)


def _load_htdemucs(
    config: ModelConfig | None,
    checkpoints: Sequence[Path],
    bag_weights: Sequence[Sequence[float]] | None,
) -> tuple[nn.Module, ModelConfig]:
    from mss_jobs.models.nn.htdemucs import (
        htdemucs_chunk_defaults,
        load_htdemucs,
        read_htdemucs_checkpoint,
    )

    models: list[HTDemucsModel] = []
    kwargs: dict[str, Any] | None = None
    for path in checkpoints:
        checkpoint = read_htdemucs_checkpoint(path)
        kwargs = kwargs or checkpoint.kwargs
        models.append(load_htdemucs(checkpoint, config.params if config is not None else None))
    first = models[0]
    for other, path in zip(models[1:], checkpoints[1:], strict=True):
        if (other.stems, other.sample_rate, other.audio_channels) != (
            first.stems,
            first.sample_rate,
            first.audio_channels,
        ):
            raise CheckpointError(f"{path} does not match the bag's first model's stems or rate")
    if config is None:
        assert kwargs is not None  # load_htdemucs raised otherwise
        defaults = htdemucs_chunk_defaults(first)
        config = ModelConfig(
            architecture="htdemucs",
            params=kwargs,
            sample_rate=first.sample_rate,
            channels=int(first.audio_channels),
            stems=first.stems,
            chunk_size=min(model.segment_samples for model in models),
            overlap=defaults.overlap,
            window=defaults.window,
            batch_size=defaults.batch_size,
            normalize=defaults.normalize,
            source=str(checkpoints[0]),
        )
    return _bag(models, bag_weights, stems=len(first.stems)), config


def _default_store() -> ModelStore:
    from mss_jobs.models.weights import model_store_from_settings
    from mss_jobs.settings import get_settings

    return model_store_from_settings(get_settings())
