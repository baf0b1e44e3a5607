"""The HTTP status of every `MssError` the API answers with (the classes are `mss_jobs.errors`).

    job.not_found, batch.not_found, output.not_found                                    404
    batch.key_conflict, batch.state_conflict, job.state_conflict, idempotency.conflict  409
    upload.too_large                                                                    413
    any other ConfigError or InputError                                                 422
    storage.failed                                                                      502
    any TransientError (broker.unavailable, storage.unavailable …)                      503
    anything else (a bug)                                                               500

A subclass is looked up before its base, so a batch key conflict is a 409, not a 422.
"""

from __future__ import annotations

from mss_jobs.errors import (
    BatchKeyConflictError,
    BatchNotFoundError,
    BatchStateError,
    ConfigError,
    IdempotencyConflictError,
    InputError,
    JobNotFoundError,
    JobStateConflictError,
    MssError,
    OutputNotFoundError,
    StorageError,
    TransientError,
    UploadTooLargeError,
)

__all__ = ["http_status"]

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
