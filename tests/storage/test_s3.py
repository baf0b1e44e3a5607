"""S3Storage against a moto server over real HTTP: multipart, presigned URLs, error mapping."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from real_services import s3_storage

from mss_jobs.errors import (
    ConfigError,
    InputNotFoundError,
    MssError,
    StorageError,
    StorageUnavailableError,
    TransientError,
)
from mss_jobs.storage import S3Storage, output_key
from mss_jobs.storage.s3 import MIB

from .conftest import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Factory

MakeFile = Callable[[str, bytes], Path]


def _fetch(url: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read(), dict(response.headers.items())


def test_large_file_goes_multipart_and_round_trips(
    make_s3: S3Factory, make_file: MakeFile, tmp_path: Path
) -> None:
    storage = make_s3(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    content = os.urandom(12 * MIB + 123)
    key = output_key(storage.prefix, "big", "mix", "wav")

    stored = storage.upload_file(make_file("big.wav", content), key)

    assert stored.etag.endswith("-3"), f"expected a 3-part multipart ETag, got {stored.etag}"
    assert stored.bytes == len(content)
    assert stored.sha256 == hashlib.sha256(content).hexdigest()
    downloaded = storage.download_file(key, tmp_path / "big.wav")
    assert downloaded.sha256 == stored.sha256
    assert (tmp_path / "big.wav").read_bytes() == content


def test_small_file_is_a_single_put_with_metadata(make_s3: S3Factory, make_file: MakeFile) -> None:
    storage = make_s3()
    stored = storage.upload_file(make_file("a.flac", b"flac bytes"), "jobs/1/vocals.flac")
    custom = storage.upload_file(
        make_file("b.bin", b"other"), "jobs/1/notes.bin", content_type="text/plain"
    )

    assert "-" not in stored.etag
    head = storage.client.head_object(Bucket=storage.bucket, Key="jobs/1/vocals.flac")
    assert head["ContentType"] == "audio/flac"
    assert head["Metadata"] == {"sha256": stored.sha256}
    assert stored.uri == f"s3://{storage.bucket}/jobs/1/vocals.flac"
    custom_head = storage.client.head_object(Bucket=storage.bucket, Key=custom.key)
    assert custom_head["ContentType"] == "text/plain"


def test_presigned_get_serves_content_as_attachment(
    make_s3: S3Factory, make_file: MakeFile
) -> None:
    storage = make_s3()
    storage.upload_file(make_file("v.wav", b"RIFF fake wave"), "jobs/1/vocals.wav")

    body, headers = _fetch(storage.presign_get("jobs/1/vocals.wav", expires_in=300))
    assert body == b"RIFF fake wave"
    assert "attachment" not in headers.get("Content-Disposition", "")

    url = storage.presign_get("jobs/1/vocals.wav", expires_in=300, filename='Sóng "1" (vocals).wav')
    body, headers = _fetch(url)
    assert body == b"RIFF fake wave"
    disposition = headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert "filename*=UTF-8''S%C3%B3ng%20%221%22%20%28vocals%29.wav" in disposition
    assert SECRET_ACCESS_KEY not in url


def test_presigned_put_uploads_an_object(make_s3: S3Factory, tmp_path: Path) -> None:
    storage = make_s3()
    key = "jobs/5/input/song.wav"
    url = storage.presign_put(key, expires_in=300, content_type="audio/wav")

    request = urllib.request.Request(
        url, data=b"uploaded by a client", method="PUT", headers={"Content-Type": "audio/wav"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200

    assert storage.exists(key)
    downloaded = storage.download_file(key, tmp_path / "song.wav")
    assert downloaded.sha256 == hashlib.sha256(b"uploaded by a client").hexdigest()


def test_download_from_another_bucket_by_uri(
    make_s3: S3Factory, make_file: MakeFile, tmp_path: Path
) -> None:
    inputs = make_s3()
    inputs.upload_file(make_file("in.mp3", b"mp3 bytes"), "catalog/track 01.mp3")
    worker = make_s3()

    downloaded = worker.download_file(f"s3://{inputs.bucket}/catalog/track 01.mp3", tmp_path / "x")

    assert downloaded.bytes == len(b"mp3 bytes")
    assert (tmp_path / "x").read_bytes() == b"mp3 bytes"


def _operations(storage: S3Storage, source: Path, dest: Path) -> list[Callable[[], object]]:
    """One call of each kind that touches the bucket, on the keys under `jobs/1`."""
    return [
        lambda: storage.upload_file(source, "jobs/1/a.wav"),
        lambda: storage.download_file("jobs/1/a.wav", dest),
        lambda: storage.exists("jobs/1/a.wav"),
        lambda: list(storage.list_keys("jobs/1")),
        lambda: storage.delete_prefix("jobs/1"),
    ]


def test_missing_configured_bucket_is_a_permanent_storage_error(
    make_s3: S3Factory, make_file: MakeFile, tmp_path: Path
) -> None:
    storage = make_s3("mss-test-never-created", create=False)
    for attempt in _operations(storage, make_file("a.wav", b"x"), tmp_path / "a.wav"):
        with pytest.raises(StorageError, match="mss-test-never-created") as caught:
            attempt()
        assert caught.value.code == "storage.failed"
        assert "does not exist" in caught.value.message


def test_missing_bucket_named_by_an_input_uri_is_input_not_found(
    make_s3: S3Factory, tmp_path: Path
) -> None:
    storage = make_s3()
    with pytest.raises(InputNotFoundError, match=r"s3://mss-test-nobody-s-bucket/song\.wav"):
        storage.download_file("s3://mss-test-nobody-s-bucket/song.wav", tmp_path / "song.wav")


@pytest.fixture
def closed_port_endpoint() -> str:
    """A loopback URL nothing listens on: bind a port, then release it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_endpoint_is_transient_and_quick(
    closed_port_endpoint: str, make_file: MakeFile, tmp_path: Path
) -> None:
    storage = s3_storage(
        closed_port_endpoint,
        "mss-test-unreachable",
        prefix="jobs",
        max_attempts=1,
        connect_timeout=1.0,
        read_timeout=1.0,
    )
    attempts = _operations(storage, make_file("a.wav", b"x"), tmp_path / "a.wav")
    attempts.append(storage.ensure_bucket)
    started = time.monotonic()
    for attempt in attempts:
        with pytest.raises(StorageUnavailableError) as caught:
            attempt()
        assert isinstance(caught.value, TransientError)
        assert caught.value.code == "storage.unavailable"
        assert "s3://mss-test-unreachable" in caught.value.message
    assert time.monotonic() - started < 5
    assert not (tmp_path / "a.wav").exists()


