"""A model config's `derived_stems`: three spellings of a rule, one result; bad documents rejected
clearly, and the splifft reader refusing a malformed section instead of ignoring it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mss_jobs.domain.derived import DerivedStem, resolve_derived
from mss_jobs.errors import ConfigError, DerivedStemsError
from mss_jobs.models.config import read_splifft_json
from mss_jobs.models.config_derived import DerivedStemsConfig, read_derived_stems

SPLIFFT_VIPERX = (
    Path(__import__("splifft").__file__).parent / "data" / "config" / "bs_roformer-viperx-1297.json"
)


def test_all_spellings_give_the_same_rules() -> None:
    config = DerivedStemsConfig.model_validate(
        {
            "instrumental": {
                "operation": "subtract",
                "stem_name": "mixture",
                "by_stem_name": "vocals",
            },
            "rhythm": {"operation": "sum", "stem_names": ["drums", "bass"]},
            "backing": "mixture - vocals - drums",
        }
    )
    assert config.to_rules() == (
        DerivedStem(name="instrumental", terms=((1, "mixture"), (-1, "vocals"))),
        DerivedStem(name="rhythm", terms=((1, "drums"), (1, "bass"))),
        DerivedStem(name="backing", terms=((1, "mixture"), (-1, "vocals"), (-1, "drums"))),
    )


def test_loads_from_json_and_resolves_against_a_model() -> None:
    config = DerivedStemsConfig.model_validate_json(
        '{"instrumental": {"operation": "subtract", "stem_name": "mixture",'
        ' "by_stem_name": "vocals"}}'
    )
    (rule,) = resolve_derived(config.to_rules(), ("vocals", "other"))
    assert rule.name == "instrumental"


@pytest.mark.parametrize(
    "document",
    [
        {"x": {"operation": "multiply", "stem_names": ["a", "b"]}},
        {"x": {"operation": "sum", "stem_names": ["a"]}},
        {"x": {"operation": "subtract", "stem_name": "a"}},
        {"x": {"operation": "subtract", "stem_name": "a", "by_stem_name": "b", "extra": 1}},
        {"x": 3},
    ],
)
def test_malformed_documents_are_validation_errors(document: object) -> None:
    with pytest.raises(ValidationError):
        DerivedStemsConfig.model_validate(document)


@pytest.mark.parametrize(
    ("document", "needle"),
    [({"Bad Name": "a-b"}, "Bad Name"), ({"x": "a--b"}, "a--b"), ({"x": "a+"}, "a+")],
)
def test_bad_names_and_expressions_are_derived_stem_errors(document: object, needle: str) -> None:
    config = DerivedStemsConfig.model_validate(document)
    with pytest.raises(DerivedStemsError) as info:
        config.to_rules()
    assert needle in str(info.value)


def test_read_derived_stems_orders_rules_against_the_model() -> None:
    section = {
        "karaoke": "instrumental + vocals",
        "instrumental": {"operation": "subtract", "stem_name": "mixture", "by_stem_name": "vocals"},
    }
    rules = read_derived_stems(section, ("vocals",), source="m.json")
    assert [rule.name for rule in rules] == ["instrumental", "karaoke"]


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ([], "derived_stems: Input should be a valid dictionary"),
        ({"x": {"operation": "sum", "stem_names": ["vocals"]}}, "x.sum.stem_names"),
        ({"x": "mixture-drums"}, "unknown stem 'drums'"),
        ({"vocals": "mixture-vocals"}, "clashes with a model stem"),
        ({"x": "a--b"}, "a--b"),
    ],
)
def test_read_derived_stems_names_the_file_and_section(section: Any, needle: str) -> None:
    with pytest.raises(DerivedStemsError) as info:
        read_derived_stems(section, ("vocals",), source="m.json")
    assert str(info.value).startswith("m.json: `derived_stems`: ")
    assert needle in str(info.value)


def _splifft_with(derived_stems: object) -> str:
    data = json.loads(SPLIFFT_VIPERX.read_text())
    data["derived_stems"] = derived_stems
    return json.dumps(data)


def test_the_splifft_reader_accepts_a_valid_section() -> None:
    section = {"instrumental": {"operation": "subtract", "stem_name": "mixture",
                                "by_stem_name": "vocals"}}  # fmt: skip
    config = read_splifft_json(_splifft_with(section), source="x.json")
    assert config.stems == ("vocals",)


@pytest.mark.parametrize(
    "section",
    [
        {"instrumental": {"operation": "subtract", "stem_name": "mixture"}},
        {"instrumental": "mixture-drums"},
        "mixture-vocals",
    ],
)
def test_the_splifft_reader_refuses_a_malformed_section(section: object) -> None:
    with pytest.raises(ConfigError, match=r"^x\.json: `derived_stems`: ") as info:
        read_splifft_json(_splifft_with(section), source="x.json")
    assert info.value.code == "config.derived_stems"
