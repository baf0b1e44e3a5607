"""The jobs resource without a worker: validation, idempotency, cancel, retry, list, delete, and
what happens when the broker is down. Jobs stay `queued` here (no worker consumes the queue)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_harness import WAV32, put_input, submit
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import wav_bytes

from mss_jobs.db.schema import Job
from mss_jobs.db.session import transaction
from mss_jobs.storage import S3Storage

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def input_uri(storage: S3Storage, tmp_path_factory: pytest.TempPathFactory) -> str:
    return put_input(storage, wav_bytes(0.5), tmp_path_factory.mktemp("inputs"))


def _job_count(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def _error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_submit_returns_a_queued_job(client: httpx.Client, input_uri: str) -> None:
    job = submit(client, input_uri, priority=7, queue="bulk", **WAV32)

    assert job["status"] == "queued"
    assert job["model"] == "identity"
    assert job["priority"] == 7
    assert job["attempts"] == 0
    assert job["input"] == input_uri
    assert job["params"]["format"] == "wav"
    assert job["params"]["bit_depth"] == 32
    fetched = client.get(f"/v1/jobs/{job['id']}").json()
    assert fetched["status"] == "queued"
    assert fetched["outputs"] == []


def test_unknown_job_is_404_and_a_malformed_id_is_422(client: httpx.Client) -> None:
    missing = client.get(f"/v1/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert _error(missing)["code"] == "job.not_found"
    for method, path in (
        ("POST", f"/v1/jobs/{uuid.uuid4()}/cancel"),
        ("POST", f"/v1/jobs/{uuid.uuid4()}/retry"),
        ("DELETE", f"/v1/jobs/{uuid.uuid4()}"),
    ):
        assert client.request(method, path).status_code == 404, path

    malformed = client.get("/v1/jobs/not-a-uuid")
    assert malformed.status_code == 422
    error = _error(malformed)
    assert error["code"] == "request.invalid"
    assert error["fields"] == ["path.job_id"]


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"model": "no-such-model"}, "model", "model.unknown"),
        ({"overlap": 1.5}, "overlap", "config.invalid"),
        ({"window": "triangle"}, "window", "config.invalid"),
        ({"priority": 10}, "priority", "request.invalid"),
        ({"queue": "urgent"}, "queue", "request.invalid"),
        ({"bit_depth": 12}, "bit_depth", "request.invalid"),
        ({"colour": "blue"}, "colour", "request.invalid"),
        ({"input": "not a uri"}, "input", "config.invalid"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(
    client: httpx.Client,
    sessions: sessionmaker[Session],
    input_uri: str,
    body: dict[str, Any],
    field: str,
    code: str,
) -> None:
    before = _job_count(sessions)

    response = client.post("/v1/jobs", json={"input": input_uri, "model": "identity", **body})

    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["code"] == code
    assert field in error["message"]
    assert _job_count(sessions) == before


def test_idempotency_key_returns_the_same_job(client: httpx.Client, input_uri: str) -> None:
    key = f"key-{uuid.uuid4().hex}"
    body = {"input": input_uri, "model": "identity", **WAV32}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    as_field = client.post("/v1/jobs", json={**body, "idempotency_key": key})

    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert as_field.status_code == 200, as_field.text
    assert first.json()["id"] == again.json()["id"] == as_field.json()["id"]
    assert first.json()["idempotency_key"] == key


def test_idempotency_key_reused_for_another_request_is_409(
    client: httpx.Client, input_uri: str
) -> None:
    key = f"key-{uuid.uuid4().hex}"
    body = {"input": input_uri, "model": "identity", **WAV32}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    other = client.post(
        "/v1/jobs", json={**body, "bit_depth": 16}, headers={"Idempotency-Key": key}
    )

    assert first.status_code == 202, first.text
    assert other.status_code == 409, other.text
    error = _error(other)
    assert error["code"] == "idempotency.conflict"
    assert first.json()["id"] in error["message"]


def test_cancel_a_queued_job_then_cancel_again_is_409(client: httpx.Client, input_uri: str) -> None:
    job = submit(client, input_uri)

    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    again = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert again.status_code == 409
    assert _error(again)["code"] == "job.state_conflict"


def test_retry_a_cancelled_job_queues_it_and_retry_of_a_queued_job_is_409(
    client: httpx.Client, input_uri: str
) -> None:
    job = submit(client, input_uri)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200

    retried = client.post(f"/v1/jobs/{job['id']}/retry", json={"queue": "bulk"})
    again = client.post(f"/v1/jobs/{job['id']}/retry")

    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "queued"
    assert again.status_code == 409
    assert _error(again)["code"] == "job.state_conflict"


def test_list_pages_cover_every_job_exactly_once(
    client: httpx.Client, sessions: sessionmaker[Session], input_uri: str
) -> None:
    mine = [submit(client, input_uri)["id"] for _ in range(5)]
    hpss = [submit(client, input_uri, model="dsp-hpss")["id"] for _ in range(2)]
    cancelled = mine[:2]
    for job_id in cancelled:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(1000):  # bounded: far more pages than jobs
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params)
        assert page.status_code == 200, page.text
        seen += [job["id"] for job in page.json()["jobs"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    with transaction(sessions) as session:
        every = {str(job_id) for job_id in session.scalars(select(Job.id))}
    assert len(seen) == len(set(seen))
    assert set(seen) == every
    assert set(mine + hpss) <= every

    by_status = client.get("/v1/jobs", params={"status": "cancelled", "limit": 1000}).json()
    assert {job["status"] for job in by_status["jobs"]} == {"cancelled"}
    assert set(cancelled) <= {job["id"] for job in by_status["jobs"]}
    by_model = client.get("/v1/jobs", params={"model": "dsp-hpss", "limit": 1000}).json()
    assert {job["model"] for job in by_model["jobs"]} == {"dsp-hpss"}
    assert set(hpss) <= {job["id"] for job in by_model["jobs"]}
    assert by_model["next_cursor"] is None


def test_list_refuses_bad_filters_and_cursors(client: httpx.Client) -> None:
    assert client.get("/v1/jobs", params={"status": "lost"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422
    bad_cursor = client.get("/v1/jobs", params={"cursor": "bm9wZQ"})
    assert bad_cursor.status_code == 422
    assert _error(bad_cursor)["code"] == "config.invalid"


def test_delete_a_queued_job(client: httpx.Client, input_uri: str) -> None:
    job = submit(client, input_uri)

    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404


def test_upload_over_the_limit_is_413_and_creates_no_job(
    client: httpx.Client, sessions: sessionmaker[Session], settings: Any
) -> None:
    before = _job_count(sessions)
    limit = settings.max_upload_bytes
    # Just over the limit (passes the Content-Length pre-check, caught while copying), and far over.
    for size in (limit + 1, limit * 2):
        response = client.post(
            "/v1/jobs/upload",
            files={"file": ("big.wav", b"\0" * size, "audio/wav")},
            data={"spec": '{"model": "identity"}'},
        )
        assert response.status_code == 413, response.text
        assert _error(response)["code"] == "upload.too_large"
    assert _job_count(sessions) == before


def test_upload_with_an_invalid_spec_is_422(
    client: httpx.Client, sessions: sessionmaker[Session]
) -> None:
    before = _job_count(sessions)
    response = client.post(
        "/v1/jobs/upload",
        files={"file": ("a.wav", wav_bytes(0.1), "audio/wav")},
        data={"spec": '{"model": "identity", "overlap": "lots"}'},
    )
    assert response.status_code == 422, response.text
    assert "overlap" in _error(response)["message"]
    assert _job_count(sessions) == before


def test_broker_down_fails_the_job_with_503_and_retry_recovers_it(
    broker_down_client: httpx.Client,
    client: httpx.Client,
    input_uri: str,
    tmp_path: Path,
) -> None:
    response = broker_down_client.post("/v1/jobs", json={"input": input_uri, "model": "identity"})

    assert response.status_code == 503, response.text
    error = _error(response)
    assert error["code"] == "broker.unavailable"
    job_id = error["message"].split("/v1/jobs/")[1].split("/")[0]
    failed = client.get(f"/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "broker.unavailable"

    # Retrying through the broken API fails the same way; through a healthy one it is queued.
    again = broker_down_client.post(f"/v1/jobs/{job_id}/retry")
    assert again.status_code == 503
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "failed"
    recovered = client.post(f"/v1/jobs/{job_id}/retry")
    assert recovered.status_code == 202, recovered.text
    assert recovered.json()["status"] == "queued"
