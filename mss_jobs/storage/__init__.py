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
from typing import TYPE_CHECKING, Any, Literal

from mss_jobs.errors import ConfigError
from mss_jobs.settings import S3Settings
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
from mss_jobs.storage.s3 import S3Storage
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
    s3: S3Settings | None = None,
    **s3_options: Any,
) -> ObjectStorage:
    """Build the named backend: `local` reads `root` and `prefix`; `s3` reads `prefix` and the
    S3 settings, `s3` with any `S3Settings` fields given as keywords (`bucket=…`) replaced.

    What belongs to the other backend is ignored, so one set of arguments can serve both.
    """
    if backend == "local":
        if root is None or not str(root):
            raise ConfigError("storage backend 'local' needs a root directory")
        return LocalStorage(root, prefix=prefix)
    if backend == "s3":
        config = S3Settings.of(s3, prefix=prefix, **s3_options)
        if not config.bucket:
            raise ConfigError("storage backend 's3' needs a bucket name")
        return S3Storage(config)
    raise ConfigError(f"unknown storage backend {backend!r}: expected 'local' or 's3'")


def storage_from_settings(
    settings: Settings, *, bucket: str | None = None, prefix: str | None = None
) -> ObjectStorage:
    """The storage backend `settings` describe (what the API and the workers both use).

    `bucket` and `prefix` override the configured ones, with the same endpoint and credentials
    (listing a catalog's own bucket for a batch).
    """
    prefix = settings.s3_prefix if prefix is None else prefix
    if settings.storage_backend == "local":
        return LocalStorage(settings.local_storage_dir, prefix=prefix)
    return S3Storage(settings.s3, bucket=bucket or settings.s3_bucket, prefix=prefix)
