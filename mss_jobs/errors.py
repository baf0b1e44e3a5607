"""The one exception tree of mss-jobs. A leaf module: no imports, so the core may raise from it.

Every error carries a stable machine-readable `code` (stored on a failed job, printed by the CLI)
and a human message that names the offending value. Errors are split by what a caller should do:

    MssError
    ├── PermanentError            never retried: the same input fails the same way again
    │   ├── InputError            the input audio is unusable
    │   │   ├── InputNotFoundError        input.not_found
    │   │   ├── EmptyAudioError           audio.empty
    │   │   ├── AudioDecodeError          audio.decode_failed   (corrupt, truncated, not audio)
    │   │   ├── UnsupportedFormatError    audio.unsupported_format
    │   │   ├── NonFiniteAudioError       audio.non_finite      (NaN / Inf samples)
    │   │   └── AudioTooLongError         audio.too_long
    │   ├── ConfigError           a request or setting is invalid      config.invalid
    │   │   ├── UnknownModelError         model.unknown
    │   │   └── DerivedStemsError         config.derived_stems
    │   └── OutputError           a stem could not be encoded/written  output.write_failed
    └── TransientError            worth retrying with backoff (network, storage, database, broker)

Foreign exceptions (soundfile, PyAV, boto3, SQLAlchemy …) are mapped to this tree at the edge
that calls them: `raise AudioDecodeError(msg) from exc`.
"""

from __future__ import annotations

__all__ = [
    "AudioDecodeError",
    "AudioTooLongError",
    "ConfigError",
    "DerivedStemsError",
    "EmptyAudioError",
    "InputError",
    "InputNotFoundError",
    "MssError",
    "NonFiniteAudioError",
    "OutputError",
    "PermanentError",
    "TransientError",
    "UnknownModelError",
    "UnsupportedFormatError",
]


class MssError(Exception):
    """Base of every error mss-jobs raises on purpose."""

    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PermanentError(MssError):
    """Retrying cannot help: fail the job with `code` and `message`."""

    code = "permanent"


class TransientError(MssError):
    """A dependency hiccup (connection reset, timeout, throttling): retry with backoff."""

    code = "transient"


class InputError(PermanentError):
    code = "input.invalid"


class InputNotFoundError(InputError):
    code = "input.not_found"


class EmptyAudioError(InputError):
    code = "audio.empty"


class AudioDecodeError(InputError):
    code = "audio.decode_failed"


class UnsupportedFormatError(InputError):
    code = "audio.unsupported_format"


class NonFiniteAudioError(InputError):
    code = "audio.non_finite"


class AudioTooLongError(InputError):
    code = "audio.too_long"


class ConfigError(PermanentError, ValueError):
    code = "config.invalid"


class UnknownModelError(ConfigError):
    code = "model.unknown"


class DerivedStemsError(ConfigError):
    code = "config.derived_stems"


class OutputError(PermanentError):
    code = "output.write_failed"
