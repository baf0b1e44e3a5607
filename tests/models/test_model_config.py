"""Model configs: MSST YAML (safe loader, sections, stems rule) and splifft JSON (translated to
MSST's vocabulary, checked against splifft's own models), with errors naming file and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
import torch

from mss_jobs.domain.units import WindowShape
from mss_jobs.domain.units import WindowShape as CoreWindowShape
from mss_jobs.errors import ConfigError
from mss_jobs.models.config import (
    ModelConfig,
    config_from_msst,
    detect_msst_architecture,
    load_model_config,
    read_msst_yaml,
    read_splifft_json,
    safe_load_yaml,
)
from mss_jobs.models.nn.htdemucs import build_htdemucs
from mss_jobs.models.nn.mdx23c import build_mdx23c
from mss_jobs.models.nn.roformer import build_bs_roformer, build_mel_band_roformer

SPLIFFT_CONFIGS = Path(__import__("splifft").__file__).parent / "data" / "config"

BS_YAML = """\
audio:
  chunk_size: 88200
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.0
model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  freqs_per_bands: !!python/tuple
    - 64
    - 193
  dim_head: 8
  heads: 2
  stft_n_fft: 512
  stft_hop_length: 128
  stft_win_length: 512
  mask_estimator_depth: 2
  multi_stft_resolutions_window_sizes: !!python/tuple [256, 128]
training:
  instruments: [vocals, other]
  target_instrument: vocals
  lr: 1.0e-05
inference:
  batch_size: 3
  num_overlap: 4
