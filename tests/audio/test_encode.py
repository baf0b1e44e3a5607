"""StemWriter: formats and bit depths, value round trips, validation, atomicity, clipping."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import soundfile as sf
import torch

from mss_jobs.audio.decode import probe, read_blocks
from mss_jobs.audio.encode import (
    OUTPUT_EXTENSIONS,
    StemWriter,
    extension_for,
    open_writer,
    validate_output,
)
from mss_jobs.errors import ConfigError, EmptyAudioError, OutputError

if TYPE_CHECKING:
    from conftest import AudioFactory


def _write(path: Path, signal: torch.Tensor, *, block: int = 1000, **kwargs: Any) -> StemWriter:
    with open_writer(path, channels=signal.shape[0], **kwargs) as writer:
        for start in range(0, signal.shape[1], block):
            writer.write(signal[:, start : start + block])
    return writer


def _decode(path: Path) -> np.ndarray:
    return torch.cat(list(read_blocks(path)), dim=1).numpy()


VALID = [
    # format, bit depth → probed encoding, probed bit depth
    ("wav", 16, "pcm_s16", 16),
    ("wav", 24, "pcm_s24", 24),
    ("wav", 32, "float32", 32),
    ("wav", None, "pcm_s24", 24),
    ("flac", 16, "pcm_s16", 16),
    ("flac", 24, "pcm_s24", 24),
    ("flac", None, "pcm_s24", 24),
    ("mp3", None, "lossy", None),
]


@pytest.mark.parametrize(("fmt", "bit_depth", "encoding", "probed_bits"), VALID)
@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (22050, 1)])
def test_valid_outputs_probe_back(
    audio: AudioFactory,
    tmp_path: Path,
    fmt: str,
    bit_depth: int | None,
    encoding: str,
    probed_bits: int | None,
    rate: int,
    channels: int,
) -> None:
    signal = torch.from_numpy(audio.sines(rate // 10, sample_rate=rate, channels=channels))
    path = tmp_path / f"stem.{extension_for(fmt)}"  # type: ignore[arg-type]

    writer = _write(path, signal, format=fmt, sample_rate=rate, bit_depth=bit_depth)
    info = probe(path)

    assert writer.path == path
    assert writer.frames_written == signal.shape[1]
    assert (info.format, info.encoding, info.bit_depth) == (fmt, encoding, probed_bits)
    assert (info.sample_rate, info.channels, info.frames) == (rate, channels, signal.shape[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial left


def test_six_channel_flac_and_wav(audio: AudioFactory, tmp_path: Path) -> None:
    signal = torch.from_numpy(audio.sines(2000, sample_rate=48000, channels=6))
    for fmt in ("wav", "flac"):
        path = tmp_path / f"surround.{fmt}"
        _write(path, signal, format=fmt, sample_rate=48000, bit_depth=24)
        assert probe(path).channels == 6
        np.testing.assert_allclose(_decode(path), signal.numpy(), atol=0.5 / 2**23)


def test_float_wav_round_trip_is_exact(tmp_path: Path) -> None:
    signal = torch.randn(2, 3001, generator=torch.Generator().manual_seed(0)) * 2  # beyond ±1
    path = tmp_path / "f.wav"

    writer = _write(path, signal, block=777, format="wav", sample_rate=48000, bit_depth=32)

    np.testing.assert_array_equal(_decode(path), signal.numpy())
    assert writer.clipped_samples == 0  # float keeps them


@pytest.mark.parametrize(("fmt", "bits"), [("wav", 16), ("wav", 24), ("flac", 16), ("flac", 24)])
def test_pcm_round_trip_within_half_an_lsb(tmp_path: Path, fmt: str, bits: int) -> None:
    generator = torch.Generator().manual_seed(bits)
    signal = (torch.rand(2, 3000, generator=generator) * 2 - 1) * 0.999
    signal[:, :4] = torch.tensor([[1.0, -1.0, 0.0, 0.5], [-1.0, 1.0, 0.25, -0.5]])
    path = tmp_path / f"p.{fmt}"

    _write(path, signal, format=fmt, sample_rate=44100, bit_depth=bits)

    lsb = 1.0 / 2 ** (bits - 1)
    decoded = _decode(path)
    np.testing.assert_allclose(decoded[:, 4:], signal.numpy()[:, 4:], rtol=0, atol=0.5 * lsb)
    np.testing.assert_allclose(decoded[:, :4], signal.numpy()[:, :4], rtol=0, atol=lsb)


def test_mp3_round_trip_keeps_the_signal(audio: AudioFactory, tmp_path: Path) -> None:
    signal = audio.sines(22050, sample_rate=44100, channels=2)
    path = tmp_path / "s.mp3"

    _write(path, torch.from_numpy(signal), format="mp3", sample_rate=44100)

    decoded = _decode(path)
    assert decoded.shape == signal.shape  # libsndfile's LAME writes gapless info
    for ch in range(2):
        ratio = np.sqrt(np.mean(decoded[ch] ** 2) / np.mean(signal[ch] ** 2))
        assert abs(20 * np.log10(ratio)) < 0.5
        assert np.corrcoef(decoded[ch, 2000:-2000], signal[ch, 2000:-2000])[0, 1] > 0.99


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"format": "flac", "bit_depth": 32}, "flac cannot be written with bit_depth=32"),
        ({"format": "mp3", "bit_depth": 24}, "mp3 cannot be written with bit_depth=24"),
        ({"format": "mp3", "bit_depth": 16}, "mp3 cannot be written with bit_depth=16"),
        ({"format": "wav", "bit_depth": 8}, "wav cannot be written with bit_depth=8"),
        ({"format": "ogg", "bit_depth": None}, "unknown output format 'ogg'"),
        ({"format": "mp3", "sample_rate": 96000}, "mp3 cannot store sample_rate=96000"),
        ({"format": "mp3", "channels": 6}, "mp3 stores at most 2 channels, got channels=6"),
        ({"format": "flac", "channels": 9}, "flac stores at most 8 channels, got channels=9"),
        ({"format": "flac", "sample_rate": 700_000}, "sample_rate=700000"),
        ({"format": "wav", "sample_rate": 0}, "sample_rate=0"),
    ],
)
def test_invalid_combinations_raise_before_any_file(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    options: dict[str, Any] = {"sample_rate": 44100, "channels": 2, "bit_depth": None, **kwargs}
    with pytest.raises(ConfigError, match=match):
        open_writer(tmp_path / "x.out", **options)
    with pytest.raises(ConfigError, match=match):
        validate_output(options.pop("format"), **options)
    assert list(tmp_path.iterdir()) == []


def test_partial_file_is_hidden_until_commit(tmp_path: Path) -> None:
    path = tmp_path / "vocals.flac"
    writer = open_writer(path, format="flac", sample_rate=8000, channels=1, bit_depth=16)
    writer.write(torch.zeros(1, 100))

    assert not path.exists()
    assert writer.partial_path.parent == tmp_path
    assert writer.partial_path.name.startswith(".vocals.flac.")
    assert writer.partial_path.name.endswith(".partial")
    assert writer.partial_path.exists()

    assert writer.commit() == path
    assert path.exists()
    assert not writer.partial_path.exists()
    assert writer.commit() == path  # idempotent
    writer.abort()  # no-op once committed
    assert path.exists()


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    def fail_midway() -> None:
        with open_writer(tmp_path / "drums.wav", format="wav", sample_rate=8000, channels=2) as w:
            w.write(torch.zeros(2, 500))
            assert w.partial_path.exists()
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        fail_midway()
    assert list(tmp_path.iterdir()) == []


def test_abort_leaves_nothing_and_closes_the_writer(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "bass.mp3", format="mp3", sample_rate=44100, channels=2)
    writer.write(torch.zeros(2, 5000))
    writer.abort()
    writer.abort()

    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="aborted"):
        writer.write(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="aborted"):
        writer.commit()


def test_commit_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "other.wav"
    path.write_bytes(b"old output of an earlier attempt")
    _write(path, torch.full((1, 10), 0.5), format="wav", sample_rate=8000, bit_depth=32)
    np.testing.assert_array_equal(_decode(path), np.full((1, 10), 0.5, dtype=np.float32))


def test_missing_directory_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no_such_dir") as exc_info:
        open_writer(tmp_path / "no_such_dir" / "x.wav", format="wav", sample_rate=8000, channels=1)
    assert type(exc_info.value) is OutputError
    assert list(tmp_path.iterdir()) == []


def test_write_failure_is_an_output_error_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_writer(tmp_path / "x.flac", format="flac", sample_rate=8000, channels=1)
    writer.write(torch.zeros(1, 100))

    def disk_full(data: Any) -> None:
        raise sf.LibsndfileError(2, prefix="Error writing: ")  # libsndfile's "system error"

    monkeypatch.setattr(writer._file, "write", disk_full)
    with pytest.raises(OutputError, match=r"x\.flac") as exc_info:
        writer.write(torch.zeros(1, 100))
    assert type(exc_info.value) is OutputError
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fmt", "bit_depth"), [("wav", 16), ("wav", 24), ("flac", 16), ("mp3", None)]
)
def test_clipped_samples_are_counted_and_clipped(
    tmp_path: Path, fmt: str, bit_depth: int | None
) -> None:
    signal = torch.zeros(2, 2000)
    signal[0, 100:103] = torch.tensor([1.5, -2.0, 1.0])  # two beyond ±1; exactly 1.0 is fine
    signal[1, 500] = float("inf")
    path = tmp_path / f"c.{fmt}"

    writer = _write(path, signal, format=fmt, sample_rate=44100, bit_depth=bit_depth)

    assert writer.clipped_samples == 3
    decoded = _decode(path)
    assert np.all(np.abs(decoded) <= 1.0 + 1e-3)
    if fmt != "mp3":  # clipped to full scale, not wrapped around
        assert decoded[0, 100] == pytest.approx(1.0, abs=1e-4)
        assert decoded[0, 101] == -1.0
        assert decoded[1, 500] == pytest.approx(1.0, abs=1e-4)


def test_nan_in_pcm_output_becomes_silence(tmp_path: Path) -> None:
    signal = torch.full((1, 10), 0.25)
    signal[0, 3] = float("nan")
    path = tmp_path / "n.wav"

    _write(path, signal, format="wav", sample_rate=8000, bit_depth=16)

    decoded = _decode(path)
    assert decoded[0, 3] == 0.0
    assert decoded[0, 4] == 0.25


def test_empty_stems(tmp_path: Path) -> None:
    wav = _write(tmp_path / "e.wav", torch.zeros(2, 0), format="wav", sample_rate=8000)
    assert wav.path.exists()  # a valid wav with zero frames …
    with pytest.raises(EmptyAudioError):
        probe(wav.path)  # … which the decoder rejects as empty

    with pytest.raises(OutputError, match="empty stem as flac"):
        _write(tmp_path / "e.flac", torch.zeros(2, 0), format="flac", sample_rate=8000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.wav"]


def test_block_shape_is_checked(tmp_path: Path) -> None:
    with open_writer(tmp_path / "s.wav", format="wav", sample_rate=8000, channels=2) as writer:
        with pytest.raises(ValueError, match=r"\(2, n\) block, got shape \(1, 10\)"):
            writer.write(torch.zeros(1, 10))
        writer.write(torch.zeros(2, 10, dtype=torch.float64))  # any float dtype is fine
    assert probe(tmp_path / "s.wav").frames == 10


def test_extensions() -> None:
    assert dict(OUTPUT_EXTENSIONS) == {"wav": "wav", "flac": "flac", "mp3": "mp3"}
    assert extension_for("flac") == "flac"
    with pytest.raises(ConfigError, match="'aiff'"):
        extension_for("aiff")  # type: ignore[arg-type]
