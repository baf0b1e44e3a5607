"""The batches resource over HTTP, without a worker: validation, manifests with bad rows and
their line numbers, resubmission under a batch key, a cut-off intake completed by resubmitting,
state conflicts, paging and the report's formats.

The session API's dispatcher runs (2 s rounds) and may move jobs from `pending` to `queued`;
nothing here consumes them. Every batch this module creates is deleted when it ends, so the jobs
tests that page through every job see none of them.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_harness import (
    batch_jobs,
    created,
    csv_manifest,
    error_of,
    get_batch,
    jsonl_manifest,
    report,
    upload_manifest,
    wait_batch,
)
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.batches.intake import take_in
from mss_jobs.batches.manifest import JobTemplate, read_csv
from mss_jobs.db.schema import Batch, Job, utcnow
from mss_jobs.db.session import transaction
from mss_jobs.storage import S3Storage

pytestmark = pytest.mark.timeout(120)

Sessions = sessionmaker[Session]
TRACKS = "s3://mss-catalog/tracks"
CSV_COLUMNS = ("input", "format", "priority", "ref")


@pytest.fixture(scope="module", autouse=True)
def _delete_this_modules_batches(sessions: Sessions) -> Iterator[None]:
    started = utcnow()
    yield
    with transaction(sessions) as session:  # jobs, events and rejections go by cascade
        session.execute(delete(Batch).where(Batch.created_at >= started))


def _key() -> str:
    return f"batch-{uuid.uuid4().hex}"


def _track(name: str) -> str:
    return f"{TRACKS}/{name}.flac"


def _rows(count: int) -> list[str]:
    return [_track(f"{uuid.uuid4().hex[:8]}-{i:03d}") for i in range(count)]


def _batch_count(sessions: Sessions) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(Batch)) or 0


def _jobs_of(sessions: Sessions, batch_id: str) -> list[Job]:
    with transaction(sessions) as session:
        return list(
            session.scalars(
                select(Job).where(Job.batch_id == uuid.UUID(batch_id)).order_by(Job.batch_line)
            )
        )


# -- submission --------------------------------------------------------------------------------


def test_inline_rows_become_one_job_per_row_with_their_overrides(
    client: httpx.Client, sessions: Sessions
) -> None:
    rows: list[Any] = [
        _track("a"),
        {"input": _track("b"), "format": "wav", "bit_depth": 16, "priority": 8, "ref": "B-1"},
        {"input": _track("c"), "model": "identity", "stems": ["mixture"]},
    ]
    batch = created(
        client.post(
            "/v1/batches",
            json={"rows": rows, "model": "dsp-hpss", "format": "flac", "max_in_flight": 2},
        )
    )

    assert batch["status"] == "active"
    assert batch["created"] is True
    assert batch["intake_finished"] is True
    assert (batch["rows_accepted"], batch["rows_rejected"], batch["total"]) == (3, 0, 3)
    assert batch["rejections"] == []
    assert (batch["queue"], batch["priority"], batch["max_in_flight"]) == ("bulk", 5, 2)
    assert batch["source"] == {"kind": "rows"}
    assert batch["params"]["format"] == "flac"
    assert sum(batch["counts"].values()) == 3
    assert batch["counts"]["pending"] + batch["counts"]["queued"] == 3

    jobs = _jobs_of(sessions, batch["id"])
    assert [job.batch_line for job in jobs] == [1, 2, 3]
    assert [job.input_uri for job in jobs] == [_track("a"), _track("b"), _track("c")]
    assert [job.model for job in jobs] == ["dsp-hpss", "dsp-hpss", "identity"]
    assert (jobs[0].params["format"], jobs[1].params["format"]) == ("flac", "wav")
    assert jobs[1].params["bit_depth"] == 16
    assert [job.priority for job in jobs] == [5, 8, 5]
    assert jobs[1].client_ref == "B-1"
    assert jobs[2].params["stems"] == ["mixture"]
    # The dispatcher never lets more than max_in_flight out at once.
    assert sum(job.status in ("queued", "running") for job in jobs) <= 2


def test_inline_rows_with_bad_rows_are_refused_by_line_and_the_rest_proceed(
    client: httpx.Client,
) -> None:
    rows: list[Any] = [
        _track("ok-1"),
        {"input": _track("x"), "stems": ["vocals"]},
        42,
        {"input": _track("y"), "colour": "red"},
        {"format": "wav"},
        "ftp://example.com/z.flac",
        _track("ok-2"),
    ]
    batch = created(client.post("/v1/batches", json={"rows": rows, "model": "identity"}))

    assert (batch["rows_accepted"], batch["rows_rejected"], batch["total"]) == (2, 5, 2)
    refused = {r["line"]: r for r in batch["rejections"]}
    assert sorted(refused) == [2, 3, 4, 5, 6]
    assert refused[2]["code"] == "manifest.invalid_value"
    assert refused[2]["message"].startswith("stems: ")
    assert "'vocals'" in refused[2]["message"]
    assert refused[3]["code"] == "manifest.malformed_row"
    assert refused[3]["input"] == "42"
    assert refused[4]["code"] == "manifest.unknown_column"
    assert "'colour'" in refused[4]["message"]
    assert refused[5]["code"] == "manifest.missing_input"
    assert refused[6]["code"] == "manifest.invalid_input"
    assert refused[6]["message"].startswith("input: ")
    assert [job["input"] for job in batch_jobs(client, batch["id"])] == [
        _track("ok-1"),
        _track("ok-2"),
    ]


@pytest.mark.parametrize(
    ("body", "fields", "code"),
    [
        ({}, ["body"], "request.invalid"),
        ({"rows": [], "prefix": "s3://bucket/x/"}, ["body"], "request.invalid"),
        ({"rows": ["s3://b/a.flac"], "glob": "*.flac"}, ["body"], "request.invalid"),
        ({"rows": ["s3://b/a.flac"], "max_in_flight": 0}, ["body.max_in_flight"], None),
        ({"rows": ["s3://b/a.flac"], "max_in_flight": 10_001}, ["body.max_in_flight"], None),
        ({"rows": ["s3://b/a.flac"], "priority": 10}, ["body.priority"], None),
        ({"rows": ["s3://b/a.flac"], "queue": "urgent"}, ["body.queue"], None),
        ({"rows": ["s3://b/a.flac"], "format": "ogg"}, ["body.format"], None),
        ({"rows": ["s3://b/a.flac"], "key": ""}, ["body.key"], None),
        ({"rows": ["s3://b/a.flac"], "key": "k" * 256}, ["body.key"], None),
        ({"rows": ["s3://b/a.flac"], "colour": "red"}, ["body.colour"], None),
        ({"rows": "s3://b/a.flac"}, ["body.rows"], None),
        ({"prefix": "s3://"}, ["body.prefix"], None),
        ({"prefix": "s3://bucket/x/", "glob": ""}, ["body.glob"], None),
    ],
)
def test_invalid_batch_requests_are_422_naming_the_field_and_create_nothing(
    client: httpx.Client,
    sessions: Sessions,
    body: dict[str, Any],
    fields: list[str],
    code: str | None,
) -> None:
    before = _batch_count(sessions)

    response = client.post("/v1/batches", json=body)

    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == (code or "request.invalid")
    assert error["fields"] == fields
    assert _batch_count(sessions) == before


@pytest.mark.parametrize(
    ("body", "code", "names"),
    [
        ({"model": "no-such-model"}, "model.unknown", "model: "),
        ({"model": "identity", "stems": ["vocals"]}, "config.invalid", "stems: "),
        ({"model": "identity", "overlap": 1.5}, "config.invalid", "overlap"),
        ({"prefix": "gs://bucket/tracks/"}, "config.invalid", "s3://"),
        ({"prefix": "s3://Not_A_Bucket/tracks/"}, "config.invalid", "Not_A_Bucket"),
    ],
)
def test_an_invalid_batch_spec_is_422_naming_the_field_and_creates_nothing(
    client: httpx.Client, sessions: Sessions, body: dict[str, Any], code: str, names: str
) -> None:
    before = _batch_count(sessions)
    if "prefix" not in body:
        body = {**body, "rows": [_track("a")]}

    response = client.post("/v1/batches", json=body)

    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == code
    assert names in error["message"]
    assert _batch_count(sessions) == before


def test_unknown_batches_are_404_and_malformed_ids_422(client: httpx.Client) -> None:
    missing = uuid.uuid4()
    for method, path in (
        ("GET", f"/v1/batches/{missing}"),
        ("GET", f"/v1/batches/{missing}/jobs"),
        ("GET", f"/v1/batches/{missing}/report"),
        ("POST", f"/v1/batches/{missing}/cancel"),
        ("POST", f"/v1/batches/{missing}/retry-failed"),
    ):
        response = client.request(method, path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "batch.not_found"
        assert str(missing) in error_of(response)["message"]

    malformed = client.get("/v1/batches/not-a-uuid/jobs")
    assert malformed.status_code == 422
    assert error_of(malformed)["fields"] == ["path.batch_id"]


# -- uploaded manifests ------------------------------------------------------------------------


def test_a_csv_manifest_refuses_bad_rows_by_line_in_the_response_and_the_report(
    client: httpx.Client,
) -> None:
    content = (
        csv_manifest(
            CSV_COLUMNS,
            [
                (_track("one"), "", "", "r-2"),  # line 2
                ("", "wav", "", "r-3"),  # line 3: no input
                ("ftp://example.com/x.flac", "", "", "r-4"),  # line 4: bad URI
                (_track("ogg"), "ogg", "", "r-5"),  # line 5: unknown format
                (),  # line 6: blank, skipped
                (_track("two"), "wav", "7", "r-7"),  # line 7
                (_track("hi"), "", "11", "r-8"),  # line 8: priority out of range
                (_track("three"), "", "", ""),  # line 9
            ],
        )
        + b'"'
        + _track("open").encode()
        + b",unterminated\n"
    )  # line 10: broken quoting

    batch = created(upload_manifest(client, content, spec={"model": "identity"}))

    assert batch["source"]["kind"] == "manifest"
    assert batch["source"]["format"] == "csv"
    assert batch["source"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert (batch["rows_accepted"], batch["rows_rejected"]) == (3, 5)
    refused = {r["line"]: (r["code"], r["message"]) for r in batch["rejections"]}
    assert {line: code for line, (code, _) in refused.items()} == {
        3: "manifest.missing_input",
        4: "manifest.invalid_input",
        5: "manifest.invalid_value",
        8: "manifest.invalid_value",
        10: "manifest.malformed_row",
    }
    assert refused[5][1].startswith("format: ")
    assert refused[8][1].startswith("priority: ")

    lines = report(client, batch["id"])
    assert [int(row["line"]) for row in lines] == [2, 3, 4, 5, 7, 8, 9, 10]
    by_line = {int(row["line"]): row for row in lines}
    for line in (2, 7, 9):
        assert by_line[line]["status"] in ("pending", "queued")
        assert by_line[line]["job_id"]
        assert by_line[line]["error_code"] == ""
    assert by_line[7]["input"] == _track("two")
    assert by_line[7]["ref"] == "r-7"
    for line, (code, message) in refused.items():
        assert by_line[line]["status"] == "rejected"
        assert by_line[line]["job_id"] == ""
        assert (by_line[line]["error_code"], by_line[line]["error_message"]) == (code, message)
    assert by_line[4]["input"].startswith("ftp://example.com/x.flac")

    jobs = batch_jobs(client, batch["id"])
    assert [job["input"] for job in jobs] == [_track("one"), _track("two"), _track("three")]
    assert [job["priority"] for job in jobs] == [5, 7, 5]
    assert jobs[1]["params"]["format"] == "wav"


def test_a_jsonl_manifest_refuses_bad_lines_by_number(client: httpx.Client) -> None:
    content = jsonl_manifest(
        [
            {"input": _track("j1"), "ref": "first"},  # line 1
            b"{not json",  # line 2
            _track("j3"),  # line 3: a bare URI string
            b"",  # line 4: blank
            [1, 2],  # line 5: not an object
            {"input": _track("j6"), "tempo": 120},  # line 6: unknown column
            {"input": _track("j7"), "bit_depth": 12},  # line 7: bad value
            {"input": _track("j8"), "sample_rate": "fast"},  # line 8: wrong type
        ]
    )

    batch = created(
        upload_manifest(client, content, filename="catalog.JSONL", spec={"model": "identity"})
    )

    assert batch["source"]["format"] == "jsonl"
    assert (batch["rows_accepted"], batch["rows_rejected"]) == (2, 5)
    codes = {r["line"]: r["code"] for r in batch["rejections"]}
    assert codes == {
        2: "manifest.malformed_row",
        5: "manifest.malformed_row",
        6: "manifest.unknown_column",
        7: "manifest.invalid_value",
        8: "manifest.invalid_value",
    }
    records = report(client, batch["id"], "jsonl")
    assert [record["line"] for record in records] == [1, 2, 3, 5, 6, 7, 8]
    first = records[0]
    assert set(first) == {
        "line",
        "input",
        "ref",
        "status",
        "job_id",
        "error_code",
        "error_message",
        "outputs",
    }
    assert (first["input"], first["ref"], first["outputs"]) == (_track("j1"), "first", {})
    assert records[1] == {
        "line": 2,
        "input": "{not json",
        "ref": None,
        "status": "rejected",
        "job_id": None,
        "error_code": "manifest.malformed_row",
        "error_message": records[1]["error_message"],
        "outputs": {},
    }
    assert records[1]["error_message"].startswith("not valid JSON")


@pytest.mark.parametrize(
    ("filename", "content", "spec", "code", "names"),
    [
        ("m.csv", b"input,colour\ns3://b/a.flac,red\n", None, "manifest.invalid", "'colour'"),
        ("m.csv", b"format\nwav\n", None, "manifest.invalid", "'input'"),
        ("m.csv", b"input,input\ns3://b/a.flac,s3://b/b.flac\n", None, "manifest.invalid", "once"),
        ("m.csv", b"\n\n", None, "manifest.invalid", "empty"),
        ("m.txt", b"input\ns3://b/a.flac\n", None, "manifest.invalid", "m.txt"),
        ("m.csv", b"", None, "config.invalid", "file"),
        ("m.csv", b"input\ns3://b/a.flac\n", "{not json", "config.invalid", "spec"),
        ("m.csv", b"input\ns3://b/a.flac\n", {"rows": []}, "config.invalid", "spec: rows"),
        ("m.csv", b"input\ns3://b/a.flac\n", {"max_in_flight": 0}, "config.invalid", "max_in"),
        ("m.csv", b"input\ns3://b/a.flac\n", {"model": "nope"}, "model.unknown", "model: "),
    ],
)
def test_an_unusable_manifest_or_spec_is_422_and_creates_no_batch(
    client: httpx.Client,
    sessions: Sessions,
    filename: str,
    content: bytes,
    spec: dict[str, Any] | str | None,
    code: str,
    names: str,
) -> None:
    before = _batch_count(sessions)

    response = upload_manifest(client, content, filename=filename, spec=spec)

    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == code
    assert names in error["message"]
    assert _batch_count(sessions) == before


def test_a_manifest_over_the_upload_limit_is_413(client: httpx.Client, sessions: Sessions) -> None:
    before = _batch_count(sessions)
    rows = (f"{_track(f'{i:07d}')}\n".encode() for i in range(70_000))
    content = b"input\n" + b"".join(rows)  # ~2.6 MB > MSS_MAX_UPLOAD_BYTES (2 MB)

    response = upload_manifest(client, content)

    assert response.status_code == 413, response.text[:500]
    assert error_of(response)["code"] == "upload.too_large"
    assert _batch_count(sessions) == before


# -- resubmission ------------------------------------------------------------------------------


def test_the_same_key_returns_the_same_batch_and_adds_nothing(
    client: httpx.Client, sessions: Sessions
) -> None:
    key = _key()
    content = csv_manifest(CSV_COLUMNS, [(t, "", "", "") for t in _rows(5)] + [("bad", "", "", "")])
    spec = {"model": "identity", "key": key}

    first = created(upload_manifest(client, content, spec=spec))
    again = created(upload_manifest(client, content, spec=spec), status=200)
    by_header = created(
        upload_manifest(client, content, spec={"model": "identity"}, idempotency_key=key), 200
    )

    assert first["created"] is True
    assert again["id"] == by_header["id"] == first["id"]
    assert again["created"] is False
    assert again["key"] == key
    for body in (again, by_header):
        assert (body["rows_accepted"], body["rows_rejected"], body["total"]) == (5, 1, 5)
        assert body["rejections"] == []  # this call refused nothing new
    assert len(_jobs_of(sessions, first["id"])) == 5
    assert len(report(client, first["id"])) == 6

    # Scheduling is not identity: another lane or bound returns the batch as it was.
    other_bound = created(
        upload_manifest(client, content, spec={**spec, "max_in_flight": 7}), status=200
    )
    assert other_bound["id"] == first["id"]
    assert other_bound["max_in_flight"] == first["max_in_flight"]


@pytest.mark.parametrize(
    "change",
    [
        {"spec": {"model": "dsp-hpss"}},
        {"spec": {"format": "wav"}},
        {"spec": {"force": True}},
        {"content": b"input\ns3://mss-catalog/tracks/other.flac\n"},
    ],
)
def test_the_same_key_for_another_batch_is_409(
    client: httpx.Client, sessions: Sessions, change: dict[str, Any]
) -> None:
    key = _key()
    content = b"input\ns3://mss-catalog/tracks/same.flac\n"
    first = created(upload_manifest(client, content, spec={"model": "identity", "key": key}))
    before = _batch_count(sessions)

    response = upload_manifest(
        client,
        change.get("content", content),
        spec={"model": "identity", "key": key, **change.get("spec", {})},
    )

    assert response.status_code == 409, response.text
    error = error_of(response)
    assert error["code"] == "batch.key_conflict"
    assert first["id"] in error["message"]
    assert _batch_count(sessions) == before
    assert len(_jobs_of(sessions, first["id"])) == 1


def test_the_same_key_over_inline_rows_adds_nothing(
    client: httpx.Client, sessions: Sessions
) -> None:
    key = _key()
    body = {"rows": _rows(3), "model": "identity", "key": key}

    first = created(client.post("/v1/batches", json=body))
    again = created(client.post("/v1/batches", json=body), status=200)

    assert again["id"] == first["id"]
    assert len(_jobs_of(sessions, first["id"])) == 3


def test_an_intake_cut_off_half_way_is_completed_by_resubmitting(
    client: httpx.Client, sessions: Sessions
) -> None:
    """An API that died during intake left a batch with some rows; submitting the same
    manifest under the same key adds exactly the missing rows, then lets the batch complete."""
    key = _key()
    content = csv_manifest(CSV_COLUMNS, [(t, "", "", f"ref-{i}") for i, t in enumerate(_rows(35))])
    template = JobTemplate.build(model="identity", params={})
    source = {"kind": "manifest", "format": "csv", "sha256": hashlib.sha256(content).hexdigest()}

    class ServerDiedError(Exception):
        pass

    def cut_off_after(count: int) -> Iterator[Any]:
        for index, item in enumerate(read_csv(io.BytesIO(content), template)):
            if index == count:
                raise ServerDiedError
            yield item

    with pytest.raises(ServerDiedError):
        take_in(
            sessions,
            cut_off_after(25),
            template=template,
            source=source,
            lane="bulk",
            max_in_flight=100,
            force=False,
            batch_key=key,
            chunk_rows=10,
        )
    [batch_id] = {str(job.batch_id) for job in _jobs_of_key(sessions, key)}
    assert len(_jobs_of(sessions, batch_id)) == 20  # two committed chunks of 10
    assert get_batch(client, batch_id)["intake_finished"] is False

    resumed = created(
        upload_manifest(client, content, spec={"model": "identity", "key": key}), status=200
    )

    assert resumed["id"] == batch_id
    assert resumed["intake_finished"] is True
    assert resumed["rows_accepted"] == 35
    jobs = _jobs_of(sessions, batch_id)
    assert [job.batch_line for job in jobs] == list(range(2, 37))
    assert [job.client_ref for job in jobs] == [f"ref-{i}" for i in range(35)]


def _jobs_of_key(sessions: Sessions, key: str) -> list[Job]:
    with transaction(sessions) as session:
        return list(
            session.scalars(
                select(Job).join(Batch, Job.batch_id == Batch.id).where(Batch.batch_key == key)
            )
        )


# -- from an S3 prefix ---------------------------------------------------------------------------


def test_a_prefix_lists_matching_objects_as_rows_in_key_order(
    client: httpx.Client, storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    folder = f"{storage.prefix}/catalog-{uuid.uuid4().hex[:8]}"
    for name in ("b.wav", "a.WAV", "sub/c.wav", "notes.txt", "sub/d.flac"):
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(b"not audio; never read here")
        storage.upload_file(path, f"{folder}/{name}")
    prefix = f"s3://{bucket}/{folder}/"

    batch = created(
        client.post(
            "/v1/batches",
            json={"prefix": prefix, "extensions": ["wav"], "model": "identity"},
        )
    )
    globbed = created(
        client.post("/v1/batches", json={"prefix": prefix, "glob": "sub/*", "model": "identity"})
    )
    empty = created(client.post("/v1/batches", json={"prefix": f"{prefix}nothing-here/"}))

    assert batch["source"] == {"kind": "s3", "prefix": prefix, "extensions": ["wav"], "glob": None}
    assert [job["input"] for job in batch_jobs(client, batch["id"])] == [
        f"s3://{bucket}/{folder}/{name}" for name in ("a.WAV", "b.wav", "sub/c.wav")
    ]
    assert [job["input"] for job in batch_jobs(client, globbed["id"])] == [
        f"s3://{bucket}/{folder}/{name}" for name in ("sub/c.wav", "sub/d.flac")
    ]
    assert (empty["total"], empty["rows_accepted"], empty["intake_finished"]) == (0, 0, True)


# -- state conflicts -----------------------------------------------------------------------------


def test_cancel_cancels_every_unfinished_job_then_cancel_and_retry_are_409(
    client: httpx.Client, sessions: Sessions
) -> None:
    batch = created(client.post("/v1/batches", json={"rows": _rows(4), "model": "identity"}))

    cancelled = client.post(f"/v1/batches/{batch['id']}/cancel")

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["finished_at"] is not None
    assert body["counts"]["cancelled"] == 4
    assert {job.status for job in _jobs_of(sessions, batch["id"])} == {"cancelled"}
    for action in ("cancel", "retry-failed"):
        again = client.post(f"/v1/batches/{batch['id']}/{action}")
        assert again.status_code == 409, action
        assert error_of(again)["code"] == "batch.state_conflict"
        assert "cancelled" in error_of(again)["message"]
    # The report of a cancelled batch stays readable.
    assert [row["status"] for row in report(client, batch["id"])] == ["cancelled"] * 4


def test_a_completed_batch_cannot_be_cancelled_and_has_nothing_to_retry(
    client: httpx.Client,
) -> None:
    batch = created(
        client.post("/v1/batches", json={"rows": ["ftp://x/a.flac", 7], "model": "identity"})
    )
    assert (batch["total"], batch["rows_rejected"]) == (0, 2)

    done = wait_batch(client, batch["id"], timeout=30)  # the dispatcher completes it

    assert done["status"] == "completed"
    assert done["finished_at"] is not None
    assert (done["progress"], done["eta_seconds"]) == (0.0, 0.0)
    cancel = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert cancel.status_code == 409
    assert "completed" in error_of(cancel)["message"]
    retry = client.post(f"/v1/batches/{batch['id']}/retry-failed")
    assert retry.status_code == 200, retry.text
    assert retry.json()["retried"] == 0
    assert retry.json()["batch"]["status"] == "completed"


# -- paging and the report -----------------------------------------------------------------------


def test_job_pages_cover_the_batch_once_in_line_order_and_filter_by_status(
    client: httpx.Client,
) -> None:
    inputs = _rows(7)
    batch = created(client.post("/v1/batches", json={"rows": inputs, "model": "identity"}))

    for limit in (1, 3, 7, 1000):
        assert [job["input"] for job in batch_jobs(client, batch["id"], limit=limit)] == inputs
    first = client.get(f"/v1/batches/{batch['id']}/jobs", params={"limit": 3}).json()
    assert (len(first["jobs"]), first["next_cursor"]) == (3, "3")

    assert client.post(f"/v1/batches/{batch['id']}/cancel").status_code == 200
    assert len(batch_jobs(client, batch["id"], status="cancelled", limit=2)) == 7
    assert batch_jobs(client, batch["id"], status="succeeded") == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"status": "lost"},
    ],
)
def test_job_pages_refuse_bad_parameters(client: httpx.Client, params: dict[str, Any]) -> None:
    batch = created(client.post("/v1/batches", json={"rows": _rows(1), "model": "identity"}))

    response = client.get(f"/v1/batches/{batch['id']}/jobs", params=params)

    assert response.status_code == 422, response.text
    assert error_of(response)["fields"] == [f"query.{next(iter(params))}"]


def test_the_report_is_csv_by_default_or_jsonl_and_refuses_other_formats(
    client: httpx.Client,
) -> None:
    rows: list[Any] = [{"input": _track("r1"), "ref": "has, a comma"}, "bad-uri", _track("r3")]
    batch = created(client.post("/v1/batches", json={"rows": rows, "model": "identity"}))

    response = client.get(f"/v1/batches/{batch['id']}/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="batch-{batch["id"]}.csv"'
    header = response.text.splitlines()[0]
    assert header == "line,input,ref,status,job_id,error_code,error_message,outputs"
    csv_rows = report(client, batch["id"])
    jsonl_rows = report(client, batch["id"], "jsonl")

    assert [r["line"] for r in csv_rows] == ["1", "2", "3"]
    assert [r["line"] for r in jsonl_rows] == [1, 2, 3]
    assert csv_rows[0]["ref"] == jsonl_rows[0]["ref"] == "has, a comma"
    assert csv_rows[1]["status"] == jsonl_rows[1]["status"] == "rejected"
    assert csv_rows[1]["input"] == '"bad-uri"'  # a JSON row's text is its JSON
    assert [r["job_id"] for r in csv_rows] == [r["job_id"] or "" for r in jsonl_rows]
    assert (
        client.get(f"/v1/batches/{batch['id']}/report", params={"format": "xml"}).status_code == 422
    )


def test_a_fresh_batch_reports_counts_and_no_eta(client: httpx.Client) -> None:
    batch = created(
        client.post("/v1/batches", json={"rows": _rows(3), "model": "identity", "max_in_flight": 1})
    )
    view = get_batch(client, batch["id"])

    assert set(view["counts"]) == {
        "pending",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    }
    assert (view["total"], view["finished"], view["remaining"]) == (3, 0, 3)
    assert (view["progress"], view["throughput_per_minute"], view["eta_seconds"]) == (0, 0, None)
    assert view["rejections"] is None  # only the creating response lists them
    assert view["created"] is None
