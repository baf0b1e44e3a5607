"""The result cache end to end: real `celery worker`s, PostgreSQL, Redis and S3 (moto).

A model run is counted from the job's history, not from what the cache says about itself: a job
whose model ran has `progress` events for the runner's stages (`analyze`, `separate`), which only
the separation loop writes.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from worker_harness import (
    JOB_TIMEOUT,
    InProcessRequest,
    InProcessTask,
    Submitter,
    WorkerProcess,
    wav_bytes,
)

from mss_jobs.db.job_queries import list_events, list_outputs
from mss_jobs.db.job_transitions import (
    claim_job,
    mark_failed,
    mark_succeeded,
    record_input,
    record_output,
)
from mss_jobs.db.schema import Job, JobEvent
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import EventKind, JobStatus
from mss_jobs.queueing import SEPARATE_TASK, broker_priority
from mss_jobs.settings import Settings
from mss_jobs.storage import S3Storage, job_prefix, output_key
from workers.context import build_context
from workers.tasks import DEFER_MAX_SECONDS, DEFER_SECONDS, defer_countdown, run_separation

pytestmark = pytest.mark.timeout(300)

StartWorker = Callable[[Mapping[str, str]], WorkerProcess]

WAV32: dict[str, Any] = {"format": "wav", "bit_depth": 32}
# Identity with small chunks: thousands of model calls, a few seconds of work on a 3 s input,
# so duplicates picked up together find the first one still running.
SLOW: dict[str, Any] = {"chunk_seconds": 0.005, "batch_size": 1, "format": "wav", "bit_depth": 32}
MODEL_STAGES = ("analyze", "separate")


@pytest.fixture(autouse=True)
def empty_queues(redis_db: str) -> None:
    """No task left over from another module's worker competes with this test's jobs."""
    redis.Redis.from_url(redis_db).flushdb()


def unique_audio(seconds: float) -> bytes:
    """Audio no other test (or earlier session) has submitted: its result is not cached."""
    return wav_bytes(seconds, seed=secrets.randbits(32))


def create(
    jobs: Submitter,
    content: bytes,
    *,
    params: Mapping[str, Any] = WAV32,
    force: bool = False,
    priority: int = 5,
) -> uuid.UUID:
    """What the API does: upload the input under a new key, then create the row (not queued)."""
    return jobs.create(content, params=params, force=force, priority=priority)


def submit(jobs: Submitter, content: bytes, **options: Any) -> uuid.UUID:
    job_id = create(jobs, content, **options)
    jobs.enqueue(job_id)
    return job_id


def history(jobs: Submitter, job_id: uuid.UUID) -> list[JobEvent]:
    with transaction(jobs.sessions) as session:
        return list_events(session, job_id=job_id)


def model_ran(jobs: Submitter, job_id: uuid.UUID) -> bool:
    return any(
        event.kind == EventKind.PROGRESS and event.message in MODEL_STAGES
        for event in history(jobs, job_id)
    )


def outputs_of(jobs: Submitter, job_id: uuid.UUID) -> dict[str, tuple[str, str]]:
    """stem → (uri, sha256) of the job's output rows."""
    with transaction(jobs.sessions) as session:
        return {o.stem: (o.uri, o.sha256) for o in list_outputs(session, job_id=job_id)}


def stored_keys(storage: S3Storage, job_id: uuid.UUID) -> list[str]:
    return list(storage.list_keys(job_prefix(storage.prefix, job_id)))


def wait_for_event(
    jobs: Submitter, job_id: uuid.UUID, kind: EventKind, worker: WorkerProcess
) -> JobEvent:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        found = [event for event in history(jobs, job_id) if event.kind == kind]
        if found:
            return found[0]
        if not worker.alive():
            pytest.fail(f"worker died while waiting for job {job_id}:\n{worker.log()}")
        time.sleep(0.05)
    pytest.fail(f"job {job_id} has no {kind} event after {JOB_TIMEOUT} s\n{worker.log()}")


def assert_own_copies(
    jobs: Submitter, storage: S3Storage, job_id: uuid.UUID, like: uuid.UUID
) -> None:
    """`job_id` has the outputs of `like`: same stems and digests, under its own keys."""
    mine, theirs = outputs_of(jobs, job_id), outputs_of(jobs, like)
    assert mine.keys() == theirs.keys() != set()
    for stem, (uri, sha256) in mine.items():
        key = output_key(storage.prefix, job_id, stem, "wav")
        assert uri == storage.uri_for(key)
        assert sha256 == theirs[stem][1]
        head = storage.client.head_object(Bucket=storage.bucket, Key=key)
        assert head["Metadata"]["sha256"] == sha256
    assert sorted(stored_keys(storage, job_id)) == sorted(
        output_key(storage.prefix, job_id, stem, "wav") for stem in mine
    )


# -- one worker, jobs one after the other ------------------------------------------------------


