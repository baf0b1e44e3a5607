"""The model registry: listing is free, unknown names fail with the known ones, and a community
model resolves from the model cache (config + checkpoint) through its architecture's builder
into a working separator, without any network."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch
from demucs.htdemucs import HTDemucs
from fresh_python import assert_python_succeeds
from torch import nn

from mss_jobs.core.pipeline import SeparationSettings
from mss_jobs.demo import synthesize_demo
from mss_jobs.errors import CheckpointError, ConfigError, ModelUnavailableError, UnknownModelError
from mss_jobs.models import registry
from mss_jobs.models.base import Separator
from mss_jobs.models.catalog import get_model_info, is_available, list_model_infos
from mss_jobs.models.config import load_model_config
from mss_jobs.models.identity import IdentitySeparator
from mss_jobs.models.known import KNOWN_MODELS, get_known_model
from mss_jobs.models.neural import NeuralSeparator, StemBag
from mss_jobs.models.registry import (
    LoadOptions,
    builder_for,
    create_separator,
    get_spec,
    list_models,
    load_neural_model,
)
from mss_jobs.models.weights import ModelStore, cache_path
from mss_jobs.runner import FileSeparation, separate_file
from mss_jobs.settings import load_settings
from mss_jobs.types import PaddedChunkedAudioTensor
from workers.model_cache import ModelCache

# -- built-ins and listing ----------------------------------------------------------------------


def test_list_models_includes_builtins_and_the_community_models() -> None:
    names = [spec.name for spec in list_models()]
    assert "identity" in names
    assert "dsp-hpss" in names
    assert set(KNOWN_MODELS) <= set(names)
    assert len(names) == len(set(names))
    for spec in list_models():
        assert spec.description
        assert spec.stems
    assert get_spec("htdemucs_6s").kind == "neural"
    assert get_spec("identity").kind == "builtin"


def test_specs_declare_their_stems() -> None:
    assert get_spec("identity").stems == ("mixture",)
    assert get_spec("dsp-hpss").stems == ("harmonic", "percussive")
    assert get_spec("htdemucs").stems == ("drums", "bass", "other", "vocals")
    assert get_spec("mdx23c-vocals").stems == ("vocals", "other")


def test_catalog_and_registry_agree_on_every_model() -> None:
    catalog = {(m.name, m.description, m.stems, m.kind) for m in list_model_infos()}
    specs = {(m.name, m.description, m.stems, m.kind) for m in list_models()}
    assert catalog == specs
    info = get_model_info("mel-roformer-kim-vocals")
    assert (info.architecture, info.kind) == ("mel_band_roformer", "neural")
    assert info.license


@pytest.mark.parametrize("name", ["demucs", "", "Identity", "identity "])
def test_unknown_model_lists_the_known_ones(name: str) -> None:
    with pytest.raises(UnknownModelError) as error:
        create_separator(name)
    message = str(error.value)
    assert repr(name) in message
    assert "dsp-hpss" in message
    assert "identity" in message
    assert "htdemucs" in message
    assert isinstance(error.value, ConfigError)
    assert error.value.code == "model.unknown"
    with pytest.raises(UnknownModelError):
        get_spec(name)
    with pytest.raises(UnknownModelError):
        get_known_model(name)


def test_create_identity() -> None:
    separator = create_separator("identity")
    assert isinstance(separator, Separator)  # the protocol is runtime-checkable
    assert isinstance(separator, IdentitySeparator)
    assert separator.device == torch.device("cpu")
    assert separator.stems == get_spec("identity").stems
    on_cpu = create_separator("identity", device=torch.device("cpu"))
    assert on_cpu.device == torch.device("cpu")


def test_protocol_rejects_objects_that_are_not_separators() -> None:
    assert not isinstance(object(), Separator)
    assert not isinstance(torch.nn.Identity(), Separator)


def test_known_table_facts() -> None:
    for model in KNOWN_MODELS.values():
        assert model.checkpoints
        assert all(r.url.startswith("https://") for r in model.resources)
        assert (model.config is None) == (model.architecture == "htdemucs")
    bag = KNOWN_MODELS["htdemucs_ft"]
    assert bag.bag_weights is not None
    assert len(bag.bag_weights) == len(bag.checkpoints) == 4
    # demucs file names carry the first 8 hex digits of their sha256
    for resource in KNOWN_MODELS["htdemucs"].checkpoints:
        assert resource.sha256 is not None
        assert resource.url.endswith(f"-{resource.sha256}.th")


# -- builders -----------------------------------------------------------------------------------


def test_builders_are_imported_lazily_by_dotted_path() -> None:
    code = (
        "import sys\n"
        "import mss_jobs.models.registry as r\n"
        "assert not any(m.startswith('mss_jobs.models.nn.') for m in sys.modules), 'eager'\n"
        "b = r.builder_for('mdx23c')\n"
        "assert 'mss_jobs.models.nn.mdx23c' in sys.modules\n"
        "assert 'mss_jobs.models.nn.roformer' not in sys.modules\n"
    )
    assert_python_succeeds(code, timeout=120)
    from mss_jobs.models.nn.roformer import build_mel_band_roformer

    assert builder_for("mel_band_roformer") is build_mel_band_roformer
    with pytest.raises(ConfigError, match="no builder for architecture 'unet'"):
        builder_for("unet")


# -- a stand-in architecture --------------------------------------------------------------------


class StandIn(nn.Module):
    """A per-stem, per-channel 1x1 convolution: small, deterministic, with named parameters."""

    def __init__(self, stems: int, channels: int) -> None:
        super().__init__()
        self.stems, self.channels = stems, channels
        self.mix = nn.Conv1d(channels, stems * channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mix(x)
        return y.reshape(x.shape[0], self.stems, self.channels, x.shape[-1])


def build_stand_in(params: Mapping[str, Any]) -> StandIn:
    unknown = set(params) - {"dim", "num_stems", "stereo"}
    if unknown:
        raise ConfigError(f"unknown stand-in parameter {sorted(unknown)[0]!r}")
    return StandIn(int(params["num_stems"]), 2 if params.get("stereo") else 1)


STAND_IN_YAML = """\
audio:
  chunk_size: 11025
  sample_rate: 44100
  num_channels: 2
