"""Behaviour every `ObjectStorage` backend shares, run against moto S3 and a local directory."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mss_jobs.errors import ConfigError, InputNotFoundError
from mss_jobs.storage import ObjectStorage, job_prefix, output_key

MakeFile = Callable[[str, bytes], Path]


def _upload_bytes(storage: ObjectStorage, make_file: MakeFile, key: str, content: bytes) -> None:
    storage.upload_file(make_file(key.replace("/", "_"), content), key)


def test_backend_satisfies_protocol(storage: ObjectStorage) -> None:
    assert isinstance(storage, ObjectStorage)
    assert storage.prefix == "jobs"


def test_small_file_round_trip(storage: ObjectStorage, make_file: MakeFile, tmp_path: Path) -> None:
    content = os.urandom(100_000)
    key = output_key(storage.prefix, "job-1", "vocals", "wav")

    stored = storage.upload_file(make_file("in.wav", content), key)

    assert stored.key == key == "jobs/job-1/vocals.wav"
    assert stored.uri == storage.uri_for(key)
    assert stored.bytes == len(content)
    assert stored.sha256 == hashlib.sha256(content).hexdigest()
    assert stored.etag
    downloaded = storage.download_file(key, tmp_path / "out" / "vocals.wav")
    assert (tmp_path / "out" / "vocals.wav").read_bytes() == content
    assert (downloaded.bytes, downloaded.sha256) == (stored.bytes, stored.sha256)
    assert os.listdir(tmp_path / "out") == ["vocals.wav"]  # temporary sibling renamed away


def test_download_by_uri_and_over_an_existing_file(
    storage: ObjectStorage, make_file: MakeFile, tmp_path: Path
) -> None:
    stored = storage.upload_file(make_file("a.flac", b"new bytes"), "jobs/9/other.flac")
    dest = make_file("dest.flac", b"old bytes, longer than the new ones")

    downloaded = storage.download_file(stored.uri, dest)

    assert dest.read_bytes() == b"new bytes"
    assert downloaded.path == dest
    assert downloaded.sha256 == hashlib.sha256(b"new bytes").hexdigest()


def test_empty_file_round_trip(storage: ObjectStorage, make_file: MakeFile, tmp_path: Path) -> None:
    stored = storage.upload_file(make_file("empty.wav", b""), "jobs/e/empty.wav")
    downloaded = storage.download_file("jobs/e/empty.wav", tmp_path / "empty.wav")
    assert stored.bytes == downloaded.bytes == 0
    assert downloaded.sha256 == hashlib.sha256(b"").hexdigest()


def test_rerun_overwrites_the_same_deterministic_key(
    storage: ObjectStorage, make_file: MakeFile, tmp_path: Path
) -> None:
    first_key = output_key(storage.prefix, 42, "drums", "flac")
    storage.upload_file(make_file("first.flac", b"first attempt"), first_key)

    second_key = output_key(storage.prefix, 42, "drums", "flac")
    storage.upload_file(make_file("second.flac", b"second attempt"), second_key)

    assert second_key == first_key
    assert list(storage.list_keys(job_prefix(storage.prefix, 42))) == [first_key]
    storage.download_file(first_key, tmp_path / "got.flac")
    assert (tmp_path / "got.flac").read_bytes() == b"second attempt"


def test_exists(storage: ObjectStorage, make_file: MakeFile) -> None:
    _upload_bytes(storage, make_file, "jobs/1/bass.wav", b"x")
    assert storage.exists("jobs/1/bass.wav")
    assert not storage.exists("jobs/1/drums.wav")
    assert not storage.exists("jobs/1")  # a folder is not an object


def test_list_keys_is_a_folder_listing_in_key_order(
    storage: ObjectStorage, make_file: MakeFile
) -> None:
    keys = [
        "jobs/4/vocals.wav",
        "jobs/4/drums.wav",
        "jobs/4/input/song.mp3",
        "jobs/4/bass.flac",
        "jobs/4-b/other.wav",
        "jobs/42/vocals.wav",
        "other/4/vocals.wav",
    ]
    for key in keys:
        _upload_bytes(storage, make_file, key, key.encode())

    assert list(storage.list_keys("jobs/4")) == [
        "jobs/4/bass.flac",
        "jobs/4/drums.wav",
        "jobs/4/input/song.mp3",
        "jobs/4/vocals.wav",
    ]
    assert list(storage.list_keys("jobs/4/", suffixes=[".wav"])) == [
        "jobs/4/drums.wav",
        "jobs/4/vocals.wav",
    ]
    assert list(storage.list_keys("")) == sorted(keys)
    assert list(storage.list_keys("nothing/here")) == []


def test_delete_prefix_removes_one_job_across_pages(
    storage: ObjectStorage, make_file: MakeFile
) -> None:
    # 30 objects with the S3 fixture's page size 7 and delete batch 10: several of each.
    doomed = [output_key(storage.prefix, 7, f"stem{i:02d}", "wav") for i in range(29)]
    doomed.append("jobs/7/input/song.wav")
    kept = ["jobs/70/vocals.wav", "jobs/8/vocals.wav", "jobs/7.wav", "other/7/vocals.wav"]
    for key in doomed + kept:
        _upload_bytes(storage, make_file, key, b"data")

    assert storage.delete_prefix(job_prefix(storage.prefix, 7)) == 30

    assert list(storage.list_keys("jobs/7")) == []
    assert sorted(storage.list_keys("")) == sorted(kept)
    assert storage.delete_prefix("jobs/7") == 0  # idempotent


def test_delete_prefix_refuses_the_whole_store(storage: ObjectStorage) -> None:
    with pytest.raises(ConfigError, match="empty prefix"):
        storage.delete_prefix("")
    with pytest.raises(ConfigError, match="empty prefix"):
        storage.delete_prefix("/")


def test_missing_object_is_input_not_found_and_leaves_nothing(
    storage: ObjectStorage, tmp_path: Path
) -> None:
    dest_dir = tmp_path / "dl"
    dest_dir.mkdir()
    with pytest.raises(InputNotFoundError, match=r"jobs/404/vocals\.wav") as caught:
        storage.download_file("jobs/404/vocals.wav", dest_dir / "vocals.wav")
    assert caught.value.code == "input.not_found"
    assert os.listdir(dest_dir) == []


@pytest.mark.parametrize(
    "key", ["", "../x", "jobs/../../x", "/jobs/1/a.wav", "jobs//a.wav", "jobs/1/", "jobs/.hidden"]
)
def test_malformed_keys_are_rejected(
    storage: ObjectStorage, make_file: MakeFile, tmp_path: Path, key: str
) -> None:
    source = make_file("a.wav", b"x")
    with pytest.raises(ConfigError):
        storage.upload_file(source, key)
    with pytest.raises(ConfigError):
        storage.download_file(key, tmp_path / "a.wav")
    with pytest.raises(ConfigError):
        storage.exists(key)
    with pytest.raises(ConfigError):
        storage.presign_get(key, expires_in=60)


@pytest.mark.parametrize("expires_in", [0, -1, 7 * 24 * 3600 + 1])
def test_presign_expiry_is_validated(storage: ObjectStorage, expires_in: int) -> None:
    with pytest.raises(ConfigError, match="expires_in"):
        storage.presign_get("jobs/1/a.wav", expires_in=expires_in)
    with pytest.raises(ConfigError, match="expires_in"):
        storage.presign_put("jobs/1/a.wav", expires_in=expires_in)


@pytest.mark.parametrize("uri", ["https://example.com/a.wav", "ftp://host/a.wav", "s3://"])
def test_unsupported_uris_are_config_errors_naming_the_uri(
    storage: ObjectStorage, tmp_path: Path, uri: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(uri)):
        storage.download_file(uri, tmp_path / "a.wav")


# -- copy ----------------------------------------------------------------------------------------


def test_copy_makes_an_independent_object_described_like_an_upload(
    storage: ObjectStorage, make_file: MakeFile, tmp_path: Path
) -> None:
    content = os.urandom(50_000)
    source = storage.upload_file(
        make_file("v.wav", content), output_key("jobs", 1, "vocals", "wav")
    )
    dest_key = output_key(storage.prefix, 2, "vocals", "wav")

    copied = storage.copy(source.key, dest_key)

    assert (copied.key, copied.uri) == (dest_key, storage.uri_for(dest_key))
    assert (copied.bytes, copied.sha256) == (len(content), source.sha256)
    assert copied.etag
    storage.download_file(dest_key, tmp_path / "copy.wav")
    assert (tmp_path / "copy.wav").read_bytes() == content
    # Own object: deleting the source's job leaves the copy.
    assert storage.delete_prefix(job_prefix(storage.prefix, 1)) == 1
    assert storage.exists(dest_key)
    assert list(storage.list_keys(job_prefix(storage.prefix, 2))) == [dest_key]


def test_copy_by_uri_replaces_the_destination(storage: ObjectStorage, make_file: MakeFile) -> None:
    source = storage.upload_file(make_file("a.flac", b"new"), "jobs/1/drums.flac")
    storage.upload_file(make_file("b.flac", b"old and longer"), "jobs/2/drums.flac")

    copied = storage.copy(source.uri, "jobs/2/drums.flac")

    assert (copied.bytes, copied.sha256) == (3, hashlib.sha256(b"new").hexdigest())
    assert list(storage.list_keys("jobs/2")) == ["jobs/2/drums.flac"]  # no temporary left


def test_copy_of_a_missing_object_is_input_not_found_and_writes_nothing(
    storage: ObjectStorage,
) -> None:
    with pytest.raises(InputNotFoundError, match=r"jobs/404/vocals\.wav"):
        storage.copy("jobs/404/vocals.wav", "jobs/5/vocals.wav")
    assert list(storage.list_keys("jobs/5")) == []


@pytest.mark.parametrize("key", ["", "../x", "/jobs/1/a.wav", "jobs//a.wav", "jobs/.hidden"])
def test_copy_rejects_malformed_keys(storage: ObjectStorage, make_file: MakeFile, key: str) -> None:
    storage.upload_file(make_file("a.wav", b"x"), "jobs/1/a.wav")
    with pytest.raises(ConfigError):
        storage.copy("jobs/1/a.wav", key)
    with pytest.raises(ConfigError):
        storage.copy(key, "jobs/2/a.wav")
