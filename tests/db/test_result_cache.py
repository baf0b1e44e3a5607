"""The result cache's data functions (`mss_jobs.db.results`) on real PostgreSQL and SQLite."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db import (
    batch_dispatch,
    batch_intake,
    job_intake,
    job_queries,
    job_transitions,
    recovery,
)
from mss_jobs.db.results import (
    Deferred,
    ReusableOutput,
    Reuse,
    Separate,
    mark_reused,
    record_input_and_decide,
)
from mss_jobs.db.schema import Job, JobEvent
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import EventKind, JobStatus

Sessions = sessionmaker[Session]
Concurrently = Callable[[list[Callable[[], Any]]], list[Any]]

MODEL = "dsp-hpss"
PARAMS: dict[str, Any] = {"format": "flac", "stems": None, "derived": [], "bit_depth": None}
SHA = "5a" * 32
PROBE: dict[str, Any] = {"format": "wav", "sample_rate": 44100, "channels": 2}


def new_job(sessions: Sessions, **overrides: Any) -> uuid.UUID:
    arguments: dict[str, Any] = {
        "model": MODEL,
        "params": PARAMS,
        "input_uri": f"s3://bucket/tracks/{uuid.uuid4().hex}.wav",
    }
    arguments.update(overrides)
    with transaction(sessions) as session:
        return job_intake.create_job(session, **arguments).id


def claimed(sessions: Sessions, job_id: uuid.UUID, worker: str = "w1") -> int:
    """Claim the job; its attempt (the fencing token)."""
    with transaction(sessions) as session:
        job = job_transitions.claim_job(session, job_id=job_id, worker=worker)
        assert job is not None
        return job.attempts


def decide(
    sessions: Sessions,
    job_id: uuid.UUID,
    attempt: int,
    *,
    sha: str = SHA,
    may_defer: bool = True,
) -> Reuse | Deferred | Separate | None:
    with transaction(sessions) as session:
        return record_input_and_decide(
            session,
            job_id=job_id,
            attempt=attempt,
            sha256=sha,
            duration_seconds=30.0,
            may_defer=may_defer,
            **PROBE,
        )


def record_stem(sessions: Sessions, job_id: uuid.UUID, attempt: int, stem: str) -> None:
    with transaction(sessions) as session:
        assert job_transitions.record_output(
            session,
            job_id=job_id,
            stem=stem,
            uri=f"s3://bucket/jobs/{job_id}/{stem}.flac",
            size_bytes=1000,
            sha256=stem[0] * 64,
            format="flac",
            sample_rate=44100,
            channels=2,
            duration_seconds=30.0,
            attempt=attempt,
        )


def finished(
    sessions: Sessions, *, stems: tuple[str, ...] = ("harmonic", "percussive"), **job: Any
) -> uuid.UUID:
    """A job that ran the model on SHA and succeeded with `stems` (none: no output rows);
    `force`, so that it does not reuse the one finished before it."""
    job_id = new_job(sessions, **{"force": True, **job})
    attempt = claimed(sessions, job_id)
    assert decide(sessions, job_id, attempt, sha=job.get("input_sha256", SHA)) == Separate()
    for stem in stems:
        record_stem(sessions, job_id, attempt, stem)
    with transaction(sessions) as session:
        assert job_transitions.mark_succeeded(session, job_id=job_id, attempt=attempt) is not None
    return job_id


def decided(sessions: Sessions) -> tuple[uuid.UUID, int]:
    """A claimed job that recorded its input and got its decision: its id and attempt."""
    job_id = new_job(sessions)
    attempt = claimed(sessions, job_id)
    decide(sessions, job_id, attempt)
    return job_id, attempt


def read(sessions: Sessions, job_id: uuid.UUID) -> Job:
    with transaction(sessions) as session:
        job = job_queries.get_job(session, job_id=job_id)
        assert job is not None
        return job


def events(sessions: Sessions, job_id: uuid.UUID) -> list[JobEvent]:
    with transaction(sessions) as session:
        return job_queries.list_events(session, job_id=job_id)


# -- force ------------------------------------------------------------------------------------


def test_force_is_stored_and_not_part_of_the_params(sessions: Sessions) -> None:
    plain, forced = new_job(sessions), new_job(sessions, force=True)
    assert (read(sessions, plain).force, read(sessions, forced).force) == (False, True)
    assert read(sessions, plain).params_hash == read(sessions, forced).params_hash


@dataclass(frozen=True)
class Row:
    """A manifest row (satisfies `mss_jobs.db.job_intake.BatchRow`)."""

    line: int
    input: str = "s3://bucket/tracks/a.flac"
    model: str = MODEL
    params: Mapping[str, Any] = field(default_factory=lambda: PARAMS)
    priority: int = 5
    ref: str | None = None


@pytest.mark.parametrize("force", [True, False])
def test_batch_intake_copies_the_batch_force_flag_onto_its_jobs(
    sessions: Sessions, force: bool
) -> None:
    with transaction(sessions) as session:
        batch, _ = batch_intake.create_batch(
            session,
            model=MODEL,
            params=PARAMS,
            source={"kind": "manifest", "format": "csv"},
            force=force,
        )
        batch_id = batch.id
    with transaction(sessions) as session:
        assert batch_intake.add_jobs(session, batch_id=batch_id, rows=[Row(1), Row(2), Row(3)]) == 3
    with transaction(sessions) as session:
        flags = session.scalars(select(Job.force).where(Job.batch_id == batch_id)).all()
    assert flags == [force] * 3


# -- reuse ------------------------------------------------------------------------------------


def test_a_lone_job_records_its_input_and_separates(sessions: Sessions) -> None:
    job_id = new_job(sessions)
    attempt = claimed(sessions, job_id)

    assert decide(sessions, job_id, attempt) == Separate()

    job = read(sessions, job_id)
    assert (job.status, job.input_sha256, job.input_sample_rate) == (JobStatus.RUNNING, SHA, 44100)


def test_a_succeeded_job_with_the_key_lends_its_outputs(sessions: Sessions) -> None:
    finished(sessions)  # older
    source = finished(sessions)
    job_id = new_job(sessions)
    attempt = claimed(sessions, job_id)

    decision = decide(sessions, job_id, attempt)

    assert isinstance(decision, Reuse)
    assert decision.source == source  # the newest
    assert [o.stem for o in decision.outputs] == ["harmonic", "percussive"]
    assert decision.outputs[0] == ReusableOutput(
        stem="harmonic",
        uri=f"s3://bucket/jobs/{source}/harmonic.flac",
        size_bytes=1000,
        sha256="h" * 64,
        format="flac",
        sample_rate=44100,
        channels=2,
        duration_seconds=30.0,
    )
    assert read(sessions, job_id).input_sha256 == SHA  # recorded all the same


def reused(sessions: Sessions, source: uuid.UUID) -> uuid.UUID:
    """A newer job that copied `source`'s outputs."""
    job_id = new_job(sessions)
    attempt = claimed(sessions, job_id)
    assert isinstance(decide(sessions, job_id, attempt), Reuse)
    record_stem(sessions, job_id, attempt, "harmonic")
    with transaction(sessions) as session:
        assert mark_reused(session, job_id=job_id, attempt=attempt, source=source) is not None
    return job_id


