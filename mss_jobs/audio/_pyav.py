"""PyAV adapter: decodes m4a/AAC, and names what a file libsndfile rejected actually is.

libsndfile opens wav, flac, ogg, mp3 and aiff; everything it cannot open comes here. FFmpeg's
verdict decides the error: an MP4-family or ADTS container with AAC audio is decoded; a format
libsndfile should have read is corrupt (`AudioDecodeError`); another container with real audio is
recognised but not handled (`UnsupportedFormatError`); no audio at all is not decodable.
Every PyAV exception is mapped here, at the edge that calls it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from mss_jobs.errors import AudioDecodeError, EmptyAudioError, UnsupportedFormatError

__all__ = ["ContainerFacts", "decode_frames", "probe_container"]

_MP4_FAMILY = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2"})
"""FFmpeg names one demuxer for all of these: 'mov,mp4,m4a,3gp,3g2,mj2'."""

_ADTS = "aac"
"""FFmpeg's demuxer for raw ADTS AAC streams (`.aac` files)."""

_LIBSNDFILE_CONTAINERS = frozenset({"wav", "w64", "flac", "ogg", "mp3", "aiff"})
"""Containers libsndfile handles: if it refused one, the file is broken, not unsupported."""

_INT_SCALE: dict[str, float] = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}
"""Full scale of FFmpeg's signed integer sample formats (planar variants end in 'p')."""

_FFMPEG_ERRORS = (av.FFmpegError, OSError, EOFError, ValueError)
"""What PyAV raises: FFmpegError subclasses that also derive from these builtins."""


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """What FFmpeg's headers say about an m4a/AAC file we will decode."""

    container: str
    """FFmpeg's demuxer name, e.g. 'mov,mp4,m4a,3gp,3g2,mj2' or 'aac'."""
    codec: str
    sample_rate: int
    channels: int
    frames: int
    """Samples per channel: the MP4 track duration (rounded to the movie timescale, often 1 ms),
    or FFmpeg's bitrate estimate for ADTS; counted by decoding only when neither exists."""
    exact: bool
    """True only when `frames` was counted by decoding the whole stream."""


def probe_container(path: Path, *, libsndfile_detail: str) -> ContainerFacts:
    """Classify a file libsndfile could not open; return its facts if it is m4a/AAC.

    Decodes the first audio frame, so a header over garbage fails here, not mid-pipeline.
    """
    with _open(path, context=libsndfile_detail) as container:
        fmt_name: str = container.format.name
        names = set(fmt_name.split(","))
        if not container.streams.audio:
            raise AudioDecodeError(
                f"{path.name}: no audio stream (FFmpeg reads it as '{fmt_name}'; "
                f"libsndfile: {libsndfile_detail})"
            )
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        codec: str = ctx.name
        sample_rate = int(ctx.sample_rate or 0)
        channels = int(ctx.channels or 0)
        if sample_rate <= 0 or channels <= 0:
            raise AudioDecodeError(
                f"{path.name}: not a decodable audio file ({libsndfile_detail}; FFmpeg sees "
                f"'{fmt_name}' with {sample_rate=} {channels=})"
            )
        if names & _LIBSNDFILE_CONTAINERS:
            raise AudioDecodeError(
                f"{path.name}: corrupt or unreadable {fmt_name} file ({libsndfile_detail})"
            )
        if not (names & _MP4_FAMILY or fmt_name == _ADTS):
            raise UnsupportedFormatError(
                f"{path.name}: '{fmt_name}' container with {codec} audio is not supported "
                "(supported: wav, flac, ogg, mp3, aiff, m4a)"
            )
        if codec != "aac":
            raise UnsupportedFormatError(
                f"{path.name}: {codec} audio in an m4a/mp4 container is not supported (only AAC)"
            )
        frames = _header_frames(stream, container, sample_rate=sample_rate)
        counted = 0
        for planar in _planar_frames(container, stream, path, channels=channels):
            counted += planar.shape[1]
            if frames:
                break  # one frame proves the stream decodes; the header gave the length
        if counted == 0:
            raise EmptyAudioError(f"{path.name}: the {codec} stream holds no audio samples")
    exact = frames == 0  # no duration anywhere: we counted every sample
    return ContainerFacts(fmt_name, codec, sample_rate, channels, frames or counted, exact)


