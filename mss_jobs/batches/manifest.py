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
"""

from __future__ import annotations

import csv
import fnmatch
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any, Final, cast

from pydantic import ValidationError

from mss_jobs.db.models import MAX_PRIORITY, MIN_PRIORITY
from mss_jobs.errors import ConfigError, UnknownModelError
from mss_jobs.models.catalog import get_model_info
from mss_jobs.storage.uri import (
    FileUri,
    format_s3_uri,
    parse_uri,
    validate_bucket_name,
)
from workers.params import JobParams, parse_params

__all__ = [
    "COLUMNS",
    "MAX_INPUT_CHARS",
    "MAX_LINE_CHARS",
    "MAX_REF_CHARS",
    "MAX_REJECTED_TEXT_CHARS",
    "JobTemplate",
    "ManifestError",
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

COLUMNS: Final = (
    "input",
    "model",
    "stems",
    "format",
    "bit_depth",
    "sample_rate",
    "priority",
    "derive",
    "ref",
)
_PARAM_KEYS: Final = {
    "stems": "stems",
    "format": "format",
    "bit_depth": "bit_depth",
    "sample_rate": "sample_rate",
    "derive": "derived",
}
"""Override columns that are job params, and their key in the params."""
_LIST_COLUMNS: Final = frozenset({"stems", "derive"})
_INT_COLUMNS: Final = frozenset({"bit_depth", "sample_rate", "priority"})

MAX_LINE_CHARS = 64 * 1024
MAX_INPUT_CHARS = 2048
MAX_REF_CHARS = 255
MAX_REJECTED_TEXT_CHARS = 2000
"""A rejected row keeps at most this much of its raw text (it is stored and reported)."""

_LIST_SEPARATOR = re.compile(r"[;,]")
_DIGITS = re.compile(r"[0-9]+")
_RESOLVED_CACHE_SIZE = 1024


class ManifestError(ConfigError):
    """The manifest as a whole cannot be read (no header, unknown or missing columns)."""

    code = "manifest.invalid"


class RejectionCode(StrEnum):
    """Why one row was refused (stored with it and reported)."""

    MALFORMED_ROW = "manifest.malformed_row"
    """The row cannot be read: bad CSV quoting, too many cells, bad JSON, not UTF-8, too long."""
    MISSING_INPUT = "manifest.missing_input"
    INVALID_INPUT = "manifest.invalid_input"
    UNKNOWN_COLUMN = "manifest.unknown_column"
    """A JSON row has a key that is not a column (a CSV header fails the whole manifest)."""
    INVALID_VALUE = "manifest.invalid_value"
    UNKNOWN_MODEL = "manifest.unknown_model"


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """The batch's job spec every row starts from: model, effective params, priority.

    Build it with `JobTemplate.build`, which validates it the way rows are validated; rows
    without overrides share its `params` object.
    """

    model: str
    params: Mapping[str, Any]
    priority: int

    @classmethod
    def build(cls, *, model: str, params: Mapping[str, Any], priority: int = 5) -> JobTemplate:
        """Validate the batch's spec and fill in defaults; `ConfigError` names the field."""
        try:
            info = get_model_info(model)
        except UnknownModelError as exc:
            raise UnknownModelError(f"model: {exc}") from None
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ConfigError(f"priority: {priority} is not in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
        effective = parse_params(params).model_dump(mode="json")
        problem = _stems_problem(info.stems, effective, model=model)
        if problem is not None:
            raise ConfigError(f"stems: {problem}")
        return cls(model=model, params=effective, priority=priority)


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """An accepted row: what to separate and the effective spec (template + overrides)."""

    line: int
    input: str
    overrides: Mapping[str, Any]
    """The columns this row set, typed (lists as lists, numbers as ints), by column name."""
    model: str
    params: Mapping[str, Any]
    priority: int
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class RowRejection:
    """A refused row: its line, its raw text (truncated), a `RejectionCode` and why."""

    line: int
    input_text: str
    code: str
    message: str


ManifestItem = ManifestRow | RowRejection


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def read_csv(
    stream: IO[str] | IO[bytes], template: JobTemplate, *, allow_file_uris: bool = False
) -> Iterator[ManifestItem]:
    """Rows of a CSV manifest with a header row (comma-separated, RFC 4180 quoting)."""
    lines = _LineFeed(stream)
    reader = csv.reader(lines, strict=True)
    header = _read_header(reader, lines)
    rows = _RowBuilder(template, allow_file_uris=allow_file_uris)
    while True:
        lines.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield lines.rejection(RejectionCode.MALFORMED_ROW, f"not valid CSV: {exc}")
            continue
        if lines.problem is not None:
            yield lines.rejection(RejectionCode.MALFORMED_ROW, lines.problem)
            continue
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        extra = [cell for cell in cells[len(header) :] if cell.strip()]
        if extra:
            message = f"the row has {len(cells)} cells but the header names {len(header)} columns"
            yield lines.rejection(RejectionCode.MALFORMED_ROW, message)
            continue
        values = {
            name: cell.strip() for name, cell in zip(header, cells, strict=False) if cell.strip()
        }
        yield rows.build(line=lines.record_line, raw=lines.raw_text, values=values, from_csv=True)


def read_jsonl(
    stream: IO[str] | IO[bytes], template: JobTemplate, *, allow_file_uris: bool = False
) -> Iterator[ManifestItem]:
    """Rows of a JSON Lines manifest: one JSON object (or input URI string) per line."""
    rows = _RowBuilder(template, allow_file_uris=allow_file_uris)
    for line in _physical_lines(stream):
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
    rows = _RowBuilder(template, allow_file_uris=allow_file_uris)
    for line, item in enumerate(items, start=1):
        raw = _truncate(json.dumps(item, ensure_ascii=False, default=repr))
        yield _json_item(rows, line=line, raw=raw, item=item)


def _json_item(rows: _RowBuilder, *, line: int, raw: str, item: object) -> ManifestItem:
    if isinstance(item, str):
        item = {"input": item}
    if not isinstance(item, dict):
        message = f"expected a JSON object or an input URI string, got {_json_type(item)}"
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


def _json_type(value: object) -> str:
    names = {
        str: "a string",
        list: "an array",
        dict: "an object",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }
    return names.get(type(value), "null" if value is None else type(value).__name__)


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
# one row: values → overrides → effective spec
# ---------------------------------------------------------------------------------------------


class _RowBuilder:
    """Validates one row's values against the template; caches resolved specs (rows repeat)."""

    def __init__(self, template: JobTemplate, *, allow_file_uris: bool) -> None:
        self.template = template
        self.allow_file_uris = allow_file_uris
        self._resolved: dict[tuple[str, str], tuple[str, Mapping[str, Any]] | _Refusal] = {}

    def build(
        self, *, line: int, raw: str, values: Mapping[str, Any], from_csv: bool
    ) -> ManifestItem:
        def reject(code: RejectionCode, message: str) -> RowRejection:
            return RowRejection(line=line, input_text=raw, code=code, message=message)

        target = values.get("input")
        if target is None or (isinstance(target, str) and not target.strip()):
            return reject(RejectionCode.MISSING_INPUT, "input: missing (every row needs one)")
        problem = self._input_problem(target)
        if problem is not None:
            return reject(RejectionCode.INVALID_INPUT, f"input: {problem}")
        assert isinstance(target, str)

        overrides: dict[str, Any] = {}
        for column, value in values.items():
            if column == "input":
                continue
            typed = _typed(column, value, from_csv=from_csv)
            if isinstance(typed, _Invalid):
                return reject(RejectionCode.INVALID_VALUE, f"{column}: {typed.message}")
            overrides[column] = typed

        resolved = self._resolve(overrides)
        if isinstance(resolved, _Refusal):
            return reject(resolved.code, resolved.message)
        model, params = resolved
        return ManifestRow(
            line=line,
            input=target,
            overrides=overrides,
            model=model,
            params=params,
            priority=overrides.get("priority", self.template.priority),
            ref=overrides.get("ref"),
        )

    def _input_problem(self, target: object) -> str | None:
        if not isinstance(target, str):
            return f"expected a URI string, got {_json_type(target)}"
        if len(target) > MAX_INPUT_CHARS:
            return f"longer than {MAX_INPUT_CHARS} characters"
        try:
            parsed = parse_uri(target)
        except ConfigError as exc:
            return exc.message
        if isinstance(parsed, FileUri) and not self.allow_file_uris:
            return f"expected s3://bucket/key, got {target!r}"
        return None

    def _resolve(self, overrides: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | _Refusal:
        """The row's model and effective params (the template's own object when unchanged)."""
        template = self.template
        model = overrides.get("model", template.model)
        changes = {_PARAM_KEYS[c]: v for c, v in overrides.items() if c in _PARAM_KEYS}
        if model == template.model and not changes:
            return template.model, template.params
        key = (model, json.dumps(changes, sort_keys=True))
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolved[key] = _resolve_spec(template, model, changes, overrides)
            if len(self._resolved) > _RESOLVED_CACHE_SIZE:
                self._resolved.pop(next(iter(self._resolved)))  # the oldest
        return resolved


@dataclass(frozen=True, slots=True)
class _Refusal:
    code: RejectionCode
    message: str


def _resolve_spec(
    template: JobTemplate, model: str, changes: Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[str, Mapping[str, Any]] | _Refusal:
    """(model, effective params), or why not, naming the offending column."""
    try:
        info = get_model_info(model)
    except UnknownModelError as exc:
        return _Refusal(RejectionCode.UNKNOWN_MODEL, f"model: {exc.message}")
    try:
        params = parse_params({**template.params, **changes}).model_dump(mode="json")
    except ConfigError as exc:  # each column passed alone: a combination's fault
        return _Refusal(RejectionCode.INVALID_VALUE, exc.message)
    problem = _stems_problem(info.stems, params, model=model)
    if problem is not None:
        column = next((c for c in ("stems", "derive", "model") if c in overrides), "model")
        return _Refusal(RejectionCode.INVALID_VALUE, f"{column}: {problem}")
    return model, params


def _stems_problem(
    model_stems: tuple[str, ...], params: Mapping[str, Any], *, model: str
) -> str | None:
    """Requested stems the model cannot deliver (neither its own nor a derived one's name)."""
    requested = params.get("stems")
    if not requested:
        return None
    derived = [rule.partition("=")[0].strip() for rule in params.get("derived") or ()]
    available = [*model_stems, *derived]
    unknown = [stem for stem in requested if stem not in available]
    if not unknown:
        return None
    return (
        f"model {model!r} has no stem(s) {', '.join(map(repr, unknown))}; "
        f"available: {', '.join(map(repr, available))}"
    )


@dataclass(frozen=True, slots=True)
class _Invalid:
    message: str


def _typed(column: str, value: Any, *, from_csv: bool) -> Any:
    """A column's value as the spec takes it, or `_Invalid` saying what is wrong."""
    if column in _LIST_COLUMNS:
        if from_csv:
            value = [item.strip() for item in _LIST_SEPARATOR.split(value) if item.strip()]
        elif not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            return _Invalid(f"expected a list of strings, got {_json_type(value)}")
    elif column in _INT_COLUMNS:
        if from_csv:
            if not _DIGITS.fullmatch(value):
                return _Invalid(f"expected a whole number, got {value!r}")
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            shown = repr(value) if isinstance(value, float) else _json_type(value)
            return _Invalid(f"expected a whole number, got {shown}")
    elif not isinstance(value, str):
        return _Invalid(f"expected a string, got {_json_type(value)}")

    if column == "stems" and not value:
        return _Invalid("names no stem (leave it empty to deliver the model's stems)")
    if column == "priority":
        if not MIN_PRIORITY <= value <= MAX_PRIORITY:
            return _Invalid(f"{value} is not in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
    elif column == "ref":
        if len(value) > MAX_REF_CHARS:
            return _Invalid(f"longer than {MAX_REF_CHARS} characters")
    elif column in _PARAM_KEYS:
        return _checked_param(_PARAM_KEYS[column], value)
    return value


def _checked_param(key: str, value: Any) -> Any:
    """`value` if the job params accept it for `key` alone, else `_Invalid` with the reason."""
    try:
        JobParams.model_validate_json(json.dumps({key: value}))
    except ValidationError as exc:
        return _Invalid("; ".join(error["msg"] for error in exc.errors()))
    return value


# ---------------------------------------------------------------------------------------------
# lines
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: str
    """With its line ending; "" for a line that was too long."""
    problem: str | None


def _physical_lines(stream: IO[str] | IO[bytes]) -> Iterator[_Line]:
    """The stream's lines, decoded, BOM dropped, each at most `MAX_LINE_CHARS` long."""
    limit = MAX_LINE_CHARS + 2  # room for "\r\n"
    first = stream.readline(limit)
    if isinstance(first, bytes):
        raw: Iterator[tuple[str, str | None]] = _decoded_lines(
            cast(IO[bytes], stream), first.removeprefix(b"\xef\xbb\xbf"), limit
        )
    else:
        raw = _text_lines(cast(IO[str], stream), first.removeprefix("\ufeff"), limit)
    for number, (text, problem) in enumerate(raw, start=1):
        yield _Line(number, text, None if problem is None else f"line {number} {problem}")


def _decoded_lines(stream: IO[bytes], first: bytes, limit: int) -> Iterator[tuple[str, str | None]]:
    line = first
    while line:
        if len(line) == limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
                pass  # the rest of an overlong line
            yield "\n", f"is longer than {MAX_LINE_CHARS} characters"
        else:
            try:
                yield line.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                problem = f"is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                yield line.decode("utf-8", errors="replace"), problem
        line = stream.readline(limit)


def _text_lines(stream: IO[str], first: str, limit: int) -> Iterator[tuple[str, str | None]]:
    line = first
    while line:
        if len(line) == limit and not line.endswith("\n"):
            while (rest := stream.readline(limit)) and not rest.endswith("\n"):
                pass
            yield "\n", f"is longer than {MAX_LINE_CHARS} characters"
        else:
            yield line, None
        line = stream.readline(limit)


class _LineFeed:
    """Physical lines for `csv.reader`, remembering which ones the current record used."""

    def __init__(self, stream: IO[str] | IO[bytes]) -> None:
        self._lines = _physical_lines(stream)
        self.record_line = 0
        self.problem: str | None = None
        self._raw: list[str] = []
        self._raw_chars = 0
        self._next_line = 1

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        if line.problem is not None and self.problem is None:
            self.problem = line.problem
        if self._raw_chars < MAX_REJECTED_TEXT_CHARS:
            self._raw.append(line.text)
        self._raw_chars += len(line.text) or 1
        self._next_line = line.number + 1
        return line.text

    def start_record(self) -> None:
        self.record_line = self._next_line
        self.problem = None
        self._raw = []
        self._raw_chars = 0

    @property
    def raw_text(self) -> str:
        return _truncate("".join(self._raw).rstrip("\r\n"))

    def rejection(self, code: RejectionCode, message: str) -> RowRejection:
        return RowRejection(self.record_line, self.raw_text, code, message)


def _read_header(reader: Iterator[list[str]], lines: _LineFeed) -> list[str]:
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


def _truncate(text: str) -> str:
    if len(text) <= MAX_REJECTED_TEXT_CHARS:
        return text
    return text[: MAX_REJECTED_TEXT_CHARS - 1] + "…"
