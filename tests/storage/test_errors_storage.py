"""The storage classes added to the exception tree."""

from __future__ import annotations

from mss_jobs import errors


def test_storage_errors_sit_on_the_right_branch() -> None:
    assert issubclass(errors.StorageError, errors.PermanentError)
    assert issubclass(errors.StorageUnavailableError, errors.TransientError)
    assert errors.StorageError("x").code == "storage.failed"
    assert errors.StorageUnavailableError("x").code == "storage.unavailable"
    assert {"StorageError", "StorageUnavailableError"} <= set(errors.__all__)
    assert "storage.failed" in (errors.__doc__ or "")
    assert "storage.unavailable" in (errors.__doc__ or "")
