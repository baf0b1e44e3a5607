"""Helpers for the batch tests: manifests, submission, bounded polling, the report, the broker's
waiting messages, and an API served from its own process (killable like a crashed server)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from api_harness import body_of
from service_processes import ServiceProcess

BATCH_TIMEOUT = 90.0
API_START_TIMEOUT = 30.0
PAGE_LIMIT = 1000
MAX_PAGES = 1000
PRIORITY_STEPS = range(10)
"""Job priorities map onto kombu's emulated priority lists `<queue>`, `<queue>:1` … `<queue>:9`
(`mss_jobs.queueing.shared_celery_config`)."""


# -- manifests and submission ------------------------------------------------------------------


def csv_manifest(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """A CSV manifest: the header on line 1, then one line per row (an empty row is a blank
    line, which keeps its line number)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        if row:
            writer.writerow(row)
        else:
            buffer.write("\n")
    return buffer.getvalue().encode()


def jsonl_manifest(lines: Iterable[object]) -> bytes:
    """A JSON Lines manifest; a `bytes` item is written as the line's raw text (malformed rows)."""
    out = bytearray()
    for line in lines:
        out += line if isinstance(line, bytes) else json.dumps(line).encode()
        out += b"\n"
    return bytes(out)


def upload_manifest(
    client: httpx.Client,
    content: bytes,
    *,
    filename: str = "manifest.csv",
    spec: Mapping[str, Any] | str | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    """`POST /v1/batches/upload` with `content` as the `file` part and `spec` as JSON."""
    text = spec if isinstance(spec, str) else json.dumps(dict(spec or {}))
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return client.post(
        "/v1/batches/upload",
        files={"file": (filename, content, "text/plain")},
        data={"spec": text},
        headers=headers,
    )


def created(response: httpx.Response, status: int = 201) -> dict[str, Any]:
    """The batch of a submission answered with `status`."""
    return body_of(response, status)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


# -- reading a batch ---------------------------------------------------------------------------


def get_batch(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    return body_of(client.get(f"/v1/batches/{batch_id}"), 200)


def wait_batch(
    client: httpx.Client,
    batch_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda batch: batch["status"] != "active",
    *,
    timeout: float = BATCH_TIMEOUT,
    interval: float = 0.1,
) -> dict[str, Any]:
    """Poll the batch until `until` holds (by default: no longer active), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    batch: dict[str, Any] = {}
    while time.monotonic() < deadline:
        batch = get_batch(client, batch_id)
        if until(batch):
            return batch
        time.sleep(interval)
    pytest.fail(f"batch {batch_id} not there after {timeout} s: {batch}")


def batch_jobs(
    client: httpx.Client, batch_id: str, *, status: str | None = None, limit: int = PAGE_LIMIT
) -> list[dict[str, Any]]:
    """Every job of the batch, in manifest line order, following `next_cursor`."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get(f"/v1/batches/{batch_id}/jobs", params=params)
        assert page.status_code == 200, page.text
        jobs += page.json()["jobs"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return jobs
    pytest.fail(f"batch {batch_id}: more than {MAX_PAGES} pages")


def report(client: httpx.Client, batch_id: str, fmt: str = "csv") -> list[dict[str, Any]]:
    """The batch's report as records (CSV cells are strings, "" for none; JSON Lines typed)."""
    response = client.get(f"/v1/batches/{batch_id}/report", params={"format": fmt})
    assert response.status_code == 200, response.text
    if fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        return list(csv.DictReader(io.StringIO(response.text)))
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def stems_of(cell: str) -> dict[str, str]:
    """A CSV report's `outputs` cell (`stem=uri;stem=uri`) as a mapping."""
    return dict(item.split("=", 1) for item in cell.split(";")) if cell else {}


# -- the broker --------------------------------------------------------------------------------


def waiting_job_ids(redis_url: str, queue: str) -> set[str]:
    """Job ids whose message is still waiting in `queue` (every priority list), undelivered.

    A message's task id is `<job id>.<8 hex>` (`mss_jobs.queueing.separate_task_id`).
    """
    client = redis.Redis.from_url(redis_url)
    try:
        with client.pipeline(transaction=True) as pipe:
            for step in PRIORITY_STEPS:
                pipe.lrange(queue if step == 0 else f"{queue}:{step}", 0, -1)
            lists = pipe.execute()
    finally:
        client.close()
    return {
        json.loads(message)["headers"]["id"].partition(".")[0]
        for messages in lists
        for message in messages
    }


# -- an API process ----------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free right now (a later bind may still lose a race; the start fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ApiProcess(ServiceProcess):
    """`uvicorn --factory mss_jobs.api.main:app_from_env` in its own process group, configured by
    `env` (`MSS_*`), logging to a file: its dispatcher thread dies with it on `kill()`."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "mss_jobs.api.main:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        super().__init__(command, env, log_path)

    def wait_ready(self, timeout: float = API_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"the API exited with {self.process.returncode}:\n{self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        pytest.fail(f"the API did not answer within {timeout} s:\n{self.log()}")

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.base_url, timeout=30.0, trust_env=False) as http:
            yield http
