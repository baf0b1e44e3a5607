"""Reliability end to end, with real `celery worker` subprocesses: cancelling a running job, a
transient storage outage retried to success, the cap on worker deaths (poison pills), and the
reaper failing a job no worker will come back for."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import redis
from real_services import settings_from_env
from sqlalchemy import update
from worker_harness import Submitter, WorkerProcess, wav_bytes

from mss_jobs.db.job_queries import list_events, list_outputs
from mss_jobs.db.job_transitions import cancel_job, claim_job
from mss_jobs.db.schema import Job
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import EventKind, JobStatus
from mss_jobs.storage import S3Storage, job_prefix
from workers.app import create_app
from workers.tasks import enqueue

pytestmark = pytest.mark.timeout(300)

StartWorker = Callable[[Mapping[str, str]], WorkerProcess]

WAV32 = {"format": "wav", "bit_depth": 32}
# Identity with tiny chunks: ~20 000 model calls, seconds of work on a small (1.7 MB) input.
SLOW = {"chunk_seconds": 0.002, "batch_size": 1, "format": "flac", "bit_depth": 16}
# The visibility timeout bounds how long a dead worker's task waits for its redelivery.
SHORT_LIMITS = {
    "MSS_JOB_SOFT_TIME_LIMIT_SECONDS": "12",
    "MSS_JOB_HARD_TIME_LIMIT_SECONDS": "14",
    "MSS_VISIBILITY_TIMEOUT_SECONDS": "16",
}


@pytest.fixture(autouse=True)
def empty_queues(redis_db: str) -> None:
    """No task left over from another module's worker competes with this test's jobs."""
    redis.Redis.from_url(redis_db).flushdb()


def _events(jobs: Submitter, job_id: uuid.UUID) -> list[EventKind]:
    with transaction(jobs.sessions) as session:
        return [event.kind for event in list_events(session, job_id=job_id)]


def _stored(storage: S3Storage, job_id: uuid.UUID) -> list[str]:
    return list(storage.list_keys(job_prefix(storage.prefix, job_id)))


def _separating(job: Job) -> bool:
    """Past the statistics pass and into the model: the pool process is deep in the job."""
    return job.status.is_terminal or (job.stage == "separate" and job.progress > 0.15)


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_while_running_stops_the_job_and_the_worker_carries_on(
    jobs: Submitter,
    storage: S3Storage,
    worker_env: dict[str, str],
    redis_db: str,
    start_worker: StartWorker,
) -> None:
    # Celery's result backend on the suite's Redis database: the task's own outcome is readable.
    env = {**worker_env, "MSS_RESULT_BACKEND": redis_db}
    results = create_app(settings_from_env(env))
    worker = start_worker(env)
    job_id = jobs.create(
        wav_bytes(90.0, channels=1, subtype="PCM_16"),
        model="dsp-hpss",
        params={"format": "flac", "bit_depth": 16},
    )
    task_id = enqueue(results, job_id, queue="interactive", priority=5)
    running = jobs.wait(
        job_id,
        lambda job: job.status.is_terminal or (job.stage == "separate" and job.progress > 0.1),
        worker=worker,
    )
    assert running.status == JobStatus.RUNNING, "the job finished before it could be cancelled"

    with transaction(jobs.sessions) as session:
        assert cancel_job(session, job_id=job_id) is not None
    # One task at a time: the next job runs only once the cancelled one has stopped.
    following = jobs.wait(jobs.submit(wav_bytes(0.5), params=WAV32), worker=worker)

    assert following.status == JobStatus.SUCCEEDED, following.error_message
    job = jobs.job(job_id)
    assert (job.status, job.attempts, job.error_code) == (JobStatus.CANCELLED, 1, None)
    assert job.progress < 0.95  # stopped during separation, never reached the upload
    with transaction(jobs.sessions) as session:
        assert list_outputs(session, job_id=job_id) == []
    assert _stored(storage, job_id) == []
    assert _events(jobs, job_id)[-1] == EventKind.CANCELLED
    assert worker.alive()
    # The task itself saw the cancellation and stopped (rather than finishing, failing, or
    # being redelivered): Celery recorded its outcome, not an error.
    # (`disable_sync_subtasks=False`: an embedded worker run earlier in this process leaves
    # Celery believing it is inside a task, where a blocking `get` is refused.)
    outcome = results.AsyncResult(task_id)
    assert outcome.get(timeout=10, disable_sync_subtasks=False) == "cancelled"
    assert outcome.state == "SUCCESS"
    results.close()


# -- transient errors --------------------------------------------------------------------------


class FlakyProxy:
    """A loopback TCP proxy to `upstream` that resets every new connection while `broken`."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        assert target.hostname == "127.0.0.1"
        assert target.port is not None
        self._target = (target.hostname, target.port)
        self.broken = threading.Event()
        self.broken.set()
        self.resets = 0
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            if self.broken.is_set():
                self.resets += 1
                # Linger 0: close() sends a reset, as a crashing load balancer would.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            upstream = socket.create_connection(self._target, timeout=10)
            upstream.settimeout(None)
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()
        for connection in self._open:
            with contextlib.suppress(OSError):
                connection.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def flaky_s3(s3_endpoint: str) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(s3_endpoint)
    yield proxy
    proxy.close()


