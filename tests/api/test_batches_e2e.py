"""Bulk catalog processing end to end, on real services: PostgreSQL, Redis, a moto S3 server, the
API in its own process (with its dispatcher thread) and a real `celery worker` (`-c 1`).

Each test builds its own stack on this module's database and Redis database 11 (flushed before
each test), so it can kill and restart the API, the dispatcher and the worker without touching
the session API of the other API tests. Time limits are short (soft 8 s < hard 10 s <
visibility 12 s) so that a killed worker's task comes back in seconds; every job here takes well
under a second.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import soundfile as sf
from api_harness import put_input, wait_job
from batch_harness import (
    ApiProcess,
    batch_jobs,
    created,
    csv_manifest,
    get_batch,
    report,
    stems_of,
    upload_manifest,
    wait_batch,
    waiting_job_ids,
)
from real_services import REDIS_URL, PostgresServer, RedisServer
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import WorkerProcess, wav_bytes

from mss_jobs.db.schema import Batch, Job, JobEvent, JobOutput
from mss_jobs.db.session import make_engine, make_session_factory, transaction
from mss_jobs.domain.lifecycle import BatchStatus, EventKind
from mss_jobs.storage import S3Storage, job_prefix

pytestmark = pytest.mark.timeout(240)

Sessions = sessionmaker[Session]
E2E_REDIS_INDEX = 11
E2E_REDIS_URL = f"{REDIS_URL.rstrip('/')}/{E2E_REDIS_INDEX}"
WAV32 = {"format": "wav", "bit_depth": 32}
MODEL_STAGES = ("analyze", "separate")
"""Stages only a job that runs the model goes through (a reused result skips them)."""


@pytest.fixture(scope="module")
def e2e_database(postgres: PostgresServer) -> Iterator[str]:
    with postgres.database("mss_batch_e2e") as url:
        yield url


@pytest.fixture(scope="module")
def e2e_sessions(e2e_database: str) -> Iterator[Sessions]:
    engine = make_engine(e2e_database)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def e2e_env(
    api_env: dict[str, str], e2e_database: str, redis_server: RedisServer
) -> Iterator[dict[str, str]]:
    """The API tests' S3 bucket, with this module's database and Redis database."""
    with redis_server.flushed(E2E_REDIS_INDEX) as broker_url:
        yield {
            **api_env,
            "MSS_DATABASE_URL": e2e_database,
            "MSS_BROKER_URL": broker_url,
            "MSS_JOB_SOFT_TIME_LIMIT_SECONDS": "8",
            "MSS_JOB_HARD_TIME_LIMIT_SECONDS": "10",
            "MSS_VISIBILITY_TIMEOUT_SECONDS": "12",
            "MSS_DISPATCH_INTERVAL_SECONDS": "0.2",
        }


@dataclass
class Stack:
    """API processes and workers started by one test; all stopped when it ends."""

    env: dict[str, str]
    folder: Path
    processes: list[ApiProcess | WorkerProcess] = field(default_factory=list)

    def api(self, **env: str) -> ApiProcess:
        """An API (with its dispatcher) on this stack, extra `MSS_*` variables applied."""
        name = f"api-{len(self.processes)}.log"
        process = ApiProcess({**self.env, **env}, self.folder / name)
        self.processes.append(process)
        process.wait_ready()
        return process

    def worker(self, *, wait: bool = True) -> WorkerProcess:
        process = WorkerProcess(self.env, self.folder / f"worker-{len(self.processes)}.log")
        self.processes.append(process)
        if wait:
            process.wait_ready()
        return process

    def api_with_worker(self) -> ApiProcess:
        """A worker and an API, the worker booting while the API starts; both ready."""
        worker = self.worker(wait=False)
        api = self.api()
        worker.wait_ready()
        return api

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture
def stack(
    e2e_env: dict[str, str], e2e_sessions: Sessions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A clean broker for the test; afterwards its processes stop and any batch it left active
    is cancelled, so the next test's dispatcher does not feed it."""
    redis.Redis.from_url(E2E_REDIS_URL).flushdb()
    built = Stack(e2e_env, tmp_path_factory.mktemp("stack"))
    try:
        yield built
    finally:
        built.close()
        with transaction(e2e_sessions) as session:
            session.execute(
                update(Batch)
                .where(Batch.status == BatchStatus.ACTIVE)
                .values(status=BatchStatus.CANCELLED)
            )


# -- helpers -----------------------------------------------------------------------------------


