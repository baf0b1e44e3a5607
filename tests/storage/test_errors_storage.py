"""What the two storage errors mean to a caller, shown on real failures of the backends: a refusal
for good fails the job (`storage.failed`, permanent, answered 502), an unreachable store is worth
a retry (`storage.unavailable`, transient, answered 503). No server needed."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from real_services import s3_storage

from mss_jobs.api.errors import http_status
from mss_jobs.errors import (
    MssError,
    PermanentError,
    StorageError,
    StorageUnavailableError,
    TransientError,
)
from mss_jobs.storage import LocalStorage


@pytest.fixture
def closed_endpoint() -> Iterator[str]:
    """An S3 endpoint on a loopback port that is bound but not listening: refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _caught(action: Callable[[], object]) -> MssError:
    with pytest.raises(MssError) as caught:
        action()
    return caught.value


def test_a_store_that_refuses_a_write_fails_for_good(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store", prefix="jobs")
    (tmp_path / "store" / "jobs").write_bytes(b"a file where the job folders should go")
    source = tmp_path / "vocals.wav"
    source.write_bytes(b"stem")

    error = _caught(lambda: storage.upload_file(source, "jobs/1/vocals.wav"))

    assert (type(error), error.code, http_status(error)) == (StorageError, "storage.failed", 502)
    assert isinstance(error, PermanentError)  # the job fails; retrying cannot help
    assert not isinstance(error, TransientError)
    assert "jobs/1/vocals.wav" in error.message
    assert not (tmp_path / "store" / "jobs").is_dir()


def test_a_storage_root_that_cannot_be_created_fails_for_good(tmp_path: Path) -> None:
    (tmp_path / "occupied").write_bytes(b"")

    error = _caught(lambda: LocalStorage(tmp_path / "occupied" / "store"))

    assert (type(error), error.code, http_status(error)) == (StorageError, "storage.failed", 502)
    assert "occupied" in error.message


def test_an_unreachable_store_is_worth_a_retry(closed_endpoint: str, tmp_path: Path) -> None:
    storage = s3_storage(
        closed_endpoint,
        "mss-test-unreachable",
        prefix="jobs",
        max_attempts=1,
        connect_timeout=1.0,
        read_timeout=1.0,
    )

    error = _caught(lambda: storage.download_file("jobs/1/in.wav", tmp_path / "in.wav"))

    expected = (StorageUnavailableError, "storage.unavailable", 503)
    assert (type(error), error.code, http_status(error)) == expected
    assert isinstance(error, TransientError)  # the job is retried with backoff
    assert not isinstance(error, PermanentError)
    assert "s3://mss-test-unreachable/jobs/1/in.wav" in error.message
    assert not (tmp_path / "in.wav").exists()
