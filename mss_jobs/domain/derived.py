"""Derived-stem rules: new stems as signed sums of separated ones (instrumental = mixture - vocals).

A rule is `name = ±a ± b …` over the model's stems, the pseudo-stem `mixture` (the input itself)
and rules defined before or after it (they are ordered topologically). `resolve_derived` checks a
rule set once against a model's stems — unknown stem, name clash, cycle, bad name — so applying it
per block (`mss_jobs.core.derived.apply_derived`) cannot fail. Torch-free: model-config readers
check rules with it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mss_jobs.domain.units import MIXTURE, StemName
from mss_jobs.errors import DerivedStemsError

__all__ = ["STEM_NAME_PATTERN", "DerivedStem", "parse_derived", "resolve_derived"]

STEM_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
"""Stem names become file names and appear in `a-b` expressions: lowercase letters, digits and
'_', at most 64 characters."""

_TERM = re.compile(r"([+\-])?\s*([^\s+\-][^+\-]*?)\s*(?=[+\-]|$)")


@dataclass(frozen=True, slots=True)
class DerivedStem:
    """`name` = Σ sign_i · stem_i. Build with `sum`, `subtract` or `parse_derived`."""

    name: StemName
    terms: tuple[tuple[int, StemName], ...]

    def __post_init__(self) -> None:
        if not STEM_NAME_PATTERN.match(self.name):
            raise DerivedStemsError(
                f"derived stem name {self.name!r} is invalid: use lowercase letters, digits "
                "and '_' (it becomes a file name)"
            )
        if not self.terms:
            raise DerivedStemsError(f"derived stem {self.name!r} has no terms")
        for sign, stem in self.terms:
            if sign not in (1, -1):
                raise DerivedStemsError(f"derived stem {self.name!r}: sign {sign} is not ±1")
            if not STEM_NAME_PATTERN.match(stem):
                raise DerivedStemsError(f"derived stem {self.name!r}: {stem!r} is not a stem name")

    @classmethod
    def sum(cls, name: StemName, stems: Sequence[StemName]) -> DerivedStem:
        """`name` = a + b + …; the `sum` rule."""
        if len(stems) < 2:
            raise DerivedStemsError(f"sum rule {name!r} needs at least two stems, got {stems!r}")
        return cls(name=name, terms=tuple((1, s) for s in stems))

    @classmethod
    def subtract(cls, name: StemName, minuend: StemName, subtrahend: StemName) -> DerivedStem:
        """`name` = minuend - subtrahend; the `subtract` rule."""
        return cls(name=name, terms=((1, minuend), (-1, subtrahend)))

    @property
    def sources(self) -> tuple[StemName, ...]:
        return tuple(stem for _, stem in self.terms)

    def __str__(self) -> str:
        expr = "".join(("+" if s > 0 else "-") + n for s, n in self.terms).lstrip("+")
        return f"{self.name}={expr}"


def parse_derived(spec: str) -> DerivedStem:
    """Parse `name=a-b`, `name=a+b+c` or `name=a+b-c` (spaces allowed)."""
    name, sep, expr = spec.partition("=")
    name, expr = name.strip(), expr.strip()
    if not sep or not name or not expr:
        raise DerivedStemsError(
            f"derived stem {spec!r} must look like NAME=A-B or NAME=A+B (e.g. "
            "instrumental=mixture-vocals)"
        )
    terms: list[tuple[int, StemName]] = []
    consumed = 0
    for match in _TERM.finditer(expr):
        if match.start() != consumed or (terms and match.group(1) is None):
            break
        terms.append((-1 if match.group(1) == "-" else 1, match.group(2).strip()))
        consumed = match.end()
    if consumed != len(expr) or not terms:
        raise DerivedStemsError(f"cannot parse the expression {expr!r} of derived stem {spec!r}")
    return DerivedStem(name=name, terms=tuple(terms))


def resolve_derived(
    rules: Iterable[DerivedStem], model_stems: Sequence[StemName]
) -> tuple[DerivedStem, ...]:
    """Validate `rules` against the model's stems and order them so dependencies come first."""
    rules = tuple(rules)
    known = set(model_stems) | {MIXTURE}
    by_name: dict[StemName, DerivedStem] = {}
    for rule in rules:
        if rule.name in known:
            raise DerivedStemsError(
                f"derived stem {rule.name!r} clashes with a model stem or 'mixture' "
                f"(model stems: {', '.join(model_stems)})"
            )
        if rule.name in by_name:
            raise DerivedStemsError(f"derived stem {rule.name!r} is defined twice")
        by_name[rule.name] = rule
    for rule in rules:
        for source in rule.sources:
            if source not in known and source not in by_name:
                raise DerivedStemsError(
                    f"derived stem {rule.name!r} uses unknown stem {source!r}; available: "
                    f"{', '.join(sorted(known | set(by_name)))}"
                )

    ordered: list[DerivedStem] = []
    state: dict[StemName, str] = {}  # "visiting" | "done"

    def visit(rule: DerivedStem, path: tuple[StemName, ...]) -> None:
        if state.get(rule.name) == "done":
            return
        if state.get(rule.name) == "visiting":
            cycle = " -> ".join((*path[path.index(rule.name) :], rule.name))
            raise DerivedStemsError(f"derived stems form a cycle: {cycle}")
        state[rule.name] = "visiting"
        for source in rule.sources:
            if source in by_name:
                visit(by_name[source], (*path, rule.name))
        state[rule.name] = "done"
        ordered.append(rule)

    for rule in rules:
        visit(rule, ())
    return tuple(ordered)