def _create_batch(client: httpx.Client, **spec: Any) -> dict[str, Any]:
    """Create a batch of the identity model with 32-bit WAV stems from `spec`."""
    return created(client.post("/v1/batches", json={"model": "identity", **spec, **WAV32}))


def _events(
    sessions: Sessions, job_ids: list[str]
) -> dict[str, list[tuple[EventKind, str | None]]]:
    """Each job's history: (kind, message) in order."""
    found: dict[str, list[tuple[EventKind, str | None]]] = {job_id: [] for job_id in job_ids}
    with transaction(sessions) as session:
        rows = session.execute(
            select(JobEvent.job_id, JobEvent.kind, JobEvent.message)
            .where(JobEvent.job_id.in_([uuid.UUID(j) for j in job_ids]))
            .order_by(JobEvent.id)
        )
        for job_id, kind, message in rows:
            found[str(job_id)].append((kind, message))
    return found


def _ran_the_model(history: list[tuple[EventKind, str | None]]) -> bool:
    return any(kind == EventKind.PROGRESS and msg in MODEL_STAGES for kind, msg in history)


def _count(history: list[tuple[EventKind, str | None]], kind: EventKind) -> int:
    return sum(1 for seen, _ in history if seen == kind)


def _jobs(sessions: Sessions, job_ids: list[str]) -> dict[str, Job]:
    with transaction(sessions) as session:
        rows = session.scalars(select(Job).where(Job.id.in_([uuid.UUID(j) for j in job_ids])))
        return {str(job.id): job for job in rows}


