"""A real neural architecture end to end through `mss-jobs separate`: a small BS-RoFormer built
by our builder with seeded random weights, saved as community-style files (MSST YAML with
`!!python/tuple`, a Lightning-style `state_dict` checkpoint with `model.` prefixes), separated in
overlapping chunks by the streaming pipeline. Random weights make no music; what is checked is
that the whole path — config, weights, module, chunking, stitching, derived stems, encoding —
holds together, and that a checkpoint that does not fit its config is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner, Result

from mss_jobs.cli import main
from mss_jobs.models.config import load_model_config
from mss_jobs.models.registry import build_module

pytestmark = pytest.mark.timeout(300)

RATE = 44100

BS_ROFORMER_YAML = """\
audio:
  chunk_size: 44100
  num_channels: 2
  sample_rate: 44100
model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 2
  time_transformer_depth: 1
  freq_transformer_depth: 1
  freqs_per_bands: !!python/tuple [2, 2, 4, 8, 16, 32, 65]
  dim_head: 8
  heads: 2
  attn_dropout: 0.1
  ff_dropout: 0.1
  flash_attn: true
  stft_n_fft: 256
  stft_hop_length: 64
  stft_win_length: 256
  stft_normalized: false
  mask_estimator_depth: 2
training:
  instruments: [vocals, other]
  target_instrument: null
inference:
  batch_size: 2
  num_overlap: 2
"""


def _checkpoint(tmp_path: Path, config_path: Path) -> Path:
    torch.manual_seed(0)
    module = build_module(load_model_config(config_path))
    path = tmp_path / "model.ckpt"
    # Lightning layout: a `state_dict` container with `model.`-prefixed keys.
    state = {f"model.{key}": value for key, value in module.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    return path


def _separate(tmp_path: Path, song: str, config: Path, checkpoint: Path, *options: str) -> Result:
    """`mss separate tmp_path/song -o tmp_path/out` with `config` and `checkpoint`, quietly."""
    return CliRunner().invoke(
        main,
        [
            "separate",
            str(tmp_path / song),
            "-o",
            str(tmp_path / "out"),
            "--model-config",
            str(config),
            "--checkpoint",
            str(checkpoint),
            *options,
            "-q",
        ],
    )


def test_a_bs_roformer_checkpoint_separates_a_track(tmp_path: Path) -> None:
    config = tmp_path / "bs_roformer.yaml"
    config.write_text(BS_ROFORMER_YAML)
    checkpoint = _checkpoint(tmp_path, config)
    mix = np.random.default_rng(3).uniform(-0.5, 0.5, (int(RATE * 2.5), 2)).astype(np.float32)
    sf.write(tmp_path / "song.wav", mix, RATE, subtype="FLOAT")

    result = _separate(
        tmp_path,
        "song.wav",
        config,
        checkpoint,
        "--format",
        "wav",
        "--bit-depth",
        "32",
        "--derive",
        "karaoke=mixture-vocals",
    )

    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "song"
    assert sorted(p.name for p in out.iterdir()) == ["karaoke.wav", "other.wav", "vocals.wav"]
    vocals, rate = sf.read(out / "vocals.wav", dtype="float32", always_2d=True)
    karaoke, _ = sf.read(out / "karaoke.wav", dtype="float32", always_2d=True)
    assert rate == RATE
    assert vocals.shape == mix.shape
    assert np.isfinite(vocals).all()
    assert float(np.abs(vocals).max()) > 1e-4  # the network produced something
    np.testing.assert_allclose(karaoke, mix - vocals, atol=1e-5)


def test_a_wrong_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bs_roformer.yaml"
    config.write_text(BS_ROFORMER_YAML)
    other = tmp_path / "other.yaml"
    other.write_text(BS_ROFORMER_YAML.replace("dim: 16", "dim: 24"))
    checkpoint = _checkpoint(tmp_path, other)
    sf.write(tmp_path / "a.wav", np.zeros((RATE, 2), np.float32), RATE)

    result = _separate(tmp_path, "a.wav", config, checkpoint)

    assert result.exit_code == 2
    assert "model.checkpoint_invalid" in result.output
    assert "another shape" in result.output
