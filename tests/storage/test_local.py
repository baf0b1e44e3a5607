"""LocalStorage specifics: confinement to the root, atomic writes, file:// URIs, flat memory."""

from __future__ import annotations

import os
import tracemalloc
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from mss_jobs import atomic
from mss_jobs.errors import ConfigError, StorageError
from mss_jobs.storage import LocalStorage

MakeFile = Callable[[str, bytes], Path]


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store", prefix="jobs")


def _all_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_objects_are_plain_files_under_the_root(local: LocalStorage, make_file: MakeFile) -> None:
    stored = local.upload_file(make_file("a.wav", b"abc"), "jobs/1/vocals.wav")
    assert (local.root / "jobs" / "1" / "vocals.wav").read_bytes() == b"abc"
    assert stored.uri == (local.root / "jobs" / "1" / "vocals.wav").as_uri()
    assert stored.etag == stored.sha256


def test_symlink_escaping_the_root_is_rejected(
    local: LocalStorage, make_file: MakeFile, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"secret")
    (local.root / "jobs").mkdir()
    (local.root / "jobs" / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(ConfigError, match="outside the storage root"):
        local.download_file("jobs/link/secret.wav", tmp_path / "stolen.wav")
    with pytest.raises(ConfigError, match="outside the storage root"):
        local.upload_file(make_file("x.wav", b"x"), "jobs/link/planted.wav")
    assert not (outside / "planted.wav").exists()
    assert list(local.list_keys("jobs")) == []  # links are not followed when listing
    assert local.delete_prefix("jobs") == 0
    assert (outside / "secret.wav").exists()


def test_file_uris_must_stay_inside_the_root(local: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(b"x")
    with pytest.raises(ConfigError, match="outside the storage root"):
        local.download_file(outside.as_uri(), tmp_path / "copy.wav")
    with pytest.raises(ConfigError, match=r"'\.\.'"):
        local.download_file(f"{local.root.as_uri()}/../elsewhere.wav", tmp_path / "copy.wav")
    with pytest.raises(ConfigError, match="expected a file:// URI"):
        local.download_file("s3://bucket/jobs/1/a.wav", tmp_path / "copy.wav")


def test_failed_write_keeps_the_old_object_and_leaves_no_temp_file(
    local: LocalStorage, make_file: MakeFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.upload_file(make_file("v1.wav", b"version 1"), "jobs/1/vocals.wav")

    write = atomic.HashingWriter.write

    def half_write(self: atomic.HashingWriter, chunk: bytes) -> None:
        write(self, chunk[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.HashingWriter, "write", half_write)
    with pytest.raises(StorageError, match="No space left"):
        local.upload_file(make_file("v2.wav", b"version 2"), "jobs/1/vocals.wav")

    assert (local.root / "jobs/1/vocals.wav").read_bytes() == b"version 1"
    assert _all_files(local.root) == ["jobs/1/vocals.wav"]


def test_temporary_files_are_invisible_and_deleted(
    local: LocalStorage, make_file: MakeFile
) -> None:
    local.upload_file(make_file("a.wav", b"a"), "jobs/3/a.wav")
    leftover = local.root / "jobs/3" / f".b.wav{atomic.TEMP_MARKER}deadbeef"
    leftover.write_bytes(b"crashed mid-write")

    assert list(local.list_keys("jobs/3")) == ["jobs/3/a.wav"]
    assert local.delete_prefix("jobs/3") == 1
    assert not (local.root / "jobs/3").exists()


def test_presigned_urls_are_file_uris_of_the_object(
    local: LocalStorage, make_file: MakeFile
) -> None:
    local.upload_file(make_file("a.wav", b"served locally"), "jobs/1/a.wav")
    url = local.presign_get("jobs/1/a.wav", expires_in=60, filename="a.wav")
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"served locally"
    assert local.presign_put("jobs/1/b.wav", expires_in=60) == local.uri_for("jobs/1/b.wav")


def test_a_key_that_is_a_directory_is_not_an_object(
    local: LocalStorage, make_file: MakeFile, tmp_path: Path
) -> None:
    local.upload_file(make_file("a.wav", b"a"), "jobs/1/input/a.wav")
    assert not local.exists("jobs/1/input")
    with pytest.raises(StorageError):
        local.upload_file(make_file("b.wav", b"b"), "jobs/1/input")  # a directory is there


def test_memory_stays_flat_for_large_files(
    local: LocalStorage, make_file: MakeFile, tmp_path: Path
) -> None:
    size = 24 * 1024 * 1024
    source = tmp_path / "src" / "big.wav"
    source.parent.mkdir(parents=True, exist_ok=True)
    with source.open("wb") as handle:
        for _ in range(size // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))

    tracemalloc.start()
    try:
        local.upload_file(source, "jobs/big/mix.wav")
        local.download_file("jobs/big/mix.wav", tmp_path / "big-copy.wav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte file"
    assert (tmp_path / "big-copy.wav").stat().st_size == size


def test_root_is_created_and_prefix_normalized(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "a" / "b", prefix="/jobs/")
    assert storage.root.is_dir()
    assert storage.prefix == "jobs"
    with pytest.raises(ConfigError):
        LocalStorage(tmp_path, chunk_size=0)
