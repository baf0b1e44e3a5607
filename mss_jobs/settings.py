"""Edge: the one validated configuration of mss-jobs, read from `MSS_*` environment variables.

Names are flat: field `max_upload_bytes` is the variable `MSS_MAX_UPLOAD_BYTES`, `s3_bucket` is
`MSS_S3_BUCKET` (case-insensitive; no `.env` file is read — a deployment injects its variables).
`env_nested_delimiter="__"` is set so a nested group can be added later without a new scheme.
The `MSS_S3_*` fields come together as one `S3Settings` (`settings.s3`), the S3 connection that
storage is built from; its transfer, retry and timeout options are stated there alone.

Every default is embedded, so the API and a worker run on one machine with no Redis, PostgreSQL or
S3, through the same code path as production:

    database_url     sqlite:///<data_dir>/mss-jobs.db    production: postgresql://user@host/db
    broker_url       None → in-process worker              production: redis://host:6379/0
    storage_backend  "local" → <data_dir>/storage          production: "s3" + s3_bucket
    data_dir         ./.mss-data, resolved against the working directory when settings load
    model_dir        <data_dir>/models (downloaded model configs and checkpoints)

Validation is strict and happens once: unknown fields are refused, numbers carry bounds, and the
time limits must nest (soft < hard < broker visibility timeout, otherwise Redis redelivers a task
that is still running). `load_settings()` turns a `ValidationError` into a `ConfigError` whose
message names the environment variable. Core code never reads settings: the edges (API app, worker
bootstrap, CLI) call `get_settings()` once and pass the values they need down as arguments.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from mss_jobs.domain.validation import describe_validation_error
from mss_jobs.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "MAX_PRESIGN_SECONDS",
    "MIB",
    "S3Settings",
    "Settings",
    "env_var",
    "get_settings",
    "load_settings",
]

ENV_PREFIX = "MSS_"

_SUPPORTED_DATABASES = ("sqlite", "postgresql")
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""SigV4 presigned URLs cannot live longer; the bound of every presign expiry."""
MIB = 1024 * 1024
_S3_MIN_PART_BYTES = 5 * MIB  # S3 rejects multipart parts below 5 MiB (except the last)

PositiveInt = Annotated[int, Field(gt=0)]
QueueName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
S3Bucket = Annotated[str, Field(min_length=3, max_length=63)]


def env_var(field: str) -> str:
    """The environment variable that sets `field`: `env_var("s3_bucket") == "MSS_S3_BUCKET"`."""
    return f"{ENV_PREFIX}{field.upper()}"


def _check_credentials(key_id: object, secret: object, *, names: tuple[str, str]) -> None:
    if (key_id is None) != (secret is None):
        raise ValueError(
            f"set both {names[0]} and {names[1]}, or neither (boto3's default credential chain)"
        )


class S3Settings(BaseModel):
    """One S3 connection, each option's default and bounds stated here: where (bucket, prefix,
    endpoints, region), who (credentials; None: boto3's default chain) and how (multipart
    transfers, retries, timeouts).

    `Settings.s3` builds it from the `MSS_S3_*` variables; `mss_jobs.storage.S3Storage` builds
    its clients from it (and validates its keyword arguments through it). Invalid values raise
    `ConfigError` from `S3Settings.of`; blank strings count as None.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: S3Bucket | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    public_endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    multipart_threshold: int = Field(default=8 * MIB, ge=_S3_MIN_PART_BYTES, strict=True)
    """Files above this are sent in parts of `multipart_chunksize`, `max_concurrency` at once."""
    multipart_chunksize: int = Field(default=8 * MIB, ge=_S3_MIN_PART_BYTES, strict=True)
    max_concurrency: int = Field(default=8, ge=1, le=64, strict=True)
    max_attempts: int = Field(default=5, ge=1, le=20, strict=True)
    """Tries of each request, the first included (botocore "standard" retries with backoff)."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def of(cls, base: S3Settings | None = None, /, **changes: Any) -> Self:
        """`base` (default: every default) with `changes` applied, validated; `ConfigError`
        naming the field if a value is invalid (never echoing it: it may hold credentials)."""
        values = base.model_dump() if base is not None else {}
        try:
            return cls.model_validate(values | changes)
        except ValidationError as exc:
            lines = describe_validation_error(exc, describe=_s3_error)
            raise ConfigError(f"invalid S3 settings: {lines}") from None

    @field_validator(
        "endpoint_url",
        "public_endpoint_url",
        "region",
        "access_key_id",
        "secret_access_key",
        "session_token",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if text == "" else value

    @field_validator("endpoint_url", "public_endpoint_url")
    @classmethod
    def _endpoint(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # Not echoed: the URL itself holds the credentials.
            raise ValueError(f"S3 {info.field_name} must not embed credentials (user:password@)")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"S3 {info.field_name} {url!r} must be http(s)://host[:port]")
        return url

    @field_validator("connect_timeout", "read_timeout")
    @classmethod
    def _positive_timeout(cls, seconds: float) -> float:
        if seconds <= 0:
            raise ValueError(f"S3 timeouts must be positive, got {seconds}")
        return seconds

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        _check_credentials(
            self.access_key_id, self.secret_access_key, names=("access_key_id", "secret_access_key")
        )
        return self


def _s3_error(error: ErrorDetails, field: str) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}" if error["loc"] else message


