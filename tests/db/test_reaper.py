"""The reaper on real PostgreSQL and SQLite: which running jobs it fails, races between reapers,
and the worker-side sweep (`workers.reaper`) without a Celery worker around it."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db import (
    batch_dispatch,
    batch_intake,
    job_intake,
    job_queries,
    job_transitions,
    recovery,
)
from mss_jobs.db.schema import Job
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import EventKind, JobStatus
from mss_jobs.settings import Settings, load_settings
from workers.reaper import Reaper, reap_once, stale_after

Sessions = sessionmaker[Session]

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
CODE = "worker.lost"
MESSAGE = "no worker reported on this job"


def new_job(sessions: Sessions) -> uuid.UUID:
    with transaction(sessions) as session:
        job = job_intake.create_job(session, model="identity", params={}, input_uri="s3://b/in.wav")
        return job.id


def running_job(sessions: Sessions, *, last_write: datetime | None = None) -> uuid.UUID:
    """A claimed job whose row was last written at `last_write` (default: now)."""
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.claim_job(session, job_id=job_id, worker="gone:1") is not None
        if last_write is not None:
            session.execute(update(Job).where(Job.id == job_id).values(updated_at=last_write))
    return job_id


def age(sessions: Sessions, job_id: uuid.UUID, when: datetime) -> None:
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=when))


def read(sessions: Sessions, job_id: uuid.UUID) -> Job:
    with transaction(sessions) as session:
        job = job_queries.get_job(session, job_id=job_id)
        assert job is not None
        return job


def reap(sessions: Sessions, stale_before: datetime) -> list[uuid.UUID]:
    with transaction(sessions) as session:
        return recovery.reap_stale_jobs(
            session, stale_before=stale_before, code=CODE, message=MESSAGE
        )


def test_only_running_jobs_silent_since_the_cutoff_are_reaped(sessions: Sessions) -> None:
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    stale = running_job(sessions, last_write=LONG_AGO)
    fresh = running_job(sessions)
    queued = new_job(sessions)
    done = running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.mark_succeeded(session, job_id=done)
    for job_id in (queued, done):
        age(sessions, job_id, LONG_AGO)

    assert reap(sessions, cutoff) == [stale]

    job = read(sessions, stale)
    assert (job.status, job.error_code, job.error_message) == (JobStatus.FAILED, CODE, MESSAGE)
    assert job.finished_at is not None
    assert job.finished_at > cutoff
    assert job.updated_at == job.finished_at
    with transaction(sessions) as session:
        last = job_queries.list_events(session, job_id=stale)[-1]
    assert (last.kind, last.attempt, last.worker, last.detail) == (
        EventKind.FAILED,
        1,
        "gone:1",
        {"code": CODE},
    )
    assert read(sessions, fresh).status is JobStatus.RUNNING
    assert read(sessions, queued).status is JobStatus.QUEUED
    assert read(sessions, done).status is JobStatus.SUCCEEDED
    assert reap(sessions, cutoff) == []  # idempotent


def test_a_progress_write_is_a_heartbeat(sessions: Sessions) -> None:
    job_id = running_job(sessions, last_write=LONG_AGO)
    with transaction(sessions) as session:  # started long ago, but still reporting
        assert job_transitions.update_progress(session, job_id=job_id, progress=0.5, attempt=1)

    assert reap(sessions, datetime.now(UTC) - timedelta(minutes=1)) == []
    assert read(sessions, job_id).status is JobStatus.RUNNING


def test_the_reaped_workers_late_writes_are_ignored(sessions: Sessions) -> None:
    job_id = running_job(sessions, last_write=LONG_AGO)
    assert reap(sessions, datetime.now(UTC)) == [job_id]
    with transaction(sessions) as session:
        assert not job_transitions.update_progress(session, job_id=job_id, progress=0.9, attempt=1)
        assert job_transitions.mark_succeeded(session, job_id=job_id, attempt=1) is None
    assert read(sessions, job_id).error_code == CODE


def test_naive_cutoff_is_refused(sessions: Sessions) -> None:
    with pytest.raises(ValueError, match="naive"):
        reap(sessions, datetime(2030, 1, 1))


def test_many_reapers_at_once_fail_each_job_once(sessions: Sessions, concurrently: Any) -> None:
    stale = {running_job(sessions, last_write=LONG_AGO) for _ in range(5)}
    cutoff = datetime.now(UTC)

    results = concurrently([lambda: reap(sessions, cutoff)] * 8)

    reaped = [job_id for result in results for job_id in result]
    assert sorted(reaped) == sorted(stale)  # each job by exactly one reaper
    for job_id in stale:
        with transaction(sessions) as session:
            kinds = [event.kind for event in job_queries.list_events(session, job_id=job_id)]
        assert kinds.count(EventKind.FAILED) == 1


def test_a_reaper_blocked_behind_another_reaps_nothing(
    pg_sessions: Sessions, postgres: Any
) -> None:
    # B's UPDATE waits for A's row locks, then re-checks `status = 'running'` on the committed
    # rows and finds them failed.
    sessions = pg_sessions
    job_id = running_job(sessions, last_write=LONG_AGO)
    cutoff = datetime.now(UTC)
    with ThreadPoolExecutor(1) as pool:
        with transaction(sessions) as session_a:
            assert recovery.reap_stale_jobs(
                session_a, stale_before=cutoff, code=CODE, message=MESSAGE
            ) == [job_id]
            b = pool.submit(reap, sessions, cutoff)
            deadline = time.monotonic() + 10
            while postgres.waiting_backends() == 0:
                assert time.monotonic() < deadline, "the second reaper never blocked"
                time.sleep(0.01)
        assert b.result(timeout=10) == []


def test_a_reaper_does_not_fail_a_job_a_claim_just_took(
    pg_sessions: Sessions, postgres: Any
) -> None:
    # The redelivery's claim holds the row; the reaper waits, then sees a fresh `updated_at`.
    sessions = pg_sessions
    job_id = running_job(sessions, last_write=LONG_AGO)
    with ThreadPoolExecutor(1) as pool:
        with transaction(sessions) as session_a:
            assert job_transitions.claim_job(
                session_a, job_id=job_id, worker="w2", reclaim=job_transitions.Reclaim.REDELIVERY
            )
            b = pool.submit(reap, sessions, datetime.now(UTC) - timedelta(minutes=1))
            deadline = time.monotonic() + 10
            while postgres.waiting_backends() == 0:
                assert time.monotonic() < deadline, "the reaper never blocked"
                time.sleep(0.01)
        assert b.result(timeout=10) == []
    assert read(sessions, job_id).status is JobStatus.RUNNING


# -- the worker side: reap_once and the Reaper thread -----------------------------------------


def reaper_settings(engine: Engine, **overrides: Any) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    return load_settings(database_url=url, broker_url="redis://127.0.0.1:6379/13", **overrides)


def test_reap_once_waits_for_the_visibility_timeout_and_the_grace(
    engine: Engine, sessions: Sessions
) -> None:
    settings = reaper_settings(
        engine,
        job_soft_time_limit_seconds=10,
        job_hard_time_limit_seconds=20,
        visibility_timeout_seconds=30,
        reaper_grace_seconds=5,
    )
    assert stale_after(settings) == timedelta(seconds=35)
    last_write = datetime(2030, 1, 1, 12, tzinfo=UTC)
    job_id = running_job(sessions, last_write=last_write)

    # Past the hard limit, but the broker may still redeliver: not yet.
    assert reap_once(settings, sessions, now=last_write + timedelta(seconds=34)) == []
    assert reap_once(settings, sessions, now=last_write + timedelta(seconds=36)) == [job_id]

    job = read(sessions, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, "worker.lost")
    assert job.error_message is not None
    assert "35 s" in job.error_message
    assert "hard time limit 20 s" in job.error_message


def test_the_reaper_thread_runs_for_its_own_worker_only(engine: Engine, sessions: Sessions) -> None:
    app = object()
    reaper = Reaper(app, reaper_settings(engine, reaper_interval_seconds=1))
    job_id = running_job(sessions, last_write=LONG_AGO)

    reaper.on_worker_ready(sender=SimpleNamespace(app=object()))  # another app's worker
    assert not reaper.running
    reaper.on_worker_ready(sender=SimpleNamespace(app=app))
    try:
        assert reaper.running
        deadline = time.monotonic() + 30
        while read(sessions, job_id).status is JobStatus.RUNNING:
            assert time.monotonic() < deadline, "the reaper never reaped the stale job"
            time.sleep(0.05)
        later = running_job(sessions)  # the next sweeps go on
        age(sessions, later, LONG_AGO)
        while read(sessions, later).status is JobStatus.RUNNING:
            assert time.monotonic() < deadline, "the reaper stopped sweeping"
            time.sleep(0.05)
    finally:
        reaper.on_worker_shutdown(sender=SimpleNamespace(app=app))
    assert not reaper.running
    assert read(sessions, job_id).error_code == "worker.lost"


def test_a_failing_sweep_is_logged_not_raised(
    engine: Engine, sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    reaper = Reaper(object(), reaper_settings(engine))
    broken = sessionmaker(bind=engine.execution_options(schema_translate_map={None: "nope"}))
    with caplog.at_level(logging.ERROR, logger="workers.reaper"):
        assert reaper.sweep(broken) == []
    assert "reaper sweep failed" in caplog.text


def _batch_running_job(sessions: Sessions, *, last_write: datetime) -> tuple[uuid.UUID, uuid.UUID]:
    from mss_jobs.batches.manifest import ManifestRow

    with transaction(sessions) as session:
        batch, _ = batch_intake.create_batch(
            session, model="identity", params={}, source={"kind": "rows"}, max_in_flight=5
        )
        row = ManifestRow(
            line=1, input="s3://b/in.wav", overrides={}, model="identity", params={}, priority=5
        )
        batch_intake.add_jobs(session, batch_id=batch.id, rows=[row])
        batch_id = batch.id
    with transaction(sessions) as session:
        (dispatch,) = batch_dispatch.take_pending(session, batch_id=batch_id, limit=1)
        assert (
            job_transitions.claim_job(session, job_id=dispatch.job_id, worker="gone:1") is not None
        )
        session.execute(update(Job).where(Job.id == dispatch.job_id).values(updated_at=last_write))
    return batch_id, dispatch.job_id


def test_a_stale_batch_job_goes_back_to_its_dispatcher_until_its_last_death(
    sessions: Sessions,
) -> None:

    cutoff = datetime.now(UTC) - timedelta(hours=1)
    batch_id, job_id = _batch_running_job(sessions, last_write=LONG_AGO)
    single = running_job(sessions, last_write=LONG_AGO)

    with transaction(sessions) as session:
        handed = recovery.hand_back_stale_batch_jobs(session, stale_before=cutoff, max_deaths=2)
        reaped = recovery.reap_stale_jobs(session, stale_before=cutoff, code=CODE, message=MESSAGE)

    assert (handed, reaped) == ([job_id], [single])
    job = read(sessions, job_id)
    assert (job.status, job.enqueued_at, job.worker) == (JobStatus.PENDING, None, None)
    with transaction(sessions) as session:
        assert recovery.worker_deaths(session, job_id=job_id) == 1
        (again,) = batch_dispatch.take_pending(session, batch_id=batch_id, limit=1)
        assert again.job_id == job_id
        assert job_transitions.claim_job(session, job_id=job_id, worker="next:1") is not None
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=LONG_AGO))
    # Its second death is the last allowed (max 2): failed, not handed back again.
    with transaction(sessions) as session:
        assert recovery.hand_back_stale_batch_jobs(session, stale_before=cutoff, max_deaths=2) == []
        assert recovery.reap_stale_jobs(
            session, stale_before=cutoff, code=CODE, message=MESSAGE
        ) == [job_id]
