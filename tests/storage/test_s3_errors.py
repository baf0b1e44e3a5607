"""The boto → mss error table, one row at a time, without a server."""

from __future__ import annotations

import pytest
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from mss_jobs.errors import (
    InputNotFoundError,
    MssError,
    PermanentError,
    StorageError,
    StorageUnavailableError,
)
from mss_jobs.storage._s3_errors import map_s3_error

LEAKY_MESSAGE = "Signature for AKIASECRETLEAK did not match the string to sign"


def _client_error(code: str, status: int | None, operation: str = "GetObject") -> ClientError:
    response: dict[str, object] = {"Error": {"Code": code, "Message": LEAKY_MESSAGE}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, operation)  # type: ignore[arg-type]


def _map(exc: BaseException, *, own_bucket: bool = True) -> MssError:
    return map_s3_error(
        exc, action="download", bucket="b-1", key="jobs/1/a.wav", own_bucket=own_bucket
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, InputNotFoundError),
        ("404", 404, InputNotFoundError),
        ("NotFound", 404, InputNotFoundError),
        ("NoSuchBucket", 404, StorageError),
        ("AccessDenied", 403, StorageError),
        ("403", 403, StorageError),
        ("InvalidAccessKeyId", 403, StorageError),
        ("SignatureDoesNotMatch", 403, StorageError),
        ("InvalidRequest", 400, StorageError),
        ("PermanentRedirect", 301, StorageError),
        ("SlowDown", 503, StorageUnavailableError),
        ("ServiceUnavailable", 503, StorageUnavailableError),
        ("InternalError", 500, StorageUnavailableError),
        ("RequestTimeout", 400, StorageUnavailableError),
        ("TooManyRequests", 429, StorageUnavailableError),
        ("SomethingNew", 502, StorageUnavailableError),
        ("PreconditionFailed", 412, StorageUnavailableError),  # object replaced mid-copy
        ("SomethingNew", 400, StorageError),
        ("Throttling", None, StorageUnavailableError),
    ],
)
def test_client_error_codes(code: str, status: int | None, expected: type[MssError]) -> None:
    error = _map(_client_error(code, status))
    assert type(error) is expected
    assert "s3://b-1/jobs/1/a.wav" in error.message
    assert "AKIASECRETLEAK" not in error.message


def test_missing_foreign_bucket_is_the_inputs_fault() -> None:
    error = _map(_client_error("NoSuchBucket", 404), own_bucket=False)
    assert isinstance(error, InputNotFoundError)
    assert "b-1" in error.message


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b-1/jobs/1/a.wav"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        RetriesExceededError(last_exception=ConnectionResetError()),
    ],
)
def test_connection_failures_are_transient(exc: BaseException) -> None:
    assert isinstance(_map(exc), StorageUnavailableError)


def test_upload_wrapper_is_unwrapped_to_the_client_error() -> None:
    try:
        try:
            raise _client_error("SlowDown", 503, "UploadPart")
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}")  # noqa: B904 (as boto3 does)
    except S3UploadFailedError as wrapped:
        error = _map(wrapped)
    assert isinstance(error, StorageUnavailableError)
    assert "SlowDown" in error.message


def test_retries_exceeded_on_a_client_error_maps_the_client_error() -> None:
    error = _map(RetriesExceededError(last_exception=_client_error("NoSuchKey", 404)))
    assert isinstance(error, InputNotFoundError)


@pytest.mark.parametrize(
    "exc", [NoCredentialsError(), ParamValidationError(report="Invalid bucket name")]
)
def test_local_client_faults_are_permanent(exc: BaseException) -> None:
    assert isinstance(_map(exc), PermanentError)


def test_a_bucket_level_error_names_the_bucket_only() -> None:
    error = map_s3_error(
        _client_error("AccessDenied", 403), action="list", bucket="b-1", key=None, own_bucket=True
    )
    assert "s3://b-1 " in error.message
    assert "permission" in error.message
