"""Pure: the names a job's files get — the input's local name and a stored output's extension.

Only a short alphanumeric suffix (`.wav`, `.flac`) counts as an extension: an input name without
one gets `.bin` (the decoders then go by content), and an object key without one falls back to
the output's format. Shared by the fresh run (the input's name) and the result cache (the copied
outputs' keys).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from mss_jobs.storage import sanitize_filename

__all__ = ["SAFE_SUFFIX", "input_name", "stored_extension"]

SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def input_name(uri: str) -> str:
    """The input's own file name, made safe, so errors name what the user submitted
    (`song.wav: not a decodable audio file`) and decoders see its extension."""
    name = PurePosixPath(uri.rsplit("?", 1)[0]).name
    suffix = PurePosixPath(name).suffix
    if not name or not SAFE_SUFFIX.match(suffix):
        return "input.bin" if not name else f"{sanitize_filename(name)}.bin"
    return sanitize_filename(name)


def stored_extension(uri: str, *, fallback: str) -> str:
    """The stored object's extension (what the worker named it on upload), else `fallback` (the
    output's format)."""
    suffix = PurePosixPath(uri).suffix
    return suffix if SAFE_SUFFIX.match(suffix) else fallback
