"""Settings: embedded defaults, MSS_* overrides, strict validation with errors naming variables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from mss_jobs.errors import ConfigError
from mss_jobs.settings import Settings, env_var, get_settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No MSS_* variable leaks in from the machine; relative paths resolve under tmp_path."""
    for name in list(os.environ):
        if name.upper().startswith("MSS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_embedded_defaults_need_no_services(clean_environment: Path) -> None:
    settings = Settings()
    data_dir = clean_environment / ".mss-data"
    assert settings.data_dir == data_dir
    assert settings.database_url == f"sqlite:///{data_dir}/mss-jobs.db"
    assert settings.broker_url is None
    assert settings.embedded
    assert settings.storage_backend == "local"
    assert settings.local_storage_dir == data_dir / "storage"
    assert (settings.queue_interactive, settings.queue_bulk) == ("interactive", "bulk")
    assert settings.s3_prefix == "mss-jobs"
    soft, hard = settings.job_soft_time_limit_seconds, settings.job_hard_time_limit_seconds
    assert soft < hard < settings.visibility_timeout_seconds


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSS_DATA_DIR", "state")
    monkeypatch.setenv("MSS_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("MSS_STORAGE_BACKEND", "s3")
    monkeypatch.setenv("MSS_S3_BUCKET", "stems")
    monkeypatch.setenv("MSS_S3_PREFIX", "/prod/")
    monkeypatch.setenv("MSS_S3_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("MSS_S3_SECRET_ACCESS_KEY", "hunter22")
    monkeypatch.setenv("mss_max_upload_bytes", "1000")  # names are case-insensitive
    settings = Settings()
    assert settings.data_dir.name == "state"
    assert settings.data_dir.is_absolute()
    assert settings.database_url.endswith("/state/mss-jobs.db")  # follows data_dir
    assert not settings.embedded
    assert (settings.storage_backend, settings.s3_bucket, settings.s3_prefix) == (
        "s3",
        "stems",
        "prod",
    )
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "hunter22"
    assert "hunter22" not in repr(settings)
    assert settings.max_upload_bytes == 1000


def _reliability(settings: Settings) -> tuple[int, int, int]:
    return (
        settings.reaper_interval_seconds,
        settings.reaper_grace_seconds,
        settings.max_worker_deaths,
    )


def test_reliability_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _reliability(Settings()) == (60, 120, 3)
    monkeypatch.setenv("MSS_REAPER_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("MSS_REAPER_GRACE_SECONDS", "0")
    monkeypatch.setenv("MSS_MAX_WORKER_DEATHS", "1")
    assert _reliability(load_settings()) == (5, 0, 1)


def test_explicit_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSS_DATABASE_URL", "postgresql://mss@db:5432/mss")
    assert Settings().database_url == "postgresql://mss@db:5432/mss"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MSS_MAX_UPLOAD_BYTES", "lots"),
        ("MSS_MAX_UPLOAD_BYTES", "0"),
        ("MSS_MAX_DURATION_SECONDS", "nan"),
        ("MSS_STORAGE_BACKEND", "gcs"),
        ("MSS_DATABASE_URL", "mysql://db/mss"),
        ("MSS_BROKER_URL", "localhost:6379"),
        ("MSS_PRESIGN_EXPIRY_SECONDS", "999999999"),
        ("MSS_QUEUE_BULK", "has space"),
        ("MSS_REAPER_INTERVAL_SECONDS", "0"),
        ("MSS_REAPER_INTERVAL_SECONDS", "3601"),
        ("MSS_REAPER_GRACE_SECONDS", "-1"),
        ("MSS_MAX_WORKER_DEATHS", "0"),
        ("MSS_MAX_WORKER_DEATHS", "101"),
    ],
)
def test_invalid_values_name_their_field_and_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    field = variable.removeprefix("MSS_").lower()
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]
    with pytest.raises(ConfigError, match=variable) as mapped:
        load_settings()
    assert mapped.value.code == "config.invalid"


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_uplod_bytes"):
        Settings(max_uplod_bytes=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"MSS_JOB_SOFT_TIME_LIMIT_SECONDS": "600", "MSS_JOB_HARD_TIME_LIMIT_SECONDS": "600"},
            "MSS_JOB_HARD_TIME_LIMIT_SECONDS=600 must be greater than "
            "MSS_JOB_SOFT_TIME_LIMIT_SECONDS=600",
        ),
        (
            {"MSS_JOB_HARD_TIME_LIMIT_SECONDS": "4000", "MSS_VISIBILITY_TIMEOUT_SECONDS": "3600"},
            "MSS_VISIBILITY_TIMEOUT_SECONDS=3600 must be greater than "
            "MSS_JOB_HARD_TIME_LIMIT_SECONDS=4000",
        ),
        ({"MSS_QUEUE_BULK": "interactive"}, "MSS_QUEUE_BULK must differ"),
        ({"MSS_STORAGE_BACKEND": "s3"}, "needs MSS_S3_BUCKET"),
        ({"MSS_S3_ACCESS_KEY_ID": "key"}, "set both MSS_S3_ACCESS_KEY_ID"),
    ],
)
def test_cross_field_rules(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_time_limits_that_nest_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSS_JOB_SOFT_TIME_LIMIT_SECONDS", "60")
    monkeypatch.setenv("MSS_JOB_HARD_TIME_LIMIT_SECONDS", "90")
    monkeypatch.setenv("MSS_VISIBILITY_TIMEOUT_SECONDS", "91")
    settings = load_settings()
    assert (settings.job_soft_time_limit_seconds, settings.visibility_timeout_seconds) == (60, 91)


def test_secrets_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSS_S3_SECRET_ACCESS_KEY", "hunter22")
    with pytest.raises(ConfigError, match="MSS_S3_ACCESS_KEY_ID") as caught:
        load_settings()
    assert "hunter22" not in str(caught.value)


def test_get_settings_reads_once_and_overrides_beat_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MSS_DEFAULT_MODEL", "identity")
    assert get_settings() is get_settings()
    assert get_settings().default_model == "identity"
    assert load_settings(default_model="dsp-hpss").default_model == "dsp-hpss"
    assert env_var("s3_bucket") == "MSS_S3_BUCKET"
