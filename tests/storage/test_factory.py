"""create_storage: plain keyword arguments in, the right backend out."""

from __future__ import annotations

from pathlib import Path

import pytest

from mss_jobs.errors import ConfigError
from mss_jobs.storage import LocalStorage, S3Storage, create_storage


def test_local_backend(tmp_path: Path) -> None:
    storage = create_storage("local", root=tmp_path / "store", prefix="jobs", bucket="ignored")
    assert isinstance(storage, LocalStorage)
    assert storage.prefix == "jobs"


def test_s3_backend_without_network() -> None:
    storage = create_storage(
        "s3",
        bucket="mss-outputs",
        prefix="jobs",
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        access_key_id="id",
        secret_access_key="secret",
        root="/ignored",
    )
    assert isinstance(storage, S3Storage)
    assert storage.uri_for("jobs/1/a.wav") == "s3://mss-outputs/jobs/1/a.wav"


@pytest.mark.parametrize(
    ("backend", "arguments", "message"),
    [
        ("local", {}, "root"),
        ("s3", {}, "bucket"),
        ("gcs", {"bucket": "b"}, "'gcs'"),
    ],
)
def test_incomplete_or_unknown_configuration(
    backend: str, arguments: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_storage(backend, **arguments)  # type: ignore[arg-type]
