"""Key helpers: deterministic output keys, sanitized input keys, strict validation."""

from __future__ import annotations

from uuid import UUID

import pytest

from mss_jobs.errors import ConfigError
from mss_jobs.storage.base import (
    content_disposition,
    content_type_for,
    folder_prefix,
    input_key,
    job_prefix,
    normalize_prefix,
    output_key,
    sanitize_filename,
    validate_key,
)

JOB = UUID("12345678-1234-5678-1234-567812345678")


def test_output_key_is_a_pure_function_of_the_job() -> None:
    key = output_key("mss/outputs", JOB, "vocals", "flac")
    assert key == "mss/outputs/12345678-1234-5678-1234-567812345678/vocals.flac"
    assert output_key("mss/outputs", JOB, "vocals", "flac") == key
    assert output_key("/mss/outputs/", str(JOB), "vocals", ".FLAC") == key
    assert output_key("", 17, "no_vocals", "wav") == "17/no_vocals.wav"


@pytest.mark.parametrize(
    ("job_id", "stem", "ext"),
    [
        ("../1", "vocals", "wav"),
        ("a/b", "vocals", "wav"),
        ("", "vocals", "wav"),
        (True, "vocals", "wav"),
        ("1", "voc als", "wav"),
        ("1", "../vocals", "wav"),
        ("1", "vocals.x", "wav"),
        ("1", "", "wav"),
        ("1", "vocals", ""),
        ("1", "vocals", "w/av"),
        ("1", "vocals", "wav;rm"),
    ],
)
def test_output_key_rejects_unsafe_parts(job_id: object, stem: str, ext: str) -> None:
    with pytest.raises(ConfigError):
        output_key("jobs", job_id, stem, ext)  # type: ignore[arg-type]


def test_job_prefix_and_input_key_share_the_job_folder() -> None:
    assert job_prefix("jobs", 7) == "jobs/7/"
    assert input_key("jobs", 7, "My Song.MP3") == "jobs/7/input/My_Song.mp3"
    assert input_key("jobs", 7, "song.wav").startswith(job_prefix("jobs", 7))
    assert output_key("jobs", 7, "vocals", "wav").startswith(job_prefix("jobs", 7))


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("song.wav", "song.wav"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\Track 01.FLAC", "Track_01.flac"),
        ("Sóng — «live».mp3", "Song_live.mp3"),
        (".hidden.wav", "hidden.wav"),
        ("..", "upload"),
        ("", "upload"),
        ("日本語.wav", "upload.wav"),
        ("a\r\nb.wav", "a_b.wav"),
        ("archive.tar.gz", "archive.tar.gz"),
        ("weird.w@v", "weird.w_v"),
        ("x" * 300 + ".wav", "x" * 196 + ".wav"),
    ],
)
def test_sanitize_filename(filename: str, expected: str) -> None:
    assert sanitize_filename(filename) == expected
    validate_key(sanitize_filename(filename))


@pytest.mark.parametrize(
    "key",
    ["", "/a", "a/", "a//b", "../a", "a/./b", "a/.b", "a\\b", "a\nb", "a\x00b", "é" * 600],
)
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(ConfigError):
        validate_key(key)


def test_prefix_helpers() -> None:
    assert normalize_prefix("/jobs/") == "jobs"
    assert normalize_prefix("") == ""
    assert folder_prefix("jobs/4", allow_empty=False) == "jobs/4/"
    assert folder_prefix("", allow_empty=True) == ""
    with pytest.raises(ConfigError):
        folder_prefix("", allow_empty=False)
    with pytest.raises(ConfigError):
        normalize_prefix("jobs/../x")


def test_content_disposition_cannot_inject_headers() -> None:
    header = content_disposition('evil\r\nSet-Cookie: x=1; "q".wav')
    assert "\r" not in header
    assert "\n" not in header
    assert header.startswith('attachment; filename="evilSet-Cookie: x=1; _q_.wav"; ')
    assert header.endswith("filename*=UTF-8''evilSet-Cookie%3A%20x%3D1%3B%20%22q%22.wav")
    with pytest.raises(ConfigError):
        content_disposition("\r\n")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("jobs/1/vocals.wav", "audio/wav"),
        ("jobs/1/vocals.FLAC", "audio/flac"),
        ("jobs/1/vocals.mp3", "audio/mpeg"),
        ("jobs/1/noext", "application/octet-stream"),
        ("jobs/1.d/noext", "application/octet-stream"),
    ],
)
def test_content_type_for(key: str, expected: str) -> None:
    assert content_type_for(key) == expected
