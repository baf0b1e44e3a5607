"""The worker end to end: a real `celery worker` against PostgreSQL, Redis and S3 (moto)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf
from worker_harness import InProcessRequest, InProcessTask, Submitter, WorkerProcess, wav_bytes

from mss_jobs.db.job_queries import list_outputs
from mss_jobs.db.job_transitions import cancel_job, claim_job, record_output
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import JobStatus
from mss_jobs.settings import Settings
from mss_jobs.storage import S3Storage, job_prefix, output_key
from workers.context import build_context
from workers.tasks import run_separation

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("worker")]

WAV32 = {"format": "wav", "bit_depth": 32}


def _download(storage: S3Storage, uri: str, tmp_path: os.PathLike[str]) -> np.ndarray:
    path = storage.download_file(uri, f"{tmp_path}/stem-{os.urandom(4).hex()}.wav").path
    audio, _ = sf.read(path, dtype="float32", always_2d=True)
    return audio


def _stored_outputs(storage: S3Storage, job_id: object) -> list[str]:
    return list(storage.list_keys(job_prefix(storage.prefix, job_id)))


def test_identity_job_outputs_equal_the_input(
    jobs: Submitter, storage: S3Storage, worker: WorkerProcess, tmp_path: os.PathLike[str]
) -> None:
    content = wav_bytes(1.5)
    job_id = jobs.submit(content, params=WAV32)

    job = jobs.wait(job_id, worker=worker)

    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    assert job.attempts == 1
    assert job.progress == 1.0
    assert job.input_sample_rate == 44100
    assert job.input_channels == 2
    with transaction(jobs.sessions) as session:
        outputs = list_outputs(session, job_id=job_id)
    assert [(o.stem, o.format, o.sample_rate, o.channels) for o in outputs] == [
        ("mixture", "wav", 44100, 2)
    ]
    expected, _ = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    stem = _download(storage, outputs[0].uri, tmp_path)
    assert stem.shape == expected.shape
    np.testing.assert_allclose(stem, expected, atol=1e-5, rtol=0)


def test_derived_stems_and_bulk_queue(jobs: Submitter, worker: WorkerProcess) -> None:
    job_id = jobs.create(
        wav_bytes(1.0, channels=1),
        params={**WAV32, "derived": ["silence=mixture-mixture"], "stems": ["silence"]},
    )
    jobs.enqueue(job_id, queue="bulk", priority=0)

    job = jobs.wait(job_id, worker=worker)

    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    with transaction(jobs.sessions) as session:
        assert [o.stem for o in list_outputs(session, job_id=job_id)] == ["silence"]


def test_corrupt_input_fails_once_and_the_worker_carries_on(
    jobs: Submitter, worker: WorkerProcess
) -> None:
    bad = jobs.submit(os.urandom(4096), params=WAV32)
    failed = jobs.wait(bad, worker=worker)

    assert failed.status == JobStatus.FAILED
    assert failed.error_code == "audio.decode_failed"
    assert failed.attempts == 1

    good = jobs.wait(jobs.submit(wav_bytes(0.5), params=WAV32), worker=worker)
    assert good.status == JobStatus.SUCCEEDED
    assert good.worker == failed.worker  # the same pool process took the next job
    assert jobs.job(bad).attempts == 1  # and the bad one was never retried


@pytest.mark.parametrize(
    ("params", "model", "code"),
    [
        ({"chunk_seconds": -1}, "identity", "config.invalid"),
        ({"derived": ["x=mixture-nope"]}, "identity", "config.derived_stems"),
        ({"unknown_key": 1}, "identity", "config.invalid"),
        ({}, "no-such-model", "model.unknown"),
    ],
)
def test_bad_request_fails_with_its_code(
    jobs: Submitter, worker: WorkerProcess, params: dict[str, object], model: str, code: str
) -> None:
    job = jobs.wait(jobs.submit(wav_bytes(0.2), model=model, params=params), worker=worker)

    assert (job.status, job.error_code, job.attempts) == (JobStatus.FAILED, code, 1)


def test_duplicate_delivery_runs_the_job_once(
    jobs: Submitter, storage: S3Storage, worker: WorkerProcess
) -> None:
    job_id = jobs.create(wav_bytes(0.5), params={**WAV32, "derived": ["copy=mixture+mixture"]})
    jobs.enqueue(job_id)
    jobs.enqueue(job_id)  # the second delivery finds the job running or finished: skipped
    sentinel = jobs.wait(jobs.submit(wav_bytes(0.2), params=WAV32), worker=worker)
    assert sentinel.status == JobStatus.SUCCEEDED

    job = jobs.job(job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    with transaction(jobs.sessions) as session:
        assert [o.stem for o in list_outputs(session, job_id=job_id)] == ["copy", "mixture"]
    folder = job_prefix(storage.prefix, job_id)
    assert _stored_outputs(storage, job_id) == [f"{folder}copy.wav", f"{folder}mixture.wav"]


def test_redelivered_run_overwrites_the_dead_attempts_outputs(
    jobs: Submitter, storage: S3Storage, settings: Settings
) -> None:
    job_id = jobs.create(wav_bytes(0.5), params=WAV32)
    with transaction(jobs.sessions) as session:  # a worker claims, uploads, and dies
        claimed = claim_job(session, job_id=job_id, worker="dead-worker")
        assert claimed is not None
        stale = record_output(
            session,
            job_id=job_id,
            stem="mixture",
            uri=storage.uri_for(output_key(storage.prefix, job_id, "mixture", "wav")),
            size_bytes=1,
            sha256="0" * 64,
            format="wav",
            sample_rate=44100,
            channels=2,
            duration_seconds=0.5,
            attempt=claimed.attempts,
        )
        assert stale is not None
    context = build_context(settings)
    first_delivery = InProcessTask(InProcessRequest(delivery_info={}))
    redelivery = InProcessTask(InProcessRequest(delivery_info={"redelivered": True}))

    try:
        assert run_separation(first_delivery, str(job_id), context) == "skipped"  # running
        assert run_separation(redelivery, str(job_id), context) == "succeeded"
        assert run_separation(redelivery, str(job_id), context) == "skipped"  # finished
    finally:
        context.close()

    job = jobs.job(job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    with transaction(jobs.sessions) as session:
        outputs = list_outputs(session, job_id=job_id)
    assert [o.stem for o in outputs] == ["mixture"]
    assert outputs[0].sha256 != "0" * 64
    assert _stored_outputs(storage, job_id) == [f"{job_prefix(storage.prefix, job_id)}mixture.wav"]


def test_job_cancelled_before_pickup_is_skipped(
    jobs: Submitter, storage: S3Storage, worker: WorkerProcess
) -> None:
    job_id = jobs.create(wav_bytes(0.5), params=WAV32)
    with transaction(jobs.sessions) as session:
        assert cancel_job(session, job_id=job_id) is not None
    jobs.enqueue(job_id)
    # The worker takes tasks one at a time in order: once a later job is done, so is this one.
    sentinel = jobs.wait(jobs.submit(wav_bytes(0.2), params=WAV32), worker=worker)
    assert sentinel.status == JobStatus.SUCCEEDED

    job = jobs.job(job_id)
    assert (job.status, job.attempts, job.worker) == (JobStatus.CANCELLED, 0, None)
    with transaction(jobs.sessions) as session:
        assert list_outputs(session, job_id=job_id) == []
    assert _stored_outputs(storage, job_id) == []