def test_credentials_never_appear_in_messages_or_repr(
    make_s3: S3Factory, closed_port_endpoint: str, tmp_path: Path
) -> None:
    messages = [repr(make_s3(create=False))]
    for storage in (
        make_s3("mss-test-never-created", create=False),
        make_s3(endpoint_url=closed_port_endpoint, create=False, max_attempts=1),
    ):
        with pytest.raises(MssError) as caught:
            storage.download_file("jobs/1/a.wav", tmp_path / "a.wav")
        messages.append(str(caught.value))
    with pytest.raises(ConfigError) as bad_endpoint:
        S3Storage("mss-test", endpoint_url=f"http://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@host:9000")
    messages.append(str(bad_endpoint.value))

    for message in messages:
        assert SECRET_ACCESS_KEY not in message
        assert ACCESS_KEY_ID not in message


def test_ensure_bucket_is_idempotent(make_s3: S3Factory) -> None:
    storage = make_s3()
    storage.ensure_bucket()
    assert list(storage.list_keys("")) == []


@pytest.fixture
def injected_client(moto_endpoint: str) -> Iterator[object]:
    client = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    ).client("s3", endpoint_url=moto_endpoint, config=Config(s3={"addressing_style": "path"}))
    yield client
    client.close()


def test_an_injected_client_is_used(
    injected_client: object, make_file: MakeFile, tmp_path: Path
) -> None:
    storage = S3Storage("mss-test-injected", prefix="jobs", client=injected_client)  # type: ignore[arg-type]
    storage.ensure_bucket()
    stored = storage.upload_file(make_file("a.wav", b"abc"), "jobs/1/a.wav")
    assert storage.download_file(stored.uri, tmp_path / "a.wav").sha256 == stored.sha256


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"multipart_chunksize": 1024}, "multipart_chunksize"),
        ({"multipart_threshold": MIB}, "multipart_threshold"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"list_page_size": 1001}, "list_page_size"),
        ({"delete_batch_size": 1001}, "delete_batch_size"),
        ({"endpoint_url": "minio:9000"}, "minio:9000"),
        ({"access_key_id": "only-half"}, "secret_access_key"),
        ({"connect_timeout": 0.0}, "timeouts"),
    ],
)
def test_invalid_settings_are_config_errors(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        S3Storage("mss-test", **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "under_score", "a..b", "192.168.0.1"])
def test_invalid_bucket_names_are_config_errors(bucket: str) -> None:
    with pytest.raises(ConfigError, match="bucket"):
        S3Storage(bucket)


def test_an_uri_for_another_backend_is_refused(make_s3: S3Factory, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"file:///etc/passwd"):
        make_s3(create=False).download_file("file:///etc/passwd", tmp_path / "x")


def test_presigned_get_of_a_missing_object_is_a_404(make_s3: S3Factory) -> None:
    url = make_s3().presign_get("jobs/1/none.wav", expires_in=60)
    with pytest.raises(urllib.error.HTTPError) as caught:
        _fetch(url)
    assert caught.value.code == 404
    caught.value.close()


