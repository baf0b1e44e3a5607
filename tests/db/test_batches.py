"""The batch data functions on real PostgreSQL and SQLite (migrated schema), races included."""

from __future__ import annotations

import functools
import io
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.batches.manifest import JobTemplate, ManifestRow, RowRejection, read_csv
from mss_jobs.db import (
    batch_dispatch,
    batch_intake,
    batch_queries,
    job_intake,
    job_queries,
    job_transitions,
)
from mss_jobs.db.schema import Batch, BatchRejection, Job, JobEvent, JobOutput
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import BatchStatus, EventKind, JobStatus
from mss_jobs.errors import BatchKeyConflictError, BatchNotFoundError, BatchStateError

Sessions = sessionmaker[Session]
Concurrently = Callable[[list[Callable[[], Any]]], list[Any]]
T = TypeVar("T")

PARAMS: dict[str, Any] = {"format": "flac", "stems": None, "derived": [], "bit_depth": None}
SOURCE = {"kind": "manifest", "format": "csv"}


@dataclass(frozen=True)
class Row:
    """A row as the manifest parser yields it (satisfies `job_intake.BatchRow`)."""

    line: int
    input: str = ""
    model: str = "dsp-hpss"
    params: Mapping[str, Any] = field(default_factory=lambda: PARAMS)
    priority: int = 5
    ref: str | None = None

    def __post_init__(self) -> None:
        if not self.input:
            object.__setattr__(self, "input", f"s3://bucket/tracks/{self.line:06d}.flac")


@dataclass(frozen=True)
class Rejection:
    line: int
    input_text: str
    code: str = "manifest.invalid_input"
    message: str = "input: not an s3:// URI"


def _empty_batches(sessions: Sessions) -> Sessions:
    with transaction(sessions) as session:
        session.execute(delete(Batch))  # jobs and rejections go by ON DELETE CASCADE
    return sessions


@pytest.fixture
def db(sessions: Sessions) -> Iterator[Sessions]:
    """Both dialects, no batches, no jobs (and none left behind for the next module)."""
    yield _empty_batches(sessions)
    _empty_batches(sessions)


@pytest.fixture
def pg(pg_sessions: Sessions) -> Iterator[Sessions]:
    """PostgreSQL alone (lock-interleaving tests), no batches, no jobs."""
    yield _empty_batches(pg_sessions)
    _empty_batches(pg_sessions)


def new_batch(sessions: Sessions, **overrides: Any) -> uuid.UUID:
    arguments: dict[str, Any] = {"model": "dsp-hpss", "params": PARAMS, "source": SOURCE}
    arguments.update(overrides)
    with transaction(sessions) as session:
        batch, created = batch_intake.create_batch(session, **arguments)
        assert created
        return batch.id


def add(sessions: Sessions, batch_id: uuid.UUID, lines: range | list[int], **row: Any) -> int:
    with transaction(sessions) as session:
        return batch_intake.add_jobs(
            session, batch_id=batch_id, rows=(Row(line=line, **row) for line in lines)
        )


def batch_with_jobs(sessions: Sessions, lines: int, **overrides: Any) -> uuid.UUID:
    batch_id = new_batch(sessions, **overrides)
    add(sessions, batch_id, range(1, lines + 1))
    with transaction(sessions) as session:
        assert batch_intake.finish_intake(session, batch_id=batch_id)
    return batch_id


def read_batch(sessions: Sessions, batch_id: uuid.UUID) -> Batch:
    with transaction(sessions) as session:
        batch = batch_queries.get_batch(session, batch_id=batch_id)
        assert batch is not None
        return batch


def statuses(sessions: Sessions, batch_id: uuid.UUID) -> dict[int, JobStatus]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(Job.batch_line, Job.status)
            .where(Job.batch_id == batch_id)
            .order_by(Job.batch_line)  # without it PostgreSQL returns updated rows in any order
        )
        return {line: status for line, status in rows if line is not None}


def job_at(sessions: Sessions, batch_id: uuid.UUID, line: int) -> Job:
    with transaction(sessions) as session:
        return session.scalars(
            select(Job).where(Job.batch_id == batch_id, Job.batch_line == line)
        ).one()


def take(sessions: Sessions, batch_id: uuid.UUID, limit: int) -> list[batch_dispatch.Dispatch]:
    with transaction(sessions) as session:
        return batch_dispatch.take_pending(session, batch_id=batch_id, limit=limit)


