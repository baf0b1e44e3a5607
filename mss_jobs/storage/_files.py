"""Local-file plumbing shared by the backends: chunked hashing and atomic replacement.

Everything streams in fixed-size chunks, so memory stays flat however large the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

__all__ = ["CHUNK_SIZE", "TEMP_MARKER", "atomic_destination", "copy_hashing", "hash_file"]

CHUNK_SIZE = 1024 * 1024
TEMP_MARKER = ".mss-part-"
"""Temporary siblings are named `.<name>.mss-part-<random>`: dot-leading, so never a valid key."""

_MAX_NAME_STEM = 180  # leaves room for the marker inside NAME_MAX (255 bytes on most systems)


def hash_file(path: Path, *, chunk_size: int = CHUNK_SIZE) -> tuple[int, str]:
    """Size in bytes and SHA-256 hex digest of `path`, read once in `chunk_size` pieces."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def copy_hashing(source: Path, dest: Path, *, chunk_size: int = CHUNK_SIZE) -> tuple[int, str]:
    """Copy `source` to `dest` (created or truncated) and hash the bytes in the same pass.

    `dest` is flushed to disk before returning, so a rename that follows is durable.
    """
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as reader, dest.open("wb") as writer:
        while chunk := reader.read(chunk_size):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()


@contextmanager
def atomic_destination(dest: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `dest` to write; rename it over `dest` only on success.

    Readers see the old file or the whole new one, never a partial write; on any exception the
    temporary file is removed and `dest` is untouched. Creates missing parent directories.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_name(f".{dest.name[:_MAX_NAME_STEM]}{TEMP_MARKER}{uuid4().hex[:12]}")
    try:
        yield temp
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
