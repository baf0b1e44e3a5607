"""Atomic file writes and streaming SHA-256: the one place a file is written under a temporary
name and renamed into place.

A new file is written to a hidden sibling of its destination, `.<name>.mss-part-<random>`
(dot-leading, so never a valid storage key nor mistaken for a result), and renamed over the
destination only once complete: a reader sees the old file or the whole new one, never part of
one, and on any error the temporary file is removed and the destination is left untouched.
Bytes written through `atomic_write` are hashed on the way and flushed to disk before the rename,
so a digest costs no second read and a crash cannot leave a renamed but empty file.

    with atomic_write(dest) as out:           # bytes streamed here: hashed, fsynced, renamed
        for chunk in source:
            out.write(chunk)
    out.size, out.sha256

    with atomic_destination(dest) as temp:    # a path some library writes (boto3, soundfile)
        library.save(temp)

    pending = PendingFile(dest, suffix=".partial")   # rename or discard later, e.g. one stem
    pending.commit()  # or pending.discard()         # of several committed together

Everything streams in fixed-size chunks, so memory stays flat however large the file. Standard
library only: storage, audio, the model cache, the API and the HTTP client all write through it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import BinaryIO, Final
from uuid import uuid4

__all__ = [
    "CHUNK_SIZE",
    "TEMP_MARKER",
    "HashingWriter",
    "PendingFile",
    "atomic_destination",
    "atomic_write",
    "copy_file",
    "hash_chunks",
    "hash_file",
]

CHUNK_SIZE: Final = 1024 * 1024
TEMP_MARKER: Final = ".mss-part-"
"""Temporary siblings are named `.<name>.mss-part-<random>[suffix]`."""

_MAX_NAME_STEM: Final = 180  # room for the marker inside NAME_MAX (255 bytes on most systems)


class HashingWriter:
    """Writes bytes to a binary file, counting and hashing (SHA-256) them on the way."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0
        """Bytes written so far."""

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written so far."""
        return self._digest.hexdigest()


class PendingFile:
    """A temporary sibling of `dest` that `commit` renames over `dest` and `discard` removes.

    For writers whose commit is decided later than one `with` block (several files committed
    together); `atomic_destination` is the same as a context manager. Nothing is created here.
    """

    def __init__(self, dest: Path, *, suffix: str = "") -> None:
        self.dest = dest
        self.temp = dest.with_name(
            f".{dest.name[:_MAX_NAME_STEM]}{TEMP_MARKER}{uuid4().hex[:12]}{suffix}"
        )

    def commit(self) -> Path:
        """Rename the temporary file over `dest` (atomic on one filesystem); returns `dest`."""
        os.replace(self.temp, self.dest)
        return self.dest

    def discard(self) -> None:
        """Remove the temporary file if it exists."""
        self.temp.unlink(missing_ok=True)


@contextmanager
def atomic_destination(dest: Path, *, parents: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `dest` to write; rename it over `dest` only on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and `dest` is
    untouched. Creates missing parent directories unless `parents` is False.
    """
    if parents:
        dest.parent.mkdir(parents=True, exist_ok=True)
    pending = PendingFile(dest)
    try:
        yield pending.temp
        pending.commit()
    except BaseException:
        pending.discard()
        raise


@contextmanager
def atomic_write(dest: Path, *, parents: bool = True) -> Iterator[HashingWriter]:
    """Yield a `HashingWriter` on a temporary sibling of `dest`; on success the file is
    flushed to disk, closed and renamed over `dest` (see `atomic_destination`)."""
    with atomic_destination(dest, parents=parents) as temp, temp.open("wb") as handle:
        writer = HashingWriter(handle)
        yield writer
        handle.flush()
        os.fsync(handle.fileno())


def hash_chunks(chunks: Iterable[bytes]) -> tuple[int, str]:
    """Size in bytes and SHA-256 hex digest of the concatenated `chunks`."""
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def hash_file(path: Path, *, chunk_size: int = CHUNK_SIZE) -> tuple[int, str]:
    """Size in bytes and SHA-256 hex digest of `path`, read once in `chunk_size` pieces."""
    with path.open("rb") as handle:
        return hash_chunks(iter(partial(handle.read, chunk_size), b""))


def copy_file(source: Path, dest: Path, *, chunk_size: int = CHUNK_SIZE) -> tuple[int, str]:
    """Copy `source` over `dest` atomically, hashing in the same pass; size and SHA-256."""
    with source.open("rb") as reader, atomic_write(dest) as out:
        for chunk in iter(partial(reader.read, chunk_size), b""):
            out.write(chunk)
    return out.size, out.sha256
