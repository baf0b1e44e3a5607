"""Fixtures for the storage edge: the session's moto S3 server on loopback (`moto_endpoint`, from
`tests/real_services.py`), a fresh bucket per test.

boto3 talks to the server over real HTTP, so signing, paths, multipart and presigned URLs are
exercised as they are against MinIO or AWS. Credentials are dummies passed as arguments; the
environment is scrubbed so a developer's AWS profile or proxy cannot leak into (or break) tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from real_services import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

from mss_jobs.storage import LocalStorage, ObjectStorage, S3Storage
from mss_jobs.storage.s3 import MIB

PREFIX = "jobs"

S3Factory = Callable[..., S3Storage]


@pytest.fixture(autouse=True)
def _isolated_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def make_s3(moto_endpoint: str) -> S3Factory:
    """Build an `S3Storage` on the moto server; by default on a new, created, unique bucket.

    Small pages and delete batches so pagination is exercised with a few dozen objects; quick
    timeouts and few attempts so a failing test fails fast.
    """

    def make(bucket: str | None = None, *, create: bool = True, **overrides: Any) -> S3Storage:
        arguments: dict[str, Any] = {
            "prefix": PREFIX,
            "endpoint_url": moto_endpoint,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "multipart_threshold": 5 * MIB,
            "multipart_chunksize": 5 * MIB,
            "max_concurrency": 4,
            "max_attempts": 2,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
            "list_page_size": 7,
            "delete_batch_size": 10,
        }
        arguments.update(overrides)
        storage = S3Storage(bucket or f"mss-test-{uuid4().hex[:16]}", **arguments)
        if create:
            storage.ensure_bucket()
        return storage

    return make


@pytest.fixture(params=[pytest.param("s3", marks=pytest.mark.services), "local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStorage:
    """Each backend in turn, empty, with prefix `jobs`."""
    if request.param == "s3":
        factory: S3Factory = request.getfixturevalue("make_s3")
        return factory()
    return LocalStorage(tmp_path / "store", prefix=PREFIX)


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Write `content` to `tmp_path/src/<name>` and return the path."""

    def make(name: str, content: bytes) -> Path:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    return make
