"""Edge: model files — where they come from and the on-disk cache (downloads, digests).

A model needs a config and one or more checkpoints, each named by a `Resource` (a URL and, when
known, its SHA-256). Three kinds of source:

    /abs/path/model.ckpt, file:///abs/path   used in place, never copied
    s3://bucket/key                          through `mss_jobs.storage` (credentials from settings)
    https://host/path                        httpx, streamed; http:// only when explicitly allowed

Remote files land in a cache directory (`MSS_MODEL_DIR`), written to a temporary sibling while
they are hashed, checked against the known digest, then renamed into place, so a reader sees a
whole verified file or none, and two processes pulling the same file at once both end up with it:

    <root>/sha256/<64 hex>/<filename>     a full digest is known: content-addressed
    <root>/url/<sha256(url)[:32]>/<name>  anything else (configs, digests unknown or a prefix)

Nothing is fetched at import time: a download happens only in `ModelStore.fetch` (the CLI's
`models pull`, or a worker's first use of a model when pulling on demand is allowed).

Reading a checkpoint safely (`load_state_dict`, `extract_state_dict`) lives in `checkpoints.py`
and is re-exported here. The API reads cache paths through this module and must stay
torch-free: neither module imports torch at import time.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from mss_jobs.atomic import CHUNK_SIZE, HashingWriter, atomic_destination, atomic_write, hash_file
from mss_jobs.errors import (
    CheckpointError,
    ConfigError,
    InputNotFoundError,
    ModelDownloadError,
    ModelUnavailableError,
)

if TYPE_CHECKING:
    import httpx

    from mss_jobs.settings import Settings
    from mss_jobs.storage import ObjectStorage

__all__ = [
    "ModelStore",
    "ProgressCallback",
    "Resource",
    "S3Factory",
    "SourceKind",
    "cache_path",
    "model_store_from_settings",
    "source_kind",
]

log = logging.getLogger(__name__)

_HEX_RE = re.compile(r"[0-9a-f]{8,64}")
_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 150

SourceKind = Literal["file", "s3", "https", "http"]
ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) as a download proceeds."""
S3Factory = Callable[[str], "ObjectStorage"]
"""Builds a storage client able to read `s3://<bucket>/…` (argument: the bucket)."""


# ---------------------------------------------------------------------------------------------
# resources and where they are cached (pure)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resource:
    """One file a model needs: where it is and, when known, what it hashes to.

    `sha256` is the full hex digest, or a prefix of at least 8 hex digits (demucs and torch.hub
    name their files after one); None when nobody published it (then the file is trusted as
    served, and cached by URL). `filename` overrides the name taken from the URL's last segment
    (the suffix decides how a checkpoint is read).
    """

    url: str
    sha256: str | None = None
    filename: str | None = None

    def __post_init__(self) -> None:
        if not self.url or self.url != self.url.strip():
            raise ConfigError(f"invalid model source {self.url!r}: empty or padded with spaces")
        if self.sha256 is not None and not _HEX_RE.fullmatch(self.sha256):
            raise ConfigError(
                f"invalid sha256 {self.sha256!r} for {self.url}: expected 8 to 64 lowercase "
                "hex digits"
            )
        source_kind(self.url)  # raises ConfigError for unknown schemes

    @property
    def name(self) -> str:
        """The file name the resource is stored under (safe as one path segment)."""
        if self.filename:
            return _safe_name(self.filename)
        path = urlsplit(self.url).path if "://" in self.url else self.url
        return _safe_name(PurePosixPath(unquote(path)).name)

    @property
    def full_digest(self) -> bool:
        return self.sha256 is not None and len(self.sha256) == 64


def _safe_name(name: str) -> str:
    cleaned = _UNSAFE_NAME_RE.sub("_", name).strip("._-")
    if len(cleaned) > _MAX_NAME:
        stem, dot, suffix = cleaned.rpartition(".")
        cleaned = (
            (stem[: _MAX_NAME - len(suffix) - 1] + dot + suffix) if dot else cleaned[:_MAX_NAME]
        )
    return cleaned or "download"