class Settings(BaseSettings):
    """Everything configurable about the service; see the module docstring for the scheme."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # -- where state lives -------------------------------------------------------------------
    data_dir: Path = Path(".mss-data")
    """Root of embedded-mode state (SQLite file, local storage). Made absolute when loaded."""

    # The defaults below derive from data_dir; they come first so that another field's
    # error does not also report them (pydantic skips data-dependent defaults after an error).
    local_storage_dir: Path = Field(default_factory=lambda data: data["data_dir"] / "storage")
    """Where `storage_backend="local"` keeps inputs and stems."""

    model_dir: Path = Field(default_factory=lambda data: data["data_dir"] / "models")
    """Cache of downloaded model configs and checkpoints (`mss-jobs models pull` fills it; a
    model is `available` when its files are here). Share it between workers of one machine:
    files are written to a temporary name and renamed, so concurrent pulls are safe."""

    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['data_dir']}/mss-jobs.db",
        min_length=1,
    )
    """SQLAlchemy URL. `postgresql://` is served by psycopg 3 (see `mss_jobs.db.session`)."""

    # -- broker ------------------------------------------------------------------------------
    broker_url: str | None = None
    """Celery broker. None runs jobs in an in-process worker (embedded mode)."""

    result_backend: str | None = None
    """Celery result backend. Job state lives in SQL, so this is only for Celery's own tools."""

    # -- object storage ----------------------------------------------------------------------
    storage_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None
    """None means AWS itself; set it for MinIO or another S3-compatible server."""
    s3_public_endpoint_url: str | None = None
    """Where clients reach the store, when that differs from `s3_endpoint_url` (a container
    network name vs a public address): presigned URLs are signed for this host."""
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    """None with `s3_access_key_id` None: boto3's default chain (instance role, profile)."""
    s3_bucket: S3Bucket | None = None
    s3_prefix: str = "mss-jobs"
    """Key prefix inside the bucket, without leading or trailing slashes ("" = bucket root)."""
    presign_expiry_seconds: int = Field(default=3600, gt=0, le=MAX_PRESIGN_SECONDS)
    """How long presigned download and upload URLs (`file://` ones too) are offered for."""

    # -- queues ------------------------------------------------------------------------------
    queue_interactive: QueueName = "interactive"
    queue_bulk: QueueName = "bulk"

    # -- limits ------------------------------------------------------------------------------
    max_upload_bytes: PositiveInt = 1024**3
    max_duration_seconds: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    job_soft_time_limit_seconds: PositiveInt = 1800
    """A task gets a catchable timeout here and fails the job cleanly."""
    job_hard_time_limit_seconds: PositiveInt = 2400
    """The worker process running the task is killed here."""
    visibility_timeout_seconds: PositiveInt = 3600
    """Redis redelivers an unacknowledged task after this long; must exceed the hard limit."""
    default_model: str = Field(default="dsp-hpss", min_length=1, max_length=128)

    # -- reliability -------------------------------------------------------------------------
    reaper_interval_seconds: int = Field(default=60, ge=1, le=3600)
    """How often each `celery worker` looks for jobs left `running` by a worker that is gone
    (one indexed UPDATE per sweep, so a short interval is cheap; reaping is idempotent)."""
    reaper_grace_seconds: int = Field(default=120, ge=0, le=86400)
    """A `running` job is reaped once nothing wrote to it for the visibility timeout plus this:
    the time a redelivered task gets to reach a free worker before its job is given up (raise it
    when queues stay long, so a crashed worker's job is re-run rather than failed)."""
    max_worker_deaths: int = Field(default=3, ge=1, le=100)
    """A job whose worker died this many times while running it (out of memory, segfault,
    SIGKILL) fails with `worker.lost` instead of being run again: one bad track must not take
    workers down forever. Deaths since the job last finished count; a manual retry resets them."""

    # -- batches -----------------------------------------------------------------------------
    run_dispatcher: bool = True
    """Whether each API process also runs a batch dispatcher thread (safe to run many: they
    share the work through row locks). Off when `mss-jobs dispatcher` runs on its own."""
    dispatch_interval_seconds: float = Field(default=2.0, gt=0, le=300, allow_inf_nan=False)
    """How often the dispatcher tops up each active batch to its `max_in_flight`."""
    dispatch_stale_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    """A batch job queued this long with nothing written to it is published again (its message
    may have died with a broker restart; a duplicate is a no-op claim). Keep it above Celery's
    600 s retry backoff cap, or a job waiting for its retry gets a second message."""

    # -- neural models -----------------------------------------------------------------------
    model_pull_on_demand: bool = True
    """Whether a worker downloads a known model's files the first time a job needs them. Off
    in deployments that must not reach the internet: jobs for models not pulled beforehand
    fail with `model.unavailable`."""
    model_sources_allow_http: bool = False
    """Allow plain `http://` model sources (and redirects to them). Off: a checkpoint is code-
    free data, but an unauthenticated download can still be swapped for different weights."""
    model_download_timeout_seconds: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False)
    """Connect/read timeout of each model download request (not of the whole download)."""
    model_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Compute dtype of neural models on CUDA (autocast; weights stay float32). float16 or
    bfloat16 roughly halve activation memory and run faster on tensor cores; check the quality
    of your models with them first. CPU workers always compute in float32."""
    model_compile: bool = False
    """Run neural models through `torch.compile` (slower first chunks, faster after)."""
    model_tta: bool = False
    """Test-time augmentation: average the model's output over the input, its channel swap and
    its polarity inversion. About 3x the compute for a small quality gain."""

    @field_validator("data_dir", "local_storage_dir", "model_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Resolved once, so a later chdir cannot move the database or the stored files.
        return path.expanduser().resolve()

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        backend = url.split(":", 1)[0].split("+", 1)[0].lower()
        if "://" not in url or backend not in _SUPPORTED_DATABASES:
            raise ValueError(
                f"database URL must start with one of {_SUPPORTED_DATABASES} "
                f"(e.g. sqlite:///path/db or postgresql://user@host/db), got scheme {backend!r}"
            )
        return url

    @field_validator("broker_url", "result_backend", "s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _looks_like_url(cls, url: str | None) -> str | None:
        if url is not None and "://" not in url:
            raise ValueError(f"expected a URL such as redis://host:6379/0, got {url!r}")
        return url

    @field_validator("s3_prefix")
    @classmethod
    def _clean_prefix(cls, prefix: str) -> str:
        return prefix.strip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        soft, hard = self.job_soft_time_limit_seconds, self.job_hard_time_limit_seconds
        if hard <= soft:
            raise ValueError(
                f"{env_var('job_hard_time_limit_seconds')}={hard} must be greater than "
                f"{env_var('job_soft_time_limit_seconds')}={soft}"
            )
        if self.visibility_timeout_seconds <= hard:
            raise ValueError(
                f"{env_var('visibility_timeout_seconds')}={self.visibility_timeout_seconds} must "
                f"be greater than {env_var('job_hard_time_limit_seconds')}={hard}, or the broker "
                "redelivers tasks that are still running"
            )
        if self.queue_interactive == self.queue_bulk:
            raise ValueError(
                f"{env_var('queue_interactive')} and {env_var('queue_bulk')} must differ, "
                f"both are {self.queue_bulk!r}"
            )
        if self.storage_backend == "s3" and self.s3_bucket is None:
            raise ValueError(f"{env_var('storage_backend')}=s3 needs {env_var('s3_bucket')}")
        _check_credentials(
            self.s3_access_key_id,
            self.s3_secret_access_key,
            names=(env_var("s3_access_key_id"), env_var("s3_secret_access_key")),
        )
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: jobs run in an in-process worker."""
        return self.broker_url is None

    @property
    def s3(self) -> S3Settings:
        """The S3 connection of the `MSS_S3_*` variables, the one thing storage is built from
        (`ConfigError` here, not at load, for an endpoint S3 cannot use: only S3 needs it)."""
        return S3Settings.of(
            bucket=self.s3_bucket,
            prefix=self.s3_prefix,
            endpoint_url=self.s3_endpoint_url,
            public_endpoint_url=self.s3_public_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
        )


def _describe(error: ErrorDetails, _field: str) -> str:
    """One invalid setting, named by its environment variable (`describe_validation_error`)."""
    loc = error["loc"]
    if not loc:  # a cross-field rule: its message already names the variables
        return str(error["msg"]).removeprefix("Value error, ")
    text = f"{env_var(str(loc[0]))}: {error['msg']}"
    if "secret" not in str(loc[0]):  # never echo a credential
        text += f" (got {error.get('input')!r})"
    return text


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings; an invalid value raises `ConfigError` naming its variable.

    `overrides` take precedence over the environment (tests, the CLI's flags).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = describe_validation_error(
            exc, describe=_describe, skip=("default_factory_not_called",)
        )
        raise ConfigError(f"invalid settings: {lines}") from exc


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. For the edges only (app factory, worker bootstrap)."""
    return load_settings()
