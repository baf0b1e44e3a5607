"""Decode edge: probe an audio file and stream it as float32 blocks; foreign errors mapped here.

Files are recognised by content, never by extension. libsndfile (via soundfile) reads wav, flac,
ogg (vorbis/opus), mp3 and aiff; whatever it cannot open goes to PyAV (`_pyav`), which decodes
m4a/AAC and tells corrupt files from recognised-but-unsupported ones. Both backends feed one
re-blocker, so every format yields the same block shapes.

libsndfile is read strictly sequentially, bypassing `SoundFile.read`: that seeks back to its own
position after every call, and libsndfile's mp3 (MPEG-2, ≤ 24 kHz: the bit reservoir is lost)
and opus (reads ending near either end of the file) decoders return silence or glitches after
such a seek. One sequential decode gives exactly the samples of a whole-file read.

Truncated files: libsndfile shortens a cut wav/aiff to the whole frames present (decoded, no
error); a cut flac fails mid-read and a cut ogg fails to open (`AudioDecodeError`); a cut mp3
decodes what is there (fewer frames than `AudioInfo.frames`, no error); a cut m4a fails to open
(index at the end) or mid-decode (index up front). A lossless file that yields fewer frames than
its header declares raises `AudioDecodeError` after its last block.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import torch

from mss_jobs.audio import _pyav
from mss_jobs.domain.units import AudioEncoding, Channels, FileFormat, SampleRate, Samples
from mss_jobs.errors import (
    AudioDecodeError,
    EmptyAudioError,
    InputError,
    InputNotFoundError,
    UnsupportedFormatError,
)
from mss_jobs.types import RawAudioTensor

__all__ = ["DEFAULT_BLOCK_FRAMES", "AudioInfo", "probe", "read_blocks"]

DEFAULT_BLOCK_FRAMES = 262_144
"""Samples per channel in one decoded block: ~6 s at 44.1 kHz, 2 MiB per stereo float32 block."""

_SOUNDFILE_CONTAINERS: dict[str, FileFormat] = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "FLAC": "flac",
    "OGG": "ogg",
    "MP3": "mp3",
    "AIFF": "aiff",
}
"""libsndfile major formats we accept, by soundfile's name."""

_SOUNDFILE_ENCODINGS: dict[str, tuple[AudioEncoding, int | None]] = {
    "PCM_U8": ("pcm_u8", 8),
    "PCM_16": ("pcm_s16", 16),
    "PCM_24": ("pcm_s24", 24),
    "PCM_32": ("pcm_s32", 32),
    "FLOAT": ("float32", 32),
    "DOUBLE": ("float64", 64),
    "VORBIS": ("lossy", None),
    "OPUS": ("lossy", None),
    "MPEG_LAYER_I": ("lossy", None),
    "MPEG_LAYER_II": ("lossy", None),
    "MPEG_LAYER_III": ("lossy", None),
}
"""libsndfile subtypes we accept → (encoding, bit depth)."""

_SOUNDFILE_ERRORS = (sf.SoundFileError, RuntimeError, OSError)
"""soundfile raises LibsndfileError (a RuntimeError) for every libsndfile failure."""