# -- server-side copy ------------------------------------------------------------------------------


def test_large_copy_goes_multipart_server_side_and_keeps_the_metadata(
    make_s3: S3Factory, make_file: MakeFile, tmp_path: Path
) -> None:
    storage = make_s3(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    content = os.urandom(11 * MIB + 7)
    source = storage.upload_file(make_file("big.flac", content), "jobs/1/mix.flac")

    copied = storage.copy(source.key, "jobs/2/mix.flac")

    assert copied.etag.endswith("-3"), f"expected a 3-part copy (UploadPartCopy), got {copied.etag}"
    assert (copied.bytes, copied.sha256) == (len(content), source.sha256)
    head = storage.client.head_object(Bucket=storage.bucket, Key="jobs/2/mix.flac")
    assert head["Metadata"] == {"sha256": source.sha256}
    assert head["ContentType"] == "audio/flac"
    assert storage.download_file("jobs/2/mix.flac", tmp_path / "mix.flac").sha256 == source.sha256


def test_small_copy_is_one_copy_object_with_the_metadata(
    make_s3: S3Factory, make_file: MakeFile
) -> None:
    storage = make_s3()
    source = storage.upload_file(make_file("v.wav", b"RIFF small"), "jobs/1/vocals.wav")

    copied = storage.copy(source.uri, "jobs/2/vocals.wav")

    assert "-" not in copied.etag
    head = storage.client.head_object(Bucket=storage.bucket, Key="jobs/2/vocals.wav")
    assert head["Metadata"] == {"sha256": source.sha256}
    assert head["ContentType"] == "audio/wav"


def test_copy_of_a_foreign_object_without_digest_hashes_it_once_and_stores_the_digest(
    make_s3: S3Factory,
) -> None:
    storage = make_s3()
    foreign = make_s3()  # another bucket, written by someone else: no sha256 metadata
    content = os.urandom(300_000)
    foreign.client.put_object(
        Bucket=foreign.bucket,
        Key="tracks/song.wav",
        Body=content,
        ContentType="audio/x-wav",
        Metadata={"origin": "catalog"},
    )

    copied = storage.copy(f"s3://{foreign.bucket}/tracks/song.wav", "jobs/3/input/song.wav")

    assert copied.sha256 == hashlib.sha256(content).hexdigest()
    assert copied.bytes == len(content)
    head = storage.client.head_object(Bucket=storage.bucket, Key="jobs/3/input/song.wav")
    assert head["Metadata"] == {"origin": "catalog", "sha256": copied.sha256}
    assert head["ContentType"] == "audio/x-wav"


def test_copy_errors_are_mapped(
    make_s3: S3Factory, make_file: MakeFile, closed_port_endpoint: str
) -> None:
    storage = make_s3()
    storage.upload_file(make_file("a.wav", b"x"), "jobs/1/a.wav")
    with pytest.raises(InputNotFoundError, match="does not exist"):
        storage.copy("s3://mss-no-such-bucket-0000/a.wav", "jobs/2/a.wav")
    with pytest.raises(ConfigError, match="file://"):
        storage.copy("file:///etc/passwd", "jobs/2/a.wav")
    assert not storage.exists("jobs/2/a.wav")
    missing = make_s3("mss-test-never-created", create=False)
    with pytest.raises(StorageError, match="mss-test-never-created") as refused:
        missing.copy("jobs/1/a.wav", "jobs/2/a.wav")
    assert not isinstance(refused.value, TransientError)
    unreachable = make_s3(endpoint_url=closed_port_endpoint, create=False, max_attempts=1)
    with pytest.raises(StorageUnavailableError):
        unreachable.copy("jobs/1/a.wav", "jobs/2/a.wav")


def test_presigned_urls_carry_the_public_endpoint(
    make_s3: S3Factory, make_file: MakeFile, moto_endpoint: str
) -> None:
    # The process reaches the store at 127.0.0.1; clients at `localhost` (in production: a
    # container network name vs a public address). URLs must name the clients' host.
    public = moto_endpoint.replace("127.0.0.1", "localhost")
    storage = make_s3(public_endpoint_url=public)
    storage.upload_file(make_file("v.wav", b"RIFF public"), "jobs/2/vocals.wav")

    url = storage.presign_get("jobs/2/vocals.wav", expires_in=300)
    put_url = storage.presign_put("jobs/2/input/x.wav", expires_in=300)

    assert url.startswith(f"{public}/")
    assert put_url.startswith(f"{public}/")
    body, _ = _fetch(url)
    assert body == b"RIFF public"
    # Everything else still goes to the process's own endpoint.
    assert storage.exists("jobs/2/vocals.wav")
    assert make_s3().presign_get("jobs/2/vocals.wav", expires_in=300).startswith(moto_endpoint)
