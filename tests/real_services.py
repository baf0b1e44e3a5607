"""Real services for integration tests, as context managers the conftests wrap in fixtures:
a fresh migrated PostgreSQL database, a moto S3 server on loopback, a bucket, and a flushed
Redis database. Each suite keeps its own names and Redis index so suites cannot collide."""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from moto.server import ThreadedMotoServer
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from mss_jobs.db import migrate
from mss_jobs.storage import S3Storage

ADMIN_URL = os.environ.get(
    "MSS_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REGION = "us-east-1"


@contextmanager
def fresh_database(name_prefix: str) -> Iterator[str]:
    """A new PostgreSQL database `<name_prefix>_<random>`, migrated to head, dropped after."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"{name_prefix}_{secrets.token_hex(6)}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_storage(
    endpoint: str, bucket: str, *, prefix: str, access_key_id: str, secret_access_key: str
) -> S3Storage:
    """A client for `bucket` with few retries and short timeouts (tests fail fast)."""
    return S3Storage(
        bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region=REGION,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        max_attempts=2,
        connect_timeout=2.0,
        read_timeout=10.0,
    )


def new_bucket(endpoint: str, *, name_prefix: str, access_key_id: str, secret: str) -> str:
    """Create a uniquely named bucket and return its name."""
    name = f"{name_prefix}-{uuid.uuid4().hex[:16]}"
    s3_storage(
        endpoint, name, prefix="x", access_key_id=access_key_id, secret_access_key=secret
    ).ensure_bucket()
    return name


@contextmanager
def flushed_redis(url: str) -> Iterator[str]:
    """The Redis database at `url`, emptied before and after."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def service_env(
    *,
    database_url: str,
    broker_url: str,
    s3_endpoint: str,
    bucket: str,
    prefix: str,
    access_key_id: str,
    secret_access_key: str,
    data_dir: str,
) -> dict[str, str]:
    """`MSS_*` variables pointing a worker or an API at these services, with small time limits
    (soft 20 s < hard 25 s < visibility 30 s) so a stuck test ends quickly."""
    return {
        "MSS_BROKER_URL": broker_url,
        "MSS_DATABASE_URL": database_url,
        "MSS_DATA_DIR": data_dir,
        "MSS_STORAGE_BACKEND": "s3",
        "MSS_S3_ENDPOINT_URL": s3_endpoint,
        "MSS_S3_REGION": REGION,
        "MSS_S3_BUCKET": bucket,
        "MSS_S3_PREFIX": prefix,
        "MSS_S3_ACCESS_KEY_ID": access_key_id,
        "MSS_S3_SECRET_ACCESS_KEY": secret_access_key,
        "MSS_JOB_SOFT_TIME_LIMIT_SECONDS": "20",
        "MSS_JOB_HARD_TIME_LIMIT_SECONDS": "25",
        "MSS_VISIBILITY_TIMEOUT_SECONDS": "30",
        # A test must never reach the internet for model weights.
        "MSS_MODEL_PULL_ON_DEMAND": "false",
    }
