"""The object-storage protocol every backend implements, and the pure helpers that build keys.

Keys are the full object names inside a bucket (or under a local root): what `uri_for` maps,
what the database stores. A backend's `prefix` is only the namespace this service writes into;
the helpers below build every key from it, so outputs are a function of the job alone:

    <prefix>/<job id>/<stem>.<ext>          output_key   (a re-run overwrites, never duplicates)
    <prefix>/<job id>/input/<filename>      input_key    (direct uploads, filename sanitized)
    <prefix>/<job id>/                      job_prefix   (delete_prefix removes the whole job)

Keys are validated strictly (no leading `/`, no empty, `.`, `..` or dot-leading segments, no
control characters) so that the same key is safe on S3 and as a path under a local root. Keys of
foreign objects named by an `s3://` input URI are not held to these rules.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote
from uuid import UUID

from mss_jobs.errors import ConfigError
from mss_jobs.settings import MAX_PRESIGN_SECONDS

__all__ = [
    "MAX_PRESIGN_SECONDS",
    "DownloadedObject",
    "JobId",
    "ObjectStorage",
    "StoredObject",
    "content_disposition",
    "content_type_for",
    "folder_prefix",
    "input_key",
    "job_prefix",
    "normalize_prefix",
    "output_key",
    "sanitize_filename",
    "validate_expires_in",
    "validate_key",
]

JobId = str | int | UUID
"""A job's id as the database hands it over; rendered with `str()` inside keys."""

_MAX_KEY_BYTES = 1024  # S3's limit on key length
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_STEM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_EXT_RE = re.compile(r"[a-z0-9]{1,10}")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_FILENAME_CHARS = 200
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

# mimetypes' tables vary by platform (several lack flac/opus): pin the audio types we emit.
_CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "aiff": "audio/aiff",
    "aif": "audio/aiff",
    "json": "application/json",
}


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What an upload produced: where it lives and what the stored bytes hash to."""

    uri: str
    key: str
    bytes: int
    sha256: str
    """Hex digest of the uploaded file, computed from the local file in one chunked pass."""
    etag: str
    """Backend's opaque tag, quotes stripped. S3 multipart uploads end in `-<parts>`."""


@dataclass(frozen=True, slots=True)
class DownloadedObject:
    """A downloaded object, complete at `path` (written atomically)."""

    path: Path
    bytes: int
    sha256: str


