"""A worker killed mid-job (SIGKILL, pool included): Redis redelivers the unacknowledged task
after the visibility timeout, a new worker re-claims the job and finishes it exactly once."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import redis
from worker_harness import Submitter, WorkerProcess, wav_bytes

from mss_jobs.db.job_queries import list_events, list_outputs
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import EventKind, JobStatus
from mss_jobs.storage import S3Storage, job_prefix

pytestmark = pytest.mark.timeout(180)

# The visibility timeout bounds how long a dead worker's task waits; the settings require it
# above the hard limit, which must leave the second run time to finish.
SHORT_LIMITS = {
    "MSS_JOB_SOFT_TIME_LIMIT_SECONDS": "12",
    "MSS_JOB_HARD_TIME_LIMIT_SECONDS": "14",
    "MSS_VISIBILITY_TIMEOUT_SECONDS": "16",
}
# Identity with tiny chunks: ~20 000 model calls, seconds of work on a small (1.7 MB) input.
SLOW = {"chunk_seconds": 0.002, "batch_size": 1, "format": "flac", "bit_depth": 16}


def test_killed_worker_job_is_redelivered_and_completed_once(
    jobs: Submitter,
    storage: S3Storage,
    worker_env: dict[str, str],
    redis_db: str,
    start_worker: Callable[[Mapping[str, str]], WorkerProcess],
) -> None:
    redis.Redis.from_url(redis_db).flushdb()  # no task left over from another module's worker
    env = {**worker_env, **SHORT_LIMITS}
    first = start_worker(env)
    job_id = jobs.submit(wav_bytes(20.0, channels=1, subtype="PCM_16"), params=SLOW, force=True)
    running = jobs.wait(
        job_id,
        lambda job: job.status.is_terminal or (job.stage == "separate" and job.progress > 0.15),
        worker=first,
    )
    assert running.status == JobStatus.RUNNING, "the job finished before the worker was killed"

    first.kill()
    assert jobs.job(job_id).status == JobStatus.RUNNING  # nobody else marks it

    second = start_worker(env)
    job = jobs.wait(job_id, worker=second, timeout=90)

    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    assert job.attempts == 2
    assert job.worker != running.worker
    with transaction(jobs.sessions) as session:
        outputs = list_outputs(session, job_id=job_id)
        kinds = [event.kind for event in list_events(session, job_id=job_id)]
    assert [o.stem for o in outputs] == ["mixture"]
    assert list(storage.list_keys(job_prefix(storage.prefix, job_id))) == [
        f"{job_prefix(storage.prefix, job_id)}mixture.flac"
    ]
    assert kinds.count(EventKind.CLAIMED) == 1
    assert kinds.count(EventKind.REDELIVERED) == 1
    assert kinds[-1] == EventKind.SUCCEEDED
