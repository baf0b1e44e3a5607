"""Manifest readers: every rejection path with its line number, streaming, S3 listings."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mss_jobs.batches import manifest
from mss_jobs.batches.manifest import (
    JobTemplate,
    ManifestRow,
    RejectionCode,
    RowRejection,
    filter_listing,
    listing_rows,
    parse_s3_prefix,
    read_csv,
    read_json_rows,
    read_jsonl,
)
from mss_jobs.domain.params import parse_params
from mss_jobs.errors import ConfigError, ManifestError, UnknownModelError

TEMPLATE = JobTemplate.build(model="dsp-hpss", params={"format": "flac"}, priority=4)


def csv_items(text: str, **options: Any) -> list[ManifestRow | RowRejection]:
    return list(read_csv(io.BytesIO(text.encode("utf-8")), TEMPLATE, **options))


def jsonl_items(text: str) -> list[ManifestRow | RowRejection]:
    return list(read_jsonl(io.BytesIO(text.encode("utf-8")), TEMPLATE))


def rejection(item: object) -> RowRejection:
    assert isinstance(item, RowRejection), item
    return item


def accepted(item: object) -> ManifestRow:
    assert isinstance(item, ManifestRow), item
    return item


def summary(items: list[ManifestRow | RowRejection]) -> list[tuple[int, str]]:
    """(line, input) for rows, (line, code) for rejections."""
    return [
        (item.line, item.input) if isinstance(item, ManifestRow) else (item.line, item.code)
        for item in items
    ]


# -- the template ------------------------------------------------------------------------------


def test_template_fills_in_the_default_params() -> None:
    assert TEMPLATE.model == "dsp-hpss"
    assert TEMPLATE.priority == 4
    assert TEMPLATE.params == parse_params({"format": "flac"}).model_dump(mode="json")


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"model": "demucs-9000"}, UnknownModelError, "model: unknown model 'demucs-9000'"),
        ({"params": {"format": "ogg"}}, ConfigError, "format"),
        ({"params": {"colour": "red"}}, ConfigError, "colour"),
        ({"priority": 10}, ConfigError, "priority: 10"),
        ({"params": {"stems": ["vocals"]}}, ConfigError, "stems: .*'vocals'"),
    ],
)
def test_template_refuses_a_bad_spec_naming_the_field(
    arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    spec: dict[str, Any] = {"model": "dsp-hpss", "params": {}, "priority": 5}
    with pytest.raises(error, match=match):
        JobTemplate.build(**{**spec, **arguments})


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_rows_carry_their_overrides_and_effective_spec() -> None:
    items = csv_items(
        "input,model,stems,format,bit_depth,sample_rate,priority,derive,ref\n"
        "s3://bucket/a.flac,,,,,,,,\n"
        "s3://bucket/b.flac,identity,mixture;low,wav,24,48000,9,low=mixture-mixture,cat-7\n"
        's3://bucket/c.flac,,"harmonic, percussive",,,,0,,\n'
    )
    plain, custom, listed = (accepted(item) for item in items)
    assert (plain.line, plain.input, plain.overrides, plain.ref) == (
        2,
        "s3://bucket/a.flac",
        {},
        None,
    )
    assert plain.params is TEMPLATE.params  # shared: the intake sends it once
    assert (plain.model, plain.priority) == ("dsp-hpss", 4)
    assert custom.overrides == {
        "model": "identity",
        "stems": ["mixture", "low"],
        "format": "wav",
        "bit_depth": 24,
        "sample_rate": 48000,
        "priority": 9,
        "derive": ["low=mixture-mixture"],
        "ref": "cat-7",
    }
    assert (custom.model, custom.priority, custom.ref) == ("identity", 9, "cat-7")
    expected = {
        **TEMPLATE.params,
        "stems": ["mixture", "low"],
        "format": "wav",
        "bit_depth": 24,
        "sample_rate": 48000,
        "derived": ["low=mixture-mixture"],
    }
    assert custom.params == parse_params(expected).model_dump(mode="json")
    assert listed.params["stems"] == ["harmonic", "percussive"]
    assert listed.priority == 0


def test_csv_bom_crlf_quoting_and_blank_lines_keep_physical_line_numbers() -> None:
    text = (
        "\ufeffInput , Ref\r\n"  # header names are trimmed and case-insensitive
        "\r\n"
        '"s3://bucket/with,comma.flac","a ""quoted"" ref"\r\n'
        ",\r\n"  # all cells empty: a blank line
        '"s3://bucket/multi.flac","two\r\nlines"\r\n'
        "s3://bucket/after.flac\r\n"
    )
    items = csv_items(text)
    assert summary(items) == [
        (3, "s3://bucket/with,comma.flac"),
        (5, "s3://bucket/multi.flac"),
        (7, "s3://bucket/after.flac"),
    ]
    assert accepted(items[0]).ref == 'a "quoted" ref'
    assert accepted(items[1]).ref == "two\r\nlines"


def test_csv_reads_text_streams_too() -> None:
    stream = io.StringIO("\ufeffinput\ns3://bucket/a.flac\n", newline="")
    assert summary(list(read_csv(stream, TEMPLATE))) == [(2, "s3://bucket/a.flac")]


@pytest.mark.parametrize(
    ("row", "code", "message"),
    [
        (",3", RejectionCode.MISSING_INPUT, "input: missing"),
        ("ftp://host/a.flac,", RejectionCode.INVALID_INPUT, "input: .*scheme 'ftp'"),
        ("s3://bucket,", RejectionCode.INVALID_INPUT, "input: .*no object key"),
        ("s3://Bad_Bucket/a.flac,", RejectionCode.INVALID_INPUT, "input: .*bucket name"),
        ("file:///data/a.flac,", RejectionCode.INVALID_INPUT, "expected s3://bucket/key"),
        ("tracks/a.flac,", RejectionCode.INVALID_INPUT, "input: "),
        ("s3://bucket/a.flac,12", RejectionCode.INVALID_VALUE, r"priority: 12 is not in \[0, 9\]"),
        ("s3://bucket/a.flac,high", RejectionCode.INVALID_VALUE, "priority: expected a whole"),
        ("s3://bucket/a.flac,-1", RejectionCode.INVALID_VALUE, "priority: expected a whole"),
        ("s3://bucket/a.flac,,ogg", RejectionCode.INVALID_VALUE, "format: Input should be"),
        ("s3://bucket/a.flac,,,20", RejectionCode.INVALID_VALUE, "bit_depth: Input should be"),
        ("s3://bucket/a.flac,,,,0", RejectionCode.INVALID_VALUE, "sample_rate: .*greater than"),
        ("s3://bucket/a.flac,,,,4.8e4", RejectionCode.INVALID_VALUE, "sample_rate: expected"),
        ("s3://bucket/a.flac,,,,,nope", RejectionCode.UNKNOWN_MODEL, "model: unknown model"),
        ("s3://bucket/a.flac,,,,,,vocals", RejectionCode.INVALID_VALUE, "stems: .*'vocals'"),
        ("s3://bucket/a.flac,,,,,,;", RejectionCode.INVALID_VALUE, "stems: names no stem"),
        ("s3://bucket/a.flac,,,,,identity", RejectionCode.INVALID_VALUE, "model: .*'harmonic'"),
        ("s3://bucket/a.flac,,,,,,,,x" + "r" * 255, RejectionCode.INVALID_VALUE, "ref: longer"),
    ],
)
def test_a_bad_row_is_rejected_with_its_line_and_column_and_the_rest_proceed(
    row: str, code: RejectionCode, message: str
) -> None:
    template = JobTemplate.build(model="dsp-hpss", params={"stems": ["harmonic"]})
    text = (
        "input,priority,format,bit_depth,sample_rate,model,stems,derive,ref\n"
        "s3://bucket/before.flac\n"
        f"{row}\n"
        "s3://bucket/after.flac\n"
    )
    items = list(read_csv(io.BytesIO(text.encode()), template))
    assert [item.line for item in items] == [2, 3, 4]
    assert isinstance(items[0], ManifestRow)
    assert isinstance(items[2], ManifestRow)
    bad = rejection(items[1])
    assert bad.code == code
    assert bad.input_text == row
    assert re.search(message, bad.message), bad.message


def test_file_uris_are_accepted_where_local_storage_is_used() -> None:
    items = csv_items("input\nfile:///data/a.flac\n", allow_file_uris=True)
    assert summary(items) == [(2, "file:///data/a.flac")]


def test_stems_named_by_a_derived_rule_are_available() -> None:
    items = csv_items(
        "input,stems,derive\n"
        "s3://bucket/a.flac,harmonic;drumless,drumless=mixture-percussive\n"
        "s3://bucket/b.flac,drumless,\n"
    )
    assert accepted(items[0]).params["derived"] == ["drumless=mixture-percussive"]
    assert rejection(items[1]).message.startswith("stems: model 'dsp-hpss' has no stem(s)")


def test_csv_structure_errors_reject_only_their_record() -> None:
    text = (
        "input,ref\n"
        "s3://bucket/a.flac,one,extra\n"  # a cell too many
        "s3://bucket/b.flac,two,,\n"  # empty trailing cells are fine
        '"s3://bucket/c.flac"x,three\n'  # text after a closing quote
        "s3://bucket/d.flac\n"  # cells missing at the end are empty
        "s3://bucket/e\x00.flac,five\n"
        's3://bucket/f.flac,"never closed\n'
    )
    items = csv_items(text)
    assert summary(items) == [
        (2, RejectionCode.MALFORMED_ROW),
        (3, "s3://bucket/b.flac"),
        (4, RejectionCode.MALFORMED_ROW),
        (5, "s3://bucket/d.flac"),
        (6, RejectionCode.INVALID_INPUT),  # csv reads NUL; an S3 key may not hold one
        (7, RejectionCode.MALFORMED_ROW),
    ]
    assert rejection(items[0]).message == "the row has 3 cells but the header names 2 columns"
    assert rejection(items[0]).input_text == "s3://bucket/a.flac,one,extra"
    assert "',' expected after '\"'" in rejection(items[2]).message
    assert "NUL" in rejection(items[4]).message
    assert "unexpected end of data" in rejection(items[5]).message


def test_a_line_that_is_not_utf8_rejects_its_row() -> None:
    data = b"input\ns3://bucket/a.flac\ns3://bucket/\xff\xfe.flac\ns3://bucket/c.flac\n"
    items = list(read_csv(io.BytesIO(data), TEMPLATE))
    assert summary(items) == [
        (2, "s3://bucket/a.flac"),
        (3, RejectionCode.MALFORMED_ROW),
        (4, "s3://bucket/c.flac"),
    ]
    assert rejection(items[1]).message.startswith("line 3 is not valid UTF-8")
    assert rejection(items[1]).input_text == "s3://bucket/\ufffd\ufffd.flac"


@pytest.mark.parametrize("binary", [True, False])
def test_an_overlong_line_rejects_its_row_without_being_held(
    monkeypatch: pytest.MonkeyPatch, binary: bool
) -> None:
    monkeypatch.setattr(manifest, "MAX_LINE_CHARS", 40)
    text = "input\ns3://bucket/a.flac\ns3://bucket/" + "x" * 200 + ".flac\ns3://bucket/c.flac\n"
    stream = io.BytesIO(text.encode()) if binary else io.StringIO(text)
    items = list(read_csv(stream, TEMPLATE))
    assert summary(items) == [
        (2, "s3://bucket/a.flac"),
        (3, RejectionCode.MALFORMED_ROW),
        (4, "s3://bucket/c.flac"),
    ]
    assert rejection(items[1]).message == "line 3 is longer than 40 characters"


def test_a_rejected_rows_text_is_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "MAX_REJECTED_TEXT_CHARS", 20)
    items = csv_items("input,ref\n" + "ftp://" + "y" * 100 + ",r\n")
    assert rejection(items[0]).input_text == "ftp://" + "y" * 13 + "…"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("input,colour,size\ns3://bucket/a.flac,red,3\n", "unknown column.*'colour', 'size'"),
        ("model,ref\ndsp-hpss,x\n", "no 'input' column"),
        ("input,ref,Ref\n", "'ref' appear more than once"),
        ("input,,ref\n", "column.* 2 have no name"),
        ('"input\n', "header.*not valid CSV"),
    ],
)
def test_a_bad_header_fails_the_whole_manifest(text: str, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        csv_items(text)


class CountingStream(io.BytesIO):
    """Counts the lines read, to prove rows are yielded before the rest is read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.lines_read = 0

    def readline(self, size: int | None = -1) -> bytes:
        self.lines_read += 1
        return super().readline(size)


