"""DerivedStemsConfig: three spellings of a rule, one result; bad documents rejected clearly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mss_jobs.config import DerivedStemsConfig
from mss_jobs.core.derived import DerivedStem, resolve_derived
from mss_jobs.errors import DerivedStemsError


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
