"""The one formatter of pydantic validation errors: `field.path: message; other: message`.

Every boundary that validates (request bodies, upload specs, manifests, job params, settings,
model configs) reports a refusal in this one shape; a boundary with its own wording for a field
(settings name the environment variable) passes `describe`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from pydantic_core import ErrorDetails

__all__ = ["Describe", "ValidationFailure", "describe_validation_error", "error_field"]


class ValidationFailure(Protocol):
    """What carries pydantic's error details: a `ValidationError`, or FastAPI's
    `RequestValidationError` (which is not one)."""

    def errors(self) -> Sequence[ErrorDetails]: ...


Describe = Callable[[ErrorDetails, str], str]
"""How one error reads, given the error and its field (`error_field`)."""


def error_field(error: ErrorDetails, root: str) -> str:
    """The dotted location of one error (`stems.0`), or `root` for the whole value."""
    return ".".join(str(part) for part in error["loc"]) or root


def describe_validation_error(
    exc: ValidationFailure,
    root: str = "body",
    *,
    describe: Describe | None = None,
    skip: Collection[str] = (),
) -> str:
    """Every error of `exc` as `field: message`, joined by `; `. `skip` drops error types."""
    parts = []
    for error in exc.errors():
        if error["type"] in skip:
            continue
        field = error_field(error, root)
        parts.append(describe(error, field) if describe else f"{field}: {error['msg']}")
    return "; ".join(parts)
