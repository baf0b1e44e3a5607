"""Errors only the HTTP API raises, and the HTTP status of every `MssError`.

MssError
├── PermanentError
│   ├── JobNotFoundError          job.not_found          404
│   ├── BatchNotFoundError        batch.not_found        404   (mss_jobs.db.batches)
│   ├── BatchKeyConflictError     batch.key_conflict     409   (mss_jobs.db.batches)
│   ├── BatchStateError           batch.state_conflict   409   (mss_jobs.db.batches)
│   ├── OutputNotFoundError       output.not_found       404
│   ├── JobStateConflictError     job.state_conflict     409
│   ├── IdempotencyConflictError  idempotency.conflict   409
│   └── UploadTooLargeError       upload.too_large       413
└── TransientError
    └── BrokerUnavailableError    broker.unavailable     503
"""

from __future__ import annotations

from mss_jobs.db.batches import BatchKeyConflictError, BatchNotFoundError, BatchStateError
from mss_jobs.errors import (
    ConfigError,
    InputError,
    MssError,
    PermanentError,
    StorageError,
    TransientError,
)

__all__ = [
    "BrokerUnavailableError",
    "IdempotencyConflictError",
    "JobNotFoundError",
    "JobStateConflictError",
    "OutputNotFoundError",
    "UploadTooLargeError",
    "http_status",
]


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


class BrokerUnavailableError(TransientError):
    code = "broker.unavailable"


# First match wins, so subclasses come before their bases.
_STATUSES: tuple[tuple[type[MssError], int], ...] = (
    (JobNotFoundError, 404),
    (BatchNotFoundError, 404),
    (BatchKeyConflictError, 409),
    (BatchStateError, 409),
    (OutputNotFoundError, 404),
    (JobStateConflictError, 409),
    (IdempotencyConflictError, 409),
    (UploadTooLargeError, 413),
    (ConfigError, 422),
    (InputError, 422),
    (StorageError, 502),
    (TransientError, 503),
)


def http_status(error: MssError) -> int:
    """The status an `MssError` is answered with; 500 for anything not listed (a bug)."""
    for kind, status in _STATUSES:
        if isinstance(error, kind):
            return status
    return 500