@pytest.mark.parametrize("reader", [read_csv, read_jsonl])
def test_readers_stream(reader: Any) -> None:
    jsonl = reader is read_jsonl
    lines = [json.dumps(f"s3://bucket/{i}") if jsonl else f"s3://bucket/{i}" for i in range(10_000)]
    stream = CountingStream("\n".join(lines if jsonl else ["input", *lines]).encode())
    items = reader(stream, TEMPLATE)
    next(items)
    assert stream.lines_read <= 3
    assert sum(1 for _ in items) == 9_999


# -- JSONL and JSON ----------------------------------------------------------------------------


def test_jsonl_rows_and_every_rejection_with_its_line() -> None:
    text = "\r\n".join(
        [
            '\ufeff{"input": "s3://bucket/a.flac", "format": "wav", "ref": "x", "model": null}',
            '"s3://bucket/b.flac"',
            "   ",
            '{"input": "s3://bucket/c.flac", "priority": 3,}',
            '["s3://bucket/d.flac"]',
            '{"input": "s3://bucket/e.flac", "colour": "red"}',
            '{"input": "s3://bucket/f.flac", "bit_depth": "24"}',
            '{"input": "s3://bucket/g.flac", "stems": "harmonic"}',
            '{"input": "s3://bucket/h.flac", "priority": true}',
            '{"input": "s3://bucket/h.flac", "priority": 2.5}',
            '{"input": "s3://bucket/h.flac", "stems": []}',
            '{"ref": "no input"}',
            '{"input": 7}',
            '{"input": "s3://bucket/i.flac", "stems": ["harmonic"], "derive": []}',
        ]
    )
    items = jsonl_items(text)
    assert summary(items) == [
        (1, "s3://bucket/a.flac"),
        (2, "s3://bucket/b.flac"),
        (4, RejectionCode.MALFORMED_ROW),
        (5, RejectionCode.MALFORMED_ROW),
        (6, RejectionCode.UNKNOWN_COLUMN),
        (7, RejectionCode.INVALID_VALUE),
        (8, RejectionCode.INVALID_VALUE),
        (9, RejectionCode.INVALID_VALUE),
        (10, RejectionCode.INVALID_VALUE),
        (11, RejectionCode.INVALID_VALUE),
        (12, RejectionCode.MISSING_INPUT),
        (13, RejectionCode.INVALID_INPUT),
        (14, "s3://bucket/i.flac"),
    ]
    first = accepted(items[0])
    assert (first.overrides, first.params["format"], first.ref) == (
        {"format": "wav", "ref": "x"},
        "wav",
        "x",
    )
    messages = [rejection(item).message for item in items[2:12]]
    assert messages[0].startswith("not valid JSON: ")
    assert messages[1] == "expected a JSON object or an input URI string, got an array"
    assert messages[2].startswith("unknown column(s) 'colour'")
    assert messages[3] == "bit_depth: expected a whole number, got a string"
    assert messages[4] == "stems: expected a list of strings, got a string"
    assert messages[5] == "priority: expected a whole number, got a boolean"
    assert messages[6] == "priority: expected a whole number, got 2.5"
    assert messages[7].startswith("stems: names no stem")
    assert messages[8] == "input: missing (every row needs one)"
    assert rejection(items[2]).input_text == '{"input": "s3://bucket/c.flac", "priority": 3,}'
    assert messages[9] == "input: expected a URI string, got a number"


