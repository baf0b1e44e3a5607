"""The embedded worker: the production task consumed from an in-memory queue in a thread."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mss_jobs.db import migrate
from mss_jobs.db.job_intake import create_job
from mss_jobs.db.job_queries import get_job
from mss_jobs.db.session import make_engine, make_session_factory, transaction
from mss_jobs.errors import ConfigError
from mss_jobs.settings import Settings, load_settings
from mss_jobs.storage import input_key, storage_from_settings
from workers.embedded import EmbeddedWorker, create_embedded_app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = load_settings(data_dir=tmp_path / "data")
    migrate.upgrade(settings.database_url)
    return settings


def _queued_job(settings: Settings, tmp_path: Path, content: np.ndarray) -> uuid.UUID:
    source = tmp_path / "in.wav"
    sf.write(source, content, 44100, subtype="FLOAT")
    storage = storage_from_settings(settings)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            job = create_job(
                session,
                model="identity",
                params={"format": "wav", "bit_depth": 32},
                input_uri="pending://",
                priority=5,
            )
            job.input_uri = storage.upload_file(
                source, input_key(storage.prefix, job.id, "in.wav")
            ).uri
            return job.id
    finally:
        engine.dispose()


def _wait_finished(settings: Settings, job_id: uuid.UUID, timeout: float = 60.0) -> str:
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with transaction(sessions) as session:
                job = get_job(session, job_id=job_id)
                assert job is not None
                if job.status.is_terminal:
                    return str(job.status)
            time.sleep(0.05)
    finally:
        engine.dispose()
    pytest.fail(f"job {job_id} did not finish in {timeout} s")


def test_jobs_left_queued_by_a_previous_process_run_at_start(
    settings: Settings, tmp_path: Path
) -> None:
    # A row committed while no worker was up (its in-memory message died with that process).
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (22050, 2))
    job_id = _queued_job(settings, tmp_path, audio)

    with EmbeddedWorker(settings):
        assert _wait_finished(settings, job_id) == "succeeded"


def test_enqueued_jobs_run_in_order_and_the_worker_stops_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (4410, 1))
    with EmbeddedWorker(settings) as worker:
        ids = [_queued_job(settings, tmp_path, audio) for _ in range(3)]
        for job_id in ids:
            worker.enqueue(job_id, lane="bulk", priority=1)
        assert [_wait_finished(settings, job_id) for job_id in ids] == ["succeeded"] * 3
    thread = worker._thread
    assert thread is None  # joined and released


def test_refuses_to_run_when_a_broker_is_configured(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/15")
    with pytest.raises(ConfigError, match="mss-jobs worker"):
        create_embedded_app(settings)
