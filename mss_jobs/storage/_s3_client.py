"""Building boto3 S3 clients and validating their settings. No requests are sent here."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from mss_jobs.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["build_client", "check_range", "validate_endpoint_url"]


@functools.cache
def _shared_session() -> boto3.session.Session:
    return boto3.session.Session()


_SESSION_LOCK = threading.Lock()


def build_client(
    *,
    endpoint_url: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    max_attempts: int,
    connect_timeout: float,
    read_timeout: float,
    max_pool_connections: int,
) -> S3Client:
    """An S3 client from one process-wide session, with this storage's region and credentials.

    Sharing the session loads botocore's service models once (a fresh session costs 0.1-0.5 s
    per client). Sessions are not thread-safe, so creation is serialized; clients are safe to
    share between threads. Missing arguments fall back to boto3's usual chain (environment,
    config files, instance role), resolved once per process.
    """
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        signature_version="s3v4",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        # MinIO and friends rarely have wildcard DNS for virtual-hosted bucket names.
        s3={"addressing_style": "path"} if endpoint_url else None,
        # Many S3-compatible servers reject the newer default trailing checksums; send a
        # checksum only where the API requires one (DeleteObjects).
        request_checksum_calculation="when_required" if endpoint_url else None,
    )
    try:
        with _SESSION_LOCK:
            return _shared_session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                config=config,
            )
    except BotoCoreError as exc:  # unknown profile, unparsable config file, bad region
        raise ConfigError(f"cannot configure the S3 client: {type(exc).__name__}") from exc


def validate_endpoint_url(endpoint_url: str | None) -> str | None:
    if endpoint_url is None:
        return None
    parts = urlsplit(endpoint_url)
    if parts.username is not None or parts.password is not None:
        # Not echoed: the URL itself holds the credentials.
        raise ConfigError("S3 endpoint_url must not embed credentials (user:password@)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"S3 endpoint_url {endpoint_url!r} must be http(s)://host[:port]")
    return endpoint_url


def check_range(name: str, value: int, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = f"..{high}" if high is not None else " or more"
        raise ConfigError(f"{name}={value} is out of range ({low}{upper})")