def test_jsonl_invalid_utf8_rejects_its_line() -> None:
    items = list(read_jsonl(io.BytesIO(b'"s3://bucket/a"\n"s3://bucket/\xc3"\n'), TEMPLATE))
    assert summary(items) == [(1, "s3://bucket/a"), (2, RejectionCode.MALFORMED_ROW)]


def test_json_rows_are_numbered_from_one() -> None:
    body = json.loads('["s3://bucket/a.flac", {"input": "s3://bucket/b.flac", "priority": 1}, 5]')
    items = list(read_json_rows(body, TEMPLATE))
    assert summary(items) == [
        (1, "s3://bucket/a.flac"),
        (2, "s3://bucket/b.flac"),
        (3, RejectionCode.MALFORMED_ROW),
    ]
    assert accepted(items[1]).priority == 1
    assert rejection(items[2]).input_text == "5"


def test_equal_overrides_resolve_to_one_shared_params_object() -> None:
    body = [{"input": f"s3://bucket/{i}.flac", "format": "wav"} for i in range(3)]
    rows = [accepted(item) for item in read_json_rows(body, TEMPLATE)]
    assert rows[0].params is rows[1].params is rows[2].params
    assert rows[0].params is not TEMPLATE.params


# -- S3 listings -------------------------------------------------------------------------------


