"""Encode edge: write a stem block by block to wav/flac/mp3, atomically; foreign errors mapped here.

A writer encodes into a hidden temporary sibling (`.<name>.mss-part-<random>.partial`, a
`mss_jobs.atomic.PendingFile`) and only `commit` renames it into place, so a reader never sees a
half-written stem and a failed or interrupted job leaves nothing behind (`abort`, or an exception
inside `with`). Validation of the format, bit depth, sample rate and channel count happens
before any file is created.

Integer outputs are quantized here, not by libsndfile: `round(x · 2^(bits−1))`, clipped to the
integer range, the same scale libsndfile divides by when decoding, so a pcm round trip is within
half an LSB. Samples beyond ±1 are clipped for pcm and mp3 and counted in `clipped_samples` so
the caller can warn; NaN becomes 0 there. float32 wav stores samples untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, Self

import numpy as np
import numpy.typing as npt
import soundfile as sf
import torch

from mss_jobs.atomic import PendingFile
from mss_jobs.domain.units import BitDepth, Channels, OutputFormat, SampleRate
from mss_jobs.errors import ConfigError, OutputError

__all__ = [
    "DEFAULT_BIT_DEPTH",
    "MP3_BITRATE_KBPS",
    "MP3_SAMPLE_RATES",
    "OUTPUT_EXTENSIONS",
    "StemWriter",
    "extension_for",
    "open_writer",
    "validate_output",
]

OUTPUT_EXTENSIONS: Final[Mapping[OutputFormat, str]] = MappingProxyType(
    {"wav": "wav", "flac": "flac", "mp3": "mp3"}
)
"""File extension, without the dot, for each output format: `f"{stem}.{ext}"`."""

DEFAULT_BIT_DEPTH: Final[Mapping[OutputFormat, BitDepth | None]] = MappingProxyType(
    {"wav": 24, "flac": 24, "mp3": None}
)
"""Bit depth used when the caller passes None: 24 bit for the lossless formats, because
separated stems are quieter than the mix and 16 bit would spend their low-level detail."""

MP3_SAMPLE_RATES: Final = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
"""The only rates MPEG-1/2/2.5 Layer III can store."""

MP3_BITRATE_KBPS: Final = 320
"""mp3 stems are constant bitrate at LAME's highest setting (libsndfile's default is ~128)."""

_FLAC_MAX_CHANNELS = 8
_FLAC_MAX_SAMPLE_RATE = 655_350
_MP3_MAX_CHANNELS = 2

_SUBTYPES: dict[tuple[OutputFormat, BitDepth | None], str] = {
    ("wav", 16): "PCM_16",
    ("wav", 24): "PCM_24",
    ("wav", 32): "FLOAT",
    ("flac", 16): "PCM_16",
    ("flac", 24): "PCM_24",
    ("mp3", None): "MPEG_LAYER_III",
}
"""libsndfile subtype for each valid (format, bit depth); 32-bit wav is IEEE float."""

_SOUNDFILE_ERRORS = (sf.SoundFileError, RuntimeError, OSError)

_State = Literal["open", "committed", "aborted"]


def extension_for(format: OutputFormat) -> str:
    """The file extension for `format`, without the dot: 'wav', 'flac' or 'mp3'."""
    try:
        return OUTPUT_EXTENSIONS[format]
    except KeyError:
        raise ConfigError(
            f"unknown output format {format!r} (expected one of {sorted(OUTPUT_EXTENSIONS)})"
        ) from None


def validate_output(
    format: OutputFormat,
    *,
    sample_rate: SampleRate,
    channels: Channels,
    bit_depth: BitDepth | None,
) -> BitDepth | None:
    """Check an output configuration; return the effective bit depth. Raises ConfigError."""
    extension_for(format)
    if bit_depth is None:
        bit_depth = DEFAULT_BIT_DEPTH[format]
    if (format, bit_depth) not in _SUBTYPES:
        depths = sorted(str(depth) for fmt, depth in _SUBTYPES if fmt == format)
        valid = "None: mp3 has no bit depth" if format == "mp3" else ", ".join(depths)
        raise ConfigError(f"{format} cannot be written with bit_depth={bit_depth} (valid: {valid})")
    if sample_rate <= 0 or channels <= 0:
        raise ConfigError(f"{format} output needs positive values, got {sample_rate=} {channels=}")
    if format == "mp3":
        if sample_rate not in MP3_SAMPLE_RATES:
            raise ConfigError(
                f"mp3 cannot store sample_rate={sample_rate} "
                f"(valid: {', '.join(map(str, sorted(MP3_SAMPLE_RATES)))})"
            )
        if channels > _MP3_MAX_CHANNELS:
            raise ConfigError(f"mp3 stores at most {_MP3_MAX_CHANNELS} channels, got {channels=}")
    if format == "flac":
        if channels > _FLAC_MAX_CHANNELS:
            raise ConfigError(f"flac stores at most {_FLAC_MAX_CHANNELS} channels, got {channels=}")
        if sample_rate > _FLAC_MAX_SAMPLE_RATE:
            raise ConfigError(
                f"flac stores at most {_FLAC_MAX_SAMPLE_RATE} Hz, got sample_rate={sample_rate}"
            )
    return bit_depth


class StemWriter:
    """Streams `(channels, n)` float blocks into one audio file; publishes it on `commit`.

    Use as a context manager: a clean exit commits, an exception aborts (temp file deleted).
    Writing outside a `with` block, call `commit()` or `abort()` yourself.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: OutputFormat,
        sample_rate: SampleRate,
        channels: Channels,
        bit_depth: BitDepth | None = None,
    ) -> None:
        self.bit_depth = validate_output(
            format, sample_rate=sample_rate, channels=channels, bit_depth=bit_depth
        )
        self.path = Path(path)
        self.format: OutputFormat = format
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        self.clipped_samples = 0
        """Samples (over all channels) beyond ±1 that were clipped; always 0 for float wav."""
        self._subtype = _SUBTYPES[(format, self.bit_depth)]
        self._pending = PendingFile(self.path, suffix=".partial")
        self.partial_path = self._pending.temp
        self._state: _State = "open"
        self._file = self._open_partial()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.commit()

    def write(self, block: torch.Tensor) -> None:
        """Append a `(channels, n)` block (any float dtype or device)."""
        if self._state != "open":
            raise ValueError(f"write to a {self._state} writer for {self.path.name}")
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(
                f"{self.path.name}: expected a ({self.channels}, n) block, "
                f"got shape {tuple(block.shape)}"
            )
        if block.shape[1] == 0:
            return
        samples = block.detach().to(device="cpu", dtype=torch.float32).numpy()
        data = self._encode_samples(samples)
        try:
            self._file.write(data)
        except _SOUNDFILE_ERRORS as exc:
            self.abort()
            raise OutputError(f"{self.path.name}: writing {self.format} failed ({exc})") from exc
        self.frames_written += block.shape[1]

    def commit(self) -> Path:
        """Finish the file and rename it into place; returns the final path. Idempotent."""
        if self._state == "committed":
            return self.path
        if self._state == "aborted":
            raise ValueError(f"commit of an aborted writer for {self.path.name}")
        if self.frames_written == 0 and self.format != "wav":
            self.abort()
            raise OutputError(f"{self.path.name}: cannot encode an empty stem as {self.format}")
        try:
            self._file.close()
            self._pending.commit()
        except _SOUNDFILE_ERRORS as exc:
            self.abort()
            raise OutputError(f"{self.path.name}: finishing the file failed ({exc})") from exc
        self._state = "committed"
        return self.path

    def close(self) -> Path:
        """Same as `commit`: a writer closed normally publishes its file."""
        return self.commit()

    def abort(self) -> None:
        """Discard the temporary file. No-op once committed or aborted."""
        if self._state != "open":
            return
        self._state = "aborted"
        # The file is being thrown away: a close or unlink error must not mask the caller's error.
        with contextlib.suppress(*_SOUNDFILE_ERRORS):
            self._file.close()
        with contextlib.suppress(OSError):
            self._pending.discard()

    def _open_partial(self) -> Any:
        extra: dict[str, Any] = {}
        if self.format == "mp3":
            extra = {"bitrate_mode": "CONSTANT", "compression_level": 0.0}  # 320 kbps
        try:
            return sf.SoundFile(
                str(self.partial_path),
                mode="w",
                samplerate=self.sample_rate,
                channels=self.channels,
                format=self.format.upper(),
                subtype=self._subtype,
                **extra,
            )
        except _SOUNDFILE_ERRORS as exc:
            self._pending.discard()
            self._state = "aborted"
            raise OutputError(
                f"{self.path.name}: cannot create {self.format} output in "
                f"{self.path.parent} ({exc})"
            ) from exc

    def _encode_samples(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """`(channels, n)` float32 → the `(n, channels)` C-contiguous array libsndfile stores."""
        if self._subtype == "FLOAT":
            return np.ascontiguousarray(samples.T)
        self.clipped_samples += int(np.count_nonzero(np.abs(samples) > 1.0))
        if self._subtype == "MPEG_LAYER_III":
            data = np.array(samples.T, dtype=np.float32, order="C")  # our copy, edited in place
            np.nan_to_num(data, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
            return np.clip(data, -1.0, 1.0, out=data)
        bits = 16 if self._subtype == "PCM_16" else 24
        full_scale = float(2 ** (bits - 1))
        scaled = np.array(samples.T, dtype=np.float32, order="C")
        scaled *= full_scale  # exact: a power of two
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=full_scale, neginf=-full_scale)
        np.rint(scaled, out=scaled)
        np.clip(scaled, -full_scale, full_scale - 1, out=scaled)
        if bits == 16:
            return scaled.astype(np.int16)
        # libsndfile writes PCM_24 from int32 by keeping the top 24 bits.
        return scaled.astype(np.int32) << 8


open_writer = StemWriter
"""Validate, then open a writer for `path` (committed on a clean `with` exit)."""
