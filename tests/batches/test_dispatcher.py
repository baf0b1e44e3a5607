"""The dispatcher on SQLite with a stand-in queue: bounded publishing, a broker failure midway
(the rest wait, nothing is lost), the stale scan re-publishing, completion."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.batches.dispatcher import Dispatcher
from mss_jobs.batches.manifest import ManifestRow
from mss_jobs.db import batch_intake, job_transitions, migrate
from mss_jobs.db.schema import Batch, Job
from mss_jobs.db.session import make_engine, make_session_factory, transaction
from mss_jobs.domain.lifecycle import BatchStatus, JobStatus
from mss_jobs.errors import BrokerUnavailableError


class FlakyQueue:
    """Accepts `accept` messages, then refuses every one until `accept` is raised again."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.sent: list[uuid.UUID] = []

    def enqueue(self, job_id: uuid.UUID, *, lane: str, priority: int) -> str:
        if len(self.sent) >= self.accept:
            raise BrokerUnavailableError("broker down (test)")
        self.sent.append(job_id)
        return str(job_id)


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate.upgrade(url)
    return make_session_factory(make_engine(url))


def _batch(sessions: sessionmaker[Session], rows: int, *, max_in_flight: int) -> uuid.UUID:
    with transaction(sessions) as session:
        batch, _ = batch_intake.create_batch(
            session,
            model="identity",
            params={},
            source={"kind": "rows"},
            max_in_flight=max_in_flight,
        )
        batch_intake.add_jobs(
            session,
            batch_id=batch.id,
            rows=[
                ManifestRow(line, f"s3://b/{line}.wav", {}, "identity", {}, 5)
                for line in range(1, rows + 1)
            ],
        )
        batch_intake.finish_intake(session, batch_id=batch.id)
        return batch.id


def _statuses(sessions: sessionmaker[Session], batch_id: uuid.UUID) -> list[JobStatus]:
    with transaction(sessions) as session:
        return list(
            session.scalars(
                select(Job.status).where(Job.batch_id == batch_id).order_by(Job.batch_line)
            )
        )


def test_a_broker_failure_midway_loses_nothing_and_the_stale_scan_resends(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = _batch(sessions, 5, max_in_flight=3)
    queue = FlakyQueue(accept=1)
    dispatcher = Dispatcher(sessions, queue, stale_after=timedelta(0))

    first = dispatcher.run_once()

    # Three taken (the bound), one published, two refused; with `stale_after=0` the stale scan
    # at once tries all three queued again and the still-failing broker refuses them too. The
    # other two rows wait as pending: nothing is lost, nothing exceeds the bound.
    assert (first.published, first.failed_publishes) == (1, 2 + 3)
    assert _statuses(sessions, batch_id).count(JobStatus.QUEUED) == 3
    assert _statuses(sessions, batch_id).count(JobStatus.PENDING) == 2

    queue.accept = 100  # the broker is back
    second = dispatcher.run_once()
    assert second.published == 0  # no room: three still in flight
    assert second.republished == 3
    assert set(queue.sent) >= set(_job_ids(sessions, batch_id)[:3])


def test_the_bound_holds_and_a_finished_batch_completes(sessions: sessionmaker[Session]) -> None:
    batch_id = _batch(sessions, 3, max_in_flight=2)
    queue = FlakyQueue(accept=100)
    dispatcher = Dispatcher(sessions, queue)

    assert dispatcher.run_once().published == 2
    for job_id in queue.sent:
        with transaction(sessions) as session:
            assert job_transitions.claim_job(session, job_id=job_id, worker="w:1") is not None
            assert job_transitions.mark_succeeded(session, job_id=job_id) is not None
    assert dispatcher.run_once().published == 1
    with transaction(sessions) as session:
        assert job_transitions.claim_job(session, job_id=queue.sent[2], worker="w:1") is not None
        assert job_transitions.mark_succeeded(session, job_id=queue.sent[2]) is not None

    assert dispatcher.run_once().completed == 1
    with transaction(sessions) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        assert batch.status is BatchStatus.COMPLETED


def _job_ids(sessions: sessionmaker[Session], batch_id: uuid.UUID) -> list[uuid.UUID]:
    with transaction(sessions) as session:
        return list(
            session.scalars(select(Job.id).where(Job.batch_id == batch_id).order_by(Job.batch_line))
        )
