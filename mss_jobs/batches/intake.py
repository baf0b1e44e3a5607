"""Edge: turn a stream of manifest items into a batch — create (or find) it, insert its rows in
committed chunks, record the rejected ones, mark the intake finished.

Resumable and idempotent: rows are keyed by (batch, line), so reading the same source again
under the same batch key inserts nothing twice; an intake cut off half-way (API restart) is
completed by submitting again; a batch whose intake finished is returned as it is.
Each chunk commits on its own, so a 100,000-row manifest never holds one long transaction (the
batch row lock would stall its dispatcher) and memory stays at one chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.batches.manifest import JobTemplate, ManifestItem, ManifestRow, RowRejection
from mss_jobs.db.batch_intake import add_jobs, add_rejections, create_batch, finish_intake
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import Lane

__all__ = ["INTAKE_CHUNK_ROWS", "IntakeResult", "take_in"]

INTAKE_CHUNK_ROWS: Final = 1000
MAX_REPORTED_REJECTIONS: Final = 20


@dataclass(frozen=True, slots=True)
class IntakeResult:
    batch_id: uuid.UUID
    created: bool
    """False when the batch key named an existing batch (a resubmission)."""
    accepted: int
    """Rows this call inserted (0 for a resubmission of a finished intake)."""
    rejected: int
    rejections: list[RowRejection] = field(default_factory=list)
    """The first `MAX_REPORTED_REJECTIONS` rows refused by this call, for the response."""


def take_in(
    sessions: sessionmaker[Session],
    items: Iterable[ManifestItem],
    *,
    template: JobTemplate,
    source: Mapping[str, Any],
    lane: Lane,
    max_in_flight: int,
    force: bool,
    batch_key: str | None,
    chunk_rows: int = INTAKE_CHUNK_ROWS,
) -> IntakeResult:
    """Create the batch and stream `items` into it; see the module docstring.

    `items` is consumed lazily, `chunk_rows` at a time. A `ManifestError` raised by a reader
    before its first row leaves no batch behind only if the caller pulled the first item before
    calling (the API does: `ManifestError` on the header is a 422 with nothing created).
    """
    with transaction(sessions) as session:
        batch, created = create_batch(
            session,
            model=template.model,
            params=template.params,
            source=source,
            lane=lane,
            priority=template.priority,
            max_in_flight=max_in_flight,
            force=force,
            batch_key=batch_key,
        )
        batch_id, finished = batch.id, batch.intake_finished_at is not None
    if finished:
        return IntakeResult(batch_id=batch_id, created=False, accepted=0, rejected=0)

    accepted = rejected = 0
    shown: list[RowRejection] = []
    iterator = iter(items)
    while chunk := list(islice(iterator, chunk_rows)):
        rows = [item for item in chunk if isinstance(item, ManifestRow)]
        refused = [item for item in chunk if isinstance(item, RowRejection)]
        with transaction(sessions) as session:
            if rows:
                accepted += add_jobs(session, batch_id=batch_id, rows=rows)
            if refused:
                rejected += add_rejections(session, batch_id=batch_id, rejections=refused)
        shown.extend(refused[: MAX_REPORTED_REJECTIONS - len(shown)])
    with transaction(sessions) as session:
        finish_intake(session, batch_id=batch_id)
    return IntakeResult(
        batch_id=batch_id, created=created, accepted=accepted, rejected=rejected, rejections=shown
    )
