"""The API end to end with a real `celery worker`: submit, poll, download, upload, retry, delete."""

from __future__ import annotations

import io
import os
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from api_harness import WAV32, put_input, submit, wait_job
from worker_harness import wav_bytes

from mss_jobs.storage import S3Storage, job_prefix

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("worker")]


def _download(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        data: bytes = response.read()
    return data


def _assert_same_audio(stem: bytes, original: bytes) -> None:
    got, got_rate = sf.read(io.BytesIO(stem), dtype="float32", always_2d=True)
    want, want_rate = sf.read(io.BytesIO(original), dtype="float32", always_2d=True)
    assert got_rate == want_rate
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _stored_keys(storage: S3Storage, job_id: str) -> list[str]:
    return list(storage.list_keys(job_prefix(storage.prefix, job_id)))


def test_submitted_identity_job_downloads_equal_to_the_input(
    client: httpx.Client, storage: S3Storage, tmp_path: Path
) -> None:
    content = wav_bytes(1.5)
    job = submit(client, put_input(storage, content, tmp_path), **WAV32)

    done = wait_job(client, job["id"])

    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1
    assert done["progress"] == 1.0
    assert done["started_at"] is not None
    assert done["finished_at"] is not None
    [output] = done["outputs"]
    assert (output["stem"], output["format"], output["channels"]) == ("mixture", "wav", 2)
    _assert_same_audio(_download(output["url"]), content)

    # A finished job cannot be cancelled; deleting it removes rows and stored stems.
    cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancel.status_code == 409
    assert cancel.json()["error"]["code"] == "job.state_conflict"
    assert _stored_keys(storage, job["id"])
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert _stored_keys(storage, job["id"]) == []


def test_uploaded_job_succeeds_and_delete_removes_the_upload(
    client: httpx.Client, storage: S3Storage
) -> None:
    content = wav_bytes(1.0, channels=1, seed=3)
    response = client.post(
        "/v1/jobs/upload",
        files={"file": ("My Song.wav", content, "audio/wav")},
        data={"spec": '{"model": "identity", "format": "wav", "bit_depth": 32}'},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["input"].endswith(f"{job_id}/input/My_Song.wav")

    done = wait_job(client, job_id)

    assert done["status"] == "succeeded", done["error"]
    [output] = done["outputs"]
    _assert_same_audio(_download(output["url"]), content)
    keys = _stored_keys(storage, job_id)
    assert any("/input/" in key for key in keys)
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert _stored_keys(storage, job_id) == []


def test_upload_with_the_same_idempotency_key_returns_the_same_job(
    client: httpx.Client,
) -> None:
    content = wav_bytes(0.5, seed=4)
    key = f"upload-{os.urandom(6).hex()}"

    def post(data: bytes) -> httpx.Response:
        return client.post(
            "/v1/jobs/upload",
            files={"file": ("a.wav", data, "audio/wav")},
            data={"spec": '{"model": "identity"}'},
            headers={"Idempotency-Key": key},
        )

    first, again, other = post(content), post(content), post(wav_bytes(0.5, seed=5))

    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409, other.text
    assert wait_job(client, first.json()["id"])["status"] == "succeeded"


def test_retry_of_a_failed_job_queues_it_again_keeping_attempts(
    client: httpx.Client, storage: S3Storage, tmp_path: Path
) -> None:
    job = submit(client, put_input(storage, os.urandom(4096), tmp_path), **WAV32)
    failed = wait_job(client, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "audio.decode_failed"
    assert failed["attempts"] == 1

    retried = client.post(f"/v1/jobs/{job['id']}/retry")

    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "queued"
    assert retried.json()["attempts"] == 1
    assert retried.json()["error"] is None
    again = wait_job(client, job["id"], lambda j: j["status"] == "failed" and j["attempts"] == 2)
    assert again["error"]["code"] == "audio.decode_failed"
