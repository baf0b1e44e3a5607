"""Map boto3 / botocore / s3transfer exceptions into `mss_jobs.errors`. Pure: no requests.

The split follows what a caller should do (see the table in `S3Storage`'s docstring): a missing
object is the input's fault, a refusal retrying cannot fix is a `StorageError`, and a dropped
connection, throttling or a 5xx is a `StorageUnavailableError` worth a retry with backoff.

Messages are built here from the error *code*, HTTP status, bucket and key only. botocore's own
message text is not copied: some S3 error bodies echo the access key id or the string that was
signed, and credentials must never reach a job row or a log line through us.
"""

from __future__ import annotations

from boto3.exceptions import RetriesExceededError as Boto3RetriesExceededError
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceededError

from mss_jobs.errors import (
    InputNotFoundError,
    MssError,
    StorageError,
    StorageUnavailableError,
)

__all__ = [
    "MAPPED_EXCEPTIONS",
    "client_error_code",
    "is_not_found",
    "map_s3_error",
    "missing_bucket_error",
]

MAPPED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    ClientError,
    BotoCoreError,
    S3UploadFailedError,
    Boto3RetriesExceededError,
    TransferRetriesExceededError,
)
"""What `map_s3_error` understands; anything else is a bug and propagates unmapped."""

# HeadObject has no response body, so a missing key (or bucket) arrives as a bare "404".
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",  # a conflicting operation on the same bucket is in progress
        "XMinioServerNotInitialized",
        # A conditional read or copy (the transfer manager's IfMatch on parts, `copy`'s
        # CopySourceIfMatch) met an object replaced meanwhile: reading it again will succeed.
        "PreconditionFailed",
    }
)
_TRANSIENT_STATUSES = frozenset({408, 429})
_HINTS = {
    "AccessDenied": "the credentials lack permission for this bucket or key",
    "403": "access denied",
    "AllAccessDisabled": "all access to this bucket has been disabled",
    "InvalidAccessKeyId": "the access key id is unknown to this endpoint",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidBucketName": "the bucket name is invalid",
    "PermanentRedirect": "the bucket lives in another region or endpoint",
    "301": "the bucket lives in another region or endpoint",
    "AuthorizationHeaderMalformed": "the configured region does not match the bucket's",
    "EntityTooLarge": "the object exceeds the size the endpoint accepts",
    "EntityTooSmall": "a multipart part is below the 5 MiB minimum",
    "RequestTimeTooSkewed": "this machine's clock differs too much from the endpoint's",
}


def client_error_code(exc: ClientError) -> tuple[str, int | None]:
    """The S3 error code (`NoSuchKey`, or a bare status like `404`) and the HTTP status."""
    code = exc.response.get("Error", {}).get("Code", "") or ""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code), status


def is_not_found(exc: BaseException) -> bool:
    """True when `exc` (once unwrapped) says the key or bucket does not exist."""
    inner = _unwrap(exc)
    if not isinstance(inner, ClientError):
        return False
    code, _ = client_error_code(inner)
    return code in _NOT_FOUND_CODES or code in _MISSING_BUCKET_CODES


def map_s3_error(
    exc: BaseException, *, action: str, bucket: str, key: str | None, own_bucket: bool
) -> MssError:
    """The mss error for `exc`, raised by `action` ("download", "upload", …) on bucket/key.

    `own_bucket` says whether `bucket` is the service's configured bucket: a missing own bucket
    is a deployment fault (`StorageError`), a missing bucket named by a job's input URI is the
    input's fault (`InputNotFoundError`).
    """
    target = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    inner = _unwrap(exc)

    if isinstance(inner, ClientError):
        return _map_client_error(inner, action=action, target=target, own_bucket=own_bucket)
    if isinstance(inner, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return StorageError(f"S3 {action} of {target} failed: no usable credentials configured")
    if isinstance(inner, ConnectionError | HTTPClientError | IncompleteReadError | ChecksumError):
        # Refused/timed-out connections, dropped or truncated responses, TLS hiccups.
        return StorageUnavailableError(
            f"S3 {action} of {target} failed: endpoint unreachable or connection dropped "
            f"({type(inner).__name__}); retry later"
        )
    if isinstance(inner, Boto3RetriesExceededError | TransferRetriesExceededError):
        return StorageUnavailableError(
            f"S3 {action} of {target} failed: transfer retries exhausted; retry later"
        )
    return StorageError(f"S3 {action} of {target} failed ({type(inner).__name__})")


def missing_bucket_error(
    *, action: str, bucket: str, key: str | None, own_bucket: bool
) -> MssError:
    """The error for a bucket that does not exist (own: deployment fault; foreign: input's)."""
    target = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if own_bucket:
        return StorageError(
            f"S3 {action} of {target} failed: bucket {bucket!r} does not exist "
            "(create it, or fix the configured bucket name)"
        )
    return InputNotFoundError(f"no object at {target}: bucket {bucket!r} does not exist")


def _map_client_error(exc: ClientError, *, action: str, target: str, own_bucket: bool) -> MssError:
    code, status = client_error_code(exc)
    bucket, _, key = target.removeprefix("s3://").partition("/")
    if code in _MISSING_BUCKET_CODES:
        return missing_bucket_error(
            action=action, bucket=bucket, key=key or None, own_bucket=own_bucket
        )
    if code in _NOT_FOUND_CODES:
        return InputNotFoundError(f"no object at {target} (S3 {action})")
    answered = f"{code or 'error'} (HTTP {status})" if status else (code or "error")
    if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUSES or (status or 0) >= 500:
        return StorageUnavailableError(
            f"S3 {action} of {target} failed: storage answered {answered}; retry later"
        )
    hint = _HINTS.get(code)
    return StorageError(
        f"S3 {action} of {target} was refused: {answered}" + (f" — {hint}" if hint else "")
    )


def _unwrap(exc: BaseException) -> BaseException:
    """The informative exception inside boto3's compatibility wrappers."""
    if isinstance(exc, S3UploadFailedError):
        # boto3 raises it inside `except ClientError`, without `from`: the cause is the context.
        inner = exc.__cause__ or exc.__context__
        return _unwrap(inner) if inner is not None else exc
    if isinstance(exc, Boto3RetriesExceededError | TransferRetriesExceededError):
        last = getattr(exc, "last_exception", None)
        if isinstance(last, BaseException) and isinstance(last, ClientError):
            return last
    return exc