def test_a_storage_outage_is_retried_until_the_job_succeeds(
    jobs: Submitter,
    storage: S3Storage,
    worker_env: dict[str, str],
    start_worker: StartWorker,
    flaky_s3: FlakyProxy,
) -> None:
    # botocore's own retries (5 tries, backoff up to 20 s) must fit in one attempt's soft limit.
    env = {
        **worker_env,
        "MSS_S3_ENDPOINT_URL": flaky_s3.url,
        "MSS_JOB_SOFT_TIME_LIMIT_SECONDS": "90",
        "MSS_JOB_HARD_TIME_LIMIT_SECONDS": "100",
        "MSS_VISIBILITY_TIMEOUT_SECONDS": "110",
    }
    worker = start_worker(env)
    job_id = jobs.submit(wav_bytes(0.5), params=WAV32)

    # The first attempt cannot reach storage: it gives up with a transient error, the job goes
    # back to `queued` and Celery schedules a retry. Storage comes back only then.
    waiting = jobs.wait(
        job_id,
        lambda job: job.status.is_terminal or EventKind.RETRIED in _events(jobs, job.id),
        worker=worker,
        timeout=120,
    )
    assert not waiting.status.is_terminal, (waiting.error_code, waiting.error_message)
    flaky_s3.broken.clear()
    job = jobs.wait(job_id, worker=worker, timeout=120)

    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    assert flaky_s3.resets > 0
    assert job.attempts > 1
    with transaction(jobs.sessions) as session:
        events = list_events(session, job_id=job_id)
        outputs = list_outputs(session, job_id=job_id)
    kinds = [event.kind for event in events]
    retried = [event for event in events if event.kind == EventKind.RETRIED]
    assert retried
    assert retried[0].detail is not None
    assert retried[0].detail["code"] == "storage.unavailable"
    assert (retried[0].attempt, retried[0].detail["retry"]) == (1, 1)
    assert kinds.count(EventKind.CLAIMED) == job.attempts  # each retry claimed a queued job
    assert EventKind.REDELIVERED not in kinds
    assert [o.stem for o in outputs] == ["mixture"]
    assert _stored(storage, job_id) == [f"{job_prefix(storage.prefix, job_id)}mixture.wav"]


# -- worker deaths -----------------------------------------------------------------------------


def _kill_pool_process(worker: WorkerProcess, job: Job) -> None:
    """SIGKILL the pool process running `job`, as the kernel's OOM killer would."""
    assert job.worker is not None
    pid = int(job.worker.rsplit(":", 1)[1])
    assert os.getpgid(pid) == worker.process.pid, "not a process of this test's worker"
    assert pid != worker.process.pid
    os.kill(pid, signal.SIGKILL)