def run_job(sessions: Sessions, job_id: uuid.UUID, outcome: str) -> None:
    """Claim the job as a worker would and finish it with `outcome`."""
    with transaction(sessions) as session:
        claimed = job_transitions.claim_job(session, job_id=job_id, worker="w1")
        assert claimed is not None
        if outcome == "succeeded":
            assert job_transitions.mark_succeeded(session, job_id=job_id)
        elif outcome == "failed":
            assert job_transitions.mark_failed(
                session, job_id=job_id, code="audio.empty", message="silent"
            )


def event_kinds(sessions: Sessions, job_id: uuid.UUID) -> list[EventKind]:
    with transaction(sessions) as session:
        return [event.kind for event in job_queries.list_events(session, job_id=job_id)]


# -- creation ----------------------------------------------------------------------------------


def test_create_batch_starts_active_with_its_spec(db: Sessions) -> None:
    batch = read_batch(db, new_batch(db, lane="interactive", priority=7, max_in_flight=3))
    assert (batch.status, batch.model, batch.lane, batch.priority) == (
        BatchStatus.ACTIVE,
        "dsp-hpss",
        "interactive",
        7,
    )
    assert (batch.max_in_flight, batch.force, batch.accepted_rows, batch.rejected_rows) == (
        3,
        False,
        0,
        0,
    )
    assert batch.params == PARAMS
    assert batch.params_hash == job_intake.params_hash(PARAMS)
    assert batch.source == SOURCE
    assert batch.created_at.tzinfo is UTC
    assert (batch.intake_finished_at, batch.finished_at) == (None, None)


def test_batch_key_returns_the_same_batch_for_the_same_spec(db: Sessions) -> None:
    first = new_batch(db, batch_key="catalog-2025")
    with transaction(db) as session:
        again, created = batch_intake.create_batch(
            session,
            model="dsp-hpss",
            params=dict(reversed(PARAMS.items())),
            source=dict(reversed(SOURCE.items())),
            priority=9,  # scheduling is not identity: the first batch keeps its own
            batch_key="catalog-2025",
        )
    assert (again.id, created, again.priority) == (first, False, 5)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "identity"},
        {"params": {**PARAMS, "format": "wav"}},
        {"source": {"kind": "s3", "prefix": "s3://bucket/x/"}},
        {"force": True},
    ],
)
def test_batch_key_reused_for_another_spec_is_a_conflict(
    db: Sessions, change: dict[str, Any]
) -> None:
    new_batch(db, batch_key="k")
    arguments: dict[str, Any] = {"model": "dsp-hpss", "params": PARAMS, "source": SOURCE}
    with pytest.raises(BatchKeyConflictError, match="'k'"), transaction(db) as session:
        batch_intake.create_batch(session, **{**arguments, **change}, batch_key="k")