"""


def _yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the safe YAML loader -----------------------------------------------------------------------


def test_python_tuple_tag_becomes_a_tuple_and_exponent_floats_are_floats() -> None:
    data = safe_load_yaml(
        "a: !!python/tuple [1, 2]\nb: 1e-3\nc: 1.0e-05\nd: '1e-3'\ne: 12\n", source="t.yaml"
    )
    assert data == {"a": (1, 2), "b": 0.001, "c": 1e-05, "d": "1e-3", "e": 12}
    assert isinstance(data["a"], tuple)


@pytest.mark.parametrize(
    "text",
    [
        "x: !!python/object/apply:os.system ['echo pwned']\n",
        "x: !!python/name:os.system\n",
        "x: !!python/object:collections.OrderedDict {}\n",
    ],
)
def test_unsafe_tags_are_refused_naming_the_file(text: str) -> None:
    with pytest.raises(ConfigError, match=r"evil\.yaml"):
        safe_load_yaml(text, source="evil.yaml")


def test_the_loader_does_not_teach_pyyaml_itself() -> None:
    import yaml

    assert yaml.safe_load("b: 1e-3") == {"b": "1e-3"}  # YAML 1.1 as before
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("a: !!python/tuple [1, 2]")


def test_window_shape_matches_the_core_vocabulary() -> None:
    assert get_args(WindowShape) == get_args(CoreWindowShape)


# -- MSST ---------------------------------------------------------------------------------------


def test_msst_bs_roformer_config(tmp_path: Path) -> None:
    config = load_model_config(_yaml(tmp_path, BS_YAML), architecture="bs_roformer")
    assert config.architecture == "bs_roformer"
    assert config.stems == ("vocals",)  # target_instrument wins over instruments
    assert (config.sample_rate, config.channels) == (44100, 2)
    assert config.chunk_size == 88200
    assert config.chunk_seconds == pytest.approx(2.0)
    assert config.overlap == pytest.approx(0.75)  # num_overlap 4: a chunk every quarter
    assert config.batch_size == 3
    assert config.normalize is False
    assert config.params["freqs_per_bands"] == (64, 193)
    assert config.source is not None
    assert config.source.endswith("config.yaml")
    model = build_bs_roformer(config.params)  # the builder takes the section as is
    assert isinstance(model, torch.nn.Module)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_model_config(_yaml(tmp_path, BS_YAML))
    with pytest.raises(ValueError, match="frozen"):
        config.sample_rate = 48000  # type: ignore[misc]


def test_architecture_is_told_from_the_keys() -> None:
    assert detect_msst_architecture({"model": {"freqs_per_bands": [1]}}, source="s") == (
        "bs_roformer"
    )
    assert detect_msst_architecture({"model": {"num_bands": 60}}, source="s") == (
        "mel_band_roformer"
    )
    mdx = {"model": {"num_scales": 5, "num_subbands": 4, "growth": 128}}
    assert detect_msst_architecture(mdx, source="s") == "mdx23c"
    assert detect_msst_architecture({"model": "htdemucs"}, source="s") == "htdemucs"
    with pytest.raises(ConfigError, match="cannot tell"):
        detect_msst_architecture({"model": {"dim": 8}}, source="s")
    with pytest.raises(ConfigError, match="bs_roformer"):
        detect_msst_architecture({"model": "bs_roformer"}, source="s")


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  chunk_size: 88200\n", "", r"`audio\.chunk_size` is missing"),
        ("  chunk_size: 88200", "  chunk_size: -5", r"`audio\.chunk_size` must be an integer"),
        ("  num_stems: 1", "  num_stems: 2", r"`model\.num_stems` is 2"),
        ("  num_channels: 2", "  num_channels: 1", r"`audio\.num_channels` is 1"),
        ("  target_instrument: vocals", "  target_instrument: null\n  other: 1", "num_stems"),
        ("  num_overlap: 4", "  num_overlap: 0", r"`inference\.num_overlap`"),
        ("  batch_size: 3", "  batch_size: many", r"`inference\.batch_size`"),
        ("inference:\n", "inference:\n  normalize: maybe\n", r"`inference\.normalize`"),
        ("  target_instrument: vocals", "  target_instrument: 7", "target_instrument"),
    ],
)
def test_msst_errors_name_the_file_and_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = _yaml(tmp_path, _edit(BS_YAML, old, new))
    with pytest.raises(ConfigError, match=message) as error:
        load_model_config(path)
    assert str(path) in str(error.value)


def test_msst_instruments_must_be_names() -> None:
    data = {"audio": {"chunk_size": 10}, "model": {"dim": 1}, "training": {"instruments": "x"}}
    with pytest.raises(ConfigError, match=r"`training\.instruments`"):
        config_from_msst(data, source="s.yaml", architecture="bs_roformer")
    data["training"] = {"instruments": ["a", "a"]}
    with pytest.raises(ConfigError, match="twice"):
        config_from_msst(data, source="s.yaml", architecture="bs_roformer")


def test_msst_mel_band_roformer_rates_must_agree() -> None:
    data = {
        "audio": {"chunk_size": 44100, "sample_rate": 44100},
        "model": {"dim": 8, "depth": 1, "num_bands": 8, "sample_rate": 48000},
        "training": {"instruments": ["vocals"], "target_instrument": None},
    }
    with pytest.raises(ConfigError, match=r"`model\.sample_rate` is 48000"):
        config_from_msst(data, source="m.yaml")
    data["model"]["sample_rate"] = 44100  # type: ignore[index]
    config = config_from_msst(data, source="m.yaml")
    assert config.architecture == "mel_band_roformer"
    assert config.channels == 1  # MSST's roformers default to mono


def test_msst_mdx23c_config_goes_through_the_flattening() -> None:
    data = {
        "audio": {"chunk_size": 16384, "dim_f": 192, "hop_length": 128, "n_fft": 512,
                  "num_channels": 2, "sample_rate": 44100, "dim_t": 129},
        "model": {"act": "gelu", "bottleneck_factor": 4, "growth": 8, "norm": "InstanceNorm",
                  "num_blocks_per_scale": 1, "num_channels": 8, "num_scales": 2,
                  "num_subbands": 2, "scale": [2, 2]},
        "training": {"instruments": ["vocals", "other"], "target_instrument": None},
        "inference": {"batch_size": 1, "num_overlap": 4},
    }  # fmt: skip
    config = config_from_msst(data, source="mdx.yaml")
    assert config.architecture == "mdx23c"
    assert config.stems == ("vocals", "other")
    assert config.params["audio_channels"] == 2
    assert config.params["n_fft"] == 512
    build_mdx23c(config.params)
    data["model"]["n_fft"] = 1024  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"mdx\.yaml"):
        config_from_msst(data, source="mdx.yaml")


HTDEMUCS_YAML = """\
audio:
  chunk_size: 88200
training:
  segment: 2
  samplerate: 44100
  channels: 2
  instruments: ['drums', 'bass', 'other', 'vocals']
  target_instrument: null
inference:
  num_overlap: 4
