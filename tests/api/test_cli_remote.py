"""`mss-jobs submit|status --api URL` against the API on real services (PostgreSQL, Redis, moto
S3, a real `celery worker`): the upload goes through the API, the stems come back through the
download route's redirect to a presigned S3 URL."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from cli_args import IDENTITY_WAV32
from click.testing import CliRunner
from worker_harness import wav_bytes

from mss_jobs.cli import main

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("worker")]


def test_submit_uploads_waits_and_downloads_through_s3(
    client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    content = wav_bytes(1.0)
    (tmp_path / "take.wav").write_bytes(content)
    api = str(client.base_url)

    result = CliRunner().invoke(
        main,
        [
            "submit",
            str(tmp_path / "take.wav"),
            "--api",
            api,
            *IDENTITY_WAV32,
            "-o",
            str(tmp_path / "out"),
            "-q",
        ],
    )

    assert result.exit_code == 0, result.output
    got, _ = sf.read(tmp_path / "out" / "mixture.wav", dtype="float32", always_2d=True)
    want, _ = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    job_id = result.stdout.strip().rsplit("[job ", 1)[1].rstrip("]")

    redirect = client.get(f"/v1/jobs/{job_id}/outputs/mixture", follow_redirects=False)
    assert redirect.status_code == 307
    assert "X-Amz-Signature=" in redirect.headers["location"]
    missing = client.get(f"/v1/jobs/{job_id}/outputs/vocals")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "output.not_found"

    status = CliRunner().invoke(main, ["status", job_id, "--api", api])
    assert status.exit_code == 0
    assert "succeeded" in status.stdout
    assert f"/v1/jobs/{job_id}/outputs/mixture" in status.stdout
