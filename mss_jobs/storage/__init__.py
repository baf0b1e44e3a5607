"""Object storage edge: S3-compatible buckets or a local directory behind one protocol.

    storage = create_storage("s3", bucket="mss", prefix="jobs", endpoint_url="http://minio:9000")
    key = output_key(storage.prefix, job.id, "vocals", "flac")     # jobs/<job id>/vocals.flac
    stored = storage.upload_file(path, key)                         # multipart above 8 MiB
    url = storage.presign_get(key, expires_in=3600, filename="song (vocals).flac")
    storage.delete_prefix(job_prefix(storage.prefix, job.id))

Every backend error is mapped into `mss_jobs.errors` (see `s3.py` for the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mss_jobs.errors import ConfigError
from mss_jobs.storage.base import (
    DownloadedObject,
    JobId,
    ObjectStorage,
    StoredObject,
    input_key,
    job_prefix,
    output_key,
    sanitize_filename,
    validate_key,
)
from mss_jobs.storage.local import LocalStorage
from mss_jobs.storage.s3 import MIB, S3Storage
from mss_jobs.storage.uri import FileUri, S3Uri, format_s3_uri, parse_uri

if TYPE_CHECKING:
    from mss_jobs.settings import Settings

__all__ = [
    "DownloadedObject",
    "FileUri",
    "JobId",
    "LocalStorage",
    "ObjectStorage",
    "S3Storage",
    "S3Uri",
    "StorageBackend",
    "StoredObject",
    "create_storage",
    "format_s3_uri",
    "input_key",
    "job_prefix",
    "output_key",
    "parse_uri",
    "sanitize_filename",
    "storage_from_settings",
    "validate_key",
]

StorageBackend = Literal["local", "s3"]


def create_storage(
    backend: str,
    *,
    prefix: str = "",
    root: str | Path | None = None,
    bucket: str | None = None,
    endpoint_url: str | None = None,
    public_endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    multipart_threshold: int = 8 * MIB,
    multipart_chunksize: int = 8 * MIB,
    max_concurrency: int = 8,
    max_attempts: int = 5,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
) -> ObjectStorage:
    """Build the configured backend from plain values (the settings layer unpacks into this).

    Fields that belong to the other backend are ignored, so one settings object with defaults
    for both can be passed whole: `local` reads `root` and `prefix`, `s3` everything else.
    """
    if backend == "local":
        if root is None or not str(root):
            raise ConfigError("storage backend 'local' needs a root directory")
        return LocalStorage(root, prefix=prefix)
    if backend == "s3":
        if not bucket:
            raise ConfigError("storage backend 's3' needs a bucket name")
        return S3Storage(
            bucket,
            prefix=prefix,
            endpoint_url=endpoint_url or None,
            public_endpoint_url=public_endpoint_url or None,
            region=region or None,
            access_key_id=access_key_id or None,
            secret_access_key=secret_access_key or None,
            session_token=session_token or None,
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
    raise ConfigError(f"unknown storage backend {backend!r}: expected 'local' or 's3'")


def storage_from_settings(
    settings: Settings, *, bucket: str | None = None, prefix: str | None = None
) -> ObjectStorage:
    """The storage backend `settings` describe (what the API and the workers both use).

    `bucket` and `prefix` override the configured ones, with the same endpoint and credentials
    (listing a catalog's own bucket for a batch).
    """
    secret = settings.s3_secret_access_key
    return create_storage(
        settings.storage_backend,
        prefix=settings.s3_prefix if prefix is None else prefix,
        root=settings.local_storage_dir,
        bucket=bucket or settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
    )
