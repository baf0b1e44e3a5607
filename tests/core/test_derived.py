"""Derived stems: parsing, validation against a model's stems, ordering and algebra."""

from __future__ import annotations

import pytest
import torch

from mss_jobs.core.derived import apply_derived
from mss_jobs.domain.derived import DerivedStem, parse_derived, resolve_derived
from mss_jobs.errors import ConfigError, DerivedStemsError

MODEL_STEMS = ("vocals", "drums", "bass", "other")


def _stems(*names: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(2, 50, generator=g) for name in names}


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "name", "terms"),
    [
        ("a=b-c", "a", ((1, "b"), (-1, "c"))),
        ("a = b + c - d", "a", ((1, "b"), (1, "c"), (-1, "d"))),
        ("instrumental=mixture-vocals", "instrumental", ((1, "mixture"), (-1, "vocals"))),
        ("rhythm=drums+bass", "rhythm", ((1, "drums"), (1, "bass"))),
        ("  x_2 =  -a+  b_1 ", "x_2", ((-1, "a"), (1, "b_1"))),
        ("solo=vocals", "solo", ((1, "vocals"),)),
    ],
)
def test_parse_accepts_signed_sums(
    spec: str, name: str, terms: tuple[tuple[int, str], ...]
) -> None:
    rule = parse_derived(spec)
    assert rule == DerivedStem(name=name, terms=terms)


def test_str_round_trips_through_parse() -> None:
    rule = parse_derived("a = b + c - d")
    assert str(rule) == "a=b+c-d"
    assert parse_derived(str(rule)) == rule


@pytest.mark.parametrize(
    "spec",
    [
        "bad",
        "x=a--b",
        "x=a+",
        "X=a-b",
        "x=a b",
        "=a-b",
        "x=",
        "x=a+-b",
        "x=A-b",
        "x=a-b=c",
        "x=a*b",
        "_x=a-b",
        "x=" + "a" * 65,
    ],
)
def test_parse_rejects_malformed_specs(spec: str) -> None:
    with pytest.raises(DerivedStemsError) as error:
        parse_derived(spec)
    assert isinstance(error.value, ConfigError)
    assert error.value.code == "config.derived_stems"


def test_constructors() -> None:
    assert DerivedStem.sum("all", ["a", "b", "c"]).terms == ((1, "a"), (1, "b"), (1, "c"))
    assert DerivedStem.subtract("inst", "mixture", "vocals").terms == (
        (1, "mixture"),
        (-1, "vocals"),
    )
    with pytest.raises(DerivedStemsError, match="at least two"):
        DerivedStem.sum("one", ["a"])
    with pytest.raises(DerivedStemsError, match="no terms"):
        DerivedStem(name="x", terms=())
    with pytest.raises(DerivedStemsError, match="sign 2"):
        DerivedStem(name="x", terms=((2, "a"),))


# --- resolving --------------------------------------------------------------------------------


def test_unknown_source_stem_is_rejected_with_the_alternatives() -> None:
    with pytest.raises(DerivedStemsError, match="unknown stem 'piano'") as error:
        resolve_derived([parse_derived("x=mixture-piano")], MODEL_STEMS)
    assert "vocals" in str(error.value)
    assert "mixture" in str(error.value)


@pytest.mark.parametrize("spec", ["vocals=mixture-drums", "mixture=vocals+drums"])
def test_a_derived_name_may_not_clash_with_a_model_stem_or_mixture(spec: str) -> None:
    name = spec.split("=")[0]
    with pytest.raises(DerivedStemsError, match=f"'{name}' clashes"):
        resolve_derived([parse_derived(spec)], MODEL_STEMS)


def test_duplicate_definition_is_rejected() -> None:
    rules = [parse_derived("x=vocals+drums"), parse_derived("x=bass+other")]
    with pytest.raises(DerivedStemsError, match="'x' is defined twice"):
        resolve_derived(rules, MODEL_STEMS)


def test_two_cycle_is_rejected_with_its_path() -> None:
    rules = [parse_derived("a=b+vocals"), parse_derived("b=a-drums")]
    with pytest.raises(DerivedStemsError, match="cycle: a -> b -> a"):
        resolve_derived(rules, MODEL_STEMS)


def test_three_cycle_is_rejected_with_its_path() -> None:
    rules = [
        parse_derived("p=vocals+drums"),  # not part of the cycle
        parse_derived("a=b+vocals"),
        parse_derived("b=c-drums"),
        parse_derived("c=p+a"),
    ]
    with pytest.raises(DerivedStemsError, match="cycle: a -> b -> c -> a"):
        resolve_derived(rules, MODEL_STEMS)


def test_self_reference_is_a_cycle() -> None:
    with pytest.raises(DerivedStemsError, match="cycle: a -> a"):
        resolve_derived([parse_derived("a=a+vocals")], MODEL_STEMS)


def test_rules_are_ordered_so_dependencies_come_first() -> None:
    rules = [
        parse_derived("top=mid+bass"),
        parse_derived("mid=low-drums"),
        parse_derived("low=mixture-vocals"),
        parse_derived("free=vocals+other"),
    ]
    ordered = resolve_derived(rules, MODEL_STEMS)
    names = [r.name for r in ordered]
    assert sorted(names) == ["free", "low", "mid", "top"]
    assert names.index("low") < names.index("mid") < names.index("top")


def test_no_rules_resolve_to_nothing() -> None:
    assert resolve_derived([], MODEL_STEMS) == ()


# --- applying ---------------------------------------------------------------------------------


def test_instrumental_is_mixture_minus_vocals() -> None:
    stems = _stems("mixture", *MODEL_STEMS)
    rules = resolve_derived([parse_derived("instrumental=mixture-vocals")], MODEL_STEMS)
    out = apply_derived(stems, rules)
    torch.testing.assert_close(out["instrumental"], stems["mixture"] - stems["vocals"])
    assert set(out) == {"mixture", *MODEL_STEMS, "instrumental"}


def test_sums_and_signed_terms() -> None:
    stems = _stems(*MODEL_STEMS, seed=1)
    rules = resolve_derived(
        [parse_derived("rhythm=drums+bass"), parse_derived("odd=-vocals+other-bass")], MODEL_STEMS
    )
    out = apply_derived(stems, rules)
    torch.testing.assert_close(out["rhythm"], stems["drums"] + stems["bass"])
    torch.testing.assert_close(out["odd"], -stems["vocals"] + stems["other"] - stems["bass"])


def test_chained_rules_defined_out_of_order() -> None:
    stems = _stems("mixture", *MODEL_STEMS, seed=2)
    rules = resolve_derived(
        [
            parse_derived("no_drums=instrumental-drums"),  # uses a rule defined below
            parse_derived("instrumental=mixture-vocals"),
        ],
        MODEL_STEMS,
    )
    out = apply_derived(stems, rules)
    torch.testing.assert_close(out["no_drums"], stems["mixture"] - stems["vocals"] - stems["drums"])


def test_apply_does_not_modify_its_inputs() -> None:
    stems = _stems(*MODEL_STEMS, seed=3)
    before = {k: v.clone() for k, v in stems.items()}
    rules = resolve_derived(
        [parse_derived("a=vocals+drums"), parse_derived("b=-vocals-drums")], MODEL_STEMS
    )
    out = apply_derived(stems, rules)
    for name, value in before.items():
        torch.testing.assert_close(stems[name], value, rtol=0, atol=0)
        assert out[name] is stems[name]
    assert out["a"] is not stems["vocals"]
    torch.testing.assert_close(out["b"], -out["a"])
