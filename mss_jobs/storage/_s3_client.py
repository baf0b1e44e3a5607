"""Building boto3 S3 clients and validating their settings. No requests are sent here."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from pydantic import SecretStr

from mss_jobs.errors import ConfigError
from mss_jobs.settings import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["build_client", "check_range"]


@functools.cache
def _shared_session() -> boto3.session.Session:
    return boto3.session.Session()


_SESSION_LOCK = threading.Lock()


def build_client(
    config: S3Settings, endpoint_url: str | None, max_pool_connections: int
) -> S3Client:
    """An S3 client of `config` at `endpoint_url`, from one process-wide session.

    Sharing the session loads botocore's service models once (a fresh session costs 0.1-0.5 s
    per client). Sessions are not thread-safe, so creation is serialized; clients are safe to
    share between threads. Missing arguments fall back to boto3's usual chain (environment,
    config files, instance role), resolved once per process.
    """
    client_config = Config(
        retries={"mode": "standard", "max_attempts": config.max_attempts},
        signature_version="s3v4",
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
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
                region_name=config.region,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=_reveal(config.secret_access_key),
                aws_session_token=_reveal(config.session_token),
                config=client_config,
            )
    except BotoCoreError as exc:  # unknown profile, unparsable config file, bad region
        raise ConfigError(f"cannot configure the S3 client: {type(exc).__name__}") from exc


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def check_range(name: str, value: int, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = f"..{high}" if high is not None else " or more"
        raise ConfigError(f"{name}={value} is out of range ({low}{upper})")
