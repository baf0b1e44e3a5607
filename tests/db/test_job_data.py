"""The job data functions on real PostgreSQL and SQLite (migrated schema), races included."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db import job_intake, job_queries, job_transitions, recovery
from mss_jobs.db.schema import Job, JobEvent, JobOutput
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import EventKind, JobStatus
from mss_jobs.errors import ConfigError

Sessions = sessionmaker[Session]
Concurrently = Callable[[list[Callable[[], Any]]], list[Any]]

PARAMS = {"chunk_seconds": 10.0, "overlap": 0.25, "stems": ["vocals", "drums"]}
SHA = "ab" * 32


def new_job(sessions: Sessions, **overrides: Any) -> uuid.UUID:
    arguments: dict[str, Any] = {
        "model": "dsp-hpss",
        "params": PARAMS,
        "input_uri": "s3://bucket/inputs/song.flac",
        "input_sha256": SHA,
    }
    arguments.update(overrides)
    with transaction(sessions) as session:
        return job_intake.create_job(session, **arguments).id


def read(sessions: Sessions, job_id: uuid.UUID) -> Job:
    with transaction(sessions) as session:
        job = job_queries.get_job(session, job_id=job_id)
        assert job is not None
        return job


def running_job(sessions: Sessions, worker: str = "w1") -> uuid.UUID:
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.claim_job(session, job_id=job_id, worker=worker) is not None
    return job_id


def event_kinds(sessions: Sessions, job_id: uuid.UUID) -> list[EventKind]:
    with transaction(sessions) as session:
        return [event.kind for event in job_queries.list_events(session, job_id=job_id)]


def count(sessions: Sessions, entity: type[Job] | type[JobOutput] | type[JobEvent]) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(entity)) or 0


def output(session: Session, job_id: uuid.UUID, stem: str, **overrides: Any) -> JobOutput | None:
    arguments: dict[str, Any] = {
        "uri": f"s3://bucket/outputs/{job_id}/{stem}.flac",
        "size_bytes": 1000,
        "sha256": "cd" * 32,
        "format": "flac",
        "sample_rate": 44100,
        "channels": 2,
        "duration_seconds": 180.5,
    }
    arguments.update(overrides)
    return job_transitions.record_output(session, job_id=job_id, stem=stem, **arguments)


# -- creation ----------------------------------------------------------------------------------


def test_create_job_starts_queued_with_utc_timestamps_and_a_history(sessions: Sessions) -> None:
    before = datetime.now(UTC)
    job = read(sessions, new_job(sessions, priority=7))
    assert job.status is JobStatus.QUEUED
    assert (job.attempts, job.progress, job.priority, job.stage) == (0, 0.0, 7, None)
    assert job.params == PARAMS
    assert job.params_hash == job_intake.params_hash(dict(reversed(PARAMS.items())))
    assert job.created_at.tzinfo is UTC
    assert job.updated_at.tzinfo is UTC
    assert before - timedelta(seconds=1) <= job.created_at <= datetime.now(UTC)
    assert event_kinds(sessions, job.id) == [EventKind.QUEUED]


def test_create_job_rejects_out_of_range_priority(sessions: Sessions) -> None:
    with pytest.raises(ValueError, match="priority=10"):
        new_job(sessions, priority=10)


def test_idempotency_key_returns_the_same_job(sessions: Sessions) -> None:
    first = new_job(sessions, idempotency_key="req-1")
    again = new_job(sessions, idempotency_key="req-1", input_uri="s3://bucket/inputs/copy.flac")
    other = new_job(sessions, idempotency_key="req-2")
    assert again == first != other
    assert count(sessions, Job) == 2


def test_idempotency_key_reused_for_another_request_is_refused(sessions: Sessions) -> None:
    new_job(sessions, idempotency_key="req-1")
    with pytest.raises(ConfigError, match="req-1"):
        new_job(sessions, idempotency_key="req-1", params={"chunk_seconds": 5.0})


def test_idempotency_race_creates_one_job(sessions: Sessions, concurrently: Concurrently) -> None:
    ids = concurrently([lambda: new_job(sessions, idempotency_key="race")] * 8)
    assert len(set(ids)) == 1
    assert count(sessions, Job) == 1
    assert event_kinds(sessions, ids[0]) == [EventKind.QUEUED]


def wait_until_blocked(postgres: Any) -> None:
    deadline = time.monotonic() + 10
    while postgres.waiting_backends() == 0:
        assert time.monotonic() < deadline, "the second transaction never blocked on the first"
        time.sleep(0.01)


def test_idempotency_conflict_on_insert_returns_the_winner(
    pg_sessions: Sessions, postgres: Any
) -> None:
    # Deterministic PostgreSQL interleaving: B looks the key up before A commits, so B's INSERT
    # waits on A's unique index entry, then fails; B must roll back and return A's job. (SQLite
    # serializes writers at BEGIN IMMEDIATE: the race test above covers it.)
    sessions = pg_sessions
    with ThreadPoolExecutor(1) as pool:
        with transaction(sessions) as session_a:
            winner = job_intake.create_job(
                session_a, model="dsp-hpss", params=PARAMS, input_uri="u", idempotency_key="k"
            )
            b = pool.submit(
                new_job, sessions, input_uri="u", input_sha256=None, idempotency_key="k"
            )
            wait_until_blocked(postgres)
        assert b.result(timeout=10) == winner.id
    assert count(sessions, Job) == 1


# -- claiming ----------------------------------------------------------------------------------


def test_claim_moves_queued_to_running(sessions: Sessions) -> None:
    job_id = new_job(sessions)
    with transaction(sessions) as session:
        job = job_transitions.claim_job(session, job_id=job_id, worker="host-1:42")
        assert job is not None
        assert (job.status, job.attempts, job.worker) == (JobStatus.RUNNING, 1, "host-1:42")
        assert job.started_at is not None
        assert job.started_at.tzinfo is UTC
    assert event_kinds(sessions, job_id) == [EventKind.QUEUED, EventKind.CLAIMED]


def test_second_claim_fails_unless_a_redelivery_reclaims(sessions: Sessions) -> None:
    job_id = running_job(sessions, worker="w1")
    with transaction(sessions) as session:
        assert job_transitions.claim_job(session, job_id=job_id, worker="w2") is None
    with transaction(sessions) as session:
        job = job_transitions.claim_job(
            session, job_id=job_id, worker="w2", reclaim=job_transitions.Reclaim.REDELIVERY
        )
        assert job is not None
        assert (job.status, job.attempts, job.worker) == (JobStatus.RUNNING, 2, "w2")
    assert event_kinds(sessions, job_id)[-1] is EventKind.REDELIVERED


def test_concurrent_claims_of_a_queued_job_have_exactly_one_winner(
    sessions: Sessions, concurrently: Concurrently
) -> None:
    for _ in range(3):
        job_id = new_job(sessions)

        def claim(worker: str, job_id: uuid.UUID = job_id) -> int | None:
            with transaction(sessions) as session:
                job = job_transitions.claim_job(session, job_id=job_id, worker=worker)
                return None if job is None else job.attempts

        results = concurrently([functools.partial(claim, f"w{i}") for i in range(8)])
        assert sorted(results, key=lambda r: r is None) == [1] + [None] * 7
        assert read(sessions, job_id).attempts == 1


def test_claim_blocked_behind_an_uncommitted_claim_loses(
    pg_sessions: Sessions, postgres: Any
) -> None:
    # B's UPDATE waits for A's row lock, then re-checks `status = 'queued'` on the committed row.
    sessions = pg_sessions
    job_id = new_job(sessions)

    def claim_b() -> Job | None:
        with transaction(sessions) as session_b:
            return job_transitions.claim_job(session_b, job_id=job_id, worker="b")

    with ThreadPoolExecutor(1) as pool:
        with transaction(sessions) as session_a:
            assert job_transitions.claim_job(session_a, job_id=job_id, worker="a") is not None
            b = pool.submit(claim_b)
            wait_until_blocked(postgres)
        assert b.result(timeout=10) is None
    assert read(sessions, job_id).worker == "a"


@pytest.mark.parametrize("finish", ["succeeded", "failed", "cancelled"])
def test_finished_jobs_are_never_claimed(sessions: Sessions, finish: str) -> None:
    job_id = running_job(sessions)
    with transaction(sessions) as session:
        if finish == "succeeded":
            assert job_transitions.mark_succeeded(session, job_id=job_id)
        elif finish == "failed":
            assert job_transitions.mark_failed(
                session, job_id=job_id, code="audio.empty", message="empty"
            )
        else:
            assert job_transitions.cancel_job(session, job_id=job_id)
    with transaction(sessions) as session:
        assert (
            job_transitions.claim_job(
                session, job_id=job_id, worker="w2", reclaim=job_transitions.Reclaim.REDELIVERY
            )
            is None
        )
        assert job_transitions.claim_job(session, job_id=uuid.uuid4(), worker="w2") is None
    job = read(sessions, job_id)
    assert (job.status.value, job.attempts) == (finish, 1)


# -- progress, outcome, fencing ----------------------------------------------------------------


def test_progress_while_running_logs_stage_changes_only(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.update_progress(session, job_id=job_id, progress=0.1, stage="fetch")
        assert job_transitions.update_progress(
            session, job_id=job_id, progress=0.2, stage="separate"
        )
        assert job_transitions.update_progress(
            session, job_id=job_id, progress=0.5, stage="separate"
        )
        assert job_transitions.update_progress(session, job_id=job_id, progress=0.6)
    job = read(sessions, job_id)
    assert (job.progress, job.stage) == (0.6, "separate")
    with transaction(sessions) as session:
        stages = [e.message for e in job_queries.list_events(session, job_id=job_id)]
    assert stages == [None, None, "fetch", "separate"]


def test_progress_is_ignored_unless_running(sessions: Sessions) -> None:
    queued = new_job(sessions)
    finished = running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.mark_succeeded(session, job_id=finished) is not None
    with transaction(sessions) as session:
        assert not job_transitions.update_progress(session, job_id=queued, progress=0.5, stage="x")
        assert not job_transitions.update_progress(
            session, job_id=finished, progress=0.5, stage="x"
        )
    assert read(sessions, queued).progress == 0.0
    assert (read(sessions, finished).progress, read(sessions, finished).stage) == (1.0, None)
    with pytest.raises(ValueError, match=r"progress=1\.5"), transaction(sessions) as session:
        job_transitions.update_progress(session, job_id=queued, progress=1.5)


def test_mark_failed_records_code_and_message(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    with transaction(sessions) as session:
        job = job_transitions.mark_failed(
            session, job_id=job_id, code="audio.empty", message="no samples"
        )
        assert job is not None
    job = read(sessions, job_id)
    assert (job.status, job.error_code, job.error_message) == (
        JobStatus.FAILED,
        "audio.empty",
        "no samples",
    )
    assert job.finished_at is not None
    assert job.finished_at.tzinfo is UTC


def test_a_superseded_attempt_cannot_write(sessions: Sessions) -> None:
    job_id = running_job(sessions, worker="zombie")  # attempt 1
    with transaction(sessions) as session:
        assert job_transitions.claim_job(
            session, job_id=job_id, worker="w2", reclaim=job_transitions.Reclaim.REDELIVERY
        )
    with transaction(sessions) as session:
        assert not job_transitions.update_progress(session, job_id=job_id, progress=0.9, attempt=1)
        assert output(session, job_id, "vocals", attempt=1) is None
        assert job_transitions.mark_succeeded(session, job_id=job_id, attempt=1) is None
        assert (
            job_transitions.mark_failed(session, job_id=job_id, code="c", message="m", attempt=1)
            is None
        )
        assert job_transitions.mark_succeeded(session, job_id=job_id, attempt=2) is not None
    assert count(sessions, JobOutput) == 0


# -- cancel and retry --------------------------------------------------------------------------


def test_cancel_queued_and_running_but_not_finished(sessions: Sessions) -> None:
    queued, running, done = new_job(sessions), running_job(sessions), running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.mark_succeeded(session, job_id=done)
    with transaction(sessions) as session:
        assert job_transitions.cancel_job(session, job_id=queued) is not None
        assert job_transitions.cancel_job(session, job_id=running) is not None
        assert job_transitions.cancel_job(session, job_id=done) is None
    assert read(sessions, queued).status is JobStatus.CANCELLED
    assert read(sessions, running).status is JobStatus.CANCELLED
    assert read(sessions, done).status is JobStatus.SUCCEEDED


def test_a_late_worker_cannot_resurrect_a_cancelled_job(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.cancel_job(session, job_id=job_id)
    with transaction(sessions) as session:
        assert not job_transitions.update_progress(
            session, job_id=job_id, progress=0.9, stage="deliver"
        )
        assert output(session, job_id, "vocals") is None
        assert job_transitions.mark_succeeded(session, job_id=job_id) is None
        assert job_transitions.mark_failed(session, job_id=job_id, code="c", message="m") is None
    job = read(sessions, job_id)
    assert (job.status, job.error_code) == (JobStatus.CANCELLED, None)


def test_retry_requeues_failed_and_cancelled_jobs_keeping_attempts(sessions: Sessions) -> None:
    failed, cancelled, queued = running_job(sessions), new_job(sessions), new_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.mark_failed(
            session, job_id=failed, code="transient", message="timeout"
        )
        assert job_transitions.cancel_job(session, job_id=cancelled)
    with transaction(sessions) as session:
        assert job_transitions.retry_job(session, job_id=failed) is not None
        assert job_transitions.retry_job(session, job_id=cancelled) is not None
        assert job_transitions.retry_job(session, job_id=queued) is None
    job = read(sessions, failed)
    assert (job.status, job.attempts, job.error_code, job.error_message) == (
        JobStatus.QUEUED,
        1,
        None,
        None,
    )
    assert (job.finished_at, job.worker, job.progress) == (None, None, 0.0)
    assert event_kinds(sessions, failed)[-2:] == [EventKind.FAILED, EventKind.RETRIED]
    with transaction(sessions) as session:
        again = job_transitions.claim_job(session, job_id=failed, worker="w9")
        assert again is not None
        assert again.attempts == 2


# -- outputs -----------------------------------------------------------------------------------


def test_recording_a_stem_twice_replaces_it(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    with transaction(sessions) as session:
        first = output(session, job_id, "vocals", size_bytes=10)
        assert first is not None
        assert first.size_bytes == 10
        assert output(session, job_id, "drums") is not None
    with transaction(sessions) as session:  # the re-run after a crash
        second = output(session, job_id, "vocals", size_bytes=20, sha256="ef" * 32)
        assert second is not None
    with transaction(sessions) as session:
        rows = job_queries.list_outputs(session, job_id=job_id)
    assert [(r.stem, r.size_bytes) for r in rows] == [("drums", 1000), ("vocals", 20)]
    assert rows[1].sha256 == "ef" * 32
    assert rows[1].recorded_at.tzinfo is UTC


def test_record_input_fills_the_probe_fields(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.record_input(
            session,
            job_id=job_id,
            sha256=SHA,
            format="flac",
            sample_rate=48000,
            channels=2,
            duration_seconds=12.5,
        )
    job = read(sessions, job_id)
    assert (job.input_format, job.input_sample_rate, job.input_channels) == ("flac", 48000, 2)
    assert job.input_duration_seconds == 12.5


# -- listing, dedup, deletion ------------------------------------------------------------------


def test_pagination_visits_every_job_once_newest_first(sessions: Sessions) -> None:
    created = [new_job(sessions, model="a" if i % 3 else "b") for i in range(23)]
    # Ties on created_at must be broken by id, so give half of the jobs one shared timestamp.
    shared = datetime(2030, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id.in_(created[:12])).values(created_at=shared))
        for job_id in created[5:9]:
            assert job_transitions.cancel_job(session, job_id=job_id)

    def collect(**filters: Any) -> list[Job]:
        seen: list[Job] = []
        cursor: str | None = None
        for _ in range(30):
            with transaction(sessions) as session:
                page, cursor = job_queries.list_jobs(session, limit=5, cursor=cursor, **filters)
            assert len(page) <= 5
            seen += page
            if cursor is None:
                return seen
        raise AssertionError("pagination did not end")

    everything = collect()
    assert sorted(j.id for j in everything) == sorted(created)
    assert sum(j.created_at == shared and j.created_at.tzinfo is UTC for j in everything) == 12
    keys = [(j.created_at, j.id) for j in everything]
    assert keys == sorted(keys, reverse=True)
    by_model = collect(model="b")
    assert {j.id for j in by_model} == set(created[::3])
    cancelled = collect(status=JobStatus.CANCELLED)
    assert {j.id for j in cancelled} == set(created[5:9])
    assert collect(status=JobStatus.RUNNING) == []


def test_bad_cursor_and_limit_are_refused(sessions: Sessions) -> None:
    with transaction(sessions) as session:
        with pytest.raises(ConfigError, match="cursor"):
            job_queries.list_jobs(session, cursor="not-a-cursor")
        naive = job_queries.encode_cursor(datetime(2030, 1, 1), uuid.uuid4())
        with pytest.raises(ConfigError, match="cursor"):
            job_queries.list_jobs(session, cursor=naive)
        with pytest.raises(ValueError, match="limit=0"):
            job_queries.list_jobs(session, limit=0)


def test_find_duplicate_matches_content_model_and_params(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    new_job(sessions, model="other")
    with transaction(sessions) as session:
        key: dict[str, Any] = {"input_sha256": SHA, "params_hash": job_intake.params_hash(PARAMS)}
        assert job_queries.find_duplicate(session, model="dsp-hpss", **key) is None  # still running
        assert job_transitions.mark_succeeded(session, job_id=job_id)
        found = job_queries.find_duplicate(session, model="dsp-hpss", **key)
        assert found is not None
        assert found.id == job_id
        assert job_queries.find_duplicate(session, model="x", **key) is None


def test_delete_cascades_to_outputs_and_events(sessions: Sessions) -> None:
    job_id, kept = running_job(sessions), new_job(sessions)
    with transaction(sessions) as session:
        assert output(session, job_id, "vocals") is not None
    with transaction(sessions) as session:
        assert job_transitions.delete_job(session, job_id=job_id)
        assert not job_transitions.delete_job(session, job_id=job_id)
    assert count(sessions, Job) == 1
    assert count(sessions, JobOutput) == 0
    assert event_kinds(sessions, kept) == [EventKind.QUEUED]
    assert count(sessions, JobEvent) == 1


def test_record_input_from_a_superseded_attempt_is_ignored(sessions: Sessions) -> None:
    job_id = running_job(sessions, worker="zombie")  # attempt 1
    with transaction(sessions) as session:
        assert job_transitions.claim_job(
            session, job_id=job_id, worker="w2", reclaim=job_transitions.Reclaim.REDELIVERY
        )
    probe = {"sha256": SHA, "format": "wav", "sample_rate": 8000, "channels": 1}
    with transaction(sessions) as session:
        assert not job_transitions.record_input(
            session, job_id=job_id, duration_seconds=1.0, attempt=1, **probe
        )
    assert read(sessions, job_id).input_format is None
    with transaction(sessions) as session:
        assert job_transitions.record_input(
            session, job_id=job_id, duration_seconds=1.0, attempt=2, **probe
        )
    assert (read(sessions, job_id).input_format, read(sessions, job_id).input_channels) == (
        "wav",
        1,
    )


# -- transient retries and worker deaths -------------------------------------------------------


def test_requeue_for_retry_puts_the_job_back_with_a_retried_event(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.update_progress(
            session, job_id=job_id, progress=0.4, stage="separate"
        )
    requeue: dict[str, Any] = {
        "code": "storage.unavailable",
        "message": "S3 download failed; retry later",
        "retry": 1,
        "max_retries": 5,
    }
    with transaction(sessions) as session:
        assert recovery.requeue_for_retry(session, job_id=job_id, attempt=2, **requeue) is None
        assert recovery.requeue_for_retry(session, job_id=job_id, attempt=1, **requeue) is not None
    job = read(sessions, job_id)
    assert (job.status, job.attempts, job.progress, job.stage) == (JobStatus.QUEUED, 1, 0.0, None)
    assert job.error_code is None
    with transaction(sessions) as session:
        retried = job_queries.list_events(session, job_id=job_id)[-1]
        assert (retried.kind, retried.attempt, retried.worker) == (EventKind.RETRIED, 1, "w1")
        assert retried.message == "S3 download failed; retry later"
        assert retried.detail == {"code": "storage.unavailable", "retry": 1, "max_retries": 5}
        again = job_transitions.claim_job(
            session, job_id=job_id, worker="w1", reclaim=job_transitions.Reclaim.RETRY
        )
        assert again is not None
        assert again.attempts == 2
    assert event_kinds(sessions, job_id)[-1] is EventKind.CLAIMED


def test_a_retry_that_finds_its_job_running_reclaims_it_without_a_death(
    sessions: Sessions,
) -> None:
    job_id = running_job(sessions)  # the requeue was lost with the database
    with transaction(sessions) as session:
        job = job_transitions.claim_job(
            session, job_id=job_id, worker="w1", reclaim=job_transitions.Reclaim.RETRY
        )
        assert job is not None
        assert job.attempts == 2
        assert recovery.worker_deaths(session, job_id=job_id) == 0
    assert event_kinds(sessions, job_id) == [EventKind.QUEUED, EventKind.CLAIMED, EventKind.CLAIMED]


def redeliver(sessions: Sessions, job_id: uuid.UUID, *, max_deaths: int) -> Job | None:
    """What the task does for a redelivered message: the cap first, then the re-claim."""
    with transaction(sessions) as session:
        failed = recovery.give_up_after_worker_deaths(
            session, job_id=job_id, max_deaths=max_deaths, code="worker.lost"
        )
        if failed is not None:
            return failed
        claimed = job_transitions.claim_job(
            session, job_id=job_id, worker="w", reclaim=job_transitions.Reclaim.REDELIVERY
        )
        assert claimed is not None
        return None


def test_the_third_worker_death_fails_the_job(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    assert redeliver(sessions, job_id, max_deaths=3) is None  # death 1: run again
    with transaction(sessions) as session:  # a transient retry in between is no death
        assert recovery.requeue_for_retry(
            session,
            job_id=job_id,
            attempt=2,
            code="transient",
            message="m",
            retry=1,
            max_retries=5,
        )
        assert job_transitions.claim_job(
            session, job_id=job_id, worker="w", reclaim=job_transitions.Reclaim.RETRY
        )
        assert recovery.worker_deaths(session, job_id=job_id) == 1
    assert redeliver(sessions, job_id, max_deaths=3) is None  # death 2: run again
    failed = redeliver(sessions, job_id, max_deaths=3)  # death 3: give up

    assert failed is not None
    job = read(sessions, job_id)
    assert (job.status, job.error_code, job.attempts) == (JobStatus.FAILED, "worker.lost", 4)
    assert job.error_message is not None
    assert "died 3 times" in job.error_message
    assert job.finished_at is not None
    with transaction(sessions) as session:
        events = job_queries.list_events(session, job_id=job_id)
    assert [e.kind for e in events].count(EventKind.REDELIVERED) == 2
    assert (events[-1].kind, events[-1].detail) == (
        EventKind.FAILED,
        {"code": "worker.lost", "deaths": 3},
    )


def test_the_death_cap_ignores_jobs_nobody_was_running(sessions: Sessions) -> None:
    queued, finished = new_job(sessions), running_job(sessions)
    with transaction(sessions) as session:
        assert job_transitions.mark_succeeded(session, job_id=finished)
    with transaction(sessions) as session:
        for job_id in (queued, finished, uuid.uuid4()):
            assert (
                recovery.give_up_after_worker_deaths(
                    session, job_id=job_id, max_deaths=1, code="worker.lost"
                )
                is None
            )
        with pytest.raises(ValueError, match="max_deaths=0"):
            recovery.give_up_after_worker_deaths(
                session, job_id=queued, max_deaths=0, code="worker.lost"
            )
    assert read(sessions, queued).status is JobStatus.QUEUED
    assert read(sessions, finished).status is JobStatus.SUCCEEDED


def test_a_manual_retry_starts_the_death_count_again(sessions: Sessions) -> None:
    job_id = running_job(sessions)
    assert redeliver(sessions, job_id, max_deaths=2) is None
    assert redeliver(sessions, job_id, max_deaths=2) is not None  # failed: worker.lost
    with transaction(sessions) as session:
        assert recovery.worker_deaths(session, job_id=job_id) == 0  # the failure ended the run
        assert job_transitions.retry_job(session, job_id=job_id)
        assert job_transitions.claim_job(session, job_id=job_id, worker="w")
    assert redeliver(sessions, job_id, max_deaths=2) is None  # death 1 of the new run
    with transaction(sessions) as session:
        assert recovery.worker_deaths(session, job_id=job_id) == 1
    assert read(sessions, job_id).status is JobStatus.RUNNING
