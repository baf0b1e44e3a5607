"""Edge: a typed client for the HTTP API — what `mss-jobs submit` and `mss-jobs status` speak.

Responses are parsed into the API's own schemas (`mss_jobs.api.schemas`), so client and server
cannot drift apart silently. An error answer becomes `ApiError` carrying the server's code and
message; a connection failure becomes `ApiUnavailableError` (transient); both are in
`mss_jobs.errors`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from mss_jobs.api.batch_schemas import BatchOut, BatchRetryOut
from mss_jobs.api.schemas import JobOut, JobOutput
from mss_jobs.atomic import CHUNK_SIZE, atomic_write
from mss_jobs.errors import ApiError, ApiUnavailableError, MssError

__all__ = ["JobsClient"]

DEFAULT_POLL_SECONDS: Final = 0.5


class JobsClient:
    """A connection to one API (`base_url` such as http://127.0.0.1:8000)."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, trust_env: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            trust_env=trust_env,  # False for a loopback server: no proxy may intercept it
            follow_redirects=True,  # downloads from S3 answer with a redirect
        )

    # -- requests ------------------------------------------------------------------------------

    def submit_file(
        self, path: Path, spec: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> JobOut:
        """Upload `path` and queue a job for it (`spec`: the JobSpec fields)."""
        with path.open("rb") as handle:
            files = {"file": (path.name, handle, "application/octet-stream")}
            response = self._request(
                "POST",
                "/v1/jobs/upload",
                files=files,
                data={"spec": json.dumps(dict(spec))},
                headers=_key_header(idempotency_key),
            )
        return JobOut.model_validate(response.json())

    def submit_uri(
        self, uri: str, spec: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> JobOut:
        """Queue a job for an input already in object storage (`s3://bucket/key`)."""
        body = {**spec, "input": uri}
        response = self._request(
            "POST", "/v1/jobs", json=body, headers=_key_header(idempotency_key)
        )
        return JobOut.model_validate(response.json())

    def job(self, job_id: uuid.UUID | str) -> JobOut:
        return JobOut.model_validate(self._request("GET", f"/v1/jobs/{job_id}").json())

    def wait(
        self,
        job_id: uuid.UUID | str,
        *,
        on_update: Callable[[JobOut], None] | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> JobOut:
        """Poll until the job is finished (succeeded, failed or cancelled); returns it."""
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.status.is_terminal:
                return job
            time.sleep(poll_seconds)

    def download(self, job: JobOut, dest_dir: Path) -> list[Path]:
        """Stream every output of a succeeded job to `dest_dir/<stem>.<format>`.

        Each file is written under a temporary name and renamed when complete, so an
        interrupted download never leaves a truncated stem that looks finished.
        """
        dest_dir.mkdir(parents=True, exist_ok=True)
        return [self._download_one(output, dest_dir) for output in job.outputs or ()]

    def _download_one(self, output: JobOutput, dest_dir: Path) -> Path:
        target = dest_dir / f"{output.stem}.{output.format}"
        return self._stream_to(target, output.download, what=f"download of {output.stem}")

    def _stream_to(
        self, dest: Path, path: str, *, what: str, params: Mapping[str, str] | None = None
    ) -> Path:
        """GET `path` into `dest` through a hidden temporary file renamed when complete."""
        try:
            with self._http.stream("GET", path, params=params) as response:
                _raise_for_error(response, read=True)
                with atomic_write(dest, parents=False) as out:
                    for block in response.iter_bytes(CHUNK_SIZE):
                        out.write(block)
        except httpx.TransportError as exc:
            raise ApiUnavailableError(f"{what} failed: {exc}") from exc
        return dest

    # -- batches -------------------------------------------------------------------------------

    def submit_batch_prefix(self, prefix: str, options: Mapping[str, Any]) -> BatchOut:
        """A batch of every object under `s3://bucket/folder/` (options: BatchCreate fields)."""
        body = {**options, "prefix": prefix}
        return BatchOut.model_validate(self._request("POST", "/v1/batches", json=body).json())

    def submit_batch_manifest(self, path: Path, options: Mapping[str, Any]) -> BatchOut:
        """A batch from a CSV or JSONL manifest, uploaded."""
        with path.open("rb") as handle:
            response = self._request(
                "POST",
                "/v1/batches/upload",
                files={"file": (path.name, handle, "application/octet-stream")},
                data={"spec": json.dumps(dict(options))},
            )
        return BatchOut.model_validate(response.json())

    def batch(self, batch_id: uuid.UUID | str) -> BatchOut:
        return BatchOut.model_validate(self._request("GET", f"/v1/batches/{batch_id}").json())

    def cancel_batch(self, batch_id: uuid.UUID | str) -> BatchOut:
        response = self._request("POST", f"/v1/batches/{batch_id}/cancel")
        return BatchOut.model_validate(response.json())

    def retry_batch(self, batch_id: uuid.UUID | str) -> BatchRetryOut:
        response = self._request("POST", f"/v1/batches/{batch_id}/retry-failed")
        return BatchRetryOut.model_validate(response.json())

    def download_report(self, batch_id: uuid.UUID | str, dest: Path, *, fmt: str) -> Path:
        """Stream the batch's report (csv or jsonl) to `dest`, atomically."""
        return self._stream_to(
            dest, f"/v1/batches/{batch_id}/report", what="report download", params={"format": fmt}
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnavailableError(f"cannot reach the API at {self.base_url}: {exc}") from exc
        _raise_for_error(response)
        return response

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _key_header(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _raise_for_error(response: httpx.Response, *, read: bool = False) -> None:
    if response.is_success:
        return
    if read:
        response.read()
    code, message = "api.error", response.text[:500] or response.reason_phrase
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        pass
    error: MssError = ApiError(
        f"HTTP {response.status_code}: {message}", code=code, status=response.status_code
    )
    raise error