def test_the_run_that_computed_the_result_is_preferred_to_its_copies(sessions: Sessions) -> None:
    original = finished(sessions)
    copy = reused(sessions, original)
    job_id = new_job(sessions)
    attempt = claimed(sessions, job_id)

    decision = decide(sessions, job_id, attempt, may_defer=False)
    assert isinstance(decision, Reuse)
    assert decision.source == original  # not the newer copy
    with transaction(sessions) as session:
        assert job_transitions.delete_job(session, job_id=original)
    decision = decide(sessions, job_id, attempt, may_defer=False)
    assert isinstance(decision, Reuse)
    assert decision.source == copy  # a copy serves once the original is gone


def test_only_a_succeeded_job_with_the_same_content_model_params_and_outputs_counts(
    sessions: Sessions,
) -> None:
    finished(sessions, model="identity")
    finished(sessions, params={**PARAMS, "format": "wav"})
    finished(sessions, input_sha256="6b" * 32)
    finished(sessions, stems=())  # succeeded, yet nothing to copy
    failed, attempt = decided(sessions)
    record_stem(sessions, failed, attempt, "harmonic")
    with transaction(sessions) as session:
        job_transitions.mark_failed(
            session, job_id=failed, code="internal", message="x", attempt=attempt
        )
    job_id = new_job(sessions)
    attempt = claimed(sessions, job_id)

    assert decide(sessions, job_id, attempt) == Separate()


def test_a_force_job_separates_even_with_a_result_to_reuse(sessions: Sessions) -> None:
    finished(sessions)
    job_id = new_job(sessions, force=True)
    attempt = claimed(sessions, job_id)

    assert decide(sessions, job_id, attempt) == Separate()
    assert read(sessions, job_id).input_sha256 == SHA