@runtime_checkable
class ObjectStorage(Protocol):
    """Object storage as the worker and the API need it; memory never grows with object size.

    Every method maps its backend's exceptions into `mss_jobs.errors`: a missing object is
    `InputNotFoundError`, a refusal that retrying cannot fix `StorageError`, a hiccup worth a
    retry `StorageUnavailableError` (a `TransientError`), a malformed key or URI `ConfigError`.
    """

    @property
    def prefix(self) -> str:
        """Namespace (no leading or trailing `/`, possibly empty) that the key helpers build on."""
        ...

    def upload_file(
        self, path: str | Path, key: str, *, content_type: str | None = None
    ) -> StoredObject:
        """Store the file at `path` under `key`, replacing any object there."""
        ...

    def download_file(self, uri_or_key: str, dest_path: str | Path) -> DownloadedObject:
        """Fetch a key or URI into `dest_path` via a temporary sibling renamed into place."""
        ...

    def copy(self, source_uri_or_key: str, dest_key: str) -> StoredObject:
        """Copy an object (a key, or a URI `download_file` accepts) to `dest_key`, replacing any
        object there; the result describes the copy as `upload_file` describes an upload.

        Nothing passes through this process where the backend can copy by itself (S3 copies
        server-side, in parts above the multipart threshold, so objects over 5 GB copy too). A
        missing source is `InputNotFoundError`, as for a download.
        """
        ...

    def exists(self, key: str) -> bool:
        """True when an object is stored under exactly `key`."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under the folder `prefix` (`a/b` means `a/b/…`); return the count."""
        ...

    def list_keys(self, prefix: str, *, suffixes: Iterable[str] | None = None) -> Iterator[str]:
        """Yield keys under the folder `prefix` in lexicographic order, lazily, page by page."""
        ...

    def presign_get(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A URL that downloads `key` without credentials, as attachment `filename` if given."""
        ...

    def presign_put(self, key: str, *, expires_in: int, content_type: str | None = None) -> str:
        """A URL that uploads to `key` without credentials (send the same Content-Type)."""
        ...

    def uri_for(self, key: str) -> str:
        """The canonical URI of `key` (`s3://…` or `file://…`), accepted by `download_file`."""
        ...


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a safe object key, else raise ConfigError naming it."""
    if not key:
        raise ConfigError("object key is empty")
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        raise ConfigError(f"object key {key[:64]!r}… is longer than {_MAX_KEY_BYTES} bytes")
    if _CONTROL_CHARS.search(key) or "\\" in key:
        raise ConfigError(f"object key {key!r} contains a control character or backslash")
    for segment in key.split("/"):
        if not segment:
            raise ConfigError(f"object key {key!r} has an empty segment (leading, trailing or //)")
        if segment.startswith("."):
            # Covers "." and ".." (traversal) and reserves dot-files for backends' temp files.
            raise ConfigError(f"object key {key!r} has a segment starting with '.' ({segment!r})")
    return key


def normalize_prefix(prefix: str) -> str:
    """Strip surrounding `/` and validate what remains as a key; `""` stays empty."""
    stripped = prefix.strip("/")
    if stripped:
        validate_key(stripped)
    return stripped


def folder_prefix(prefix: str, *, allow_empty: bool) -> str:
    """`a/b` → `a/b/`, so listing `jobs/4` never matches `jobs/42/…`. `""` → `""` if allowed."""
    stripped = normalize_prefix(prefix)
    if not stripped:
        if not allow_empty:
            raise ConfigError("refusing an empty prefix here: it would cover the whole store")
        return ""
    return stripped + "/"


def job_prefix(prefix: str, job_id: JobId) -> str:
    """`<prefix>/<job id>/`: the folder holding every object of one job."""
    return _join(normalize_prefix(prefix), _job_segment(job_id)) + "/"


def output_key(prefix: str, job_id: JobId, stem: str, ext: str) -> str:
    """`<prefix>/<job id>/<stem>.<ext>`: deterministic, so a re-run overwrites its own outputs.

    `ext` may be given with a leading dot and in any case (`.WAV` → `wav`).
    """
    if not _STEM_RE.fullmatch(stem):
        raise ConfigError(
            f"invalid stem name {stem!r}: 1-64 of letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    normalized_ext = ext.removeprefix(".").lower()
    if not _EXT_RE.fullmatch(normalized_ext):
        raise ConfigError(f"invalid file extension {ext!r}: 1-10 letters or digits")
    return validate_key(
        _join(normalize_prefix(prefix), _job_segment(job_id), f"{stem}.{normalized_ext}")
    )


def input_key(prefix: str, job_id: JobId, filename: str) -> str:
    """`<prefix>/<job id>/input/<sanitized filename>` for an input uploaded directly.

    Inside the job's folder so `delete_prefix(job_prefix(...))` removes it with the outputs.
    """
    return validate_key(
        _join(normalize_prefix(prefix), _job_segment(job_id), "input", sanitize_filename(filename))
    )


def sanitize_filename(filename: str) -> str:
    """A client's file name made safe as one key segment: basename only, `[A-Za-z0-9._-]`.

    Directory parts (either slash) are dropped, accents folded to ASCII, every other run of
    unsafe characters becomes `_`, leading dots are removed (no hidden files, no `..`), and the
    result is capped at 200 characters keeping the (lower-cased) extension. Never empty: a name
    with nothing usable becomes `upload` (keeping its extension).
    """
    base = re.split(r"[\\/]", filename)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    stem, dot, ext = ascii_name.rpartition(".")
    ext = ext.lower()
    if not dot or not _EXT_RE.fullmatch(ext):
        stem, ext = ascii_name, ""
    stem = _UNSAFE_FILENAME_CHARS.sub("_", stem).strip("._-")
    stem = stem[: _MAX_FILENAME_CHARS - len(ext) - 1] or "upload"
    return f"{stem}.{ext}" if ext else stem


def content_type_for(key: str) -> str:
    """The Content-Type stored with an object, from its extension; octet-stream if unknown."""
    ext = key.rpartition(".")[2].lower() if "." in key.rpartition("/")[2] else ""
    if ext in _CONTENT_TYPES:
        return _CONTENT_TYPES[ext]
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or "application/octet-stream"


def content_disposition(filename: str) -> str:
    """`attachment` header value for `filename` (RFC 6266: ASCII fallback + UTF-8 `filename*`).

    Control characters are removed first: a CR/LF here would let a file name inject headers.
    """
    cleaned = _CONTROL_CHARS.sub("", filename).strip()
    if not cleaned:
        raise ConfigError(f"download filename {filename!r} is empty after removing controls")
    fallback = (
        unicodedata.normalize("NFKD", cleaned).encode("ascii", "ignore").decode("ascii")
    ).replace("\\", "_").replace('"', "_") or "download"
    encoded = quote(cleaned, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def validate_expires_in(expires_in: int) -> int:
    """Seconds a presigned URL stays valid: 1 to 7 days' worth (SigV4's ceiling)."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise ConfigError(f"expires_in must be an integer number of seconds, got {expires_in!r}")
    if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
        raise ConfigError(f"{expires_in=} is outside 1..{MAX_PRESIGN_SECONDS} seconds")
    return expires_in


def _job_segment(job_id: JobId) -> str:
    text = str(job_id)
    if isinstance(job_id, bool) or not _JOB_ID_RE.fullmatch(text):
        raise ConfigError(
            f"invalid job id {job_id!r} for a storage key: 1-128 of letters, digits, '_' or '-'"
        )
    return text


def _join(*segments: str) -> str:
    return "/".join(segment for segment in segments if segment)