def test_a_job_that_kills_its_pool_process_fails_after_three_deaths(
    jobs: Submitter, worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    worker = start_worker({**worker_env, "MSS_MAX_WORKER_DEATHS": "3"})
    job_id = jobs.submit(wav_bytes(20.0, channels=1, subtype="PCM_16"), params=SLOW, force=True)

    for attempt in (1, 2, 3):
        running = jobs.wait(
            job_id,
            lambda job, attempt=attempt: job.attempts == attempt and _separating(job),
            worker=worker,
            timeout=90,
        )
        assert running.status == JobStatus.RUNNING, (running.error_code, running.error_message)
        _kill_pool_process(worker, running)
    # The worker requeues the message of a pool process that died; the redelivery gives up.
    job = jobs.wait(job_id, worker=worker, timeout=90)

    assert (job.status, job.error_code, job.attempts) == (JobStatus.FAILED, "worker.lost", 3)
    assert job.error_message is not None
    assert "died 3 times" in job.error_message
    kinds = _events(jobs, job_id)
    assert kinds.count(EventKind.REDELIVERED) == 2
    assert kinds[-1] == EventKind.FAILED
    # The worker survived its pool processes and takes the next job.
    following = jobs.wait(jobs.submit(wav_bytes(0.5), params=WAV32), worker=worker)
    assert following.status == JobStatus.SUCCEEDED
    assert worker.alive()


def test_a_job_whose_whole_worker_dies_twice_fails_with_max_deaths_two(
    jobs: Submitter, worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    env = {**worker_env, **SHORT_LIMITS, "MSS_MAX_WORKER_DEATHS": "2"}
    job_id = jobs.submit(wav_bytes(20.0, channels=1, subtype="PCM_16"), params=SLOW, force=True)

    for attempt in (1, 2):
        worker = start_worker(env)
        running = jobs.wait(
            job_id,
            lambda job, attempt=attempt: job.attempts == attempt and _separating(job),
            worker=worker,
            timeout=90,  # the second attempt waits for the visibility timeout
        )
        assert running.status == JobStatus.RUNNING, (running.error_code, running.error_message)
        worker.kill()
    survivor = start_worker(env)
    job = jobs.wait(job_id, worker=survivor, timeout=90)

    assert (job.status, job.error_code, job.attempts) == (JobStatus.FAILED, "worker.lost", 2)
    assert job.error_message is not None
    assert "died 2 times" in job.error_message
    assert _events(jobs, job_id).count(EventKind.REDELIVERED) == 1


# -- the reaper --------------------------------------------------------------------------------


def test_the_reaper_fails_a_job_left_running_long_ago(
    jobs: Submitter, worker_env: dict[str, str], start_worker: StartWorker
) -> None:
    stale, live = jobs.create(wav_bytes(0.2)), jobs.create(wav_bytes(0.2))
    with transaction(jobs.sessions) as session:  # a worker claimed them, then vanished
        for job_id in (stale, live):
            assert claim_job(session, job_id=job_id, worker="vanished:1") is not None
        long_ago = datetime(2020, 1, 1, tzinfo=UTC)
        session.execute(update(Job).where(Job.id == stale).values(updated_at=long_ago))

    worker = start_worker({**worker_env, "MSS_REAPER_INTERVAL_SECONDS": "1"})
    job = jobs.wait(stale, worker=worker, timeout=60)

    try:
        assert (job.status, job.error_code) == (JobStatus.FAILED, "worker.lost")
        assert job.error_message is not None
        assert "no worker reported on this job" in job.error_message
        assert _events(jobs, stale)[-1] == EventKind.FAILED
        # Reaped in the same sweep as anything else stale: the recent one was left alone.
        assert jobs.job(live).status == JobStatus.RUNNING
        assert "reaper started" in worker.log()
        assert f"job {stale} was left running" in worker.log()
    finally:
        with transaction(jobs.sessions) as session:
            cancel_job(session, job_id=live)