def source_kind(url: str) -> SourceKind:
    """`file` (a path or file:// URI), `s3`, `https` or `http`; ConfigError for anything else."""
    if "://" not in url:
        return "file"
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("file", "s3", "https", "http"):
        return scheme  # type: ignore[return-value]
    raise ConfigError(
        f"unsupported model source {url!r}: expected a path, file://, s3:// or https:// URL"
    )


def _local_path(url: str) -> Path:
    if "://" not in url:
        return Path(url).expanduser()
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"file URI {url!r} names a host; expected file:///absolute/path")
    return Path(unquote(parts.path))


def cache_path(root: Path, resource: Resource) -> Path:
    """Where `resource` lives: its own path for local sources, else its place under `root`.

    Pure (no I/O): the API uses it to tell whether a model is available without touching torch.
    """
    if source_kind(resource.url) == "file":
        return _local_path(resource.url)
    if resource.full_digest:
        assert resource.sha256 is not None
        return root / "sha256" / resource.sha256 / resource.name
    url_key = hashlib.sha256(resource.url.encode("utf-8")).hexdigest()[:32]
    return root / "url" / url_key / resource.name


def _check_digest(resource: Resource, actual: str, *, where: str) -> None:
    if resource.sha256 is not None and not actual.startswith(resource.sha256):
        raise CheckpointError(
            f"checksum mismatch for {resource.url} ({where}): expected sha256 "
            f"{resource.sha256}{'' if resource.full_digest else '…'}, got {actual}"
        )


# ---------------------------------------------------------------------------------------------
# the store: cache lookups and downloads (I/O)
# ---------------------------------------------------------------------------------------------