def test_a_stale_attempt_decides_nothing_and_records_nothing(sessions: Sessions) -> None:
    finished(sessions)
    job_id = new_job(sessions)
    claimed(sessions, job_id)
    with transaction(sessions) as session:  # redelivered: attempt 2 took over
        assert job_transitions.claim_job(
            session, job_id=job_id, worker="w2", reclaim=job_transitions.Reclaim.REDELIVERY
        )

    assert decide(sessions, job_id, 1) is None
    assert read(sessions, job_id).input_sha256 is None
    assert decide(sessions, uuid.uuid4(), 1) is None  # unknown job


def test_mark_reused_finishes_the_job_with_its_source(sessions: Sessions) -> None:
    source = finished(sessions)
    job_id, attempt = decided(sessions)
    with transaction(sessions) as session:
        assert mark_reused(session, job_id=job_id, attempt=attempt + 1, source=source) is None
        done = mark_reused(session, job_id=job_id, attempt=attempt, source=source)
        assert done is not None

    job = read(sessions, job_id)
    assert (job.status, job.progress, job.reused_from) == (JobStatus.SUCCEEDED, 1.0, source)
    assert job.finished_at is not None
    history = events(sessions, job_id)
    assert [e.kind for e in history][-2:] == [EventKind.REUSED, EventKind.SUCCEEDED]
    assert history[-2].detail == {"source": str(source)}
    assert read(sessions, source).reused_from is None


def test_mark_reused_of_a_deleted_source_succeeds_without_the_link(sessions: Sessions) -> None:
    source = finished(sessions)
    job_id, attempt = decided(sessions)
    with transaction(sessions) as session:
        assert job_transitions.delete_job(session, job_id=source)

    with transaction(sessions) as session:
        assert mark_reused(session, job_id=job_id, attempt=attempt, source=source) is not None

    job = read(sessions, job_id)
    assert (job.status, job.reused_from) == (JobStatus.SUCCEEDED, None)


def test_deleting_the_source_keeps_the_reusing_job(sessions: Sessions) -> None:
    source = finished(sessions)
    job_id, attempt = decided(sessions)
    with transaction(sessions) as session:
        mark_reused(session, job_id=job_id, attempt=attempt, source=source)
    with transaction(sessions) as session:
        assert job_transitions.delete_job(session, job_id=source)
    assert (read(sessions, job_id).status, read(sessions, job_id).reused_from) == (
        JobStatus.SUCCEEDED,
        None,
    )


# -- defer ------------------------------------------------------------------------------------


def test_a_job_defers_to_a_running_twin_and_comes_back_to_reuse_its_result(
    sessions: Sessions,
) -> None:
    twin = new_job(sessions)
    twin_attempt = claimed(sessions, twin)
    assert decide(sessions, twin, twin_attempt) == Separate()
    job_id = new_job(sessions)
    attempt = claimed(sessions, job_id, worker="w2")

    assert decide(sessions, job_id, attempt) == Deferred(twin=twin, deferrals=1)

    job = read(sessions, job_id)
    assert (job.status, job.attempts, job.stage, job.progress) == (JobStatus.QUEUED, 1, None, 0.0)
    assert job.enqueued_at is None  # a single job: no dispatcher watches it
    deferred = events(sessions, job_id)[-1]
    assert (deferred.kind, deferred.attempt) == (EventKind.DEFERRED, 1)
    assert deferred.detail == {"twin": str(twin), "deferrals": 1}
    with transaction(sessions) as session:  # neither a worker death nor a retry
        assert recovery.worker_deaths(session, job_id=job_id) == 0

    # The twin is still running when the job comes back: deferred again, counted.
    attempt = claimed(sessions, job_id, worker="w2")
    assert decide(sessions, job_id, attempt) == Deferred(twin=twin, deferrals=2)
    # The twin finishes; the job's next delivery reuses its result.
    record_stem(sessions, twin, twin_attempt, "harmonic")
    with transaction(sessions) as session:
        job_transitions.mark_succeeded(session, job_id=twin, attempt=twin_attempt)
    attempt = claimed(sessions, job_id, worker="w2")
    decision = decide(sessions, job_id, attempt)
    assert isinstance(decision, Reuse)
    assert decision.source == twin
    assert read(sessions, job_id).attempts == 3


def test_a_job_whose_twin_failed_separates_itself(sessions: Sessions) -> None:
    twin = new_job(sessions)
    twin_attempt = claimed(sessions, twin)
    decide(sessions, twin, twin_attempt)
    job_id = new_job(sessions)
    assert isinstance(decide(sessions, job_id, claimed(sessions, job_id)), Deferred)
    with transaction(sessions) as session:
        job_transitions.mark_failed(
            session, job_id=twin, code="internal", message="x", attempt=twin_attempt
        )

    assert decide(sessions, job_id, claimed(sessions, job_id)) == Separate()


