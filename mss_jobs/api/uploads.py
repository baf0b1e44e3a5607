"""Edge: receive a multipart upload (`file` + JSON `spec`) into a temporary file, size-capped.

Starlette's form parser spools a file part to disk once it passes 1 MiB, so a large upload never
sits whole in memory; it is then copied in 1 MiB chunks into our own temporary file (hashing it on
the way) and refused with 413 as soon as it passes `max_bytes`. A `Content-Length` already larger
than the cap is refused before the body is read at all.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fastapi import Request
from starlette.datastructures import UploadFile

from mss_jobs.api.errors import UploadTooLargeError
from mss_jobs.errors import ConfigError

__all__ = ["ReceivedUpload", "receive_upload"]

CHUNK_BYTES: Final = 1024 * 1024
FORM_OVERHEAD_BYTES: Final = 64 * 1024
"""Room for the multipart boundaries and the `spec` field on top of the file itself."""
MAX_SPEC_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ReceivedUpload:
    path: Path
    filename: str
    size: int
    sha256: str
    spec: str
    """The `spec` form field: JSON text, validated by the caller."""


@asynccontextmanager
async def receive_upload(request: Request, *, max_bytes: int) -> AsyncIterator[ReceivedUpload]:
    """The upload in a temporary file, deleted when the block ends."""
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > max_bytes + FORM_OVERHEAD_BYTES
    ):
        raise UploadTooLargeError(_too_large(max_bytes))
    folder = Path(tempfile.mkdtemp(prefix="mss-upload-"))
    try:
        async with request.form(max_files=1, max_fields=1, max_part_size=MAX_SPEC_BYTES) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ConfigError("file: a multipart file field named 'file' is required")
            spec = form.get("spec", "{}")
            if not isinstance(spec, str):
                raise ConfigError("spec: expected a JSON text field, not a file")
            filename = upload.filename or "upload"
            path = folder / "input"
            size, sha256 = await _copy_capped(upload, path, max_bytes=max_bytes)
        yield ReceivedUpload(path=path, filename=filename, size=size, sha256=sha256, spec=spec)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _copy_capped(upload: UploadFile, dest: Path, *, max_bytes: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while chunk := await upload.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLargeError(_too_large(max_bytes))
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise ConfigError("file: the uploaded file is empty")
    return size, digest.hexdigest()


def _too_large(max_bytes: int) -> str:
    return f"the upload exceeds the limit of {max_bytes} bytes (MSS_MAX_UPLOAD_BYTES)"