def test_parse_s3_prefix() -> None:
    assert parse_s3_prefix("s3://bucket/tracks/2024/") == ("bucket", "tracks/2024/")
    assert parse_s3_prefix("s3://bucket") == ("bucket", "")
    with pytest.raises(ConfigError, match="bucket name"):
        parse_s3_prefix("s3://B/x")
    with pytest.raises(ConfigError, match="not an s3:// prefix"):
        parse_s3_prefix("gs://bucket/x")


KEYS = [
    "tracks/",
    "tracks/a.FLAC",
    "tracks/a.flac.txt",
    "tracks/album/b.wav",
    "tracks/album/",
    "tracks/c.mp3",
    "tracks/.flac",
    "tracks/noext",
    "other/d.flac",
]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {},
            [
                "tracks/a.FLAC",
                "tracks/a.flac.txt",
                "tracks/album/b.wav",
                "tracks/c.mp3",
                "tracks/.flac",
                "tracks/noext",
            ],
        ),
        ({"extensions": {"flac", ".WAV"}}, ["tracks/a.FLAC", "tracks/album/b.wav", "tracks/.flac"]),
        ({"glob": "album/*"}, ["tracks/album/b.wav"]),
        ({"glob": "*.mp3"}, ["tracks/c.mp3"]),
        ({"glob": "*.flac"}, ["tracks/.flac"]),  # case-sensitive, like S3 keys
        ({"extensions": ["flac"], "glob": "a*"}, ["tracks/a.FLAC"]),
    ],
)
def test_filter_listing(options: dict[str, Any], expected: list[str]) -> None:
    assert list(filter_listing(KEYS, prefix="tracks/", **options)) == expected


