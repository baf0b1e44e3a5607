"""Pure: a manifest stream as numbered physical lines, for the readers in `manifest.py`.

`physical_lines` reads a text or byte stream one line at a time (so memory stays flat however
long the manifest is): bytes are decoded as UTF-8 and a leading BOM is dropped; a line that is
not UTF-8, or longer than the limit, comes with a problem instead of stopping the stream, and an
overlong line is skipped without being held. `LineFeed` hands those lines to `csv.reader`,
remembering which ones the current record used (a quoted record may span several), so a
rejection can name its first line and keep its raw text. The limits are arguments: the readers
pass the manifest's own (`manifest.MAX_LINE_CHARS`, `manifest.MAX_REJECTED_TEXT_CHARS`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

__all__ = ["LineFeed", "PhysicalLine", "physical_lines", "truncate"]

_LINE_END_ROOM = 2
"""A line may be this much longer than its limit: room for "\r\n"."""


@dataclass(frozen=True, slots=True)
class PhysicalLine:
    """One line of the stream, numbered from 1, and what is wrong with it (None if nothing)."""

    number: int
    text: str
    """With its line ending; "" for a line that was too long."""
    problem: str | None


def physical_lines(stream: IO[str] | IO[bytes], *, max_chars: int) -> Iterator[PhysicalLine]:
    """The stream's lines, decoded, BOM dropped, each at most `max_chars` long."""
    limit = max_chars + _LINE_END_ROOM
    first = stream.readline(limit)
    if isinstance(first, bytes):
        raw: Iterator[tuple[str, str | None]] = _decoded_lines(
            cast(IO[bytes], stream), first.removeprefix(b"\xef\xbb\xbf"), limit
        )
    else:
        raw = _text_lines(cast(IO[str], stream), first.removeprefix("\ufeff"), limit)
    for number, (text, problem) in enumerate(raw, start=1):
        yield PhysicalLine(number, text, None if problem is None else f"line {number} {problem}")


def _decoded_lines(stream: IO[bytes], first: bytes, limit: int) -> Iterator[tuple[str, str | None]]:
    line = first
    while line:
        if len(line) == limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
                pass  # the rest of an overlong line
            yield "\n", f"is longer than {limit - _LINE_END_ROOM} characters"
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
            yield "\n", f"is longer than {limit - _LINE_END_ROOM} characters"
        else:
            yield line, None
        line = stream.readline(limit)


class LineFeed:
    """Physical lines for `csv.reader`, remembering which ones the current record used."""

    def __init__(
        self, stream: IO[str] | IO[bytes], *, max_line_chars: int, max_text_chars: int
    ) -> None:
        self._lines = physical_lines(stream, max_chars=max_line_chars)
        self._max_text_chars = max_text_chars
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
        if self._raw_chars < self._max_text_chars:
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
        return truncate("".join(self._raw).rstrip("\r\n"), self._max_text_chars)


def truncate(text: str, max_chars: int) -> str:
    """`text`, cut to `max_chars` with a closing "…" if longer (rejected text is stored)."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "…"
