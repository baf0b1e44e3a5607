"""Units and enumerations of the seed's vocabulary. No code lives here.

Units are `Annotated` aliases so a validator (pydantic) can enforce their bounds where a value
enters the system; inside the core they read as plain numbers with a meaning. Every name here is
defined once; the torch side (`mss_jobs.types`) holds only the tensor aliases.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, get_args

from annotated_types import Ge, Gt, Le, Lt

__all__ = [
    "MIXTURE",
    "WINDOW_SHAPES",
    "AudioEncoding",
    "BatchSize",
    "BitDepth",
    "Channels",
    "ChunkSize",
    "FftSize",
    "FileFormat",
    "Gain",
    "HopLength",
    "HopSize",
    "OutputFormat",
    "OverlapRatio",
    "SampleRate",
    "Samples",
    "Seconds",
    "StemName",
    "WindowShape",
]

SampleRate = Annotated[int, Gt(0)]
"""Samples per second per channel (Hz), e.g. 44100."""

Channels = Annotated[int, Gt(0)]
"""Number of audio channels: 1 mono, 2 stereo, 6 for 5.1 …"""

Samples = Annotated[int, Ge(0)]
"""A length or offset counted in samples per channel (frames), at a stated sample rate."""

BitDepth = Literal[16, 24, 32]
"""Bits per sample of an encoded PCM/float file. 32 means IEEE float for wav, not int32."""

AudioEncoding = Literal["pcm_s16", "pcm_s24", "pcm_s32", "pcm_u8", "float32", "float64", "lossy"]
"""How samples are stored inside the file. `lossy` covers mp3, vorbis, opus, aac."""

FileFormat = Literal["wav", "flac", "ogg", "mp3", "aiff", "m4a"]
"""Container formats we decode. Encoding is supported for wav, flac and mp3."""

OutputFormat = Literal["wav", "flac", "mp3"]
"""Container formats we encode stems to."""

FftSize = Annotated[int, Gt(0)]
"""Number of samples in one STFT frame (n_fft); gives n_fft // 2 + 1 frequency bins."""

HopLength = Annotated[int, Gt(0)]
"""Samples between two STFT frames."""

WindowShape = Literal["hann", "hamming", "blackman", "bartlett", "rectangular"]
"""Taper applied to a frame (STFT) or a chunk (overlap-add). Every value is supported everywhere."""

WINDOW_SHAPES: Final[tuple[WindowShape, ...]] = get_args(WindowShape)
"""Every `WindowShape`, in declaration order (CLI choices, validation messages)."""

ChunkSize = Annotated[int, Gt(0)]
"""Samples per channel in one chunk fed to the model."""

HopSize = Annotated[int, Gt(0)]
"""Samples between the starts of two consecutive chunks: round(ChunkSize * (1 - OverlapRatio))."""

OverlapRatio = Annotated[float, Ge(0.0), Lt(1.0)]
"""Fraction of a chunk shared with the next one, in [0, 1)."""

BatchSize = Annotated[int, Gt(0)]
"""Chunks per model call."""

Seconds = Annotated[float, Gt(0.0)]
"""A duration in seconds."""

Gain = Annotated[float, Ge(0.0), Le(1e6)]
"""A linear amplitude factor (1.0 leaves the level unchanged)."""

StemName = Annotated[str, "a stem's name: lowercase identifier such as 'vocals'"]
"""Name of a separated or derived stem, e.g. `vocals`, `instrumental`."""

MIXTURE: StemName = "mixture"
"""The pseudo-stem that always means 'the input itself' in derived-stem rules."""