def test_jobs_defer_to_a_running_force_job_but_never_defer_one(sessions: Sessions) -> None:
    forced = new_job(sessions, force=True)
    assert decide(sessions, forced, claimed(sessions, forced)) == Separate()
    other_force = new_job(sessions, force=True)
    assert decide(sessions, other_force, claimed(sessions, other_force)) == Separate()
    job_id = new_job(sessions)

    decision = decide(sessions, job_id, claimed(sessions, job_id))

    assert isinstance(decision, Deferred)
    assert decision.twin == forced  # the one that started first


def test_a_job_that_may_not_defer_separates_beside_its_twin(sessions: Sessions) -> None:
    twin = new_job(sessions)
    decide(sessions, twin, claimed(sessions, twin))
    job_id = new_job(sessions)

    assert decide(sessions, job_id, claimed(sessions, job_id), may_defer=False) == Separate()


def test_other_keys_and_undecided_twins_are_not_waited_for(sessions: Sessions) -> None:
    other = new_job(sessions, params={**PARAMS, "format": "wav"})
    decide(sessions, other, claimed(sessions, other))
    undecided = new_job(sessions)
    claimed(sessions, undecided)  # running, still fetching: its sha256 is not known yet
    job_id = new_job(sessions)

    assert decide(sessions, job_id, claimed(sessions, job_id)) == Separate()


def test_a_deferred_batch_job_is_stamped_as_published(sessions: Sessions) -> None:
    twin = new_job(sessions)
    decide(sessions, twin, claimed(sessions, twin))
    with transaction(sessions) as session:
        batch, _ = batch_intake.create_batch(
            session, model=MODEL, params=PARAMS, source={"kind": "manifest", "format": "csv"}
        )
        batch_id = batch.id
    with transaction(sessions) as session:
        batch_intake.add_jobs(session, batch_id=batch_id, rows=[Row(1)])
    with transaction(sessions) as session:
        [dispatch] = batch_dispatch.take_pending(session, batch_id=batch_id, limit=1)
    job_id = dispatch.job_id
    published = read(sessions, job_id).enqueued_at
    assert published is not None

    assert isinstance(decide(sessions, job_id, claimed(sessions, job_id)), Deferred)

    job = read(sessions, job_id)
    assert job.status == JobStatus.QUEUED
    assert job.enqueued_at is not None
    assert job.enqueued_at > published


# -- races ------------------------------------------------------------------------------------


def test_of_simultaneous_duplicates_exactly_one_separates(
    sessions: Sessions, concurrently: Concurrently
) -> None:
    started = [new_job(sessions) for _ in range(6)]
    attempts = [claimed(sessions, job_id, worker=f"w{i}") for i, job_id in enumerate(started)]

    decisions = concurrently(
        [
            lambda job_id=job_id, attempt=attempt: decide(sessions, job_id, attempt)
            for job_id, attempt in zip(started, attempts, strict=True)
        ]
    )

    assert sum(isinstance(d, Separate) for d in decisions) == 1
    assert sum(isinstance(d, Deferred) for d in decisions) == 5
    [runner] = [job_id for job_id, d in zip(started, decisions, strict=True) if d == Separate()]
    assert {d.twin for d in decisions if isinstance(d, Deferred)} == {runner}
    assert [read(sessions, job_id).status for job_id in started].count(JobStatus.RUNNING) == 1


def test_a_decision_waits_for_the_one_in_progress_on_the_same_key(
    pg_sessions: Sessions, postgres: Any
) -> None:
    # Deterministic interleaving: A has decided to separate but not committed; B must wait on
    # the key's lock, then see A running and defer. Without the lock B would see nobody.
    first, second = new_job(pg_sessions), new_job(pg_sessions)
    first_attempt = claimed(pg_sessions, first)
    second_attempt = claimed(pg_sessions, second, worker="w2")
    with ThreadPoolExecutor(1) as pool:
        with transaction(pg_sessions) as session_a:
            decision_a = record_input_and_decide(
                session_a,
                job_id=first,
                attempt=first_attempt,
                sha256=SHA,
                duration_seconds=30.0,
                **PROBE,
            )
            later = pool.submit(decide, pg_sessions, second, second_attempt)
            deadline = time.monotonic() + 10
            while postgres.waiting_backends() == 0:
                assert time.monotonic() < deadline, "the second decision never waited"
                time.sleep(0.01)
        assert decision_a == Separate()
        assert later.result(timeout=10) == Deferred(twin=first, deferrals=1)