model:
  dim: 4
  num_stems: 1
  stereo: true
training:
  instruments: [vocals, other]
  target_instrument: vocals
inference:
  batch_size: 2
  num_overlap: 2
"""


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in replaces the BS-RoFormer builder for one test."""
    monkeypatch.setitem(registry.ARCHITECTURE_BUILDERS, "bs_roformer", build_stand_in)


def _pulled_viperx(
    root: Path, *, yaml: str = STAND_IN_YAML, state: Mapping[str, torch.Tensor] | None = None
) -> StandIn:
    """Put files where `models pull bs-roformer-viperx-1297` would: the stand-in's config and a
    Lightning-style checkpoint of a seeded stand-in, which is returned."""
    known = KNOWN_MODELS["bs-roformer-viperx-1297"]
    assert known.config is not None
    config_path = cache_path(root, known.config)
    config_path.parent.mkdir(parents=True)
    config_path.write_text(yaml)
    torch.manual_seed(7)
    module = StandIn(1, 2)
    weights = module.state_dict() if state is None else state
    checkpoint = cache_path(root, known.checkpoints[0])
    checkpoint.parent.mkdir(parents=True)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in weights.items()}, "epoch": 317}, checkpoint
    )
    return module


@pytest.mark.usefixtures("stand_in")
def test_a_known_model_resolves_from_the_cache(tmp_path: Path) -> None:
    reference = _pulled_viperx(tmp_path)
    store = ModelStore(tmp_path, pull=False)
    assert is_available("bs-roformer-viperx-1297", model_dir=tmp_path)
    separator = create_separator("bs-roformer-viperx-1297", store=store)
    assert isinstance(separator, NeuralSeparator)
    assert (separator.name, separator.stems, separator.channels) == (
        "bs-roformer-viperx-1297",
        ("vocals",),
        2,
    )
    assert separator.chunk_defaults.chunk_seconds == pytest.approx(0.25)
    assert separator.chunk_defaults.batch_size == 2
    chunks = PaddedChunkedAudioTensor(torch.randn(3, 2, 512))
    with torch.no_grad():
        expected = reference(chunks)
    torch.testing.assert_close(separator.separate(chunks), expected)


