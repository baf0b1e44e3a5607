"""Object storage in a local directory, for embedded mode (CLI, single-process API, tests).

Each key is a file under `root` at the key's path. Writes go to a dot-named temporary sibling
that is fsynced and renamed into place, so readers never see a partial object and a crash leaves
at most a hidden temporary file (never listed, removed by `delete_prefix`).

Presigned URLs are plain `file://` URIs of the object's path: there is no signing and no expiry
(`expires_in` is validated, then unused) and no Content-Disposition. The embedded API serves such
objects itself, reading the file and setting the attachment name; a client never opens them.

Paths cannot escape `root`: keys are validated (no `..`, no dot-leading segments) and the resolved
path, symlinks followed, must stay inside the resolved root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from mss_jobs.atomic import CHUNK_SIZE, copy_file
from mss_jobs.errors import ConfigError, InputNotFoundError, StorageError
from mss_jobs.storage.base import (
    DownloadedObject,
    StoredObject,
    folder_prefix,
    normalize_prefix,
    validate_expires_in,
    validate_key,
)
from mss_jobs.storage.uri import FileUri, format_file_uri, looks_like_uri, parse_uri

__all__ = ["LocalStorage"]


class LocalStorage:
    """`ObjectStorage` on a directory. `root` is created if missing."""

    def __init__(self, root: str | Path, *, prefix: str = "", chunk_size: int = CHUNK_SIZE) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self._prefix = normalize_prefix(prefix)
        self._chunk_size = chunk_size
        try:
            self._root = Path(root).expanduser().resolve()
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create local storage root {root!s}: {exc.strerror}"
            ) from exc

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self._root)!r}, prefix={self._prefix!r})"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def prefix(self) -> str:
        return self._prefix

    def path_for(self, key: str) -> Path:
        """The file that holds `key`; raises ConfigError if it would resolve outside `root`."""
        validate_key(key)
        path = self._root.joinpath(*key.split("/"))
        if not path.resolve().is_relative_to(self._root):
            raise ConfigError(f"object key {key!r} resolves outside the storage root")
        return path

    def uri_for(self, key: str) -> str:
        return format_file_uri(PurePosixPath(self.path_for(key)))

    def upload_file(
        self, path: str | Path, key: str, *, content_type: str | None = None
    ) -> StoredObject:
        """Copy `path` to `key`, hashing in the same pass. `content_type` is not stored here:
        the embedded API derives it from the key's extension."""
        dest = self.path_for(key)
        source = Path(path)
        if not source.is_file():
            raise StorageError(f"cannot upload {source} to {self.uri_for(key)}: not a file")
        try:
            size, sha256 = copy_file(source, dest, chunk_size=self._chunk_size)
        except OSError as exc:
            raise StorageError(
                f"cannot store {source} at {self.uri_for(key)}: {exc.strerror}"
            ) from exc
        return StoredObject(uri=self.uri_for(key), key=key, bytes=size, sha256=sha256, etag=sha256)

    def download_file(self, uri_or_key: str, dest_path: str | Path) -> DownloadedObject:
        """Copy a key, or a `file://` URI inside `root`, to `dest_path` (atomic, hashed)."""
        dest = Path(dest_path)
        size, sha256 = self._copy_object(self._locate(uri_or_key), dest)
        return DownloadedObject(path=dest, bytes=size, sha256=sha256)

    def copy(self, source_uri_or_key: str, dest_key: str) -> StoredObject:
        """Copy a key, or a `file://` URI inside `root`, to `dest_key`: a hashed copy written to
        a temporary sibling and renamed into place, so readers never see half an object."""
        dest = self.path_for(dest_key)
        size, sha256 = self._copy_object(self._locate(source_uri_or_key), dest)
        return StoredObject(
            uri=self.uri_for(dest_key), key=dest_key, bytes=size, sha256=sha256, etag=sha256
        )

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def list_keys(self, prefix: str, *, suffixes: Iterable[str] | None = None) -> Iterator[str]:
        """Keys under the folder `prefix`, lazily, in the same byte order S3 lists them."""
        folder = folder_prefix(prefix, allow_empty=True)
        wanted = tuple(suffixes) if suffixes is not None else None
        start = self.path_for(folder.rstrip("/")) if folder else self._root
        for key in self._walk(start, folder):
            if wanted is None or key.endswith(wanted):
                yield key

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder `prefix` (and temporary files, not counted)."""
        folder = folder_prefix(prefix, allow_empty=False)
        top = self.path_for(folder.rstrip("/"))
        if not top.is_dir() or top.is_symlink():
            return 0
        deleted = 0
        try:
            for directory, subdirs, files in os.walk(top, topdown=False):
                for name in files:
                    os.unlink(os.path.join(directory, name))
                    deleted += not name.startswith(".")
                for name in subdirs:
                    sub = os.path.join(directory, name)
                    if os.path.islink(sub):
                        os.unlink(sub)  # never follow a link out of the tree
                    else:
                        os.rmdir(sub)
            top.rmdir()
        except OSError as exc:
            raise StorageError(f"cannot delete {self.uri_for(folder.rstrip('/'))}: {exc}") from exc
        return deleted

    def presign_get(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """`file://` URI of the object; see the module docstring for why nothing is signed."""
        validate_expires_in(expires_in)
        return self.uri_for(key)

    def presign_put(self, key: str, *, expires_in: int, content_type: str | None = None) -> str:
        """`file://` URI where the object will live; the embedded API writes it there."""
        validate_expires_in(expires_in)
        return self.uri_for(key)

    def _copy_object(self, key: str, dest: Path) -> tuple[int, str]:
        """Copy the object `key` to the file `dest` atomically; its size and SHA-256."""
        source = self.path_for(key)
        if not source.is_file():
            raise InputNotFoundError(f"no object at {self.uri_for(key)}")
        try:
            return copy_file(source, dest, chunk_size=self._chunk_size)
        except FileNotFoundError as exc:  # deleted between the check and the copy
            if not source.is_file():
                raise InputNotFoundError(f"no object at {self.uri_for(key)}") from exc
            raise StorageError(f"cannot write {dest}: {exc.strerror}") from exc
        except OSError as exc:
            raise StorageError(
                f"cannot copy {self.uri_for(key)} to {dest}: {exc.strerror}"
            ) from exc

    def _locate(self, uri_or_key: str) -> str:
        if not looks_like_uri(uri_or_key):
            return uri_or_key
        uri = parse_uri(uri_or_key)
        if not isinstance(uri, FileUri):
            raise ConfigError(f"local storage cannot fetch {uri_or_key!r}: expected a file:// URI")
        path = Path(uri.path)
        if not path.is_relative_to(self._root):
            # Reading arbitrary local files on a request's behalf would be a hole; only our own.
            raise ConfigError(f"file URI {uri_or_key!r} is outside the storage root {self._root}")
        return path.relative_to(self._root).as_posix()

    def _walk(self, directory: Path, key_prefix: str) -> Iterator[str]:
        """Depth-first, entries sorted as S3 sorts keys: a directory `d` sorts as `d/`."""
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot list {directory}: {exc.strerror}") from exc
        visible = [
            entry for entry in entries if not entry.name.startswith(".") and not entry.is_symlink()
        ]
        visible.sort(key=lambda entry: entry.name + ("/" if entry.is_dir() else ""))
        for entry in visible:
            if entry.is_dir():
                yield from self._walk(Path(entry.path), f"{key_prefix}{entry.name}/")
            elif entry.is_file():
                yield f"{key_prefix}{entry.name}"