def decode_frames(path: Path, *, channels: int) -> Generator[npt.NDArray[np.float32], None, None]:
    """Decode frame by frame into float32 `(channels, n)` arrays (n is the codec's frame size).

    The stream ends where its packets' timestamps say (for MP4, the exact track end, without
    the encoder's padding of the last frame); truncated data ends early or raises mid-stream.
    """
    with _open(path, context="reopened for decoding") as container:
        stream = container.streams.audio[0]
        yield from _planar_frames(container, stream, path, channels=channels)


def _open(path: Path, *, context: str) -> Any:
    """The PyAV container; `context` (e.g. libsndfile's complaint) goes into the error."""
    try:
        return av.open(str(path), mode="r")
    except _FFMPEG_ERRORS as exc:
        raise AudioDecodeError(
            f"{path.name}: not a decodable audio file ({context}; FFmpeg: {_detail(exc)})"
        ) from exc


def _header_frames(stream: Any, container: Any, *, sample_rate: int) -> int:
    """Samples per channel the headers claim; 0 when they claim nothing."""
    if stream.duration and stream.time_base:
        time_base: Fraction = stream.time_base
        return round(Fraction(stream.duration) * time_base * sample_rate)
    if container.duration:
        return round(Fraction(container.duration, av.time_base) * sample_rate)
    return 0


def _planar_frames(
    container: Any, stream: Any, path: Path, *, channels: int
) -> Iterator[npt.NDArray[np.float32]]:
    """Decoded frames as float32 `(channels, n)` arrays, cut at the packets' declared end.

    An AAC encoder pads the last frame to 1024 samples; MP4 records the real length as that
    packet's duration, which FFmpeg's decoder ignores. Every frame comes from a packet already
    demuxed, so the end seen so far always covers it.
    """
    rate = stream.codec_context.sample_rate
    for frame, end_pts in _frames_with_end(container, stream, path):
        planar = _to_planar_float32(frame)
        if planar.shape[0] != channels:
            raise AudioDecodeError(
                f"{path.name}: channel count changes mid-stream ({channels} → {planar.shape[0]})"
            )
        if frame.pts is not None and end_pts is not None:
            time_base = frame.time_base or stream.time_base
            room = round(Fraction(end_pts - frame.pts) * time_base * rate)
            planar = planar[:, : max(room, 0)]
        if planar.shape[1]:
            yield planar


def _frames_with_end(container: Any, stream: Any, path: Path) -> Iterator[tuple[Any, int | None]]:
    """(frame, latest packet end in stream time base); every FFmpeg error → AudioDecodeError."""
    packets = container.demux(stream)
    end_pts: int | None = None
    while True:
        try:
            packet = next(packets)
            frames = packet.decode()
        except StopIteration:
            return
        except _FFMPEG_ERRORS as exc:
            where = float(Fraction(end_pts or 0) * stream.time_base) if stream.time_base else 0.0
            raise AudioDecodeError(
                f"{path.name}: {stream.codec_context.name} decoding failed near {where:.2f} s "
                f"({_detail(exc)})"
            ) from exc
        if packet.pts is not None and packet.duration:
            packet_end = int(packet.pts + packet.duration)
            end_pts = packet_end if end_pts is None else max(end_pts, packet_end)
        for frame in frames:
            yield frame, end_pts


def _to_planar_float32(frame: Any) -> npt.NDArray[np.float32]:
    """One decoded frame as `(channels, samples)` float32 in [-1, 1]."""
    fmt = frame.format
    channels = frame.layout.nb_channels
    data: npt.NDArray[Any] = frame.to_ndarray()
    if not fmt.is_planar:  # packed frames come as (1, samples * channels), interleaved
        data = data.reshape(-1, channels).T
    base = fmt.name.removesuffix("p")
    if base in ("flt", "dbl"):  # a copy: the array may view the decoder's frame buffer
        return np.array(data, dtype=np.float32, order="C", copy=True)
    if base == "u8":
        return ((data.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if base in _INT_SCALE:
        return (data.astype(np.float64) / _INT_SCALE[base]).astype(np.float32)
    raise AudioDecodeError(f"FFmpeg decoded to an unexpected sample format '{fmt.name}'")


def _detail(exc: BaseException) -> str:
    """FFmpeg's error text without the errno and the path PyAV prefixes."""
    if len(exc.args) >= 2 and isinstance(exc.args[1], str):
        return exc.args[1]
    return str(exc) or type(exc).__name__
