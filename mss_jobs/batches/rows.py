"""Pure: one batch row — its column values — as an accepted `ManifestRow` or a `RowRejection`.

The readers in `manifest.py` turn each line (a CSV record, a JSON object, a listed key) into a
mapping of column values; `RowBuilder` validates it against the batch's `JobTemplate`: the input
URI, each column alone (so a message names the column), then the combined spec (the model's
stems, derived stems). The columns and their formats are described in `manifest.py`. Rows repeat
their specs, so resolved specs are cached. Torch-free: the API runs this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from mss_jobs.domain.lifecycle import MAX_PRIORITY, MIN_PRIORITY
from mss_jobs.domain.params import JobParams, parse_params
from mss_jobs.domain.validation import describe_validation_error
from mss_jobs.errors import ConfigError, UnknownModelError
from mss_jobs.models.catalog import get_model_info
from mss_jobs.storage.uri import FileUri, parse_uri

__all__ = [
    "COLUMNS",
    "MAX_INPUT_CHARS",
    "MAX_REF_CHARS",
    "JobTemplate",
    "ManifestItem",
    "ManifestRow",
    "RejectionCode",
    "RowBuilder",
    "RowRejection",
    "json_type",
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

MAX_INPUT_CHARS = 2048
MAX_REF_CHARS = 255

_LIST_SEPARATOR = re.compile(r"[;,]")
_DIGITS = re.compile(r"[0-9]+")
_RESOLVED_CACHE_SIZE = 1024


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


class RowBuilder:
    """Validates one row's values against the template; caches resolved specs (rows repeat)."""

    def __init__(self, template: JobTemplate, *, allow_file_uris: bool) -> None:
        self.template = template
        self.allow_file_uris = allow_file_uris
        self._resolved: dict[tuple[str, str], tuple[str, Mapping[str, Any]] | _Refusal] = {}

    def build(
        self, *, line: int, raw: str, values: Mapping[str, Any], from_csv: bool
    ) -> ManifestItem:
        """`values` are the row's set cells by column (`input` included); `raw` is the text a
        rejection keeps. CSV cells are still text (`from_csv`): lists and numbers are parsed."""

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
            return f"expected a URI string, got {json_type(target)}"
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
            return _Invalid(f"expected a list of strings, got {json_type(value)}")
    elif column in _INT_COLUMNS:
        if from_csv:
            if not _DIGITS.fullmatch(value):
                return _Invalid(f"expected a whole number, got {value!r}")
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            shown = repr(value) if isinstance(value, float) else json_type(value)
            return _Invalid(f"expected a whole number, got {shown}")
    elif not isinstance(value, str):
        return _Invalid(f"expected a string, got {json_type(value)}")

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
        return _Invalid(describe_validation_error(exc, describe=_message_only))
    return value


def _message_only(error: ErrorDetails, _field: str) -> str:
    """A cell's problem: the column is named already, so the message alone."""
    return error["msg"]


def json_type(value: object) -> str:
    """How a message names a JSON value's type ("an array", "null")."""
    names = {
        str: "a string",
        list: "an array",
        dict: "an object",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }
    return names.get(type(value), "null" if value is None else type(value).__name__)
