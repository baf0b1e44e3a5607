"""Audio edge: decode, probe, resample and encode, block by block."""

from mss_jobs.audio.decode import DEFAULT_BLOCK_FRAMES, AudioInfo, probe, read_blocks
from mss_jobs.audio.encode import (
    OUTPUT_EXTENSIONS,
    StemWriter,
    extension_for,
    open_writer,
    validate_output,
)
from mss_jobs.audio.resample import StreamingResampler, resample_blocks

__all__ = [
    "DEFAULT_BLOCK_FRAMES",
    "OUTPUT_EXTENSIONS",
    "AudioInfo",
    "StemWriter",
    "StreamingResampler",
    "extension_for",
    "open_writer",
    "probe",
    "read_blocks",
    "resample_blocks",
    "validate_output",
]
