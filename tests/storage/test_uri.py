"""Parsing and formatting storage URIs."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from mss_jobs.errors import ConfigError
from mss_jobs.storage.uri import (
    FileUri,
    S3Uri,
    format_file_uri,
    format_s3_uri,
    looks_like_uri,
    parse_file_uri,
    parse_s3_uri,
    parse_uri,
)


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://my-bucket/a.wav", "my-bucket", "a.wav"),
        (
            "s3://my.bucket/dir/sub/track 01 (live).flac",
            "my.bucket",
            "dir/sub/track 01 (live).flac",
        ),
        ("s3://bkt/with?query#hash%20", "bkt", "with?query#hash%20"),
        ("s3://bkt/dir/", "bkt", "dir/"),
    ],
)
def test_s3_uris_round_trip(uri: str, bucket: str, key: str) -> None:
    parsed = parse_s3_uri(uri)
    assert parsed == S3Uri(bucket=bucket, key=key)
    assert str(parsed) == format_s3_uri(bucket, key) == uri
    assert parse_uri(uri) == parsed


def test_file_uris_round_trip_with_percent_encoding() -> None:
    path = PurePosixPath("/data/my songs/Sóng #1.wav")
    uri = format_file_uri(path)
    assert uri == "file:///data/my%20songs/S%C3%B3ng%20%231.wav"
    assert parse_file_uri(uri) == FileUri(path=path)
    assert parse_uri("file://localhost/data/x.wav") == FileUri(PurePosixPath("/data/x.wav"))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://", "no bucket"),
        ("s3:///key", "no bucket"),
        ("s3://bucket", "no object key"),
        ("s3://bucket/", "no object key"),
        ("s3://Bad_Bucket/key", "bucket name"),
        ("s3://b/key", "bucket name"),
        ("s3:/bucket/key", "unsupported"),
        ("S3://bucket/key", "unsupported"),
        ("file:///data/../etc/passwd", r"'\.\.'"),
        ("file:///data/%2E%2E/etc/passwd", r"'\.\.'"),
        ("file://remote-host/data/x.wav", "remote host"),
        ("file:relative/x.wav", "not absolute"),
        ("file:///data/x.wav?download=1", "query"),
        ("file:///data/%00x.wav", "NUL"),
    ],
)
def test_malformed_s3_and_file_uris_name_the_uri(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_uri(uri)
    assert uri in caught.value.message


def test_other_schemes_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'https'"):
        parse_uri("https://example.com/a.wav")
    with pytest.raises(ConfigError, match="unsupported"):
        parse_uri("just/a/key")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("s3://b/k", True), ("file:///x", True), ("jobs/1/a.wav", False), ("a:b/c", False)],
)
def test_looks_like_uri(text: str, expected: bool) -> None:
    assert looks_like_uri(text) is expected
