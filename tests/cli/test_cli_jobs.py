"""The job-system commands on embedded defaults: a private API, an in-process worker, SQLite and
local storage — the README's main command path — plus `mss-jobs api` as a real process."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_args import IDENTITY_WAV32
from click.testing import CliRunner

from mss_jobs.cli import main

pytestmark = pytest.mark.timeout(180)

RATE = 44100


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Embedded defaults rooted in this test's folder (no broker, SQLite, local storage)."""
    for name in list(os.environ):
        if name.startswith("MSS_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("MSS_DATA_DIR", str(data))
    return data


def _track(path: Path, seconds: float = 2.0) -> np.ndarray:
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (int(RATE * seconds), 2))
    sf.write(path, audio, RATE, subtype="FLOAT")
    return audio


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_submit_runs_the_job_system_and_downloads_stems(embedded_env: Path, tmp_path: Path) -> None:
    audio = _track(tmp_path / "song.wav")
    out = tmp_path / "stems"

    code, stdout, stderr = _invoke(
        "submit",
        str(tmp_path / "song.wav"),
        "-o",
        str(out),
        *IDENTITY_WAV32,
        "-q",
    )

    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["mixture.wav"]
    stem, rate = sf.read(out / "mixture.wav", dtype="float64", always_2d=True)
    assert rate == RATE
    np.testing.assert_allclose(stem, audio, atol=1e-5, rtol=0)
    job_id = stdout.strip().rsplit("[job ", 1)[1].rstrip("]")
    # The job went through the database like any other: status reads it back.
    code, status_out, _ = _invoke("status", job_id)
    assert code == 0
    assert "succeeded" in status_out
    assert "mixture" in status_out
    assert (embedded_env / "mss-jobs.db").is_file()
    assert list((embedded_env / "storage").rglob("mixture.wav"))


def test_submit_with_derived_stems_and_progress_bar(embedded_env: Path, tmp_path: Path) -> None:
    _track(tmp_path / "mix.wav", seconds=3.0)
    out = tmp_path / "out"

    code, _stdout, stderr = _invoke(
        "submit", str(tmp_path / "mix.wav"), "-o", str(out), "--derive", "both=harmonic+percussive"
    )

    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "both.flac",
        "harmonic.flac",
        "percussive.flac",
    ]
    assert "mix.wav" in stderr  # the progress bar is labelled with the input
    harmonic, _ = sf.read(out / "harmonic.flac", always_2d=True)
    percussive, _ = sf.read(out / "percussive.flac", always_2d=True)
    both, _ = sf.read(out / "both.flac", always_2d=True)
    np.testing.assert_allclose(both, harmonic + percussive, atol=1e-4)


def test_a_corrupt_input_fails_its_job_with_a_code_and_the_next_one_runs(
    embedded_env: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(2000))
    _track(tmp_path / "good.wav", seconds=1.0)

    code, _, stderr = _invoke("submit", str(bad), "-o", str(tmp_path / "x"), "-q")
    assert code == 1
    assert "audio.decode_failed" in stderr
    assert "bad.wav: not a decodable audio file" in stderr  # the user's name, not a temp name
    assert not (tmp_path / "x").exists()

    code, _, stderr = _invoke(
        "submit", str(tmp_path / "good.wav"), "-o", str(tmp_path / "y"), "--model", "identity", "-q"
    )
    assert code == 0, stderr
    assert (tmp_path / "y" / "mixture.flac").is_file()


def test_client_side_errors(embedded_env: Path, tmp_path: Path) -> None:
    code, _, stderr = _invoke("status", str(uuid.uuid4()))
    assert code == 1
    assert "job.not_found" in stderr

    code, _, stderr = _invoke("submit", str(tmp_path / "missing.wav"))
    assert code == 2
    assert "no such file" in stderr

    _track(tmp_path / "a.wav", seconds=0.5)
    code, _, stderr = _invoke("submit", str(tmp_path / "a.wav"), "--no-wait")
    assert code == 2
    assert "--no-wait needs" in stderr

    # The service refuses the request as invalid: a usage error (exit 2), not a failed job.
    code, _, stderr = _invoke("submit", str(tmp_path / "a.wav"), "--model", "nope", "-q")
    assert code == 2
    assert "model.unknown" in stderr

    code, _, stderr = _invoke("worker")
    assert code == 2
    assert "MSS_BROKER_URL" in stderr


