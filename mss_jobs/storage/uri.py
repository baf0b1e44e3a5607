"""Storage URIs: parse and format `s3://bucket/key` and `file:///abs/path`. Pure: no I/O.

Two schemes, one per backend, and no private third one: an object's URI says where the bytes
are in terms any tool understands (`aws s3 cp`, a browser, `curl file://…`).

- `s3://bucket/key`: the key is everything after the first `/` following the bucket, taken
  literally (no percent-decoding), as the AWS CLI does. Keys may contain `?`, `#`, spaces.
- `file:///abs/path`: RFC 8089, percent-encoded, absolute; `file://localhost/…` is accepted.
  `.` and `..` segments are rejected so a URI cannot climb out of a directory after the fact.

Malformed URIs raise `ConfigError` (a request or setting is invalid) naming the URI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from mss_jobs.errors import ConfigError

__all__ = [
    "FileUri",
    "S3Uri",
    "StorageUri",
    "format_file_uri",
    "format_s3_uri",
    "looks_like_uri",
    "parse_file_uri",
    "parse_s3_uri",
    "parse_uri",
    "validate_bucket_name",
]

# Current S3 naming rules (MinIO follows them too): 3-63 of [a-z0-9.-], alphanumeric at both ends.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class S3Uri:
    """An object in an S3-compatible bucket."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return format_s3_uri(self.bucket, self.key)


@dataclass(frozen=True, slots=True)
class FileUri:
    """A file on the local filesystem; `path` is absolute and free of `.`/`..` segments."""

    path: PurePosixPath

    def __str__(self) -> str:
        return format_file_uri(self.path)


StorageUri = S3Uri | FileUri


def looks_like_uri(text: str) -> bool:
    """True when `text` starts with `scheme://`; storage keys never do (they have no `//`)."""
    return _SCHEME_RE.match(text) is not None


def validate_bucket_name(bucket: str) -> str:
    """Return `bucket` unchanged if it follows S3 naming rules, else raise ConfigError."""
    if (
        not _BUCKET_RE.fullmatch(bucket)
        or ".." in bucket
        or _IPV4_RE.fullmatch(bucket)
        or bucket.startswith("xn--")
    ):
        raise ConfigError(
            f"invalid S3 bucket name {bucket!r}: 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return bucket


def format_s3_uri(bucket: str, key: str) -> str:
    """`s3://bucket/key`, validating both parts."""
    validate_bucket_name(bucket)
    _check_s3_key(key, uri=f"s3://{bucket}/{key}")
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> S3Uri:
    """Parse `s3://bucket/key`; the bucket must be valid and the key non-empty."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, sep, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"S3 URI {uri!r} names no bucket (expected s3://bucket/key)")
    if not sep or not key:
        raise ConfigError(f"S3 URI {uri!r} names no object key (expected s3://bucket/key)")
    try:
        validate_bucket_name(bucket)
    except ConfigError as exc:
        raise ConfigError(f"S3 URI {uri!r}: {exc.message}") from None
    _check_s3_key(key, uri=uri)
    return S3Uri(bucket=bucket, key=key)


def format_file_uri(path: PurePosixPath | str) -> str:
    """`file:///abs/path`, percent-encoding everything but `/` and unreserved characters."""
    posix = PurePosixPath(path)
    _check_file_path(posix, uri=str(path))
    return "file://" + quote(str(posix), safe="/")


def parse_file_uri(uri: str) -> FileUri:
    """Parse `file:///abs/path` (or `file://localhost/abs/path`) into an absolute path."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ConfigError(f"not a file:// URI: {uri!r}")
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"file URI {uri!r} names a remote host {parts.netloc!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"file URI {uri!r} must not carry a query or fragment")
    raw = unquote(parts.path)
    if not raw.startswith("/"):
        raise ConfigError(f"file URI {uri!r} is not absolute (expected file:///abs/path)")
    path = PurePosixPath(raw)
    _check_file_path(path, uri=uri)
    return FileUri(path=path)


def parse_uri(uri: str) -> StorageUri:
    """Parse an `s3://` or `file://` URI; any other scheme is a ConfigError naming it."""
    if uri.startswith("s3://"):
        return parse_s3_uri(uri)
    if uri.startswith("file:"):
        return parse_file_uri(uri)
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    raise ConfigError(
        f"unsupported storage URI {uri!r}"
        + (f" (scheme {scheme!r})" if scheme else "")
        + ": expected s3://bucket/key or file:///abs/path"
    )


def _check_s3_key(key: str, *, uri: str) -> None:
    if not key:
        raise ConfigError(f"S3 URI {uri!r} names no object key")
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        raise ConfigError(f"S3 URI {uri!r}: key longer than {_MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise ConfigError(f"S3 URI {uri!r}: key contains a NUL character")


def _check_file_path(path: PurePosixPath, *, uri: str) -> None:
    if not path.is_absolute():
        raise ConfigError(f"file path {uri!r} is not absolute")
    text = str(path)
    if "\x00" in text:
        raise ConfigError(f"file URI {uri!r} contains a NUL character")
    # PurePosixPath collapses "." segments (harmless) but keeps "..", which could climb out.
    if ".." in path.parts:
        raise ConfigError(f"file URI {uri!r} contains a '..' segment (path traversal)")
