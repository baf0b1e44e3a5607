"""Applying derived stems to separated audio: the torch half of `mss_jobs.domain.derived`.

The rules themselves (`DerivedStem`, `parse_derived`, `resolve_derived`) are torch-free and live
in the domain; import them from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mss_jobs.domain.derived import DerivedStem
from mss_jobs.domain.units import StemName

__all__ = ["apply_derived"]


def apply_derived(
    stems: Mapping[StemName, torch.Tensor], rules: Sequence[DerivedStem]
) -> dict[StemName, torch.Tensor]:
    """Add every derived stem to a copy of `stems` (which must include `mixture` if used).
    `rules` must come from `resolve_derived`."""
    out = dict(stems)
    for rule in rules:
        sign, first = rule.terms[0]
        total = out[first] * sign if sign < 0 else out[first].clone()
        for sign, stem in rule.terms[1:]:
            total.add_(out[stem], alpha=sign)
        out[rule.name] = total
    return out
