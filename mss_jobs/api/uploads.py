"""Edge: receive a multipart upload (`file` + JSON `spec`) into a temporary file, size-capped.

Starlette's form parser spools a file part to disk once it passes 1 MiB, so a large upload never
sits whole in memory; it is then copied in 1 MiB chunks into our own temporary file (hashing it on
the way) and refused with 413 as soon as it passes `max_bytes`. A `Content-Length` already larger
than the cap is refused before the body is read at all.

Also the two things every upload route shares: the OpenAPI description of that multipart body
(`upload_openapi`) and the validation of its `spec` (`ReceivedUpload.parse_spec`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from mss_jobs.atomic import CHUNK_SIZE, HashingWriter
from mss_jobs.domain.validation import describe_validation_error
from mss_jobs.errors import ConfigError, UploadTooLargeError

__all__ = ["ReceivedUpload", "receive_upload", "upload_openapi"]

_Spec = TypeVar("_Spec", bound=BaseModel)

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
    """The `spec` form field: JSON text, validated by the caller (`parse_spec`)."""

    def parse_spec(self, model: type[_Spec], *, root: str) -> _Spec:
        """`spec` as `model`; a `ConfigError` `spec: <field>: <message>` when it is invalid
        (`root` names an error of the whole value)."""
        try:
            return model.model_validate_json(self.spec)
        except ValidationError as exc:
            raise ConfigError(f"spec: {describe_validation_error(exc, root)}") from exc


def upload_openapi(spec_model: str, *, file_description: str | None = None) -> dict[str, Any]:
    """`openapi_extra` of an upload route: a multipart body of `file` (required) and `spec`, the
    JSON text of `spec_model`'s fields."""
    file: dict[str, Any] = {"type": "string", "format": "binary"}
    if file_description is not None:
        file["description"] = file_description
    spec = {"type": "string", "description": f"JSON object with the fields of {spec_model}"}
    schema = {"type": "object", "required": ["file"], "properties": {"file": file, "spec": spec}}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


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
    with dest.open("wb") as handle:
        out = HashingWriter(handle)
        while chunk := await upload.read(CHUNK_SIZE):
            if out.size + len(chunk) > max_bytes:
                raise UploadTooLargeError(_too_large(max_bytes))
            out.write(chunk)
    if out.size == 0:
        raise ConfigError("file: the uploaded file is empty")
    return out.size, out.sha256


def _too_large(max_bytes: int) -> str:
    return f"the upload exceeds the limit of {max_bytes} bytes (MSS_MAX_UPLOAD_BYTES)"
