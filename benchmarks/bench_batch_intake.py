"""Catalog intake: how long `POST /v1/batches/upload` takes to accept an N-row CSV manifest, and how
much memory the API needs for it, side by side with two references in the same run.

    ours      the CSV uploaded as multipart to the API (uvicorn, dispatcher off) on PostgreSQL:
              streamed to a temporary file, read row by row, inserted 1,000 rows per statement
              and per commit (`mss_jobs.batches.intake`)
    inline    the same rows as a JSON body of `POST /v1/batches` (the same intake, but the API
              parses and validates the whole list in memory first)
    per-row   a naive intake written with the ORM: `csv.DictReader`, one `Job` per row,
              `session.add` + `commit` per row; run on a sample and extrapolated linearly

Each API measurement gets a fresh database and a fresh uvicorn process: after a warm-up request
its peak RSS is reset (`/proc/<pid>/clear_refs`), and "peak growth" is its VmHWM after the
request minus its RSS before. Wall time is the client's, from the first byte sent to the 201
(the response comes once every row is committed). Target: 100,000 rows accepted in ≤ 60 s.
Needs PostgreSQL as `tests/real_services.py` does (MSS_TEST_POSTGRES_ADMIN_URL).

    .venv/bin/python benchmarks/bench_batch_intake.py [--rows 10000 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from real_services import fresh_database  # noqa: E402

from mss_jobs.batches.manifest import JobTemplate  # noqa: E402
from mss_jobs.db.batch_intake import create_batch  # noqa: E402
from mss_jobs.db.job_intake import params_hash  # noqa: E402
from mss_jobs.db.schema import Job, utcnow  # noqa: E402
from mss_jobs.db.session import make_engine, make_session_factory, transaction  # noqa: E402
from mss_jobs.domain.lifecycle import JobStatus  # noqa: E402

MODEL = "dsp-hpss"
BAD_EVERY = 1000
"""One row in this many has an unusable input (rejected with its line, like a real catalog)."""
OVERRIDE_EVERY = 10
"""One row in this many overrides the output format."""
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 600.0


def manifest_rows(count: int) -> Iterator[dict[str, str]]:
    """`count` manifest rows: input, format override, ref."""
    for i in range(1, count + 1):
        target = "ftp://catalog/broken" if i % BAD_EVERY == 0 else f"s3://catalog/t/{i:07d}.flac"
        yield {
            "input": target,
            "format": "wav" if i % OVERRIDE_EVERY == 0 else "",
            "ref": f"isrc-{i:07d}",
        }


def write_csv(path: Path, count: int) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["input", "format", "ref"])
        writer.writeheader()
        writer.writerows(manifest_rows(count))


def inline_body(count: int) -> bytes:
    rows = [{k: v for k, v in row.items() if v} for row in manifest_rows(count)]
    return json.dumps({"rows": rows, "model": MODEL, "format": "flac"}).encode()


# -- the API process ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


@contextlib.contextmanager
def api_server(database_url: str, work: Path) -> Iterator[tuple[httpx.Client, int]]:
    """uvicorn serving the API on `database_url` (no broker, dispatcher off); (client, pid)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSS_", "HTTP"))}
    env.update(
        MSS_DATABASE_URL=database_url,
        MSS_DATA_DIR=str(work / "data"),
        MSS_RUN_DISPATCHER="false",
        NO_PROXY="127.0.0.1,localhost",
    )
    log = (work / "api.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "mss_jobs.api.main:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT, trust_env=False
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited:\n{(work / 'api.log').read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.1)
        yield client, process.pid
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_growth_mib: float
    accepted: int
    rejected: int


def measure_api(kind: str, rows: int, work: Path) -> Measurement:
    """One submission of `rows` rows (`kind` "upload" or "inline") to a fresh API and database."""
    manifest = work / f"manifest-{rows}.csv"
    if kind == "upload" and not manifest.exists():
        write_csv(manifest, rows)
    body = inline_body(rows) if kind == "inline" else b""
    with fresh_database("mss_bench_intake") as url, api_server(url, work) as (client, pid):
        warm = client.post("/v1/batches", json={"rows": ["s3://warm/up.flac"], "model": MODEL})
        warm.raise_for_status()
        with contextlib.suppress(OSError):  # reset VmHWM to the current RSS (Linux ≥ 4.0)
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        before = _status_kib(pid, "VmRSS")
        started = time.perf_counter()
        if kind == "upload":
            with manifest.open("rb") as stream:
                response = client.post(
                    "/v1/batches/upload",
                    files={"file": ("catalog.csv", stream, "text/csv")},
                    data={"spec": json.dumps({"model": MODEL, "format": "flac"})},
                )
        else:
            response = client.post(
                "/v1/batches", content=body, headers={"content-type": "application/json"}
            )
        seconds = time.perf_counter() - started
        if response.status_code != 201:
            raise RuntimeError(f"{kind}: {response.status_code} {response.text[:500]}")
        peak = _status_kib(pid, "VmHWM")
    batch = response.json()
    return Measurement(
        seconds=seconds,
        peak_growth_mib=(peak - before) / 1024,
        accepted=batch["rows_accepted"],
        rejected=batch["rows_rejected"],
    )


def measure_per_row(sample: int, work: Path) -> float:
    """Seconds for the naive ORM intake of `sample` rows (one INSERT and commit per row)."""
    manifest = work / f"manifest-{sample}.csv"
    if not manifest.exists():
        write_csv(manifest, sample)
    template = JobTemplate.build(model=MODEL, params={"format": "flac"})
    with fresh_database("mss_bench_intake") as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        with transaction(sessions) as session:
            batch, _ = create_batch(
                session, model=MODEL, params=template.params, source={"kind": "bench"}
            )
            batch_id = batch.id
        started = time.perf_counter()
        with manifest.open(newline="") as stream, sessions() as session:
            for line, row in enumerate(csv.DictReader(stream), start=2):
                if not row["input"].startswith("s3://"):
                    continue
                params = {**template.params, **({"format": row["format"]} if row["format"] else {})}
                session.add(
                    Job(
                        id=uuid.uuid4(),
                        status=JobStatus.PENDING,
                        model=MODEL,
                        params=params,
                        params_hash=params_hash(params),
                        input_uri=row["input"],
                        priority=5,
                        batch_id=batch_id,
                        batch_line=line,
                        client_ref=row["ref"],
                        created_at=utcnow(),
                        updated_at=utcnow(),
                    )
                )
                session.commit()
        seconds = time.perf_counter() - started
        engine.dispose()
    return seconds


def best(measurements: list[Measurement]) -> Measurement:
    """The fastest run; its peak growth is the largest seen (memory is not a matter of luck)."""
    fastest = min(measurements, key=lambda m: m.seconds)
    worst_peak = max(m.peak_growth_mib for m in measurements)
    return Measurement(fastest.seconds, worst_peak, fastest.accepted, fastest.rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1, help="API runs per cell (best of)")
    parser.add_argument("--naive-sample", type=int, default=10_000)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    print(
        f"CSV manifest (input, format every {OVERRIDE_EVERY}th row, ref), 1 bad row in "
        f"{BAD_EVERY}; model {MODEL}; PostgreSQL; uvicorn, dispatcher off; best of {args.repeat}"
    )
    header = (
        f"{'rows':>8} | {'way':<8} | {'seconds':>8} | {'rows/s':>8} | {'peak growth MiB':>15} | "
        f"{'accepted':>8} {'rejected':>8}"
    )
    print(header)
    print("-" * len(header))
    naive_per_row = math.nan
    with tempfile.TemporaryDirectory(prefix="mss-bench-intake-") as tmp:
        work = Path(tmp)
        if not args.no_reference:
            naive_per_row = measure_per_row(args.naive_sample, work) / args.naive_sample
        for rows in args.rows:
            kinds = ["upload"] if args.no_reference else ["upload", "inline"]
            for kind in kinds:
                result = best([measure_api(kind, rows, work) for _ in range(args.repeat)])
                way = "ours" if kind == "upload" else "inline"
                print(
                    f"{rows:>8} | {way:<8} | {result.seconds:>8.1f} | "
                    f"{rows / result.seconds:>8.0f} | {result.peak_growth_mib:>15.1f} | "
                    f"{result.accepted:>8} {result.rejected:>8}"
                )
            if not args.no_reference:
                naive = naive_per_row * rows
                print(
                    f"{rows:>8} | {'per-row':<8} | {naive:>8.1f} | {rows / naive:>8.0f} | "
                    f"{'-':>15} | (extrapolated from {args.naive_sample} rows)"
                )
    print("target: 100,000 rows accepted in ≤ 60 s")


if __name__ == "__main__":
    main()