_MAX_READ_FRAMES = 1 << 20
"""Largest single libsndfile read (its buffer is allocated whole before the read)."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What a file holds, read from its headers (nothing is decoded for soundfile formats)."""

    format: FileFormat
    encoding: AudioEncoding
    sample_rate: SampleRate
    channels: Channels
    bit_depth: int | None
    """Bits per stored sample (float32 → 32); None for lossy encodings."""
    frames: Samples
    """Samples per channel the header declares: exact for soundfile formats (a truncated mp3
    decodes fewer); for m4a the MP4 track duration (±1 ms) or, for ADTS `.aac`, FFmpeg's
    bitrate estimate. Count the decoded samples where the exact length matters."""
    frames_exact: bool = True
    """False where `frames` is an estimate (m4a)."""

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.channels <= 0 or self.frames < 0:
            raise ValueError(
                f"invalid AudioInfo: sample_rate={self.sample_rate} channels={self.channels} "
                f"frames={self.frames}"
            )

    @property
    def duration_seconds(self) -> float:
        """`frames / sample_rate`."""
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Identify an audio file by its content and read its stream parameters.

    Raises InputNotFoundError (missing path, a directory), EmptyAudioError (0 bytes, zero
    frames), AudioDecodeError (not audio, corrupt), UnsupportedFormatError (audio in a container
    or encoding we do not handle), InputError (unreadable, e.g. permissions).
    """
    file = _existing_file(path)
    try:
        with sf.SoundFile(str(file)) as handle:
            container, subtype = handle.format, handle.subtype
            sample_rate, channels, frames = handle.samplerate, handle.channels, handle.frames
    except _SOUNDFILE_ERRORS as exc:
        _existing_file(file)  # vanished meanwhile → InputNotFoundError rather than a decode error
        return _probe_with_pyav(file, libsndfile_detail=_soundfile_detail(exc))
    file_format = _SOUNDFILE_CONTAINERS.get(container)
    if file_format is None:
        raise UnsupportedFormatError(
            f"{file.name}: {container} files are not supported "
            "(supported: wav, flac, ogg, mp3, aiff, m4a)"
        )
    if subtype not in _SOUNDFILE_ENCODINGS:
        raise UnsupportedFormatError(
            f"{file.name}: {subtype} encoding in a {file_format} file is not supported"
        )
    encoding, bit_depth = _SOUNDFILE_ENCODINGS[subtype]
    if sample_rate <= 0 or channels <= 0:
        raise AudioDecodeError(f"{file.name}: invalid header ({sample_rate=}, {channels=})")
    if frames <= 0:
        raise EmptyAudioError(f"{file.name}: the {file_format} header declares zero frames")
    return AudioInfo(
        format=file_format,
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        bit_depth=bit_depth,
        frames=frames,
    )


def read_blocks(
    path: str | os.PathLike[str],
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    info: AudioInfo | None = None,
) -> Iterator[RawAudioTensor]:
    """Stream a file as float32 `(channels, n)` blocks, n ≤ block_frames (only the last shorter).

    Call again for another pass; both passes yield the same samples. The file is probed now
    (unless `info` from `probe` is given), so a bad input fails here, before iteration; decode
    failures partway raise AudioDecodeError from the iterator.
    """
    if block_frames <= 0:
        raise ValueError(f"block_frames must be positive, got {block_frames=}")
    file = _existing_file(path)
    if info is None:
        info = probe(file)
    if info.format == "m4a":
        chunks = _pyav.decode_frames(file, channels=info.channels)
    else:
        read_frames = min(block_frames, _MAX_READ_FRAMES)  # huge blocks are assembled by _reblock
        chunks = _soundfile_chunks(file, info=info, read_frames=read_frames)
    return _reblock(chunks, file=file, block_frames=block_frames)


def _reblock(
    chunks: Generator[npt.NDArray[np.float32], None, None], *, file: Path, block_frames: int
) -> Iterator[RawAudioTensor]:
    """Cut planar `(channels, n)` chunks of any sizes into blocks of exactly `block_frames`.

    Closing this iterator early closes `chunks`, and with it the decoder's file.
    """
    pending: list[npt.NDArray[np.float32]] = []
    pending_frames = 0
    decoded = 0
    with contextlib.closing(chunks):
        for chunk in chunks:
            pending.append(chunk)
            pending_frames += chunk.shape[1]
            decoded += chunk.shape[1]
            if pending_frames < block_frames:
                continue
            merged = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
            start = 0
            while merged.shape[1] - start >= block_frames:
                yield _tensor(merged[:, start : start + block_frames])
                start += block_frames
            pending = [merged[:, start:]]
            pending_frames = merged.shape[1] - start
    if pending_frames:
        yield _tensor(np.concatenate(pending, axis=1))
    if decoded == 0:
        raise AudioDecodeError(f"{file.name}: no audio samples could be decoded")


def _tensor(planar: npt.NDArray[np.float32]) -> RawAudioTensor:
    return RawAudioTensor(torch.from_numpy(np.ascontiguousarray(planar)))


def _soundfile_chunks(
    file: Path, *, info: AudioInfo, read_frames: int
) -> Generator[npt.NDArray[np.float32], None, None]:
    """Planar float32 chunks of `read_frames` from libsndfile; its errors → AudioDecodeError."""
    try:
        handle = sf.SoundFile(str(file))
    except _SOUNDFILE_ERRORS as exc:
        _existing_file(file)
        raise AudioDecodeError(
            f"{file.name}: not a decodable audio file ({_soundfile_detail(exc)})"
        ) from exc
    decoded = 0
    with handle:
        if (handle.samplerate, handle.channels) != (info.sample_rate, info.channels):
            raise AudioDecodeError(
                f"{file.name}: changed since probe ({handle.samplerate} Hz × {handle.channels} "
                f"channels, probed {info.sample_rate} Hz × {info.channels})"
            )
        while True:
            data, error = _read_sequential(handle, read_frames)
            if error:
                raise AudioDecodeError(
                    f"{file.name}: decoding failed after {decoded} frames ({error})"
                )
            if data.shape[0] == 0:
                break
            decoded += data.shape[0]
            yield np.ascontiguousarray(data.T)
    if 0 < decoded < info.frames and info.encoding != "lossy":
        raise AudioDecodeError(
            f"{file.name}: truncated: header declares {info.frames} frames, only {decoded} decode"
        )


def _read_sequential(handle: Any, frames: int) -> tuple[npt.NDArray[np.float32], str | None]:
    """Up to `frames` interleaved `(n, channels)` float32 frames, and libsndfile's error if any.

    Calls libsndfile's `sf_readf_float` through soundfile's cffi binding (`_snd`, `_ffi`, the
    handle's `_file`: the one private soundfile API used here), because `SoundFile.read` seeks
    after every call (see the module docstring).
    """
    lib: Any = sf._snd
    ffi: Any = sf._ffi
    out = np.empty((frames, handle.channels), dtype=np.float32)
    got = int(lib.sf_readf_float(handle._file, ffi.cast("float *", out.ctypes.data), frames))
    code = int(lib.sf_error(handle._file))
    if code:
        message: str = ffi.string(lib.sf_error_number(code)).decode("utf-8", "replace")
        return out[:0], message.strip().rstrip(".")
    return out[:got], None


def _probe_with_pyav(file: Path, *, libsndfile_detail: str) -> AudioInfo:
    facts = _pyav.probe_container(file, libsndfile_detail=libsndfile_detail)
    return AudioInfo(
        format="m4a",
        encoding="lossy",
        sample_rate=facts.sample_rate,
        channels=facts.channels,
        bit_depth=None,
        frames=facts.frames,
        frames_exact=facts.exact,
    )


def _existing_file(path: str | os.PathLike[str]) -> Path:
    """The path as a non-empty regular file, or the input error that says why not."""
    file = Path(path)
    try:
        stat = file.stat()
    except FileNotFoundError as exc:
        raise InputNotFoundError(f"{file}: no such file") from exc
    except OSError as exc:
        raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    if file.is_dir():
        raise InputNotFoundError(f"{file}: is a directory, not an audio file")
    if stat.st_size == 0:
        raise EmptyAudioError(f"{file.name}: file is empty (0 bytes)")
    try:
        file.open("rb").close()  # permissions: fail as unreadable, not as undecodable
    except OSError as exc:
        raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    return file


def _soundfile_detail(exc: BaseException) -> str:
    """libsndfile's own message, without soundfile's "Error opening '<path>': " prefix."""
    detail = getattr(exc, "error_string", None)
    text = detail if isinstance(detail, str) and detail else str(exc)
    return text.strip().rstrip(".")
