"""Pure: a batch's rows — CSV, JSONL, a JSON array or an S3 listing — as validated job rows.

Every reader is a generator that yields, line by line and in order, either a `ManifestRow` (an
accepted row with its effective model, params and priority) or a `RowRejection` (its line, the
raw text, a stable code and a message naming the column), so one bad row never stops the others
and memory stays flat however long the manifest is. Problems with the manifest as a whole (no
header, an unknown column, a missing `input` column) raise `ManifestError` before the first row.

Columns (CSV header names; JSON object keys):

    input        required: s3://bucket/key (file:///abs/path only where local storage is used)
    model        a model name from the catalog
    stems        stems to deliver            CSV: "vocals;drums" (or "vocals,drums", quoted)
    format       wav | flac | mp3
    bit_depth    16 | 24 | 32
    sample_rate  output rate in Hz
    priority     0..9, higher is more urgent
    derive       derived stems, NAME=A-B     CSV: "instrumental=mixture-vocals;…"
    ref          an opaque client reference (≤ 255 characters), echoed in the report

An empty cell (or a JSON null) keeps the batch's value. Line numbers are physical lines (a CSV
header is line 1; a quoted multi-line record is numbered by its first line); items of a JSON
array are numbered from 1. Blank lines are skipped; duplicate inputs are fine (results are
deduplicated by content later). Byte streams are read as UTF-8 (a BOM is dropped); a line that is
not UTF-8, or longer than `MAX_LINE_CHARS`, rejects its row. Torch-free: the API runs this.

The readers live here; the stream plumbing (decoding, physical lines, which lines a CSV record
used) is `lines.py`, and one row's validation into a `ManifestRow` or a `RowRejection` is
`rows.py`, whose names this module re-exports.
"""

from __future__ import annotations

import csv
import fnmatch
import json
from collections.abc import Collection, Iterable, Iterator
from typing import IO

from mss_jobs.batches.lines import LineFeed, physical_lines, truncate
from mss_jobs.batches.rows import (
    COLUMNS,
    MAX_INPUT_CHARS,
    MAX_REF_CHARS,
    JobTemplate,
    ManifestItem,
    ManifestRow,
    RejectionCode,
    RowBuilder,
    RowRejection,
    json_type,
)
from mss_jobs.errors import ConfigError, ManifestError
from mss_jobs.storage.uri import format_s3_uri, validate_bucket_name

__all__ = [
    "COLUMNS",
    "MAX_INPUT_CHARS",
    "MAX_LINE_CHARS",
    "MAX_REF_CHARS",
    "MAX_REJECTED_TEXT_CHARS",
    "JobTemplate",
    "ManifestItem",
    "ManifestRow",
    "RejectionCode",
    "RowRejection",
    "filter_listing",
    "listing_rows",
    "parse_s3_prefix",
    "read_csv",
    "read_json_rows",
    "read_jsonl",
]

MAX_LINE_CHARS = 64 * 1024
MAX_REJECTED_TEXT_CHARS = 2000
"""A rejected row keeps at most this much of its raw text (it is stored and reported)."""


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def read_csv(
    stream: IO[str] | IO[bytes], template: JobTemplate, *, allow_file_uris: bool = False
) -> Iterator[ManifestItem]:
    """Rows of a CSV manifest with a header row (comma-separated, RFC 4180 quoting)."""
    lines = _line_feed(stream)
    reader = csv.reader(lines, strict=True)
    header = _read_header(reader, lines)
    rows = RowBuilder(template, allow_file_uris=allow_file_uris)
    while True:
        lines.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _record_rejection(lines, RejectionCode.MALFORMED_ROW, f"not valid CSV: {exc}")
            continue
        if lines.problem is not None:
            yield _record_rejection(lines, RejectionCode.MALFORMED_ROW, lines.problem)
            continue
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        extra = [cell for cell in cells[len(header) :] if cell.strip()]
        if extra:
            message = f"the row has {len(cells)} cells but the header names {len(header)} columns"
            yield _record_rejection(lines, RejectionCode.MALFORMED_ROW, message)
            continue
        values = {
            name: cell.strip() for name, cell in zip(header, cells, strict=False) if cell.strip()
        }
        yield rows.build(line=lines.record_line, raw=lines.raw_text, values=values, from_csv=True)


def read_jsonl(
    stream: IO[str] | IO[bytes], template: JobTemplate, *, allow_file_uris: bool = False
) -> Iterator[ManifestItem]:
    """Rows of a JSON Lines manifest: one JSON object (or input URI string) per line."""
    rows = RowBuilder(template, allow_file_uris=allow_file_uris)
    for line in physical_lines(stream, max_chars=MAX_LINE_CHARS):
        raw = _truncate(line.text.rstrip("\r\n"))
        if line.problem is not None:
            yield RowRejection(line.number, raw, RejectionCode.MALFORMED_ROW, line.problem)
            continue
        if not line.text.strip():
            continue
        try:
            item = json.loads(line.text)
        except json.JSONDecodeError as exc:
            message = f"not valid JSON: {exc.msg} (column {exc.colno})"
            yield RowRejection(line.number, raw, RejectionCode.MALFORMED_ROW, message)
            continue
        yield _json_item(rows, line=line.number, raw=raw, item=item)


def read_json_rows(
    items: Iterable[object], template: JobTemplate, *, allow_file_uris: bool = False
) -> Iterator[ManifestItem]:
    """Rows of an already parsed JSON array (a request body); item n is line n, from 1."""
    rows = RowBuilder(template, allow_file_uris=allow_file_uris)
    for line, item in enumerate(items, start=1):
        raw = _truncate(json.dumps(item, ensure_ascii=False, default=repr))
        yield _json_item(rows, line=line, raw=raw, item=item)


