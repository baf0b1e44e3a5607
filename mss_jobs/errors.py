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
    │   │   ├── DerivedStemsError         config.derived_stems
    │   │   ├── ManifestError             manifest.invalid      (no header, unknown columns)
    │   │   └── BatchKeyConflictError     batch.key_conflict    (a batch key reused)
    │   ├── ModelUnavailableError model files missing, not fetchable   model.unavailable
    │   ├── CheckpointError       a model file is unusable             model.checkpoint_invalid
    │   │                         (unreadable, unsafe pickle, checksum or key mismatch)
    │   ├── OutputError           a stem could not be encoded/written  output.write_failed
    │   ├── StorageError          object storage refused for good      storage.failed
    │   │                         (missing bucket, access denied, bad credentials, bad request)
    │   ├── JobNotFoundError      no such job                          job.not_found
    │   ├── OutputNotFoundError   the job has no such stem (yet)       output.not_found
    │   ├── JobStateConflictError the job's state forbids the change   job.state_conflict
    │   ├── IdempotencyConflictError  a key reused for another request idempotency.conflict
    │   ├── UploadTooLargeError   an upload over the size limit        upload.too_large
    │   ├── BatchNotFoundError    no such batch                        batch.not_found
    │   ├── BatchStateError       the batch's state forbids the change batch.state_conflict
    │   └── ApiError              the API answered with an error       api.error
    │                             (`code` and `status` are the server's answer)
    └── TransientError            worth retrying with backoff (network, storage, database, broker)
        ├── StorageUnavailableError       storage.unavailable   (unreachable, throttled, 5xx)
        ├── ModelDownloadError            model.download_failed (timeout, reset, 5xx, 429)
        ├── BrokerUnavailableError        broker.unavailable    (cannot publish a job)
        └── ApiUnavailableError           api.unavailable       (the API cannot be reached)

The HTTP status each error is answered with is the API's business (`mss_jobs.api.errors`).

Foreign exceptions (soundfile, PyAV, boto3, SQLAlchemy …) are mapped to this tree at the edge
that calls them: `raise AudioDecodeError(msg) from exc`.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ApiUnavailableError",
    "AudioDecodeError",
    "AudioTooLongError",
    "BatchKeyConflictError",
    "BatchNotFoundError",
    "BatchStateError",
    "BrokerUnavailableError",
    "CheckpointError",
    "ConfigError",
    "DerivedStemsError",
    "EmptyAudioError",
    "IdempotencyConflictError",
    "InputError",
    "InputNotFoundError",
    "JobNotFoundError",
    "JobStateConflictError",
    "ManifestError",
    "ModelDownloadError",
    "ModelUnavailableError",
    "MssError",
    "NonFiniteAudioError",
    "OutputError",
    "OutputNotFoundError",
    "PermanentError",
    "StorageError",
    "StorageUnavailableError",
    "TransientError",
    "UnknownModelError",
    "UnsupportedFormatError",
    "UploadTooLargeError",
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


class ManifestError(ConfigError):
    """A batch manifest as a whole cannot be read (no header, unknown or missing columns)."""

    code = "manifest.invalid"


class BatchKeyConflictError(ConfigError):
    """A batch key was reused for a different batch (model, params, source or force differ)."""

    code = "batch.key_conflict"


class OutputError(PermanentError):
    code = "output.write_failed"


class StorageError(PermanentError):
    """Object storage refused the request in a way retrying cannot fix.

    Missing bucket, access denied, bad credentials, an invalid request. A missing *object* is not
    this: that is `InputNotFoundError`.
    """

    code = "storage.failed"


class StorageUnavailableError(TransientError):
    """Object storage is unreachable, throttling or failing server-side: retry with backoff."""

    code = "storage.unavailable"


class ModelUnavailableError(PermanentError):
    """A model's file is not here and cannot be fetched: not cached while pulling is off, a
    source that answers 404/403, a scheme that is not allowed."""

    code = "model.unavailable"


class ModelDownloadError(TransientError):
    """Fetching a model file failed in a way worth retrying: timeout, reset, 5xx, 429."""

    code = "model.download_failed"


class CheckpointError(PermanentError):
    """A model file is unusable: unreadable, an unsafe pickle, a checksum or key mismatch."""

    code = "model.checkpoint_invalid"


# -- jobs and batches ---------------------------------------------------------------------------


class JobNotFoundError(PermanentError):
    code = "job.not_found"


class OutputNotFoundError(PermanentError):
    """The job exists but has no such stem (not finished yet, or never asked for)."""

    code = "output.not_found"


class JobStateConflictError(PermanentError):
    """The job is in a state the requested transition does not start from."""

    code = "job.state_conflict"


class IdempotencyConflictError(PermanentError):
    """An idempotency key was reused for a different request."""

    code = "idempotency.conflict"


class UploadTooLargeError(PermanentError):
    code = "upload.too_large"


class BatchNotFoundError(PermanentError):
    code = "batch.not_found"


class BatchStateError(PermanentError):
    """The batch is in a state the requested operation does not apply to (e.g. cancelled)."""

    code = "batch.state_conflict"


class BrokerUnavailableError(TransientError):
    """The broker cannot be reached to publish a job."""

    code = "broker.unavailable"


# -- the API client -----------------------------------------------------------------------------


class ApiError(PermanentError):
    """The API answered with an error; `code` and the message are the server's."""

    code = "api.error"

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ApiUnavailableError(TransientError):
    code = "api.unavailable"
