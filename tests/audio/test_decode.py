"""probe() and read_blocks(): parameters, round trips, re-blocking, lossy decoding, bad inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch
import torchaudio.functional

import mss_jobs.audio
from mss_jobs.audio.decode import AudioInfo, probe, read_blocks
from mss_jobs.errors import (
    AudioDecodeError,
    EmptyAudioError,
    InputNotFoundError,
    MssError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from conftest import AudioFactory, Signal


def _decode(path: Path, **kwargs: int) -> np.ndarray:
    blocks = list(read_blocks(path, **kwargs))
    return torch.cat(blocks, dim=1).numpy()


# --------------------------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------------------------

SOUNDFILE_CASES = [
    # file name, soundfile format, subtype, rate, channels → format, encoding, bit depth
    ("pcm16.wav", "WAV", "PCM_16", 44100, 1, "wav", "pcm_s16", 16),
    ("pcm24.wav", "WAV", "PCM_24", 48000, 2, "wav", "pcm_s24", 24),
    ("float.wav", "WAV", "FLOAT", 22050, 6, "wav", "float32", 32),
    ("pcm32.wav", "WAV", "PCM_32", 8000, 2, "wav", "pcm_s32", 32),
    ("u8.wav", "WAV", "PCM_U8", 8000, 1, "wav", "pcm_u8", 8),
    ("double.wav", "WAV", "DOUBLE", 8000, 1, "wav", "float64", 64),
    ("extensible.wav", "WAVEX", "PCM_24", 44100, 6, "wav", "pcm_s24", 24),
    ("rf64.wav", "RF64", "PCM_16", 44100, 2, "wav", "pcm_s16", 16),
    ("pcm16.flac", "FLAC", "PCM_16", 44100, 2, "flac", "pcm_s16", 16),
    ("pcm24.flac", "FLAC", "PCM_24", 96000, 6, "flac", "pcm_s24", 24),
    ("vorbis.ogg", "OGG", "VORBIS", 44100, 2, "ogg", "lossy", None),
    ("opus.ogg", "OGG", "OPUS", 48000, 1, "ogg", "lossy", None),
    ("stereo.mp3", "MP3", "MPEG_LAYER_III", 44100, 2, "mp3", "lossy", None),
    ("mono.mp3", "MP3", "MPEG_LAYER_III", 22050, 1, "mp3", "lossy", None),
    ("pcm16.aiff", "AIFF", "PCM_16", 44100, 2, "aiff", "pcm_s16", 16),
    ("pcm24.aiff", "AIFF", "PCM_24", 48000, 6, "aiff", "pcm_s24", 24),
]


@pytest.mark.parametrize(
    ("name", "sf_format", "subtype", "rate", "channels", "fmt", "encoding", "bits"),
    SOUNDFILE_CASES,
    ids=[case[0] for case in SOUNDFILE_CASES],
)
def test_probe_reports_soundfile_formats(
    audio: AudioFactory,
    name: str,
    sf_format: str,
    subtype: str,
    rate: int,
    channels: int,
    fmt: str,
    encoding: str,
    bits: int | None,
) -> None:
    frames = rate // 4 + 17
    signal = audio.sines(frames, sample_rate=rate, channels=channels)
    path = audio.soundfile(name, signal, sample_rate=rate, format=sf_format, subtype=subtype)

    info = probe(path)

    assert info == AudioInfo(
        format=fmt,  # type: ignore[arg-type]
        encoding=encoding,  # type: ignore[arg-type]
        sample_rate=rate,
        channels=channels,
        bit_depth=bits,
        frames=frames,
    )
    assert info.duration_seconds == pytest.approx(frames / rate)


M4A_CASES = [
    ("stereo.m4a", "mp4", 44100, 2),
    ("mono.m4a", "ipod", 48000, 1),
    ("surround.mp4", "mp4", 48000, 6),
]


@pytest.mark.parametrize(("name", "container", "rate", "channels"), M4A_CASES)
def test_m4a_probe_estimates_and_decode_is_exact(
    audio: AudioFactory, name: str, container: str, rate: int, channels: int
) -> None:
    frames = rate // 2 + 123  # not a multiple of AAC's 1024-sample frame
    signal = audio.sines(frames, sample_rate=rate, channels=channels)
    path = audio.pyav(name, signal, sample_rate=rate, container=container)

    info = probe(path)
    decoded = _decode(path, block_frames=5000)

    assert (info.format, info.encoding, info.bit_depth) == ("m4a", "lossy", None)
    assert (info.sample_rate, info.channels) == (rate, channels)
    assert not info.frames_exact
    assert abs(info.frames - frames) <= rate // 1000 + 1  # MP4 stores the duration in ms
    # the edit list drops the encoder's priming, the last packet's duration its padding
    assert decoded.shape == (channels, frames)


def test_probe_estimates_adts_aac(audio: AudioFactory) -> None:
    frames = 30000
    path = audio.pyav(
        "stream.aac",
        audio.sines(frames, sample_rate=44100, channels=2),
        sample_rate=44100,
        container="adts",
    )

    info = probe(path)

    assert (info.format, info.encoding, info.sample_rate, info.channels) == (
        "m4a",
        "lossy",
        44100,
        2,
    )
    assert not info.frames_exact
    assert abs(info.frames - frames) <= 3 * 1024  # bitrate estimate incl. priming/padding


def test_probe_detects_content_not_extension(audio: AudioFactory) -> None:
    signal = audio.sines(1000, sample_rate=8000, channels=1)
    flac_named_wav = audio.soundfile(
        "mislabelled.wav", signal, sample_rate=8000, format="FLAC", subtype="PCM_16"
    )
    m4a_named_mp3 = audio.pyav("mislabelled.mp3", signal, sample_rate=8000)
    no_extension = audio.soundfile(
        "no_extension", signal, sample_rate=8000, format="AIFF", subtype="PCM_24"
    )

    assert probe(flac_named_wav).format == "flac"
    assert probe(m4a_named_mp3).format == "m4a"
    assert probe(no_extension).format == "aiff"


# --------------------------------------------------------------------------------------------
# read_blocks
# --------------------------------------------------------------------------------------------


def test_float_wav_round_trip_is_exact(audio: AudioFactory) -> None:
    signal = audio.sines(5000, sample_rate=16000, channels=2)
    signal[0, 10] = 1.75  # float files keep out-of-range samples
    path = audio.soundfile("f.wav", signal, sample_rate=16000, format="WAV", subtype="FLOAT")

    decoded = _decode(path)

    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, signal)


@pytest.mark.parametrize(
    ("sf_format", "subtype", "bits"), [("FLAC", "PCM_24", 24), ("WAV", "PCM_16", 16)]
)
def test_pcm_round_trip_within_quantization(
    audio: AudioFactory, sf_format: str, subtype: str, bits: int
) -> None:
    signal = audio.sines(5000, sample_rate=44100, channels=2)
    path = audio.soundfile("p.bin", signal, sample_rate=44100, format=sf_format, subtype=subtype)

    decoded = _decode(path)

    assert decoded.shape == signal.shape
    np.testing.assert_allclose(decoded, signal, rtol=0, atol=1.0 / 2 ** (bits - 1))


BLOCK_KINDS = {
    # kind: (file name, writer options, rate, channels)
    "wav": ("x.wav", {"format": "WAV", "subtype": "FLOAT"}, 16000, 2),
    "flac": ("x.flac", {"format": "FLAC", "subtype": "PCM_24"}, 16000, 2),
    "aiff": ("x.aiff", {"format": "AIFF", "subtype": "PCM_16"}, 16000, 1),
    "vorbis": ("x.ogg", {"format": "OGG", "subtype": "VORBIS"}, 44100, 2),
    "opus": ("x.opus", {"format": "OGG", "subtype": "OPUS"}, 48000, 2),
    "mp3-mpeg1": ("x.mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}, 44100, 2),
    "mp3-mpeg2": ("x.mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}, 22050, 1),
    "m4a": ("x.m4a", {"container": "mp4"}, 16000, 2),
}


@pytest.mark.parametrize("block_frames", [1, 100, 2999, 3000, 3001, 262144])
@pytest.mark.parametrize("kind", list(BLOCK_KINDS))
def test_blocks_concatenate_to_the_whole_file(
    audio: AudioFactory, kind: str, block_frames: int
) -> None:
    name, options, rate, channels = BLOCK_KINDS[kind]
    frames = 3000
    signal = audio.sines(frames, sample_rate=rate, channels=channels)
    if kind == "m4a":
        path = audio.pyav(name, signal, sample_rate=rate, **options)
        reference = _decode(path, block_frames=1 << 20)
    else:
        path = audio.soundfile(name, signal, sample_rate=rate, **options)
        reference = sf.read(str(path), dtype="float32", always_2d=True)[0].T  # one read

    blocks = list(read_blocks(path, block_frames=block_frames))

    assert all(b.dtype == torch.float32 and b.shape[0] == channels for b in blocks)
    assert all(b.shape[1] == block_frames for b in blocks[:-1])
    assert 0 < blocks[-1].shape[1] <= block_frames
    assert all(b.is_contiguous() for b in blocks)
    decoded = torch.cat(blocks, dim=1).numpy()
    assert decoded.shape == (channels, frames)
    # soundfile's read() seeks after every call, which breaks mp3 (MPEG-2) and opus decoding:
    # block reads must give the samples of one whole-file read (mpg123 rounds differently by
    # buffer alignment: 1 ulp)
    np.testing.assert_allclose(decoded, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["flac", "m4a"])
def test_read_blocks_is_re_iterable(audio: AudioFactory, kind: str) -> None:
    signal = audio.sines(4000, sample_rate=16000, channels=2)
    if kind == "flac":
        path = audio.soundfile("r.flac", signal, sample_rate=16000, format="FLAC", subtype="PCM_24")
    else:
        path = audio.pyav("r.m4a", signal, sample_rate=16000)
    info = probe(path)

    first = _decode(path, block_frames=1000)
    second = torch.cat(list(read_blocks(path, block_frames=1000, info=info)), dim=1).numpy()

    np.testing.assert_array_equal(first, second)


def test_float_wav_with_nan_and_inf_decodes(audio: AudioFactory) -> None:
    signal = np.zeros((1, 100), dtype=np.float32)
    signal[0, 5], signal[0, 6] = np.nan, np.inf
    path = audio.soundfile("nan.wav", signal, sample_rate=8000, format="WAV", subtype="FLOAT")

    decoded = _decode(path)

    assert np.isnan(decoded[0, 5])
    assert np.isposinf(decoded[0, 6])


def test_block_frames_must_be_positive(audio: AudioFactory) -> None:
    path = audio.soundfile(
        "a.wav", np.zeros((1, 10), np.float32), sample_rate=8000, format="WAV", subtype="FLOAT"
    )
    with pytest.raises(ValueError, match="block_frames=0"):
        read_blocks(path, block_frames=0)


# --------------------------------------------------------------------------------------------
# lossy formats
# --------------------------------------------------------------------------------------------

LOSSY_CASES = [
    # name, writer, options, rate, channels
    ("a.mp3", "soundfile", {"format": "MP3", "subtype": "MPEG_LAYER_III"}, 44100, 2),
    ("b.mp3", "soundfile", {"format": "MP3", "subtype": "MPEG_LAYER_III"}, 22050, 1),
    ("c.ogg", "soundfile", {"format": "OGG", "subtype": "VORBIS"}, 44100, 2),
    ("d.ogg", "soundfile", {"format": "OGG", "subtype": "OPUS"}, 48000, 2),
    ("e.m4a", "pyav", {"container": "mp4"}, 44100, 2),
    ("f.aac", "pyav", {"container": "adts"}, 44100, 1),
    ("g.mp4", "pyav", {"container": "mp4"}, 48000, 6),
]


def _best_alignment_correlation(ref: np.ndarray, out: np.ndarray, max_lag: int) -> float:
    """Pearson correlation of ref and out at the lag (|lag| ≤ max_lag) that maximises it."""
    xcorr = scipy.signal.correlate(out, ref, mode="full", method="fft")
    lags = scipy.signal.correlation_lags(len(out), len(ref), mode="full")
    window = np.abs(lags) <= max_lag
    lag = int(lags[window][np.argmax(xcorr[window])])
    shifted = out[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), out])
    n = min(len(ref), len(shifted)) - 2048  # skip the tail where padding differs
    return float(np.corrcoef(ref[1024:n], shifted[1024:n])[0, 1])


@pytest.mark.parametrize(
    ("name", "writer", "options", "rate", "channels"),
    LOSSY_CASES,
    ids=[case[0] for case in LOSSY_CASES],
)
def test_lossy_decodes_close_to_the_source(
    audio: AudioFactory,
    name: str,
    writer: str,
    options: dict[str, str],
    rate: int,
    channels: int,
) -> None:
    frames = rate // 2
    signal: Signal = audio.sines(frames, sample_rate=rate, channels=channels)
    if channels == 6:  # AAC low-passes the LFE channel (index 3 in 5.1) at 120 Hz
        signal[3] = audio.sines(frames, sample_rate=rate, channels=1, freq=60.0)[0]
    if writer == "soundfile":
        path = audio.soundfile(name, signal, sample_rate=rate, **options)
    else:
        path = audio.pyav(name, signal, sample_rate=rate, **options)

    decoded = _decode(path, block_frames=4096)

    assert decoded.shape[0] == channels
    assert abs(decoded.shape[1] - frames) <= 2048 + 1024  # one frame + encoder delay
    for ch in range(channels):
        ref, out = signal[ch].astype(np.float64), decoded[ch].astype(np.float64)
        rms_db = 20 * np.log10(np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(ref**2)))
        assert abs(rms_db) < 1.0, f"channel {ch}: level off by {rms_db:.2f} dB"
        assert _best_alignment_correlation(ref, out, max_lag=3000) > 0.9, f"channel {ch}"


# --------------------------------------------------------------------------------------------
# bad inputs: the exact error class, a message naming the file, no foreign exception
# --------------------------------------------------------------------------------------------


def _assert_raises(call: Callable[[], object], cls: type[MssError], name: str) -> None:
    """`call()` raises exactly `cls`, naming the file `name`."""
    with pytest.raises(MssError) as exc_info:
        call()
    assert type(exc_info.value) is cls, repr(exc_info.value)
    assert name in str(exc_info.value)


def test_missing_file(tmp_path: Path) -> None:
    _assert_raises(lambda: probe(tmp_path / "nowhere.wav"), InputNotFoundError, "nowhere.wav")
    _assert_raises(lambda: read_blocks(tmp_path / "nowhere.wav"), InputNotFoundError, "nowhere.wav")


def test_directory_is_not_an_input(tmp_path: Path) -> None:
    (tmp_path / "album.wav").mkdir()
    _assert_raises(lambda: probe(tmp_path / "album.wav"), InputNotFoundError, "album.wav")


@pytest.mark.parametrize(
    ("name", "data", "cls"),
    [
        ("empty.wav", b"", EmptyAudioError),
        ("notes.wav", b"this is a text file, not audio\n" * 40, AudioDecodeError),
        ("noise.flac", np.random.default_rng(7).bytes(6000), AudioDecodeError),
        ("noise.m4a", np.random.default_rng(8).bytes(6000), AudioDecodeError),
        ("page.mp3", b"<html><body>" + b"x" * 4000 + b"</body></html>", AudioDecodeError),
        ("subtitles.mp4", b"1\n00:00:01,000 --> 00:00:02,000\nhello\n\n", AudioDecodeError),
    ],
)
def test_garbage_inputs(audio: AudioFactory, name: str, data: bytes, cls: type[MssError]) -> None:
    path = audio.raw(name, data)
    _assert_raises(lambda: probe(path), cls, name)


def test_wav_header_with_zero_frames_is_empty(audio: AudioFactory) -> None:
    path = audio.soundfile(
        "silent.wav", np.zeros((2, 0), np.float32), sample_rate=44100, format="WAV",
        subtype="PCM_16",
    )  # fmt: skip
    _assert_raises(lambda: probe(path), EmptyAudioError, "silent.wav")


def _truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_truncated_wav_decodes_the_frames_present(audio: AudioFactory) -> None:
    signal = audio.sines(8000, sample_rate=16000, channels=2)
    path = _truncate(
        audio.soundfile("cut.wav", signal, sample_rate=16000, format="WAV", subtype="PCM_16")
    )  # the header still declares 8000 frames

    info = probe(path)
    decoded = _decode(path, block_frames=1000)

    assert 3900 <= info.frames < 8000
    assert decoded.shape == (2, info.frames)
    np.testing.assert_allclose(decoded, signal[:, : info.frames], atol=1 / 2**15)


def test_truncated_flac_fails_while_decoding(audio: AudioFactory) -> None:
    signal = audio.sines(16000, sample_rate=16000, channels=2)
    path = _truncate(
        audio.soundfile("cut.flac", signal, sample_rate=16000, format="FLAC", subtype="PCM_16")
    )
    assert probe(path).frames == 16000  # STREAMINFO is intact: the damage shows while decoding

    _assert_raises(lambda: _decode(path, block_frames=1000), AudioDecodeError, "cut.flac")


def test_truncated_ogg_fails_to_open(audio: AudioFactory) -> None:
    signal = audio.sines(22050, sample_rate=44100, channels=2)
    path = _truncate(
        audio.soundfile("cut.ogg", signal, sample_rate=44100, format="OGG", subtype="VORBIS")
    )
    _assert_raises(lambda: probe(path), AudioDecodeError, "cut.ogg")


def test_truncated_mp3_decodes_what_is_there(audio: AudioFactory) -> None:
    signal = audio.sines(44100, sample_rate=44100, channels=2)
    path = _truncate(
        audio.soundfile(
            "cut.mp3", signal, sample_rate=44100, format="MP3", subtype="MPEG_LAYER_III"
        )
    )
    decoded = _decode(path)
    assert decoded.shape[0] == 2
    assert 0.3 * 44100 < decoded.shape[1] < 0.7 * 44100


def test_truncated_m4a_without_index_fails_to_open(audio: AudioFactory) -> None:
    signal = audio.sines(44100, sample_rate=44100, channels=2)
    path = _truncate(audio.pyav("cut.m4a", signal, sample_rate=44100))  # moov atom at the end
    _assert_raises(lambda: probe(path), AudioDecodeError, "cut.m4a")


def test_truncated_faststart_m4a_fails_while_decoding(audio: AudioFactory) -> None:
    signal = audio.sines(44100, sample_rate=44100, channels=2)
    path = _truncate(
        audio.pyav("cut.m4a", signal, sample_rate=44100, options={"movflags": "+faststart"})
    )
    assert probe(path).frames == 44100  # the index up front still promises the whole track
    _assert_raises(lambda: _decode(path), AudioDecodeError, "cut.m4a")


@pytest.mark.parametrize(
    ("name", "writer", "options"),
    [
        ("sun.au", "soundfile", {"format": "AU", "subtype": "PCM_16"}),
        ("apple.caf", "soundfile", {"format": "CAF", "subtype": "PCM_16"}),
        ("ulaw.wav", "soundfile", {"format": "WAV", "subtype": "ULAW"}),
        ("mp3_in.mp4", "pyav", {"container": "mp4", "codec": "libmp3lame"}),
        ("opus.mka", "pyav", {"container": "matroska", "codec": "libopus"}),
    ],
)
def test_recognised_but_unsupported(
    audio: AudioFactory, name: str, writer: str, options: dict[str, str]
) -> None:
    signal = audio.sines(4800, sample_rate=48000, channels=2)
    if writer == "soundfile":
        path = audio.soundfile(name, signal, sample_rate=48000, **options)
    else:
        path = audio.pyav(name, signal, sample_rate=48000, **options)
    _assert_raises(lambda: probe(path), UnsupportedFormatError, name)


def test_file_deleted_between_passes(audio: AudioFactory) -> None:
    path = audio.soundfile(
        "gone.wav", np.zeros((1, 10), np.float32), sample_rate=8000, format="WAV", subtype="FLOAT"
    )
    info = probe(path)
    path.unlink()
    _assert_raises(lambda: list(read_blocks(path, info=info)), InputNotFoundError, "gone.wav")


def test_the_package_streams_a_track_from_file_to_stem(audio: AudioFactory) -> None:
    """`mss_jobs.audio` as a caller uses it, through the package alone: probe a file, read it in
    default-sized blocks, resample the stream, write it as a stem and read the stem back."""
    rate, out_rate, frames = 44100, 48000, mss_jobs.audio.DEFAULT_BLOCK_FRAMES + 1000
    signal = audio.sines(frames, sample_rate=rate, channels=2)
    path = audio.soundfile("mix.wav", signal, sample_rate=rate, format="WAV", subtype="FLOAT")

    info = mss_jobs.audio.probe(path)
    blocks = list(mss_jobs.audio.read_blocks(path, info=info))
    assert (info.sample_rate, info.channels, info.frames) == (rate, 2, frames)
    assert [block.shape[1] for block in blocks] == [mss_jobs.audio.DEFAULT_BLOCK_FRAMES, 1000]

    bit_depth = mss_jobs.audio.validate_output(
        "flac", sample_rate=out_rate, channels=2, bit_depth=None
    )
    stem = path.with_name(f"vocals.{mss_jobs.audio.extension_for('flac')}")
    with mss_jobs.audio.open_writer(
        stem, format="flac", sample_rate=out_rate, channels=2, bit_depth=bit_depth
    ) as writer:
        for block in mss_jobs.audio.resample_blocks(blocks, rate, out_rate, channels=2):
            writer.write(block)

    out_frames = math.ceil(frames * out_rate / rate)
    assert (bit_depth, writer.frames_written) == (24, out_frames)
    assert mss_jobs.audio.probe(stem) == mss_jobs.audio.AudioInfo(
        format="flac",
        encoding="pcm_s24",
        sample_rate=out_rate,
        channels=2,
        bit_depth=24,
        frames=out_frames,
    )
    whole = torchaudio.functional.resample(torch.from_numpy(signal), rate, out_rate).numpy()
    np.testing.assert_allclose(_decode(stem), whole, rtol=0, atol=1e-6)  # 24 bit: 2^-23 steps