def _json_item(rows: RowBuilder, *, line: int, raw: str, item: object) -> ManifestItem:
    if isinstance(item, str):
        item = {"input": item}
    if not isinstance(item, dict):
        message = f"expected a JSON object or an input URI string, got {json_type(item)}"
        return RowRejection(line, raw, RejectionCode.MALFORMED_ROW, message)
    unknown = [str(key) for key in item if key not in COLUMNS]
    if unknown:
        message = (
            f"unknown column(s) {', '.join(map(repr, unknown))}; "
            f"known columns: {', '.join(COLUMNS)}"
        )
        return RowRejection(line, raw, RejectionCode.UNKNOWN_COLUMN, message)
    values = {key: value for key, value in item.items() if value is not None}
    return rows.build(line=line, raw=raw, values=values, from_csv=False)


# ---------------------------------------------------------------------------------------------
# S3 listings
# ---------------------------------------------------------------------------------------------


def parse_s3_prefix(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` → ("bucket", "some/prefix/"); the prefix may be empty."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// prefix: {uri!r} (expected s3://bucket/prefix/)")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    try:
        validate_bucket_name(bucket)
    except ConfigError as exc:
        raise ConfigError(f"S3 prefix {uri!r}: {exc.message}") from None
    return bucket, prefix


def filter_listing(
    keys: Iterable[str],
    *,
    prefix: str = "",
    extensions: Collection[str] | None = None,
    glob: str | None = None,
) -> Iterator[str]:
    """The keys of an S3 listing worth separating, in listing order.

    Folder markers (keys ending in `/`) are skipped. `extensions` (`{"flac", ".WAV"}`) match the
    last suffix case-insensitively; `glob` is an `fnmatch` pattern matched, case-sensitively
    like S3 keys, against the key after `prefix` (`*` also crosses `/`).
    """
    wanted = {"." + ext.lower().lstrip(".") for ext in extensions} if extensions else None
    for key in keys:
        if key.endswith("/") or not key.startswith(prefix):
            continue
        name = key.rpartition("/")[2]
        suffix = "." + name.rpartition(".")[2].lower() if "." in name else ""
        if wanted is not None and suffix not in wanted:
            continue
        if glob is not None and not fnmatch.fnmatchcase(key[len(prefix) :], glob):
            continue
        yield key


def listing_rows(
    keys: Iterable[str],
    template: JobTemplate,
    *,
    bucket: str,
    prefix: str = "",
    extensions: Collection[str] | None = None,
    glob: str | None = None,
    start_line: int = 1,
) -> Iterator[ManifestItem]:
    """The filtered listing as rows numbered from `start_line`, each with the template's spec.

    S3 lists keys in lexicographic order, so the numbering is stable while the prefix does not
    change; to resume an interrupted listing, list after the last key read and pass the next
    line number.
    """
    matching = filter_listing(keys, prefix=prefix, extensions=extensions, glob=glob)
    for line, key in enumerate(matching, start=start_line):
        try:
            uri = format_s3_uri(bucket, key)
        except ConfigError as exc:
            raw = _truncate(key)
            yield RowRejection(line, raw, RejectionCode.INVALID_INPUT, f"input: {exc.message}")
            continue
        yield ManifestRow(
            line=line,
            input=uri,
            overrides={},
            model=template.model,
            params=template.params,
            priority=template.priority,
        )


# ---------------------------------------------------------------------------------------------
# CSV header and lines
# ---------------------------------------------------------------------------------------------


def _read_header(reader: Iterator[list[str]], lines: LineFeed) -> list[str]:
    """The header's column names (trimmed, lower case); `ManifestError` if it is unusable."""
    while True:  # skips leading blank lines; ends with the stream
        lines.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            raise ManifestError("the manifest is empty: expected a header row") from None
        except csv.Error as exc:
            message = f"the header (line {lines.record_line}) is not valid CSV: {exc}"
            raise ManifestError(message) from None
        if lines.problem is not None:
            raise ManifestError(f"the header: {lines.problem}")
        if any(cell.strip() for cell in cells):
            break
    header = [cell.strip().lower() for cell in cells]
    unnamed = [str(index) for index, name in enumerate(header, start=1) if not name]
    if unnamed:
        raise ManifestError(f"header column(s) {', '.join(unnamed)} have no name")
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise ManifestError(
            f"unknown column(s) {', '.join(map(repr, unknown))} in the header; "
            f"known columns: {', '.join(COLUMNS)}"
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ManifestError(f"column(s) {', '.join(map(repr, repeated))} appear more than once")
    if "input" not in header:
        raise ManifestError(f"the header has no 'input' column (got {', '.join(header)})")
    return header


def _line_feed(stream: IO[str] | IO[bytes]) -> LineFeed:
    """The CSV reader's lines, under this module's limits (read at call time, so tests can
    lower them)."""
    return LineFeed(stream, max_line_chars=MAX_LINE_CHARS, max_text_chars=MAX_REJECTED_TEXT_CHARS)


def _record_rejection(lines: LineFeed, code: RejectionCode, message: str) -> RowRejection:
    """A rejection of the CSV record `lines` last fed: its first line and raw text."""
    return RowRejection(lines.record_line, lines.raw_text, code, message)


def _truncate(text: str) -> str:
    return truncate(text, MAX_REJECTED_TEXT_CHARS)