def test_the_same_audio_three_times_runs_the_model_once(
    jobs: Submitter, storage: S3Storage, worker: WorkerProcess
) -> None:
    content = unique_audio(2.0)
    job_ids = []
    for _ in range(3):
        job_id = submit(jobs, content)
        done = jobs.wait(job_id, worker=worker)
        assert done.status == JobStatus.SUCCEEDED, (done.error_code, done.error_message)
        job_ids.append(job_id)
    first, second, third = job_ids

    assert [model_ran(jobs, job_id) for job_id in job_ids] == [True, False, False]
    assert [jobs.job(job_id).reused_from for job_id in job_ids] == [None, first, first]
    for job_id in (second, third):
        job = jobs.job(job_id)
        assert (job.attempts, job.progress, job.input_sha256) == (
            1,
            1.0,
            jobs.job(first).input_sha256,
        )
        kinds = [event.kind for event in history(jobs, job_id)]
        assert kinds[-2:] == [EventKind.REUSED, EventKind.SUCCEEDED]
        assert_own_copies(jobs, storage, job_id, like=first)
    # The copies are whole objects, not references: deleting the source leaves them.
    storage.delete_prefix(job_prefix(storage.prefix, first))
    downloaded = storage.download_file(outputs_of(jobs, third)["mixture"][0], jobs.folder / "m.wav")
    assert downloaded.sha256 == outputs_of(jobs, first)["mixture"][1]


def test_force_runs_the_model_again_and_other_params_are_another_result(
    jobs: Submitter, worker: WorkerProcess
) -> None:
    content = unique_audio(1.0)
    first = jobs.wait(submit(jobs, content), worker=worker)
    forced = jobs.wait(submit(jobs, content, force=True), worker=worker)
    other = jobs.wait(
        submit(jobs, content, params={"format": "wav", "bit_depth": 16}), worker=worker
    )

    for job in (first, forced, other):
        assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
        assert job.reused_from is None
        assert model_ran(jobs, job.id)
    assert forced.params_hash == first.params_hash
    # The freshest run is what a later duplicate copies.
    later = jobs.wait(submit(jobs, content), worker=worker)
    assert (later.status, later.reused_from) == (JobStatus.SUCCEEDED, forced.id)


def test_outputs_gone_from_storage_make_the_job_separate_after_all(
    jobs: Submitter, storage: S3Storage, worker: WorkerProcess
) -> None:
    content = unique_audio(1.0)
    source = jobs.wait(submit(jobs, content), worker=worker)
    storage.delete_prefix(job_prefix(storage.prefix, source.id))  # the row stays: a race

    job = jobs.wait(submit(jobs, content), worker=worker)

    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    assert (job.reused_from, model_ran(jobs, job.id)) == (None, True)
    assert stored_keys(storage, job.id) == [output_key(storage.prefix, job.id, "mixture", "wav")]


# -- a twin running elsewhere (a row held by a worker that is not ours) -------------------------


def running_twin(jobs: Submitter, content: bytes) -> tuple[uuid.UUID, int]:
    """A job with the same input, claimed by a worker outside this test, past its decision."""
    twin = create(jobs, content)
    with transaction(jobs.sessions) as session:
        claimed = claim_job(session, job_id=twin, worker="elsewhere:1")
        assert claimed is not None
        assert record_input(
            session,
            job_id=twin,
            sha256=hashlib.sha256(content).hexdigest(),
            format="wav",
            sample_rate=44100,
            channels=2,
            duration_seconds=1.0,
            attempt=claimed.attempts,
        )
        return twin, claimed.attempts


def test_a_job_deferred_behind_a_twin_reuses_its_result(
    jobs: Submitter, storage: S3Storage, worker: WorkerProcess
) -> None:
    content = unique_audio(1.0)
    twin, twin_attempt = running_twin(jobs, content)
    job_id = create(jobs, content)
    jobs.enqueue(job_id, queue="bulk", priority=2)

    deferred = wait_for_event(jobs, job_id, EventKind.DEFERRED, worker)
    assert deferred.detail == {"twin": str(twin), "deferrals": 1}
    assert jobs.job(job_id).status in (JobStatus.QUEUED, JobStatus.RUNNING)
    # The twin finishes: its output is the input itself (it is an identity job).
    key = output_key(storage.prefix, twin, "mixture", "wav")
    (jobs.folder / "twin.wav").write_bytes(content)
    stored = storage.upload_file(jobs.folder / "twin.wav", key)
    with transaction(jobs.sessions) as session:
        assert record_output(
            session,
            job_id=twin,
            stem="mixture",
            uri=stored.uri,
            size_bytes=stored.bytes,
            sha256=stored.sha256,
            format="wav",
            sample_rate=44100,
            channels=2,
            duration_seconds=1.0,
            attempt=twin_attempt,
        )
        assert mark_succeeded(session, job_id=twin, attempt=twin_attempt)

    job = jobs.wait(job_id, worker=worker, timeout=JOB_TIMEOUT + DEFER_SECONDS)

    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    assert (job.reused_from, model_ran(jobs, job_id)) == (twin, False)
    assert job.attempts == 2  # deferred once: claimed twice, neither a retry nor a death
    kinds = [event.kind for event in history(jobs, job_id)]
    assert EventKind.RETRIED not in kinds
    assert EventKind.REDELIVERED not in kinds
    assert_own_copies(jobs, storage, job_id, like=twin)