class ModelStore:
    """Model files on this machine: cached remote files under `root`, local ones in place.

    `pull` allows `get` to download what is missing (a worker's first use); with it off, a
    missing file fails with `ModelUnavailableError` and an operator runs `mss-jobs models pull`.
    `fetch` always may download (that is the pull itself).
    """

    def __init__(
        self,
        root: Path,
        *,
        pull: bool = True,
        allow_http: bool = False,
        timeout_seconds: float = 60.0,
        s3: S3Factory | None = None,
    ) -> None:
        self.root = root
        self.pull = pull
        self.allow_http = allow_http
        self.timeout_seconds = timeout_seconds
        self._s3 = s3

    def path(self, resource: Resource) -> Path:
        """Where `resource` is (or would be) on disk; see `cache_path`."""
        return cache_path(self.root, resource)

    def cached(self, resource: Resource) -> Path | None:
        """The file if it is on disk, else None; never downloads."""
        path = self.path(resource)
        return path if path.is_file() else None

    def get(self, resource: Resource, *, progress: ProgressCallback | None = None) -> Path:
        """The file, downloading it first if it is missing and pulling is allowed."""
        path = self.cached(resource)
        if path is not None:
            return path
        if source_kind(resource.url) == "file":
            raise ModelUnavailableError(f"model file {self.path(resource)} does not exist")
        if not self.pull:
            raise ModelUnavailableError(
                f"{resource.url} is not in the model cache {self.root} and pulling on demand "
                "is off (MSS_MODEL_PULL_ON_DEMAND); run `mss-jobs models pull`"
            )
        return self.fetch(resource, progress=progress)

    def fetch(
        self, resource: Resource, *, progress: ProgressCallback | None = None, force: bool = False
    ) -> Path:
        """Download `resource` into the cache unless it is there (or `force`); return its path.

        Local files are only checked (existence, digest when known).
        """
        kind = source_kind(resource.url)
        dest = self.path(resource)
        if kind == "file":
            if not dest.is_file():
                raise ModelUnavailableError(f"model file {dest} does not exist")
            if resource.sha256 is not None:
                _check_digest(resource, hash_file(dest)[1], where=str(dest))
            return dest
        if dest.is_file() and not force:
            return dest
        log.info("fetching %s into %s", resource.url, dest)
        if kind == "s3":
            self._fetch_s3(resource, dest)
        else:
            if kind == "http" and not self.allow_http:
                raise ModelUnavailableError(
                    f"refusing plain-HTTP model source {resource.url}; use https:// or set "
                    "MSS_MODEL_SOURCES_ALLOW_HTTP=true"
                )
            self._fetch_http(resource, dest, progress)
        return dest

    # -- s3 -----------------------------------------------------------------------------------

    def _fetch_s3(self, resource: Resource, dest: Path) -> None:
        from mss_jobs.storage import S3Uri, parse_uri

        uri = parse_uri(resource.url)
        assert isinstance(uri, S3Uri)
        if self._s3 is None:
            raise ModelUnavailableError(
                f"cannot fetch {resource.url}: no S3 credentials or endpoint are configured here"
            )
        storage = self._s3(uri.bucket)
        with atomic_destination(dest) as temp:
            try:
                downloaded = storage.download_file(resource.url, temp)
            except InputNotFoundError as exc:
                raise ModelUnavailableError(f"model file {resource.url} not found: {exc}") from exc
            _check_digest(resource, downloaded.sha256, where="downloaded from S3")

    # -- http(s) ------------------------------------------------------------------------------

    def _fetch_http(
        self, resource: Resource, dest: Path, progress: ProgressCallback | None
    ) -> None:
        import httpx

        def refuse_downgrade(request: httpx.Request) -> None:
            if request.url.scheme == "http" and not self.allow_http:
                raise ModelUnavailableError(
                    f"{resource.url} redirected to plain HTTP ({request.url}); refusing"
                )

        timeout = httpx.Timeout(self.timeout_seconds)
        try:
            with (
                httpx.Client(
                    timeout=timeout,
                    follow_redirects=True,
                    max_redirects=10,
                    event_hooks={"request": [refuse_downgrade]},
                ) as client,
                client.stream("GET", resource.url) as response,
            ):
                _check_status(resource, response)
                with atomic_write(dest) as out:
                    _stream_to(response, out, progress)
                    _check_digest(resource, out.sha256, where="downloaded")
        except httpx.TooManyRedirects as exc:
            raise ModelUnavailableError(f"{resource.url}: too many redirects") from exc
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise ModelDownloadError(
                f"downloading {resource.url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except OSError as exc:
            raise CheckpointError(
                f"cannot write the download of {resource.url} to {dest}: {exc.strerror}"
            ) from exc


def model_store_from_settings(settings: Settings, *, pull: bool | None = None) -> ModelStore:
    """The store the settings describe (`MSS_MODEL_*`); `s3://` sources use the `MSS_S3_*`
    endpoint and credentials whatever the storage backend. `pull` overrides the setting."""

    def s3(bucket: str) -> ObjectStorage:
        from mss_jobs.storage import S3Storage

        return S3Storage(settings.s3, bucket=bucket, prefix="")

    return ModelStore(
        settings.model_dir,
        pull=settings.model_pull_on_demand if pull is None else pull,
        allow_http=settings.model_sources_allow_http,
        timeout_seconds=settings.model_download_timeout_seconds,
        s3=s3,
    )


def _check_status(resource: Resource, response: httpx.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    message = f"{resource.url} answered HTTP {status}"
    if status in (408, 429) or status >= 500:
        raise ModelDownloadError(message)
    raise ModelUnavailableError(message)


def _stream_to(
    response: httpx.Response, out: HashingWriter, progress: ProgressCallback | None
) -> None:
    """Write the whole body to `out` (which hashes it), reporting progress on the way."""
    length = response.headers.get("content-length")
    total = int(length) if length and length.isdigit() else None
    for chunk in response.iter_bytes(CHUNK_SIZE):
        out.write(chunk)
        if progress is not None:
            progress(out.size, total)
    if total is not None and out.size != total:  # h11 normally raises first; belt and braces
        raise ModelDownloadError(f"{response.url}: got {out.size} of {total} bytes")