def test_batch_key_race_creates_one_batch(db: Sessions, concurrently: Concurrently) -> None:
    def create() -> tuple[uuid.UUID, bool]:
        with transaction(db) as session:
            batch, created = batch_intake.create_batch(
                session, model="dsp-hpss", params=PARAMS, source=SOURCE, batch_key="race"
            )
            return batch.id, created

    results = concurrently([create] * 6)
    assert len({batch_id for batch_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 5 + [True]


@pytest.mark.parametrize(
    ("argument", "value"), [("lane", "express"), ("priority", 10), ("max_in_flight", 0)]
)
def test_create_batch_refuses_out_of_range_settings(
    db: Sessions, argument: str, value: object
) -> None:
    with pytest.raises(ValueError, match=argument):
        new_batch(db, **{argument: value})


# -- intake ------------------------------------------------------------------------------------


def test_add_jobs_creates_pending_jobs_with_their_effective_params(db: Sessions) -> None:
    batch_id = new_batch(db)
    wav = {**PARAMS, "format": "wav"}
    rows = [
        Row(line=1),
        Row(line=2, params=wav, priority=8, ref="album-1/track-2"),
        Row(line=3, params=dict(PARAMS)),  # an equal but distinct document
        Row(line=5, model="identity", params=wav),
    ]
    with transaction(db) as session:
        assert batch_intake.add_jobs(session, batch_id=batch_id, rows=rows, chunk_size=3) == 4
    for row in rows:
        job = job_at(db, batch_id, row.line)
        assert (job.status, job.model, job.priority, job.client_ref) == (
            JobStatus.PENDING,
            row.model,
            row.priority,
            row.ref,
        )
        assert (job.input_uri, job.params) == (row.input, row.params)
        assert job.params_hash == job_intake.params_hash(row.params)
        assert (job.attempts, job.progress, job.enqueued_at) == (0, 0.0, None)
        assert job.created_at.tzinfo is UTC
    assert read_batch(db, batch_id).accepted_rows == 4
    assert event_kinds(db, job_at(db, batch_id, 1).id) == []  # history starts at dispatch


def test_adding_the_same_rows_again_inserts_nothing(db: Sessions) -> None:
    batch_id = new_batch(db)
    assert add(db, batch_id, range(1, 8)) == 7
    first_ids = {line: job_at(db, batch_id, line).id for line in range(1, 8)}
    assert add(db, batch_id, range(1, 8), input="s3://bucket/changed.flac") == 0
    assert add(db, batch_id, range(5, 11)) == 3  # a resumed intake: only lines 8-10 are new
    assert sorted(statuses(db, batch_id)) == list(range(1, 11))
    assert {line: job_at(db, batch_id, line).id for line in range(1, 8)} == first_ids
    assert job_at(db, batch_id, 1).input_uri == "s3://bucket/tracks/000001.flac"
    assert read_batch(db, batch_id).accepted_rows == 10


def test_duplicate_lines_within_one_call_insert_once(db: Sessions) -> None:
    batch_id = new_batch(db)
    assert add(db, batch_id, [1, 2, 2, 3, 1]) == 3
    assert read_batch(db, batch_id).accepted_rows == 3


def test_add_jobs_refuses_unknown_and_cancelled_batches_and_bad_rows(db: Sessions) -> None:
    with pytest.raises(BatchNotFoundError):
        add(db, uuid.uuid4(), [1])
    batch_id = new_batch(db)
    with pytest.raises(ValueError, match="priority=10"):
        add(db, batch_id, [1], priority=10)
    with pytest.raises(ValueError, match="line 0"):
        add(db, batch_id, [0])
    with transaction(db) as session:
        assert batch_dispatch.cancel_batch(session, batch_id=batch_id) == 0
    with pytest.raises(BatchStateError, match="cancelled"):
        add(db, batch_id, [1])
    assert statuses(db, batch_id) == {}


def test_rejections_are_recorded_once_and_counted(db: Sessions) -> None:
    batch_id = new_batch(db)
    rejected = [Rejection(line=2, input_text="ftp://x"), Rejection(line=4, input_text='"a,')]
    for expected in (2, 0):
        with transaction(db) as session:
            assert (
                batch_intake.add_rejections(session, batch_id=batch_id, rejections=rejected)
                == expected
            )
    with transaction(db) as session:
        rows = session.scalars(select(BatchRejection).order_by(BatchRejection.line)).all()
        assert [(r.line, r.input_text, r.code) for r in rows] == [
            (2, "ftp://x", "manifest.invalid_input"),
            (4, '"a,', "manifest.invalid_input"),
        ]
    assert read_batch(db, batch_id).rejected_rows == 2


# -- dispatch ----------------------------------------------------------------------------------


def test_take_pending_fills_the_room_in_line_order(db: Sessions) -> None:
    batch_id = batch_with_jobs(db, 10, max_in_flight=4, priority=3)
    taken = take(db, batch_id, limit=3)
    assert [d.line for d in taken] == [1, 2, 3]
    assert all((d.batch_id, d.lane, d.priority) == (batch_id, "bulk", 5) for d in taken)
    assert [d.line for d in take(db, batch_id, limit=100)] == [4]  # room: 4 in flight at most
    assert take(db, batch_id, limit=100) == []
    with transaction(db) as session:
        assert batch_queries.count_in_flight(session, batch_id=batch_id) == 4
    job = job_at(db, batch_id, 1)
    assert job.status is JobStatus.QUEUED
    assert job.enqueued_at is not None
    assert job.enqueued_at.tzinfo is UTC
    assert event_kinds(db, job.id) == [EventKind.QUEUED]

    run_job(db, taken[0].job_id, "succeeded")
    run_job(db, taken[1].job_id, "failed")
    with transaction(db) as session:  # a running job still counts
        assert job_transitions.claim_job(session, job_id=taken[2].job_id, worker="w2") is not None
    assert [d.line for d in take(db, batch_id, limit=100)] == [5, 6]


def test_take_pending_keeps_each_rows_priority(db: Sessions) -> None:
    batch_id = new_batch(db, priority=2)
    with transaction(db) as session:
        batch_intake.add_jobs(
            session, batch_id=batch_id, rows=[Row(line=1, priority=9), Row(line=2, priority=1)]
        )
    assert [(d.line, d.priority) for d in take(db, batch_id, limit=5)] == [(1, 9), (2, 1)]


def test_take_pending_takes_nothing_from_unknown_cancelled_or_completed_batches(
    db: Sessions,
) -> None:
    assert take(db, uuid.uuid4(), limit=5) == []
    completed = batch_with_jobs(db, 1)
    run_job(db, take(db, completed, limit=5)[0].job_id, "succeeded")
    with transaction(db) as session:
        assert batch_dispatch.mark_completed(session, batch_id=completed)
    add(db, completed, [1])  # nothing new: it stays completed
    assert take(db, completed, limit=5) == []
    cancelled = batch_with_jobs(db, 3)
    with transaction(db) as session:
        assert batch_dispatch.cancel_batch(session, batch_id=cancelled) == 3
    assert take(db, cancelled, limit=5) == []
    with pytest.raises(ValueError, match="limit=-1"):
        take(db, cancelled, limit=-1)


def test_a_pending_job_cancelled_alone_is_skipped(db: Sessions) -> None:
    batch_id = batch_with_jobs(db, 3)
    with transaction(db) as session:
        assert job_transitions.cancel_job(session, job_id=job_at(db, batch_id, 1).id) is not None
    assert [d.line for d in take(db, batch_id, limit=5)] == [2, 3]


def test_concurrent_dispatchers_never_take_a_job_twice(
    db: Sessions, concurrently: Concurrently
) -> None:
    batch_id = batch_with_jobs(db, 60, max_in_flight=40)
    taken = concurrently([functools.partial(take, db, batch_id, 7)] * 8)
    job_ids = [d.job_id for batch in taken for d in batch]
    assert len(job_ids) == len(set(job_ids)) == 40  # every job once; the bound holds
    assert sorted(d.line for batch in taken for d in batch) == list(range(1, 41))


def wait_until_blocked(postgres: Any) -> None:
    deadline = time.monotonic() + 10
    while postgres.waiting_backends() == 0:
        assert time.monotonic() < deadline, "the second transaction never blocked on the first"
        time.sleep(0.01)


def test_a_dispatcher_waits_for_another_and_counts_what_it_took(
    pg: Sessions, postgres: Any
) -> None:
    # Deterministic interleaving: A has taken jobs but not committed; B must wait on the batch
    # row, then see A's jobs as in flight and take only the room that is left.
    batch_id = batch_with_jobs(pg, 20, max_in_flight=5)
    with ThreadPoolExecutor(1) as pool:
        with transaction(pg) as session_a:
            first = batch_dispatch.take_pending(session_a, batch_id=batch_id, limit=3)
            second = pool.submit(take, pg, batch_id, 10)
            wait_until_blocked(postgres)
        assert [d.line for d in second.result(timeout=10)] == [4, 5]
    assert [d.line for d in first] == [1, 2, 3]


def test_stale_queued_jobs_are_returned_once_per_period(db: Sessions) -> None:
    batch_id = batch_with_jobs(db, 5, lane="interactive")
    take(db, batch_id, limit=3)
    single = jobs_queued_alone(db)
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    with transaction(db) as session:  # lines 1 and 2 were published an hour ago …
        session.execute(
            update(Job)
            .where(Job.batch_id == batch_id, Job.batch_line.in_([1, 2, 3]))
            .values(enqueued_at=hour_ago, updated_at=hour_ago)
        )
        session.execute(  # … and 3 too, but it was requeued for a Celery retry since
            update(Job)
            .where(Job.batch_id == batch_id, Job.batch_line == 3)
            .values(updated_at=now - timedelta(minutes=1))
        )
    with transaction(db) as session:
        stale = batch_dispatch.stale_queued(session, older_than=timedelta(minutes=10), now=now)
    assert [(d.line, d.lane, d.batch_id) for d in stale] == [
        (1, "interactive", batch_id),
        (2, "interactive", batch_id),
    ]
    assert single not in {d.job_id for d in stale}
    assert job_at(db, batch_id, 1).enqueued_at == now
    with transaction(db) as session:
        assert batch_dispatch.stale_queued(session, older_than=timedelta(minutes=10), now=now) == []
    later = now + timedelta(minutes=11)
    with transaction(db) as session:
        again = batch_dispatch.stale_queued(session, older_than=timedelta(minutes=10), now=later)
    assert [d.line for d in again] == [1, 2, 3]


def jobs_queued_alone(sessions: Sessions) -> uuid.UUID:
    """A single (non-batch) queued job: never the dispatcher's to re-publish."""
    with transaction(sessions) as session:
        job = job_intake.create_job(session, model="dsp-hpss", params=PARAMS, input_uri="s3://b/x")
        long_ago = datetime(2000, 1, 1, tzinfo=UTC)
        session.execute(
            update(Job).where(Job.id == job.id).values(enqueued_at=long_ago, updated_at=long_ago)
        )
        return job.id


def test_concurrent_stale_scans_split_the_jobs(pg: Sessions, concurrently: Concurrently) -> None:
    batch_id = batch_with_jobs(pg, 30, max_in_flight=30)
    take(pg, batch_id, limit=30)
    later = datetime.now(UTC) + timedelta(hours=1)

    def scan() -> list[uuid.UUID]:
        with transaction(pg) as session:
            found = batch_dispatch.stale_queued(
                session, older_than=timedelta(minutes=1), limit=4, now=later
            )
            time.sleep(0.05)  # hold the row locks while the others scan
            return [d.job_id for d in found]

    found = [job_id for result in concurrently([scan] * 5) for job_id in result]
    assert len(found) == len(set(found))


# -- cancel, retry, completion -----------------------------------------------------------------


def test_cancel_batch_cancels_every_unfinished_job(
    db: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_dispatch, "CHUNK_SIZE", 3)  # several line windows
    batch_id = batch_with_jobs(db, 10, max_in_flight=4)
    taken = take(db, batch_id, limit=4)
    run_job(db, taken[0].job_id, "succeeded")
    run_job(db, taken[1].job_id, "failed")
    with transaction(db) as session:
        assert job_transitions.claim_job(session, job_id=taken[2].job_id, worker="w1") is not None
    with transaction(db) as session:
        assert batch_dispatch.cancel_batch(session, batch_id=batch_id) == 8
    assert statuses(db, batch_id) == {
        1: JobStatus.SUCCEEDED,
        2: JobStatus.FAILED,
        **dict.fromkeys(range(3, 11), JobStatus.CANCELLED),
    }
    batch = read_batch(db, batch_id)
    assert batch.status is BatchStatus.CANCELLED
    assert batch.finished_at is not None
    running = job_at(db, batch_id, 3)
    assert running.finished_at is not None
    assert event_kinds(db, running.id)[-1] is EventKind.CANCELLED
    assert event_kinds(db, job_at(db, batch_id, 9).id) == [EventKind.CANCELLED]
    with transaction(db) as session:  # the running worker's late writes no longer apply
        assert job_transitions.mark_succeeded(session, job_id=running.id, attempt=1) is None
        assert batch_dispatch.cancel_batch(session, batch_id=batch_id) is None
        assert batch_dispatch.retry_failed(session, batch_id=batch_id) is None
        assert not batch_dispatch.mark_completed(session, batch_id=batch_id)
        assert batch_dispatch.cancel_batch(session, batch_id=uuid.uuid4()) is None


def test_retry_failed_makes_failed_jobs_pending_and_reopens_the_batch(
    db: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_dispatch, "CHUNK_SIZE", 2)
    batch_id = batch_with_jobs(db, 5, max_in_flight=5)
    for dispatch, outcome in zip(
        take(db, batch_id, limit=5),
        ["failed", "succeeded", "failed", "succeeded", "failed"],
        strict=True,
    ):
        run_job(db, dispatch.job_id, outcome)
    with transaction(db) as session:
        assert batch_dispatch.mark_completed(session, batch_id=batch_id)
    with transaction(db) as session:
        assert batch_dispatch.retry_failed(session, batch_id=batch_id) == 3
    assert [line for line, s in statuses(db, batch_id).items() if s is JobStatus.PENDING] == [
        1,
        3,
        5,
    ]
    job = job_at(db, batch_id, 1)
    assert (job.error_code, job.error_message, job.finished_at, job.attempts) == (
        None,
        None,
        None,
        1,
    )
    assert event_kinds(db, job.id)[-2:] == [EventKind.FAILED, EventKind.RETRIED]
    batch = read_batch(db, batch_id)
    assert (batch.status, batch.finished_at) == (BatchStatus.ACTIVE, None)
    assert [d.line for d in take(db, batch_id, limit=5)] == [1, 3, 5]
    with transaction(db) as session:
        assert batch_dispatch.retry_failed(session, batch_id=batch_id) == 0
        assert batch_dispatch.retry_failed(session, batch_id=uuid.uuid4()) is None


def test_a_batch_completes_only_when_read_to_the_end_and_every_job_finished(
    db: Sessions,
) -> None:
    batch_id = new_batch(db, max_in_flight=5)
    add(db, batch_id, range(1, 3))

    def complete() -> bool:
        with transaction(db) as session:
            return batch_dispatch.mark_completed(session, batch_id=batch_id)

    taken = take(db, batch_id, limit=5)
    for dispatch in taken:
        run_job(db, dispatch.job_id, "succeeded")
    assert not complete()  # more rows may still come
    with transaction(db) as session:
        assert batch_intake.finish_intake(session, batch_id=batch_id)
        assert batch_intake.finish_intake(session, batch_id=batch_id)  # idempotent
        assert not batch_intake.finish_intake(session, batch_id=uuid.uuid4())
    add(db, batch_id, [3])
    assert not complete()  # line 3 is pending
    run_job(db, take(db, batch_id, limit=5)[0].job_id, "failed")
    assert complete()
    assert not complete()
    batch = read_batch(db, batch_id)
    assert batch.status is BatchStatus.COMPLETED
    assert batch.finished_at is not None
    assert add(db, batch_id, [4]) == 1  # a late row reopens it
    assert read_batch(db, batch_id).status is BatchStatus.ACTIVE


# -- reads -------------------------------------------------------------------------------------


def test_counts_and_progress_with_a_fixed_clock(db: Sessions) -> None:
    batch_id = batch_with_jobs(db, 10, max_in_flight=10)
    taken = take(db, batch_id, limit=6)
    for dispatch in taken[:4]:
        run_job(db, dispatch.job_id, "succeeded")
    run_job(db, taken[4].job_id, "failed")
    with transaction(db) as session:
        assert job_transitions.claim_job(session, job_id=taken[5].job_id, worker="w1")
        assert job_transitions.update_progress(session, job_id=taken[5].job_id, progress=0.5)
        batch_intake.add_rejections(
            session, batch_id=batch_id, rejections=[Rejection(line=11, input_text="x")]
        )
    now = datetime.now(UTC) + timedelta(minutes=30)
    with transaction(db) as session:  # window: the last hour (the batch is older)
        session.execute(
            update(Batch).where(Batch.id == batch_id).values(created_at=now - timedelta(hours=2))
        )
        for minutes, dispatch in zip([5, 15, 25, 70], taken[:4], strict=True):
            session.execute(
                update(Job)
                .where(Job.id == dispatch.job_id)
                .values(finished_at=now - timedelta(minutes=minutes))
            )
        session.execute(
            update(Job)
            .where(Job.id == taken[4].job_id)
            .values(finished_at=now - timedelta(minutes=1))
        )
        progress = batch_queries.batch_progress(
            session, batch_id=batch_id, window=timedelta(minutes=60), now=now
        )
        assert batch_queries.count_by_status(session, batch_id=batch_id) == {
            JobStatus.PENDING: 4,
            JobStatus.QUEUED: 0,
            JobStatus.RUNNING: 1,
            JobStatus.SUCCEEDED: 4,
            JobStatus.FAILED: 1,
            JobStatus.CANCELLED: 0,
        }
        assert batch_queries.batch_progress(session, batch_id=uuid.uuid4()) is None
    assert progress is not None
    assert (progress.total, progress.finished, progress.remaining, progress.rejected) == (
        10,
        5,
        5,
        1,
    )
    assert progress.progress == pytest.approx(0.55)
    assert progress.throughput_per_minute == pytest.approx(4 / 60)  # 3 succeeded + 1 failed
    assert progress.eta == timedelta(minutes=5 / (4 / 60))


def test_progress_of_a_fresh_batch_has_no_eta_and_a_finished_one_a_zero_eta(
    db: Sessions,
) -> None:
    batch_id = batch_with_jobs(db, 2)
    with transaction(db) as session:
        fresh = batch_queries.batch_progress(session, batch_id=batch_id)
    assert fresh is not None
    assert (fresh.throughput_per_minute, fresh.eta, fresh.progress) == (0.0, None, 0.0)
    for dispatch in take(db, batch_id, limit=2):
        run_job(db, dispatch.job_id, "succeeded")
    with transaction(db) as session:
        done = batch_queries.batch_progress(session, batch_id=batch_id)
    assert done is not None
    assert (done.eta, done.progress, done.remaining) == (timedelta(0), 1.0, 0)


def test_listing_visits_every_job_once_in_line_order(db: Sessions) -> None:
    batch_id = batch_with_jobs(db, 23, max_in_flight=10)
    take(db, batch_id, limit=10)
    batch_with_jobs(db, 3)  # another batch's lines 1-3 must not show up

    def collect(**filters: Any) -> list[int]:
        lines: list[int] = []
        after: int | None = None
        for _ in range(30):
            with transaction(db) as session:
                page, after = batch_queries.list_batch_jobs(
                    session, batch_id=batch_id, limit=4, after_line=after, **filters
                )
            assert len(page) <= 4
            lines += [job.batch_line for job in page if job.batch_line is not None]
            if after is None:
                return lines
        raise AssertionError("pagination did not end")

    assert collect() == list(range(1, 24))
    assert collect(status=JobStatus.QUEUED) == list(range(1, 11))
    assert collect(status=JobStatus.FAILED) == []
    with pytest.raises(ValueError, match="limit=0"), transaction(db) as session:
        batch_queries.list_batch_jobs(session, batch_id=batch_id, limit=0)


def test_report_merges_jobs_and_rejections_in_line_order(db: Sessions) -> None:
    batch_id = new_batch(db, max_in_flight=10)
    with transaction(db) as session:
        batch_intake.add_jobs(
            session,
            batch_id=batch_id,
            rows=[Row(line=line, ref=f"r{line}") for line in (2, 3, 5, 6, 8)],
        )
        batch_intake.add_rejections(
            session,
            batch_id=batch_id,
            rejections=[Rejection(line=line, input_text=f"bad {line}") for line in (1, 4, 7, 9)],
        )
    taken = {d.line: d.job_id for d in take(db, batch_id, limit=10)}
    with transaction(db) as session:
        assert job_transitions.claim_job(session, job_id=taken[2], worker="w1")
        for stem in ("percussive", "harmonic"):
            assert job_transitions.record_output(
                session,
                job_id=taken[2],
                stem=stem,
                uri=f"s3://out/{taken[2]}/{stem}.flac",
                size_bytes=1,
                sha256="ab" * 32,
                format="flac",
                sample_rate=44100,
                channels=2,
                duration_seconds=1.0,
            )
        assert job_transitions.mark_succeeded(session, job_id=taken[2])
        assert job_transitions.claim_job(session, job_id=taken[3], worker="w1")
        assert job_transitions.mark_failed(
            session, job_id=taken[3], code="audio.empty", message="silent"
        )
        assert job_transitions.claim_job(session, job_id=taken[5], worker="w1")  # a cached result
        assert job_transitions.mark_succeeded(session, job_id=taken[5])
        session.execute(update(Job).where(Job.id == taken[5]).values(reused_from=taken[2]))
    with transaction(db) as session:
        report = list(batch_queries.iter_report(session, batch_id=batch_id, chunk_size=2))
    assert [(row.line, row.status) for row in report] == [
        (1, batch_queries.REJECTED),
        (2, JobStatus.SUCCEEDED),
        (3, JobStatus.FAILED),
        (4, batch_queries.REJECTED),
        (5, JobStatus.SUCCEEDED),
        (6, JobStatus.QUEUED),
        (7, batch_queries.REJECTED),
        (8, JobStatus.QUEUED),
        (9, batch_queries.REJECTED),
    ]
    stems = {"harmonic": f"s3://out/{taken[2]}/harmonic.flac"}
    stems["percussive"] = f"s3://out/{taken[2]}/percussive.flac"
    assert (report[1].outputs, report[1].ref, report[1].job_id) == (stems, "r2", taken[2])
    assert report[4].outputs == stems  # reused from line 2
    assert (report[2].error_code, report[2].error_message, report[2].outputs) == (
        "audio.empty",
        "silent",
        {},
    )
    assert (report[0].input, report[0].error_code, report[0].job_id) == (
        "bad 1",
        "manifest.invalid_input",
        None,
    )
    assert report[2].input == "s3://bucket/tracks/000003.flac"


def test_delete_batch_takes_jobs_outputs_events_and_rejections(db: Sessions) -> None:
    batch_id = batch_with_jobs(db, 3)
    with transaction(db) as session:
        batch_intake.add_rejections(
            session, batch_id=batch_id, rejections=[Rejection(line=4, input_text="x")]
        )
    run_job(db, take(db, batch_id, limit=1)[0].job_id, "succeeded")
    with transaction(db) as session:
        assert batch_dispatch.delete_batch(session, batch_id=batch_id)
        assert not batch_dispatch.delete_batch(session, batch_id=batch_id)
        for entity in (Batch, Job, JobEvent, JobOutput, BatchRejection):
            assert session.scalar(select(func.count()).select_from(entity)) == 0


# -- scale -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_100k_row_intake_on_postgresql(pg: Sessions) -> None:
    """Correctness at scale, and the figure the intake benchmark starts from (printed)."""
    batch_id = new_batch(pg)
    overridden = {**PARAMS, "format": "wav"}

    def rows() -> Iterator[Row]:
        for line in range(1, 100_001):
            yield Row(line=line, params=overridden if line % 10 == 0 else PARAMS)

    started = time.perf_counter()
    with transaction(pg) as session:
        assert batch_intake.add_jobs(session, batch_id=batch_id, rows=rows()) == 100_000
    first = time.perf_counter() - started
    started = time.perf_counter()
    with transaction(pg) as session:
        assert batch_intake.add_jobs(session, batch_id=batch_id, rows=rows()) == 0
    again = time.perf_counter() - started
    print(f"\nadd_jobs, 100,000 rows on PostgreSQL: {first:.1f} s; the same again: {again:.1f} s")
    with transaction(pg) as session:
        counts = batch_queries.count_by_status(session, batch_id=batch_id)
        wav = session.scalar(
            select(func.count()).where(
                Job.batch_id == batch_id, Job.params_hash == job_intake.params_hash(overridden)
            )
        )
    assert (counts[JobStatus.PENDING], wav) == (100_000, 10_000)
    assert read_batch(pg, batch_id).accepted_rows == 100_000


@pytest.mark.slow
def test_a_100k_row_csv_manifest_end_to_end_on_postgresql(pg: Sessions) -> None:
    """CSV bytes → `read_csv` → `add_jobs`/`add_rejections`, one transaction per 1,000 rows, as
    the API's intake will run it (the time is printed: the benchmark's starting figure)."""
    template = JobTemplate.build(model="dsp-hpss", params={"format": "flac"})
    batch_id = new_batch(pg, params=template.params)
    lines = [b"input,format,priority,ref\n"]
    for i in range(1, 100_001):
        override = "wav" if i % 10 == 0 else ""
        target = "ftp://nowhere" if i % 1000 == 0 else f"s3://catalog/tracks/{i:06d}.flac"
        lines.append(f"{target},{override},,ref-{i}\n".encode())
    manifest = io.BytesIO(b"".join(lines))

    started = time.perf_counter()
    for chunk in batched(read_csv(manifest, template), 1000):
        with transaction(pg) as session:
            rows = [item for item in chunk if isinstance(item, ManifestRow)]
            rejected = [item for item in chunk if isinstance(item, RowRejection)]
            batch_intake.add_jobs(session, batch_id=batch_id, rows=rows)
            batch_intake.add_rejections(session, batch_id=batch_id, rejections=rejected)
    with transaction(pg) as session:
        batch_intake.finish_intake(session, batch_id=batch_id)
    elapsed = time.perf_counter() - started
    print(f"\nCSV manifest, 100,000 rows → PostgreSQL, committed per 1,000: {elapsed:.1f} s")
    batch = read_batch(pg, batch_id)
    assert (batch.accepted_rows, batch.rejected_rows) == (99_900, 100)
    assert job_at(pg, batch_id, 11).params["format"] == "wav"  # row 10 is line 11
    assert job_at(pg, batch_id, 12).client_ref == "ref-11"


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def test_retrying_one_failed_batch_job_hands_it_back_to_the_dispatcher(db: Sessions) -> None:
    batch_id = batch_with_jobs(db, 2, max_in_flight=2)
    first, _ = take(db, batch_id, limit=2)
    run_job(db, first.job_id, "failed")
    with transaction(db) as session:
        job = job_transitions.retry_job(session, job_id=first.job_id)
        assert job is not None
        assert (job.status, job.enqueued_at) == (JobStatus.PENDING, None)
    assert [d.line for d in take(db, batch_id, limit=2)] == [1]
