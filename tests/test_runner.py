"""File-level separation: real files in, real stem files out, nothing left behind on failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mss_jobs.audio.decode import probe, read_blocks
from mss_jobs.core.pipeline import SeparationSettings
from mss_jobs.domain.derived import parse_derived
from mss_jobs.errors import AudioDecodeError, ConfigError, NonFiniteAudioError
from mss_jobs.models.identity import IdentitySeparator
from mss_jobs.runner import FileSeparation, OutputSpec, RunProgress, separate_file
from mss_jobs.types import PaddedChunkedAudioTensor, SeparatedChunkedTensor


def _write(path: Path, audio: np.ndarray, rate: int = 44100, subtype: str = "FLOAT") -> Path:
    sf.write(path, audio, rate, subtype=subtype)
    return path


def _run(path: Path, out: Path, **kwargs: object) -> tuple[list[RunProgress], FileSeparation]:
    events = list(separate_file(path, out, **kwargs))  # type: ignore[arg-type]
    result = events[-1]
    assert isinstance(result, FileSeparation)
    progress = [e for e in events[:-1] if isinstance(e, RunProgress)]
    return progress, result


def _settings(sep: IdentitySeparator, **kw: object) -> SeparationSettings:
    return SeparationSettings.for_model(sep, chunk_seconds=0.25, batch_size=3, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_identity_file_round_trip_is_exact_in_float_wav(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    audio = (rng.standard_normal((44100 + 123, channels)) * 0.2).astype(np.float32)
    src = _write(tmp_path / "in.wav", audio)
    sep = IdentitySeparator()
    progress, result = _run(
        src,
        tmp_path / "out",
        separator=sep,
        settings=_settings(sep),
        output=OutputSpec(format="wav", bit_depth=32),
    )
    (stem,) = result.stems
    assert stem.path == tmp_path / "out" / "mixture.wav"
    back, rate = sf.read(stem.path, dtype="float32", always_2d=True)
    assert rate == 44100
    assert back.shape == audio.shape
    np.testing.assert_allclose(back, audio, atol=1e-5)
    stages = [p.stage for p in progress]
    assert stages[0] == "analyze"
    assert stages[-1] == "separate"
    last = progress[-1]
    assert last.done == last.total


def test_output_rate_and_bit_depth(tmp_path: Path) -> None:
    t = np.arange(22050) / 22050
    audio = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32) * 0.5
    src = _write(tmp_path / "in.flac", audio, rate=22050, subtype="PCM_24")
    sep = IdentitySeparator()  # runs at 44.1 kHz: input is resampled up, output down to 48 kHz
    _, result = _run(
        src,
        tmp_path / "out",
        separator=sep,
        settings=_settings(sep),
        output=OutputSpec(format="flac", bit_depth=16, sample_rate=48000),
    )
    info = probe(result.stems[0].path)
    assert (info.sample_rate, info.channels, info.bit_depth) == (48000, 2, 16)
    assert info.frames == 48000  # exactly ceil(22050 * 48000 / 22050)
    back = torch.cat(list(read_blocks(result.stems[0].path)), dim=-1)
    rms_in, rms_out = float(np.sqrt((audio**2).mean())), float(back.pow(2).mean().sqrt())
    assert rms_out == pytest.approx(rms_in, rel=0.01)


def test_derived_and_selected_stems(tmp_path: Path) -> None:
    audio = (np.random.default_rng(0).standard_normal((5000, 2)) * 0.1).astype(np.float32)
    src = _write(tmp_path / "in.wav", audio)
    sep = IdentitySeparator()
    settings = _settings(
        sep, derived=(parse_derived("silence=mixture-mixture"),), stems=("silence",)
    )
    _, result = _run(
        src,
        tmp_path / "out",
        separator=sep,
        settings=settings,
        output=OutputSpec(format="wav", bit_depth=32),
    )
    assert [s.stem for s in result.stems] == ["silence"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["silence.wav"]
    back, _ = sf.read(result.stems[0].path)
    assert np.abs(back).max() < 1e-6


def test_unknown_stem_fails_before_touching_disk(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.wav", np.zeros((100, 2), np.float32))
    sep = IdentitySeparator()
    with pytest.raises(ConfigError, match="vocals"):
        list(
            separate_file(
                src, tmp_path / "out", separator=sep, settings=_settings(sep, stems=("vocals",))
            )
        )
    assert not (tmp_path / "out").exists()


class _FailingSeparator(IdentitySeparator):
    """Breaks on its third call, after stems have started to be written."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def separate(self, chunks: PaddedChunkedAudioTensor) -> SeparatedChunkedTensor:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("model exploded")
        return super().separate(chunks)


def test_failure_mid_separation_leaves_nothing(tmp_path: Path) -> None:
    audio = (np.random.default_rng(1).standard_normal((44100 * 3, 2)) * 0.1).astype(np.float32)
    src = _write(tmp_path / "in.wav", audio)
    sep = _FailingSeparator()
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="exploded"):
        list(
            separate_file(
                src,
                out,
                separator=sep,
                settings=SeparationSettings.for_model(sep, chunk_seconds=0.1, batch_size=1),
            )
        )
    assert sep.calls == 3
    assert not out.exists()  # partial stems removed, and the directory we created too


def test_failure_keeps_an_existing_output_directory_and_its_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    audio = np.zeros((1000, 2), np.float32)
    audio[700, 0] = np.inf
    src = _write(tmp_path / "in.wav", audio)
    sep = IdentitySeparator()
    with pytest.raises(NonFiniteAudioError, match="sample 700 of channel 0"):
        list(separate_file(src, out, separator=sep, settings=_settings(sep)))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_corrupt_input_maps_to_decode_error(tmp_path: Path) -> None:
    src = tmp_path / "noise.flac"
    src.write_bytes(np.random.default_rng(2).bytes(4096))
    sep = IdentitySeparator()
    with pytest.raises(AudioDecodeError, match=r"noise\.flac"):
        list(separate_file(src, tmp_path / "out", separator=sep, settings=_settings(sep)))
    assert not (tmp_path / "out").exists()


def test_rerun_overwrites_instead_of_duplicating(tmp_path: Path) -> None:
    audio = (np.random.default_rng(3).standard_normal((3000, 2)) * 0.1).astype(np.float32)
    src = _write(tmp_path / "in.wav", audio)
    sep = IdentitySeparator()
    for _ in range(2):
        _run(src, tmp_path / "out", separator=sep, settings=_settings(sep))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mixture.flac"]