@pytest.mark.usefixtures("stand_in")
def test_a_neural_model_runs_through_the_file_pipeline(tmp_path: Path) -> None:
    _pulled_viperx(tmp_path / "models")
    separator = create_separator("bs-roformer-viperx-1297", store=ModelStore(tmp_path / "models"))
    track = synthesize_demo(1.0, sample_rate=44100)
    source = tmp_path / "mix.wav"
    sf.write(source, track.mixture.T.numpy(), 44100, subtype="FLOAT")
    settings = SeparationSettings.for_model(separator)
    result = None
    for event in separate_file(source, tmp_path / "out", separator=separator, settings=settings):
        if isinstance(event, FileSeparation):
            result = event
    assert result is not None
    assert [stem.stem for stem in result.stems] == ["vocals"]
    audio, rate = sf.read(result.stems[0].path, always_2d=True)
    assert rate == 44100
    assert audio.shape == (44100, 2)
    assert abs(audio).max() > 0


def test_missing_files_fail_when_pulling_is_off(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="models pull") as error:
        create_separator("mdx23c-vocals", store=ModelStore(tmp_path, pull=False))
    assert error.value.code == "model.unavailable"
    assert not is_available("mdx23c-vocals", model_dir=tmp_path)
    assert is_available("dsp-hpss", model_dir=tmp_path)


@pytest.mark.usefixtures("stand_in")
def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path) -> None:
    _pulled_viperx(tmp_path, state={"mix.weight": torch.zeros(4, 2, 1), "extra": torch.ones(1)})
    with pytest.raises(CheckpointError) as error:
        create_separator("bs-roformer-viperx-1297", store=ModelStore(tmp_path))
    message = str(error.value)
    assert "1 missing ['mix.bias']" in message
    assert "1 unexpected ['extra']" in message
    assert "1 of another shape ['mix.weight (4, 2, 1) != (2, 2, 1)']" in message
    assert error.value.code == "model.checkpoint_invalid"


@pytest.mark.usefixtures("stand_in")
def test_a_config_that_breaks_the_tables_promise_is_refused(tmp_path: Path) -> None:
    two_stems = STAND_IN_YAML.replace("num_stems: 1", "num_stems: 2").replace(
        "target_instrument: vocals", "target_instrument: null"
    )
    _pulled_viperx(tmp_path, yaml=two_stems, state=StandIn(2, 2).state_dict())
    with pytest.raises(CheckpointError, match="promises"):
        create_separator("bs-roformer-viperx-1297", store=ModelStore(tmp_path))


# -- real architectures, tiny -------------------------------------------------------------------

TINY_BS_ROFORMER = """\
audio: {chunk_size: 8192, sample_rate: 44100, num_channels: 2}
model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 2
  time_transformer_depth: 1
  freq_transformer_depth: 1
  freqs_per_bands: !!python/tuple [32, 32, 65]
  dim_head: 8
  heads: 2
  stft_n_fft: 256
  stft_hop_length: 64
  stft_win_length: 256
training: {instruments: [vocals, other], target_instrument: null}
inference: {batch_size: 2, num_overlap: 4}
"""


def test_a_real_architecture_from_config_and_checkpoint(tmp_path: Path) -> None:
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(TINY_BS_ROFORMER)
    config = load_model_config(config_path)
    torch.manual_seed(0)
    reference = builder_for("bs_roformer")(config.params)
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"module." + k: v for k, v in reference.state_dict().items()}, checkpoint)
    separator = load_neural_model(config, [checkpoint], name="tiny")
    assert separator.stems == ("vocals", "other")
    chunks = PaddedChunkedAudioTensor(torch.randn(2, 2, 8192))
    with torch.no_grad():
        expected = reference(chunks)
    torch.testing.assert_close(separator.separate(chunks), expected)