def test_migrate_creates_the_embedded_schema(embedded_env: Path) -> None:
    code, stdout, stderr = _invoke("migrate")
    assert code == 0, stderr
    assert stdout.startswith("database: empty → ")
    code, stdout, _ = _invoke("migrate")
    assert code == 0
    before, after = stdout.strip().removeprefix("database: ").split(" → ")
    assert before == after != "empty"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def api_process(embedded_env: Path, tmp_path: Path) -> Iterator[str]:
    """`mss-jobs api` on embedded defaults as a real process (embedded worker inside)."""
    port = _free_port()
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mss_jobs", "api", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "api.log").read_text())
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_api_process_runs_jobs_with_its_embedded_worker(api_process: str, tmp_path: Path) -> None:
    audio = _track(tmp_path / "t.wav", seconds=1.0)

    code, stdout, stderr = _invoke(
        "submit", str(tmp_path / "t.wav"), "--api", api_process, "--model", "identity", "--no-wait"
    )
    assert code == 0, stderr
    job_id = stdout.strip()
    code, stdout, stderr = _invoke(
        "submit",
        str(tmp_path / "t.wav"),
        "--api",
        api_process,
        *IDENTITY_WAV32,
        "-o",
        str(tmp_path / "out"),
        "-q",
    )
    assert code == 0, stderr
    stem, _ = sf.read(tmp_path / "out" / "mixture.wav", always_2d=True)
    np.testing.assert_allclose(stem, audio, atol=1e-5, rtol=0)
    # The --no-wait job ran too (one worker, in order).
    code, stdout, _ = _invoke("status", job_id, "--api", api_process, "--json")
    assert code == 0
    assert '"status": "succeeded"' in stdout


def test_batch_submit_wait_report_and_resubmit(embedded_env: Path, tmp_path: Path) -> None:
    # Embedded storage only reads files under its root; a catalog placed there.
    catalog = embedded_env / "storage" / "catalog"
    catalog.mkdir(parents=True)
    for name in ("a", "b", "c"):
        _track(catalog / f"{name}.wav", seconds=0.5)
    manifest = tmp_path / "tracks.csv"
    manifest.write_text(
        "input,ref\n"
        + "".join(f"{(catalog / n).as_uri()}.wav,{n}\n" for n in ("a", "b", "c"))
        + "s3:/broken,bad\n"
    )

    code, stdout, stderr = _invoke(
        "batch", "submit", str(manifest), "--model", "identity", "--key", "cat-1", "--wait"
    )

    assert code == 1  # one row was rejected
    assert "line 5: manifest.invalid_input" in stderr
    assert "completed: 3 jobs, done 3 failed 0" in stdout
    batch_id = stdout.split()[1]
    report = tmp_path / "report.csv"
    code, _, stderr = _invoke("batch", "report", batch_id, "-o", str(report))
    assert code == 0, stderr
    with report.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["succeeded"] * 3 + ["rejected"]
    assert [row["line"] for row in rows] == ["2", "3", "4", "5"]
    assert all(row["outputs"].startswith("mixture=file://") for row in rows[:3])
    assert rows[3]["error_code"] == "manifest.invalid_input"

    # The same key again: the same batch, nothing new to run.
    code, stdout, stderr = _invoke(
        "batch", "submit", str(manifest), "--model", "identity", "--key", "cat-1", "--wait"
    )
    assert f"batch {batch_id} found (same key)" in stderr
    code, stdout, _ = _invoke("batch", "status", batch_id, "--json")
    assert code == 0
    assert '"total": 3' in stdout


def test_batch_and_client_usage_errors(embedded_env: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("input\n")

    code, _, stderr = _invoke("batch", "submit", str(manifest))
    assert code == 2
    assert "without --wait the batch needs a service" in stderr

    code, _, stderr = _invoke("batch", "submit", str(manifest), "--ext", "flac", "--wait")
    assert code == 2
    assert "--ext and --glob filter an s3:// prefix" in stderr

    code, _, stderr = _invoke("batch", "submit", str(tmp_path / "none.csv"), "--wait")
    assert code == 2
    assert "no such manifest" in stderr

    # Nothing listens there: a clear transient error, not a traceback.
    code, _, stderr = _invoke(
        "status", str(uuid.uuid4()), "--api", f"http://127.0.0.1:{_free_port()}"
    )
    assert code == 3  # service unavailable
    assert "api.unavailable: cannot reach the API" in stderr