def test_a_job_deferred_behind_a_twin_that_fails_runs_the_model_itself(
    jobs: Submitter, worker: WorkerProcess
) -> None:
    content = unique_audio(1.0)
    twin, twin_attempt = running_twin(jobs, content)
    job_id = submit(jobs, content)
    wait_for_event(jobs, job_id, EventKind.DEFERRED, worker)
    with transaction(jobs.sessions) as session:
        mark_failed(session, job_id=twin, code="internal", message="boom", attempt=twin_attempt)

    job = jobs.wait(job_id, worker=worker, timeout=JOB_TIMEOUT + DEFER_SECONDS)

    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    assert (job.reused_from, model_ran(jobs, job_id)) == (None, True)


# -- the deferral's publishing, in process -----------------------------------------------------


def test_the_deferral_countdown_doubles_up_to_its_caps() -> None:
    waits = [defer_countdown(n, visibility_timeout=3600) for n in range(1, 7)]
    assert (
        waits
        == [DEFER_SECONDS, 2 * DEFER_SECONDS, 4 * DEFER_SECONDS, 8 * DEFER_SECONDS]
        + [DEFER_MAX_SECONDS] * 2
    )
    # A countdown message is held unacknowledged: it must not outlive the visibility timeout.
    assert defer_countdown(5, visibility_timeout=30) == 15.0
    assert defer_countdown(10_000, visibility_timeout=1) == 1.0
    with pytest.raises(ValueError, match="deferrals=0"):
        defer_countdown(0, visibility_timeout=30)


@dataclass
class _RecordingApp:
    """Stands in for the Celery app: records `send_task` calls, or refuses them."""

    refuse: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send_task(self, name: str, **options: Any) -> Any:
        if self.refuse:
            raise ConnectionError("broker unreachable")
        self.sent.append({"name": name, **options})
        return type("Result", (), {"id": options["task_id"]})()


def test_a_deferred_job_is_published_again_on_its_queue_and_priority_with_a_countdown(
    jobs: Submitter, settings: Settings
) -> None:
    content = unique_audio(0.5)
    twin, _ = running_twin(jobs, content)
    job_id = create(jobs, content, priority=7)
    app = _RecordingApp()
    task = InProcessTask(InProcessRequest(delivery_info={"routing_key": "bulk"}), app)
    context = build_context(settings)
    try:
        assert run_separation(task, str(job_id), context) == "deferred"  # type: ignore[arg-type]
    finally:
        context.close()

    [sent] = app.sent
    assert sent["name"] == SEPARATE_TASK
    assert sent["args"] == [str(job_id)]
    assert sent["task_id"].startswith(f"{job_id}.")
    assert (sent["queue"], sent["priority"], sent["countdown"]) == (
        "bulk",
        broker_priority(7),
        DEFER_SECONDS,
    )
    job = jobs.job(job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
    assert history(jobs, job_id)[-1].detail == {"twin": str(twin), "deferrals": 1}


def test_a_deferred_job_the_broker_refuses_is_run_where_it_is(
    jobs: Submitter, settings: Settings
) -> None:
    content = unique_audio(0.5)
    running_twin(jobs, content)
    job_id = create(jobs, content)
    task = InProcessTask(InProcessRequest(delivery_info={}), _RecordingApp(refuse=True))
    context = build_context(settings)
    try:
        assert run_separation(task, str(job_id), context) == "succeeded"  # type: ignore[arg-type]
    finally:
        context.close()

    job: Job = jobs.job(job_id)
    assert (job.status, job.attempts, job.reused_from) == (JobStatus.SUCCEEDED, 2, None)
    assert model_ran(jobs, job_id)
    kinds = [event.kind for event in history(jobs, job_id)]
    assert kinds.count(EventKind.DEFERRED) == 1


# -- two workers, duplicates enqueued at once --------------------------------------------------


def test_duplicates_enqueued_at_once_on_two_workers_run_the_model_once(
    jobs: Submitter,
    storage: S3Storage,
    worker_env: dict[str, str],
    start_worker: StartWorker,
) -> None:
    workers = [start_worker(worker_env), start_worker(worker_env)]
    content = unique_audio(3.0)
    job_ids = [create(jobs, content, params=SLOW) for _ in range(4)]
    for job_id in job_ids:
        jobs.enqueue(job_id)

    finished = [
        jobs.wait(job_id, worker=workers[0], timeout=JOB_TIMEOUT + 4 * DEFER_SECONDS)
        for job_id in job_ids
    ]

    for job in finished:
        assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    ran = [job.id for job in finished if model_ran(jobs, job.id)]
    assert len(ran) == 1, f"the model ran for {len(ran)} of 4 duplicates"
    [runner] = ran
    assert sorted(str(job.reused_from) for job in finished) == sorted(["None"] + [str(runner)] * 3)
    for job in finished:
        if job.id != runner:
            assert_own_copies(jobs, storage, job.id, like=runner)
    deferrals = sum(
        event.kind == EventKind.DEFERRED for job_id in job_ids for event in history(jobs, job_id)
    )
    print(f"4 duplicates on 2 workers: 1 model run, {deferrals} deferrals")
