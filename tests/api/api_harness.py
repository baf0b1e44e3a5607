"""Helpers for the API tests: inputs in S3, job submission and bounded polling over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mss_jobs.storage import S3Storage

JOB_TIMEOUT = 60.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
WAV32 = {"format": "wav", "bit_depth": 32}


def put_input(storage: S3Storage, content: bytes, folder: Path) -> str:
    """Store `content` as an input object; returns its s3:// URI."""
    path = folder / f"{uuid.uuid4().hex}.wav"
    path.write_bytes(content)
    return storage.upload_file(path, f"{storage.prefix}/inputs/{path.name}").uri


def body_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON object of a response answered with `status`."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def submit(client: httpx.Client, input_uri: str, **spec: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"input": input_uri, "model": "identity", **spec})
    return body_of(response, 202)


def wait_job(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda job: job["status"] in TERMINAL,
    *,
    timeout: float = JOB_TIMEOUT,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = body_of(client.get(f"/v1/jobs/{job_id}"), 200)
        if until(job):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} still {job.get('status')} after {timeout} s: {job}")
