"""Validated configuration documents for the pipeline (the seed's `mss.config`), parsed once at
the boundary (CLI, API request, model config file) and turned into the core's plain values.

`DerivedStemsConfig` maps a new stem's name to its rule, in any of three spellings:

    {"instrumental": "mixture-vocals"}                                        expression
    {"instrumental": {"operation": "subtract", "stem_name": "mixture",
                      "by_stem_name": "vocals"}}                              community form
    {"rhythm": {"operation": "sum", "stem_names": ["drums", "bass"]}}         community form

The community form is the one splifft and MSST-style model configs use, so their files load as
they are. Whether the names exist for a given model is checked later, by `resolve_derived`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from mss_jobs.core.derived import DerivedStem, parse_derived
from mss_jobs.domain.units import StemName

__all__ = ["DerivedStemsConfig", "SubtractRule", "SumRule"]


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


DerivedRule = Annotated[SubtractRule | SumRule, Field(discriminator="operation")] | str


class DerivedStemsConfig(RootModel[dict[StemName, DerivedRule]]):
    """New stem name → rule. `to_rules()` gives the core's `DerivedStem`s (DerivedStemsError for a
    bad name or expression)."""

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