model: htdemucs
htdemucs:
  channels: 8
  depth: 3
  nfft: 1024
  t_layers: 1
  t_heads: 4
  bottom_channels: 16
  dconv_init: 1e-3
  num_subbands: 1
"""


def test_msst_htdemucs_config(tmp_path: Path) -> None:
    config = load_model_config(_yaml(tmp_path, HTDEMUCS_YAML))
    assert config.architecture == "htdemucs"
    assert config.stems == ("drums", "bass", "other", "vocals")
    assert (config.sample_rate, config.channels, config.chunk_size) == (44100, 2, 88200)
    assert config.overlap == pytest.approx(0.75)
    assert config.params["sources"] == ["drums", "bass", "other", "vocals"]
    assert config.params["dconv_init"] == pytest.approx(1e-3)
    model = build_htdemucs(config.params)
    assert model.segment_samples == 88200


def test_msst_htdemucs_without_chunk_size_uses_the_segment(tmp_path: Path) -> None:
    config = load_model_config(_yaml(tmp_path, _edit(HTDEMUCS_YAML, "  chunk_size: 88200\n", "")))
    assert config.chunk_size == 88200


# -- files --------------------------------------------------------------------------------------


def test_unknown_suffix_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="suffix"):
        load_model_config(_yaml(tmp_path, BS_YAML, "config.toml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_model_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="top level"):
        read_msst_yaml("- 1\n- 2\n", source="list.yaml")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_splifft_json("{", source="broken.json")


# -- splifft ------------------------------------------------------------------------------------

_SEPARATION_CONFIGS = sorted(
    path
    for path in SPLIFFT_CONFIGS.glob("*.json")
    if path.name.startswith(("bs_roformer-", "mel_roformer-", "mdx23c-"))
)
# Published heads and norms our architectures do not implement (see roformer.py): refused.
_REFUSED = {
    "bs_roformer-fruit-sw.json": "rms_norm_eps",
    "bs_roformer-unwa-hyperace_v1_instrum.json": "mask_estimator",
    "bs_roformer-unwa-hyperace_v2_instrum.json": "mask_estimator",
    "bs_roformer-unwa-hyperace_v2_vocals.json": "mask_estimator",
    "mel_roformer-unwa-large_inst_v2.json": "mask_estimator",
}


def test_splifft_ships_the_configs_we_read() -> None:
    assert len(_SEPARATION_CONFIGS) > 50


@pytest.mark.parametrize("path", _SEPARATION_CONFIGS, ids=lambda path: path.stem)
def test_every_shipped_splifft_separation_config_reads_or_is_refused_by_key(path: Path) -> None:
    if path.name in _REFUSED:
        with pytest.raises(ConfigError, match=rf"`model\.{_REFUSED[path.name]}`") as error:
            load_model_config(path)
        assert path.name in str(error.value)
        return
    config = load_model_config(path)
    raw = json.loads(path.read_text())
    assert config.stems == tuple(raw["model"]["output_stem_names"])
    assert config.chunk_size == raw["model"]["chunk_size"]
    assert config.batch_size == raw.get("inference", {}).get("batch_size", 8)
    expected = {"fixed": "bs_roformer", "mel": "mel_band_roformer"}
    kind = raw["model"].get("band_config", {}).get("kind")
    assert config.architecture == expected.get(kind, "mdx23c")


def _splifft_json(name: str, **model_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SPLIFFT_CONFIGS / name).read_text())
    data["model"].update(model_changes)
    return data


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("bs_roformer-viperx-1297.json", {"dim": 16, "depth": 1}),
        ("mel_roformer-kim-vocals.json", {"dim": 16, "depth": 1}),
        ("bs_roformer-zfturbo-musdb18.json", {"dim": 16, "depth": 1}),
    ],
)
def test_splifft_roformer_translation_builds_spliffts_parameters(
    name: str, changes: dict[str, Any]
) -> None:
    """Our model from the translated config has exactly splifft's parameter names and shapes
    (so splifft-compatible checkpoints load): the defaults and quirks were carried over."""
    from splifft.config import Config
    from splifft.models.bs_roformer import BSRoformer, BSRoformerParams

    data = _splifft_json(name, **changes)
    reference = BSRoformer(Config.model_validate(data).model.to_concrete(BSRoformerParams))
    config = read_splifft_json(json.dumps(data), source=name)
    builder = build_bs_roformer if config.architecture == "bs_roformer" else build_mel_band_roformer
    ours = builder(config.params)
    # splifft computes rotary frequencies instead of storing them, and keeps shared biases;
    # the community checkpoints carry `rotary_embed.freqs`, which ours therefore has.
    ours_shapes = {k: v for k, v in _shapes(ours).items() if not k.endswith("rotary_embed.freqs")}
    reference_shapes = {k: v for k, v in _shapes(reference).items() if "shared_" not in k}
    assert ours_shapes == reference_shapes


def test_splifft_mdx23c_translation_builds_spliffts_parameters() -> None:
    from splifft.config import Config
    from splifft.models.mdx23c import MDX23C, MDX23CParams

    data = _splifft_json(
        "mdx23c-zfturbo-vocals_hq.json",
        hidden_channels=8,
        growth=8,
        num_scales=2,
        num_blocks_per_scale=1,
        dim_f=256,
        num_subbands=2,
    )
    data["transform"].update(n_fft=1024, win_length=1024, hop_length=256)
    config = read_splifft_json(json.dumps(data), source="mdx.json")
    assert (config.architecture, config.stems, config.overlap) == (
        "mdx23c",
        ("vocals", "other"),
        0.75,
    )
    reference = MDX23C(Config.model_validate(data).model.to_concrete(MDX23CParams))
    assert _shapes(build_mdx23c(config.params)) == _shapes(reference)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "beat_this"}, "model_type"),
        ({"extra_section": {}}, "extra_section"),
        ({"inference": {"requested_stems": ["nope"]}}, "requested_stems"),
        ({"transform": {"kind": "mel"}}, r"`transform\.kind`"),
        ({"transform": {"kind": "stft", "hop_length": 512}}, r"`model\.stft_hop_length`"),
        ({"waveform_chunking": {"overlap_ratio": 1.5}}, "overlap_ratio"),
        ({"waveform_chunking": {"window_shape": "kaiser"}}, "window_shape"),
    ],
)
def test_splifft_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    data = {**_splifft_json("bs_roformer-viperx-1297.json"), **change}
    with pytest.raises(ConfigError, match=message) as error:
        read_splifft_json(json.dumps(data), source="x.json")
    assert "x.json" in str(error.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"norm_output": True}, "norm_output"),
        ({"ff_mult": 2}, "ff_mult"),
        ({"use_shared_bias": True}, "use_shared_bias"),
        ({"zero_dc": True}, "zero_dc"),
        ({"dim": None}, r"`model\.dim` is missing"),
    ],
)
def test_splifft_roformer_features_msst_cannot_express_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    data = _splifft_json("bs_roformer-viperx-1297.json", **changes)
    with pytest.raises(ConfigError, match=message):
        read_splifft_json(json.dumps(data), source="x.json")


def test_splifft_chunking_and_normalization() -> None:
    data = _splifft_json("bs_roformer-viperx-1297.json")
    data["waveform_chunking"] = {"overlap_ratio": 0.25, "window_shape": "hamming"}
    data["normalization"] = {"enabled": True}
    data["audio_io"] = {"target_sample_rate": 48000}
    config = read_splifft_json(json.dumps(data), source="x.json")
    assert (config.overlap, config.window, config.normalize) == (0.25, "hamming", True)
    assert config.sample_rate == 48000
    assert config.params["time_transformer_depth"] == 1  # splifft's default, not MSST's 2


def test_json_architecture_must_match_the_one_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_splifft_json("mdx23c-zfturbo-vocals_hq.json")))
    assert load_model_config(path).architecture == "mdx23c"
    with pytest.raises(ConfigError, match="expected bs_roformer"):
        load_model_config(path, architecture="bs_roformer")


def test_model_config_validates_its_fields() -> None:
    fields: dict[str, Any] = {
        "architecture": "bs_roformer",
        "params": {},
        "sample_rate": 44100,
        "channels": 2,
        "stems": ("a", "b"),
        "chunk_size": 100,
        "overlap": 0.5,
    }
    assert ModelConfig(**fields).batch_size == 1
    for bad in ({"stems": ("a", "a")}, {"overlap": 1.0}, {"architecture": "unet"}, {"stems": ()}):
        with pytest.raises(ValueError):  # noqa: PT011 (pydantic's message varies by field)
            ModelConfig(**{**fields, **bad})