def test_a_non_demucs_model_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a config"):
        load_neural_model(None, [tmp_path / "x.ckpt"], name="x", architecture="mdx23c")
    with pytest.raises(ConfigError, match="no checkpoint"):
        load_neural_model(None, [], name="x", architecture="mdx23c")


TINY_DEMUCS: dict[str, Any] = {
    "channels": 8,
    "depth": 3,
    "nfft": 1024,
    "t_layers": 1,
    "t_heads": 4,
    "bottom_channels": 16,
    "samplerate": 44100,
    "segment": Fraction(1, 2),
}


def _demucs_package(path: Path, sources: list[str], seed: int) -> HTDemucs:
    torch.manual_seed(seed)
    model = HTDemucs(sources=sources, **TINY_DEMUCS).eval()
    kwargs = {"sources": sources, **TINY_DEMUCS}
    torch.save({"klass": HTDemucs, "args": (), "kwargs": kwargs, "state": model.state_dict()}, path)
    return model


def test_a_demucs_package_carries_its_own_config(tmp_path: Path) -> None:
    sources = ["drums", "bass", "other", "vocals"]
    reference = _demucs_package(tmp_path / "955717e8-8726e21a.th", sources, seed=1)
    separator = load_neural_model(
        None, [tmp_path / "955717e8-8726e21a.th"], name="tiny-demucs", architecture="htdemucs"
    )
    assert separator.stems == tuple(sources)
    defaults = separator.chunk_defaults
    assert defaults.chunk_seconds * 44100 == pytest.approx(22050)  # the training segment
    assert (defaults.window, defaults.overlap, defaults.normalize) == ("bartlett", 0.25, True)
    chunks = PaddedChunkedAudioTensor(torch.randn(2, 2, 22050))
    with torch.no_grad():
        expected = reference(chunks)
    torch.testing.assert_close(separator.separate(chunks), expected, atol=1e-5, rtol=1e-4)


def test_a_bag_of_demucs_packages(tmp_path: Path) -> None:
    sources = ["drums", "vocals"]
    first = _demucs_package(tmp_path / "a.th", sources, seed=1)
    second = _demucs_package(tmp_path / "b.th", sources, seed=2)
    separator = load_neural_model(
        None,
        [tmp_path / "a.th", tmp_path / "b.th"],
        name="tiny-bag",
        architecture="htdemucs",
        bag_weights=[[1.0, 0.0], [0.0, 1.0]],
    )
    assert isinstance(separator.module, StemBag)
    chunks = PaddedChunkedAudioTensor(torch.randn(1, 2, 22050))
    with torch.no_grad():
        a, b = first(chunks), second(chunks)
    out = separator.separate(chunks)
    torch.testing.assert_close(out[:, 0], a[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, 1], b[:, 1], atol=1e-5, rtol=1e-4)


def test_load_options_default_to_cpu_float32() -> None:
    options = LoadOptions()
    assert (options.device, options.dtype, options.store) == (
        torch.device("cpu"),
        torch.float32,
        None,
    )


# -- the worker's model cache -------------------------------------------------------------------


@pytest.mark.usefixtures("stand_in")
def test_worker_cache_loads_a_neural_model_once_from_settings(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, model_pull_on_demand=False, model_tta=True)
    _pulled_viperx(settings.model_dir)
    cache = ModelCache(device="cpu", settings=settings)
    first = cache.get("bs-roformer-viperx-1297")
    assert isinstance(first, NeuralSeparator)
    assert first.tta is True
    assert cache.get("bs-roformer-viperx-1297") is first
    assert len(cache) == 1
    with pytest.raises(ModelUnavailableError):
        cache.get("mdx23c-vocals")  # not pulled, and pulling is off


def test_worker_cache_builtins_never_read_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_settings() -> None:
        raise AssertionError("settings read for a built-in model")

    monkeypatch.setattr("workers.model_cache.get_settings", no_settings)
    cache = ModelCache(device="cpu")
    assert cache.get("identity") is cache.get("identity")