def test_listing_rows_are_numbered_and_carry_the_template() -> None:
    keys = ["t/a.flac", "t/b.txt", "t/" + "k" * 1100 + ".flac", "t/c.flac"]
    items = list(
        listing_rows(
            keys, TEMPLATE, bucket="bucket", prefix="t/", extensions={"flac"}, start_line=11
        )
    )
    assert summary(items) == [
        (11, "s3://bucket/t/a.flac"),
        (12, RejectionCode.INVALID_INPUT),
        (13, "s3://bucket/t/c.flac"),
    ]
    row = accepted(items[0])
    assert (row.model, row.params, row.priority, row.overrides) == (
        TEMPLATE.model,
        TEMPLATE.params,
        TEMPLATE.priority,
        {},
    )
    assert "longer than 1024 bytes" in rejection(items[1]).message


# -- scale -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_parsing_100k_csv_rows() -> None:
    """The manifest's share of the intake benchmark (printed, not asserted)."""

    def lines() -> Iterator[bytes]:
        yield b"input,priority,ref\n"
        for i in range(100_000):
            priority = "" if i % 10 else "7"
            yield f"s3://catalog/tracks/{i:06d}.flac,{priority},r{i}\n".encode()

    data = b"".join(lines())
    started = time.perf_counter()
    rows = sum(isinstance(item, ManifestRow) for item in read_csv(io.BytesIO(data), TEMPLATE))
    elapsed = time.perf_counter() - started
    print(f"\nread_csv, 100,000 rows: {elapsed:.1f} s")  # shown with -s
    assert rows == 100_000
