"""S3-compatible object storage (AWS, MinIO, moto …) through boto3. All network I/O goes here.

Uploads and downloads go through boto3's transfer manager: above `multipart_threshold` it splits
the file into `multipart_chunksize` parts sent `max_concurrency` at a time, reading each part from
the file when it is sent, so memory stays at roughly `max_concurrency × chunk` whatever the size.
Copies go through it too, server-side: the bytes never pass through this process.

Error mapping (messages name the bucket and key, never credentials):

| S3 says                                                        | raised                      |
|----------------------------------------------------------------|-----------------------------|
| NoSuchKey, 404 / NotFound (bucket exists)                      | InputNotFoundError          |
| NoSuchBucket / 404 with no bucket: configured bucket           | StorageError                |
| NoSuchBucket / 404 with no bucket: bucket from an input URI    | InputNotFoundError          |
| AccessDenied, 403, InvalidAccessKeyId, SignatureDoesNotMatch,  | StorageError                |
| other 4xx, missing credentials, invalid parameters             |                             |
| SlowDown, Throttling, RequestTimeout, InternalError, 408, 429, | StorageUnavailableError     |
| 5xx, connection refused / closed / timed out, truncated body,  | (a TransientError)          |
| PreconditionFailed (the object changed during a read or copy)  |                             |
| malformed key or URI, bad settings                             | ConfigError                 |
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from mss_jobs.atomic import CHUNK_SIZE, atomic_destination, hash_chunks, hash_file
from mss_jobs.errors import ConfigError, InputNotFoundError, MssError, StorageError
from mss_jobs.settings import MIB, S3Settings
from mss_jobs.storage._s3_client import build_client, check_range
from mss_jobs.storage._s3_errors import (
    MAPPED_EXCEPTIONS,
    is_not_found,
    map_s3_error,
    missing_bucket_error,
)
from mss_jobs.storage.base import (
    DownloadedObject,
    StoredObject,
    content_disposition,
    content_type_for,
    folder_prefix,
    normalize_prefix,
    validate_expires_in,
    validate_key,
)
from mss_jobs.storage.uri import (
    S3Uri,
    format_s3_uri,
    looks_like_uri,
    parse_uri,
    validate_bucket_name,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef, ObjectIdentifierTypeDef

__all__ = ["MIB", "S3Storage"]

_MAX_DELETE_BATCH = 1000  # DeleteObjects accepts at most 1000 keys per request
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class S3Storage:
    """`ObjectStorage` on an S3-compatible bucket, configured by one `S3Settings`.

    `S3Storage(settings.s3)`, `S3Storage(settings.s3, bucket=…)` (fields replaced), or
    `S3Storage("bucket", endpoint_url=…, …)` with any `S3Settings` fields as keywords; invalid
    values raise `ConfigError`. With `endpoint_url` (MinIO, moto) path-style addressing is used,
    since such servers rarely have wildcard DNS for virtual-hosted buckets. Credentials default
    to boto3's usual chain (environment, config files, instance role) when not given. `client`
    injects a ready boto3 S3 client instead; it excludes the connection settings.

    `list_page_size` and `delete_batch_size` exist so tests can exercise pagination cheaply.
    """

    def __init__(
        self,
        config: S3Settings | str,
        /,
        *,
        client: S3Client | None = None,
        list_page_size: int = 1000,
        delete_batch_size: int = _MAX_DELETE_BATCH,
        **options: Any,
    ) -> None:
        if isinstance(config, str):
            config = S3Settings.of(bucket=config, **options)
        elif options:
            config = S3Settings.of(config, **options)
        if config.bucket is None:
            raise ConfigError("S3 storage needs a bucket name")
        self._config = config
        self._bucket = validate_bucket_name(config.bucket)
        self._prefix = normalize_prefix(config.prefix)
        check_range("list_page_size", list_page_size, low=1, high=1000)
        check_range("delete_batch_size", delete_batch_size, low=1, high=_MAX_DELETE_BATCH)
        self._list_page_size = list_page_size
        self._delete_batch_size = delete_batch_size
        self._transfer = TransferConfig(
            multipart_threshold=config.multipart_threshold,
            multipart_chunksize=config.multipart_chunksize,
            max_concurrency=config.max_concurrency,
            use_threads=True,
            # The CRT client (picked automatically when awscrt is installed) ignores part of
            # this config; the classic one behaves the same everywhere.
            preferred_transfer_client="classic",
        )
        endpoint, public = config.endpoint_url, config.public_endpoint_url
        if client is not None:
            if endpoint or public or config.region or config.access_key_id or config.session_token:
                raise ConfigError("pass either an S3 client or connection arguments, not both")
            self._client = self._signer = client
            return
        # One connection per concurrent part, plus headroom for listing/presigning callers.
        self._client = build_client(config, endpoint, max(10, config.max_concurrency + 2))
        # Presigned URLs are for clients, who may reach the store at another address than this
        # process does (compose's `minio:9000` vs the host's `localhost:9000`). SigV4 signs the
        # host, so such URLs are signed by a second client configured with the public address;
        # signing makes no request.
        self._signer = (
            self._client
            if public is None or public == endpoint
            else build_client(config, public, 1)
        )

    def __repr__(self) -> str:
        url = self._config.endpoint_url
        endpoint = f", endpoint_url={url!r}" if url else ""
        return f"S3Storage(bucket={self._bucket!r}, prefix={self._prefix!r}{endpoint})"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def config(self) -> S3Settings:
        """The settings this storage was built from."""
        return self._config

    @property
    def client(self) -> S3Client:
        """The underlying boto3 client, for operations this class does not wrap."""
        return self._client

    def uri_for(self, key: str) -> str:
        return format_s3_uri(self._bucket, validate_key(key))

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (development and tests; production pre-creates)."""
        if self._bucket_exists(self._bucket):
            return
        region = self._client.meta.region_name
        with self._mapped("create bucket", bucket=self._bucket, key=None):
            try:
                if region and region != "us-east-1":
                    location = cast("BucketLocationConstraintType", region)
                    self._client.create_bucket(
                        Bucket=self._bucket,
                        CreateBucketConfiguration={"LocationConstraint": location},
                    )
                else:
                    self._client.create_bucket(Bucket=self._bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

    def upload_file(
        self, path: str | Path, key: str, *, content_type: str | None = None
    ) -> StoredObject:
        """Upload `path` to `key` (multipart above the threshold), then read back its ETag.

        The SHA-256 is computed in one chunked pass before the upload and stored as the object's
        `sha256` metadata. Hashing while the transfer manager reads would be a single pass, but
        it reads parts concurrently and rewinds bodies on retries, so the digest would be wrong;
        the second read is served from the page cache.
        """
        validate_key(key)
        source = Path(path)
        try:
            size, sha256 = hash_file(source)
        except OSError as exc:
            raise StorageError(
                f"cannot read {source} to upload to {self.uri_for(key)}: {exc.strerror}"
            ) from exc
        extra_args = {
            "ContentType": content_type or content_type_for(key),
            "Metadata": {"sha256": sha256},
        }
        with self._mapped("upload", bucket=self._bucket, key=key):
            self._client.upload_file(
                str(source), self._bucket, key, ExtraArgs=extra_args, Config=self._transfer
            )
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        return self._stored(
            key,
            head,
            size=size,
            sha256=sha256,
            what=f"upload of {source}",
            hint=" (was the file modified during the upload?)",
        )

    def download_file(self, uri_or_key: str, dest_path: str | Path) -> DownloadedObject:
        """Download a key of this bucket, or any `s3://bucket/key`, to `dest_path`.

        The transfer manager writes a temporary sibling (ranged GETs in parallel above the
        threshold); the file is then hashed in one chunked pass and renamed into place.
        """
        bucket, key = self._locate(uri_or_key)
        dest = Path(dest_path)
        try:
            with (
                self._mapped("download", bucket=bucket, key=key),
                atomic_destination(dest) as temp,
            ):
                self._client.download_file(bucket, key, str(temp), Config=self._transfer)
                size, sha256 = hash_file(temp)
        except OSError as exc:  # the local side: unwritable directory, disk full
            raise StorageError(
                f"cannot write the download of s3://{bucket}/{key} to {dest}: {exc.strerror}"
            ) from exc
        return DownloadedObject(path=dest, bytes=size, sha256=sha256)

    def copy(self, source_uri_or_key: str, dest_key: str) -> StoredObject:
        """Server-side copy of a key of this bucket, or any `s3://bucket/key`, to `dest_key`.

        boto3's managed copy: one CopyObject below the multipart threshold, UploadPartCopy parts
        above it (so objects over CopyObject's 5 GB limit copy too), never through this
        process. One HeadObject first gives the size, ETag and `sha256` metadata, and the copy
        is conditional on that ETag (`CopySourceIfMatch`), so the digest returned is the one of
        the bytes copied. Metadata and Content-Type travel with the object. A source without
        `sha256` metadata (not uploaded by this service) is hashed by streaming it once, and
        the digest is stored on the copy.
        """
        validate_key(dest_key)
        bucket, key = self._locate(source_uri_or_key)
        with self._mapped("copy", bucket=bucket, key=key):
            head = self._client.head_object(Bucket=bucket, Key=key)
        size = head.get("ContentLength", 0)
        etag = head.get("ETag", "")
        metadata = dict(head.get("Metadata", {}))
        sha256 = metadata.get("sha256", "")
        extra_args: dict[str, Any] = {"CopySourceIfMatch": etag} if etag else {}
        if not _SHA256_HEX.fullmatch(sha256):
            sha256 = self._hash_object(bucket, key, etag=etag)
            extra_args.update(
                MetadataDirective="REPLACE",
                Metadata={**metadata, "sha256": sha256},
                ContentType=head.get("ContentType") or content_type_for(dest_key),
            )
        # Errors of the copy itself name the source: a missing key there is the usual cause.
        with self._mapped(f"copy to {self.uri_for(dest_key)}", bucket=bucket, key=key):
            self._client.copy(
                {"Bucket": bucket, "Key": key},
                self._bucket,
                dest_key,
                ExtraArgs=extra_args,
                Config=self._transfer,
            )
        with self._mapped("copy check", bucket=self._bucket, key=dest_key):
            copied = self._client.head_object(Bucket=self._bucket, Key=dest_key)
        return self._stored(
            dest_key, copied, size=size, sha256=sha256, what=f"copy of s3://{bucket}/{key}"
        )

    def exists(self, key: str) -> bool:
        validate_key(key)
        with self._mapped("exists check", bucket=self._bucket, key=key):
            try:
                self._client.head_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
                if not self._bucket_exists(self._bucket):
                    raise missing_bucket_error(
                        action="exists check", bucket=self._bucket, key=key, own_bucket=True
                    ) from exc
                return False
        return True

    def list_keys(self, prefix: str, *, suffixes: Iterable[str] | None = None) -> Iterator[str]:
        folder = folder_prefix(prefix, allow_empty=True)
        wanted = tuple(suffixes) if suffixes is not None else None
        for page in self._pages(folder):
            for key in page:
                if wanted is None or key.endswith(wanted):
                    yield key

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under the folder `prefix`, in batches of ≤ 1000; return the count.

        Each listed page is deleted before the next is requested: S3 continuation tokens are
        positions in key order, so deleting keys already listed does not disturb the listing.
        """
        folder = folder_prefix(prefix, allow_empty=False)
        deleted = 0
        batch: list[str] = []
        for page in self._pages(folder):
            for key in page:
                batch.append(key)
                if len(batch) == self._delete_batch_size:
                    deleted += self._delete_batch(batch)
                    batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def presign_get(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        validate_key(key)
        params = {"Bucket": self._bucket, "Key": key}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        with self._mapped("presign GET", bucket=self._bucket, key=key):
            return self._signer.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=validate_expires_in(expires_in)
            )

    def presign_put(self, key: str, *, expires_in: int, content_type: str | None = None) -> str:
        """A presigned PUT URL; with `content_type` the uploader must send that exact header."""
        validate_key(key)
        params = {"Bucket": self._bucket, "Key": key}
        if content_type is not None:
            params["ContentType"] = content_type
        with self._mapped("presign PUT", bucket=self._bucket, key=key):
            return self._signer.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=validate_expires_in(expires_in)
            )

    # -- internals -------------------------------------------------------------------------

    def _stored(
        self,
        key: str,
        head: HeadObjectOutputTypeDef,
        *,
        size: int,
        sha256: str,
        what: str,
        hint: str = "",
    ) -> StoredObject:
        """The object just written at `key`, once its HeadObject shows the expected size."""
        stored_size = head.get("ContentLength")
        if stored_size != size:
            raise StorageError(
                f"{what} to {self.uri_for(key)} stored {stored_size} bytes, expected {size}{hint}"
            )
        return StoredObject(
            uri=self.uri_for(key),
            key=key,
            bytes=size,
            sha256=sha256,
            etag=head.get("ETag", "").strip('"'),
        )

    def _locate(self, uri_or_key: str) -> tuple[str, str]:
        if not looks_like_uri(uri_or_key):
            return self._bucket, validate_key(uri_or_key)
        uri = parse_uri(uri_or_key)
        if not isinstance(uri, S3Uri):
            raise ConfigError(f"S3 storage cannot fetch {uri_or_key!r}: expected s3://bucket/key")
        return uri.bucket, uri.key

    def _hash_object(self, bucket: str, key: str, *, etag: str) -> str:
        """SHA-256 of the object, streamed in chunks (conditional on `etag` when given)."""
        with self._mapped("hash", bucket=bucket, key=key):
            if etag:
                response = self._client.get_object(Bucket=bucket, Key=key, IfMatch=etag)
            else:
                response = self._client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                return hash_chunks(body.iter_chunks(CHUNK_SIZE))[1]
            finally:
                body.close()

    def _pages(self, folder: str) -> Iterator[list[str]]:
        """Keys under `folder`, one list per ListObjectsV2 page."""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self._bucket,
            Prefix=folder,
            PaginationConfig={"PageSize": self._list_page_size},
        )
        with self._mapped("list", bucket=self._bucket, key=folder or None):
            for page in pages:
                yield [item["Key"] for item in page.get("Contents", []) if "Key" in item]

    def _delete_batch(self, keys: list[str]) -> int:
        objects: list[ObjectIdentifierTypeDef] = [{"Key": key} for key in keys]
        with self._mapped("delete", bucket=self._bucket, key=keys[0]):
            response = self._client.delete_objects(
                Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True}
            )
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            error = ClientError(
                {"Error": {"Code": first.get("Code", ""), "Message": ""}}, "DeleteObjects"
            )
            raise map_s3_error(
                error,
                action=f"delete ({len(errors)} of {len(keys)} keys failed)",
                bucket=self._bucket,
                key=first.get("Key"),
                own_bucket=True,
            )
        return len(keys)

    def _bucket_exists(self, bucket: str) -> bool:
        """HeadBucket: False only on a clear 404; other failures are mapped and raised."""
        with self._mapped("bucket check", bucket=bucket, key=None):
            try:
                self._client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if is_not_found(exc):
                    return False
                raise
        return True

    @contextmanager
    def _mapped(self, action: str, *, bucket: str, key: str | None) -> Iterator[None]:
        """Translate boto errors raised inside the block; a bare 404 is told apart via HeadBucket.

        HeadObject (and the transfer manager's initial HEAD) answer 404 without a body for a
        missing key *and* for a missing bucket; one extra HeadBucket on that error path decides.
        """
        try:
            yield
        except MAPPED_EXCEPTIONS as exc:
            own = bucket == self._bucket
            error = map_s3_error(exc, action=action, bucket=bucket, key=key, own_bucket=own)
            if isinstance(error, InputNotFoundError) and key is not None and is_not_found(exc):
                try:
                    bucket_exists = self._bucket_exists(bucket)
                except MssError:  # cannot tell: keep the original answer
                    bucket_exists = True
                if not bucket_exists:
                    error = missing_bucket_error(
                        action=action, bucket=bucket, key=key, own_bucket=own
                    )
            raise error from exc