def _output_rows(sessions: Sessions, job_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    with transaction(sessions) as session:
        rows = session.execute(
            select(JobOutput.job_id, JobOutput.stem).where(
                JobOutput.job_id.in_([uuid.UUID(j) for j in job_ids])
            )
        )
        for job_id, stem in rows:
            found[str(job_id)].append(stem)
    return found


def _read_wav(storage: S3Storage, uri: str, folder: Path) -> np.ndarray[Any, Any]:
    path = folder / f"{uuid.uuid4().hex}.wav"
    storage.download_file(uri, path)
    audio, _rate = sf.read(path, dtype="float32", always_2d=True)
    return np.asarray(audio, dtype=np.float32)


def _audio(content: bytes) -> np.ndarray[Any, Any]:
    audio, _rate = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    return np.asarray(audio, dtype=np.float32)


# -- the scenarios ---------------------------------------------------------------------


def test_a_batch_from_an_s3_prefix_succeeds_and_its_report_lists_every_stem(
    stack: Stack, storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    folder = f"{storage.prefix}/catalog-{uuid.uuid4().hex[:8]}"
    names = ["a.wav", "b.WAV", "c.wav", "sub/d.wav", "sub/e.wav"]
    contents = {name: wav_bytes(0.5, seed=index) for index, name in enumerate(names)}
    for name, content in contents.items():
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(content)
        storage.upload_file(path, f"{folder}/{name}")
    (tmp_path / "notes.txt").write_text("liner notes: not audio")
    storage.upload_file(tmp_path / "notes.txt", f"{folder}/notes.txt")
    api = stack.api_with_worker()

    with api.client() as client:
        batch = _create_batch(
            client, prefix=f"s3://{bucket}/{folder}/", extensions=["wav"], max_in_flight=2
        )
        assert batch["total"] == len(names)
        done = wait_batch(client, batch["id"])
        lines = report(client, batch["id"])
        jsonl = report(client, batch["id"], "jsonl")

    assert done["status"] == "completed", done
    assert done["counts"]["succeeded"] == len(names)
    assert (done["finished"], done["remaining"], done["progress"]) == (5, 0, 1.0)
    assert done["throughput_per_minute"] > 0
    assert [row["status"] for row in lines] == ["succeeded"] * len(names)
    assert [row["input"] for row in lines] == [f"s3://{bucket}/{folder}/{n}" for n in names]
    for row, record, name in zip(lines, jsonl, names, strict=True):
        stems = stems_of(row["outputs"])
        assert set(stems) == {"mixture"}
        assert stems == record["outputs"]
        assert stems["mixture"].startswith(f"s3://{bucket}/{storage.prefix}/{row['job_id']}/")
        stem = _read_wav(storage, stems["mixture"], tmp_path)
        np.testing.assert_allclose(stem, _audio(contents[name]), atol=1e-6, rtol=0)


def test_a_missing_object_fails_its_row_and_bad_rows_are_refused_while_the_rest_succeed(
    stack: Stack, storage: S3Storage, bucket: str, tmp_path: Path
) -> None:
    good = [put_input(storage, wav_bytes(0.5, seed=10 + i), tmp_path) for i in range(2)]
    missing = f"s3://{bucket}/{storage.prefix}/inputs/no-such-track-{uuid.uuid4().hex}.wav"
    content = csv_manifest(
        ("input", "format", "ref"),
        [
            (good[0], "", "first"),  # line 2
            (missing, "", "missing"),  # line 3
            ("ftp://example.com/track.wav", "", "bad uri"),  # line 4
            (good[1], "ogg", "bad format"),  # line 5
            (good[1], "", "last"),  # line 6
        ],
    )
    api = stack.api_with_worker()

    with api.client() as client:
        batch = created(upload_manifest(client, content, spec={"model": "identity", **WAV32}))
        assert [(r["line"], r["code"]) for r in batch["rejections"]] == [
            (4, "manifest.invalid_input"),
            (5, "manifest.invalid_value"),
        ]
        done = wait_batch(client, batch["id"])
        lines = {int(row["line"]): row for row in report(client, batch["id"])}

        assert done["status"] == "completed", done
        assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (2, 1)
        assert sorted(lines) == [2, 3, 4, 5, 6]
        for line in (2, 6):
            assert lines[line]["status"] == "succeeded"
            assert set(stems_of(lines[line]["outputs"])) == {"mixture"}
        assert (lines[3]["status"], lines[3]["error_code"]) == ("failed", "input.not_found")
        assert (lines[3]["input"], lines[3]["ref"], lines[3]["outputs"]) == (missing, "missing", "")
        for line, code in ((4, "manifest.invalid_input"), (5, "manifest.invalid_value")):
            assert (lines[line]["status"], lines[line]["error_code"]) == ("rejected", code)

        # retry-failed runs the failed row again (and only it); it fails the same way.
        retried = client.post(f"/v1/batches/{batch['id']}/retry-failed")
        assert retried.status_code == 200, retried.text
        assert retried.json()["retried"] == 1
        assert retried.json()["batch"]["status"] == "active"
        again = wait_batch(client, batch["id"])
        failed = batch_jobs(client, batch["id"], status="failed")
        cancel = client.post(f"/v1/batches/{batch['id']}/cancel")

    assert again["status"] == "completed"
    [job] = failed
    assert (job["input"], job["attempts"], job["error"]["code"]) == (missing, 2, "input.not_found")
    assert cancel.status_code == 409


def test_an_interactive_job_overtakes_a_waiting_bulk_backlog(
    stack: Stack, e2e_sessions: Sessions, storage: S3Storage, tmp_path: Path
) -> None:
    inputs = [put_input(storage, wav_bytes(0.5, seed=100 + i), tmp_path) for i in range(30)]
    solo = put_input(storage, wav_bytes(0.5, seed=99), tmp_path)
    api = stack.api_with_worker()

    with api.client() as client:
        batch = _create_batch(client, rows=inputs, max_in_flight=100)
        # The worker is busy with the backlog (one bulk job done) and most of it still waits.
        wait_batch(client, batch["id"], lambda b: b["counts"]["succeeded"] >= 1, interval=0.02)
        response = client.post("/v1/jobs", json={"input": solo, "model": "identity", **WAV32})
        assert response.status_code == 202, response.text
        waiting = waiting_job_ids(E2E_REDIS_URL, "bulk")
        interactive = wait_job(client, response.json()["id"])
        done = wait_batch(client, batch["id"])
        bulk = {job["id"]: job for job in batch_jobs(client, batch["id"])}

    assert interactive["status"] == "succeeded", interactive
    assert done["status"] == "completed"
    assert {job["status"] for job in bulk.values()} == {"succeeded"}
    # Waiting in the broker after the interactive job was published: these must start later.
    backlog = waiting & set(bulk)
    assert len(backlog) >= 5, f"the backlog had drained already: {sorted(backlog)}"
    started = _when(interactive["started_at"])
    late = sorted(_when(bulk[job_id]["started_at"]) for job_id in backlog)
    assert started < late[0], f"interactive started {started}; the backlog from {late[0]}"
    # Between its submission and its start, at most the one job the worker had taken already.
    submitted = _when(response.json()["created_at"])
    between = [j for j in bulk.values() if submitted < _when(j["started_at"]) < started]
    assert len(between) <= 1, between


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def test_a_batch_survives_redis_worker_api_and_dispatcher_restarts_and_runs_nothing_twice(
    stack: Stack, e2e_sessions: Sessions, storage: S3Storage, tmp_path: Path
) -> None:
    """Phase 1: the worker stops, Redis loses every message (FLUSHDB): the dispatcher's stale
    scan publishes the queued jobs again. Phase 2: the worker and the API (with its dispatcher)
    are SIGKILLed mid-job; new ones come up, the manifest is submitted again under its key (200,
    nothing added), the killed job's task is redelivered. Every job succeeds exactly once."""
    count = 12
    inputs = [put_input(storage, wav_bytes(1.0, seed=200 + i), tmp_path) for i in range(count)]
    content = csv_manifest(("input", "ref"), [(uri, f"track-{i}") for i, uri in enumerate(inputs)])
    spec = {"model": "identity", "max_in_flight": 3, "key": f"restart-{uuid.uuid4().hex}", **WAV32}
    fast_stale = {"MSS_DISPATCH_STALE_SECONDS": "2"}

    # -- phase 1: Redis loses its messages --------------------------------------------------
    first_worker = stack.worker(wait=False)
    first_api = stack.api(**fast_stale)
    first_worker.wait_ready()
    with first_api.client() as client:
        batch = created(upload_manifest(client, content, spec=spec))
        batch_id = batch["id"]
        wait_batch(client, batch_id, lambda b: b["counts"]["succeeded"] >= 2)
    _warm_shutdown(first_worker)
    statuses = _batch_rows(e2e_sessions, batch_id)
    assert "running" not in {j["status"] for j in statuses}
    lost = [j["id"] for j in statuses if j["status"] == "queued"]
    assert lost, "the dispatcher should keep max_in_flight jobs queued"
    flushed_at = datetime.now(UTC)
    redis.Redis.from_url(E2E_REDIS_URL).flushdb()
    assert waiting_job_ids(E2E_REDIS_URL, "bulk") == set()

    # -- phase 2: worker, API and dispatcher die mid-job ----------------------------------------
    victim = _kill_mid_job(e2e_sessions, batch_id, stack.worker())
    first_api.kill()
    with ExitStack() as later:
        second_api = stack.api(**fast_stale)
        client = later.enter_context(second_api.client())
        mid = get_batch(client, batch_id)
        assert mid["status"] == "active"
        assert mid["counts"]["succeeded"] < count

        again = created(upload_manifest(client, content, spec=spec), status=200)
        assert (again["id"], again["created"], again["rows_accepted"]) == (batch_id, False, count)
        assert again["total"] == count

        stack.worker()
        done = wait_batch(client, batch_id, timeout=120)
        lines = report(client, batch_id)

    assert done["status"] == "completed", done
    assert done["counts"]["succeeded"] == count
    assert [row["ref"] for row in lines] == [f"track-{i}" for i in range(count)]
    job_ids = [row["job_id"] for row in lines]
    assert len(set(job_ids)) == count
    history = _events(e2e_sessions, job_ids)
    jobs = _jobs(e2e_sessions, job_ids)
    outputs = _output_rows(e2e_sessions, job_ids)
    for job_id in job_ids:
        redelivered = int(job_id == victim)
        kinds = history[job_id]
        assert _count(kinds, EventKind.CLAIMED) == 1, (job_id, kinds)
        assert _count(kinds, EventKind.REDELIVERED) == redelivered, (job_id, kinds)
        assert _count(kinds, EventKind.SUCCEEDED) == 1, (job_id, kinds)
        assert jobs[job_id].attempts == 1 + redelivered
        assert outputs[job_id] == ["mixture"]
        keys = list(storage.list_keys(job_prefix(storage.prefix, job_id)))
        assert len(keys) == 1, keys
        assert stems_of(lines[job_ids.index(job_id)]["outputs"])["mixture"].endswith(keys[0])
    for job_id in lost:  # their messages died with Redis: the stale scan published them again
        enqueued_at = jobs[job_id].enqueued_at
        assert enqueued_at is not None
        assert enqueued_at > flushed_at, (job_id, enqueued_at)


def _warm_shutdown(worker: WorkerProcess, timeout: float = 30.0) -> None:
    """SIGTERM to the main process only: Celery finishes the task at hand and takes no other
    (a signal to the whole group would kill the pool process mid-task)."""
    worker.process.send_signal(signal.SIGTERM)
    try:
        worker.process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within {timeout} s:\n{worker.log()}")
    worker.stop()  # reaps what is left of its process group and closes the log


def _batch_rows(sessions: Sessions, batch_id: str) -> list[dict[str, Any]]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(Job.id, Job.status).where(Job.batch_id == uuid.UUID(batch_id))
        ).all()
    return [{"id": str(row.id), "status": row.status} for row in rows]


def _kill_mid_job(sessions: Sessions, batch_id: str, worker: WorkerProcess) -> str:
    """SIGKILL `worker` while it runs a job of the batch; that job's id.

    The worker is frozen (SIGSTOP) before the job's status is read, so what is read holds at
    the kill; a job that finished just before the freeze lets the worker go on to the next.
    """
    for _ in range(100):
        victim = _wait_for_running(sessions, batch_id, worker)
        os.killpg(worker.process.pid, signal.SIGSTOP)
        if _jobs(sessions, [victim])[victim].status == "running":
            worker.kill()
            return victim
        os.killpg(worker.process.pid, signal.SIGCONT)
    pytest.fail(f"batch {batch_id}: the worker never stayed on a job long enough to be killed")


def _wait_for_running(
    sessions: Sessions, batch_id: str, worker: WorkerProcess, timeout: float = 60.0
) -> str:
    """The first job of the batch seen running (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with transaction(sessions) as session:
            running = session.scalar(
                select(Job.id).where(Job.batch_id == uuid.UUID(batch_id), Job.status == "running")
            )
        if running is not None:
            return str(running)
        if not worker.alive():
            pytest.fail(f"the worker died:\n{worker.log()}")
        time.sleep(0.01)
    pytest.fail(f"no job of batch {batch_id} started within {timeout} s:\n{worker.log()}")


def test_duplicate_tracks_run_the_model_once_per_distinct_audio(
    stack: Stack, e2e_sessions: Sessions, storage: S3Storage, tmp_path: Path
) -> None:
    """Result dedup: the same audio (same object, or another object with the same bytes) with
    the same model and params is separated once; the other jobs reuse its outputs."""
    audio = {name: wav_bytes(0.5, seed=300 + i) for i, name in enumerate("ABC")}
    uris = {name: put_input(storage, content, tmp_path) for name, content in audio.items()}
    copy_of_a = put_input(storage, audio["A"], tmp_path)
    rows = [uris["A"], uris["B"], uris["A"], uris["C"], copy_of_a, uris["B"]]
    api = stack.api_with_worker()

    with api.client() as client:
        batch = _create_batch(client, rows=rows, max_in_flight=6)
        done = wait_batch(client, batch["id"])
        lines = report(client, batch["id"], "jsonl")
        views = {row["job_id"]: client.get(f"/v1/jobs/{row['job_id']}").json() for row in lines}
        # `force` skips the result cache: every row runs the model, even those seen before.
        forced = _create_batch(client, rows=rows[:3], force=True)
        forced_done = wait_batch(client, forced["id"])
        forced_ids = [job["id"] for job in batch_jobs(client, forced["id"])]

    assert forced_done["counts"]["succeeded"] == 3, forced_done
    forced_history = _events(e2e_sessions, forced_ids)
    assert all(_ran_the_model(forced_history[job_id]) for job_id in forced_ids), forced_history
    assert all(job.reused_from is None for job in _jobs(e2e_sessions, forced_ids).values())
    assert done["status"] == "completed", done
    assert done["counts"]["succeeded"] == len(rows)
    job_ids = [row["job_id"] for row in lines]
    history = _events(e2e_sessions, job_ids)
    jobs = _jobs(e2e_sessions, job_ids)
    ran = [job_id for job_id in job_ids if _ran_the_model(history[job_id])]
    assert len(ran) == 3, f"the model ran {len(ran)} times for 3 distinct tracks"
    assert len({jobs[job_id].input_sha256 for job_id in ran}) == 3
    for job_id in set(job_ids) - set(ran):
        source = jobs[job_id].reused_from
        assert source is not None, job_id
        assert str(source) in ran, job_id
        assert jobs[job_id].input_sha256 == jobs[str(source)].input_sha256
        assert _count(history[job_id], EventKind.REUSED) == 1
    for job_id in ran:
        assert jobs[job_id].reused_from is None
    for row in lines:  # every job has outputs, and the same audio gives the same stems
        assert set(row["outputs"]) == {"mixture"}, row
        assert {o["stem"] for o in views[row["job_id"]]["outputs"]} == {"mixture"}
    by_sha: dict[str | None, set[str]] = {}
    for job_id in job_ids:
        by_sha.setdefault(jobs[job_id].input_sha256, set()).update(
            o["sha256"] for o in views[job_id]["outputs"]
        )
    assert all(len(stem_hashes) == 1 for stem_hashes in by_sha.values()), by_sha
