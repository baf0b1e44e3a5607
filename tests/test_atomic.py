"""mss_jobs.atomic: a file appears whole or not at all, hashed on the way. No services needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mss_jobs.atomic import (
    TEMP_MARKER,
    PendingFile,
    atomic_destination,
    atomic_write,
    copy_file,
    hash_chunks,
    hash_file,
)


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_hashes_and_renames_into_place(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "deep" / "out.bin"
    chunks = [b"abc", b"", b"def" * 1000]
    with atomic_write(dest) as out:
        for chunk in chunks:
            out.write(chunk)
        assert not dest.exists()  # nothing at the destination until the block ends

    data = b"".join(chunks)
    assert dest.read_bytes() == data
    assert (out.size, out.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert _siblings(dest.parent) == ["out.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")

    def half_written() -> None:
        with atomic_write(dest) as out:
            out.write(b"half of the new")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_written()
    assert dest.read_bytes() == b"old"
    assert _siblings(tmp_path) == ["out.bin"]


def test_atomic_destination_is_removed_on_interrupt(tmp_path: Path) -> None:
    dest = tmp_path / "out.flac"
    seen: list[Path] = []

    def interrupted() -> None:
        with atomic_destination(dest) as temp:
            seen.append(temp)
            temp.write_bytes(b"partial")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith(".out.flac" + TEMP_MARKER)
    assert _siblings(tmp_path) == []


def test_parents_false_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "missing" / "x", parents=False):
        pass
    assert _siblings(tmp_path) == []


def test_pending_files_commit_together_or_not_at_all(tmp_path: Path) -> None:
    stems = [PendingFile(tmp_path / f"{name}.flac", suffix=".partial") for name in ("a", "b")]
    for stem in stems:
        assert stem.temp.name.endswith(".partial")
        stem.temp.write_bytes(stem.dest.name.encode())
    assert not any(s.dest.exists() for s in stems)
    assert [s.commit() for s in stems] == [tmp_path / "a.flac", tmp_path / "b.flac"]
    assert _siblings(tmp_path) == ["a.flac", "b.flac"]

    doomed = PendingFile(tmp_path / "c.flac")
    doomed.temp.write_bytes(b"x")
    doomed.discard()
    doomed.discard()  # twice is fine
    assert _siblings(tmp_path) == ["a.flac", "b.flac"]


def test_long_names_keep_their_temporary_within_name_max(tmp_path: Path) -> None:
    dest = tmp_path / ("n" * 250)
    with atomic_write(dest) as out:
        out.write(b"ok")
    assert dest.read_bytes() == b"ok"


def test_hash_file_and_copy_file_agree_with_hashlib(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    data = bytes(range(256)) * 5000  # > one 1 MiB chunk at chunk_size=4096 many times over
    source.write_bytes(data)
    expected = (len(data), hashlib.sha256(data).hexdigest())

    assert hash_file(source, chunk_size=4096) == expected
    assert hash_chunks([data[:10], data[10:]]) == expected
    assert copy_file(source, tmp_path / "copy" / "dest.bin", chunk_size=4096) == expected
    assert (tmp_path / "copy" / "dest.bin").read_bytes() == data
    assert hash_chunks([]) == (0, hashlib.sha256(b"").hexdigest())
