"""The `derived_stems` section of a model config: a new stem's name → its rule. Pure: no torch.

A rule has any of three spellings:

    {"instrumental": "mixture-vocals"}                                        expression
    {"instrumental": {"operation": "subtract", "stem_name": "mixture",
                      "by_stem_name": "vocals"}}                              community form
    {"rhythm": {"operation": "sum", "stem_names": ["drums", "bass"]}}         community form

The community form is the one splifft and MSST-style model configs use, so their files load as
they are. `DerivedStemsConfig` checks the shape; `to_rules()` the names and expressions; and
`read_derived_stems` (what the splifft reader calls) all of that and the rules against the
model's stems (`resolve_derived`), every error a `DerivedStemsError` naming the file and section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    ValidationError,
)

from mss_jobs.domain.derived import DerivedStem, parse_derived, resolve_derived
from mss_jobs.domain.units import StemName
from mss_jobs.domain.validation import describe_validation_error
from mss_jobs.errors import DerivedStemsError

__all__ = ["DerivedStemsConfig", "SubtractRule", "SumRule", "read_derived_stems"]


class SubtractRule(BaseModel):
    """`stem_name - by_stem_name`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    operation: Literal["subtract"]
    stem_name: StemName
    by_stem_name: StemName


class SumRule(BaseModel):
    """The sum of `stem_names` (two or more)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    operation: Literal["sum"]
    stem_names: Annotated[list[StemName], Field(min_length=2)]


def _rule_kind(rule: Any) -> str | None:
    """Which spelling `rule` is: "expression", "subtract" or "sum" (None: none of them)."""
    if isinstance(rule, str):
        return "expression"
    if isinstance(rule, SubtractRule | SumRule):
        return rule.operation
    operation = rule.get("operation") if isinstance(rule, Mapping) else None
    return operation if operation in ("subtract", "sum") else None


DerivedRule = Annotated[
    Annotated[str, Tag("expression")]
    | Annotated[SubtractRule, Tag("subtract")]
    | Annotated[SumRule, Tag("sum")],
    Discriminator(
        _rule_kind,
        custom_error_type="derived_rule",
        custom_error_message=(
            "expected an expression such as 'mixture-vocals', or an object whose operation is "
            "'subtract' or 'sum'"
        ),
    ),
]


class DerivedStemsConfig(RootModel[dict[StemName, DerivedRule]]):
    """New stem name → rule. `to_rules()` gives the `DerivedStem`s (DerivedStemsError for a bad
    name or expression)."""

    model_config = ConfigDict(frozen=True)

    def to_rules(self) -> tuple[DerivedStem, ...]:
        rules: list[DerivedStem] = []
        for name, rule in self.root.items():
            if isinstance(rule, str):
                rules.append(parse_derived(f"{name}={rule}"))
            elif isinstance(rule, SubtractRule):
                rules.append(DerivedStem.subtract(name, rule.stem_name, rule.by_stem_name))
            else:
                rules.append(DerivedStem.sum(name, rule.stem_names))
        return tuple(rules)


def read_derived_stems(
    section: Any, stems: tuple[StemName, ...], *, source: str
) -> tuple[DerivedStem, ...]:
    """A config file's `derived_stems` section as rules checked against the model's `stems`, in
    dependency order; a `DerivedStemsError` naming `source` and the section if anything is off."""
    where = f"{source}: `derived_stems`"
    try:
        config = DerivedStemsConfig.model_validate(section)
    except ValidationError as exc:
        problems = describe_validation_error(exc, "derived_stems")
        raise DerivedStemsError(f"{where}: {problems}") from exc
    try:
        return resolve_derived(config.to_rules(), stems)
    except DerivedStemsError as exc:
        raise DerivedStemsError(f"{where}: {exc}") from exc
