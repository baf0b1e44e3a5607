"""Edge: a running job's progress — `separate_file`'s events turned into throttled writes to the
job row and to Celery's task state.

The progress bar is split by stage: the statistics pass (`analyze`) gets the first 10 %,
separation runs up to 95 %, and the upload of the stems the last 5 %. A write goes to the
database at most every `PROGRESS_MIN_SECONDS` or on a `PROGRESS_MIN_STEP` step (and always on a
new stage), and it doubles as the cancellation check: once the job is no longer ours the
reporter raises `JobLostError`, which stops the separation (its partial files are removed).
Flower cannot show custom progress, so SQL is where clients read it; Celery's state gets a copy
when a result backend is configured.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Final, cast

from mss_jobs.db.job_transitions import update_progress
from mss_jobs.db.session import transaction
from mss_jobs.runner import FileSeparation, RunProgress, separate_file
from workers.claim import BoundTask, Claim, JobLostError
from workers.context import WorkerContext

__all__ = [
    "PROGRESS_MIN_SECONDS",
    "PROGRESS_MIN_STEP",
    "SEPARATE_END",
    "ProgressReporter",
    "progress_of",
    "separate_reporting",
]

PROGRESS_MIN_SECONDS: Final = 1.0
"""Progress goes to the database at most this often (or on a 5 % step), which also bounds how
late a cancellation is noticed: `update_progress` returns False once the job is not ours."""
PROGRESS_MIN_STEP: Final = 0.05
_ANALYZE_SHARE: Final = 0.1
"""Share of the progress bar for the statistics pass; separation gets the rest up to 0.95 and
the upload the last 5 %."""
SEPARATE_END: Final = 0.95


class ProgressReporter:
    """Throttled progress: to the job row (which doubles as the cancellation check) and to
    Celery's task state (a no-op without a result backend)."""

    def __init__(self, task: BoundTask, claim: Claim, context: WorkerContext) -> None:
        self.task = task
        self.claim = claim
        self.context = context
        self.celery_state = True
        self._last_time = float("-inf")
        self._last_progress = 0.0
        self._last_stage: str | None = None

    def report(self, stage: str, progress: float, *, force: bool = False) -> None:
        """Write progress if due; raises `JobLostError` once the job is no longer ours."""
        now = time.monotonic()
        due = (
            force
            or stage != self._last_stage
            or now - self._last_time >= PROGRESS_MIN_SECONDS
            or progress - self._last_progress >= PROGRESS_MIN_STEP
        )
        if not due:
            return
        self._last_time, self._last_progress, self._last_stage = now, progress, stage
        with transaction(self.context.sessions) as session:
            ours = update_progress(
                session,
                job_id=self.claim.id,
                progress=progress,
                stage=stage,
                attempt=self.claim.attempt,
            )
        if not ours:
            raise JobLostError
        if self.celery_state:
            meta = {"job_id": str(self.claim.id), "stage": stage, "progress": round(progress, 4)}
            try:
                self.task.update_state(state="PROGRESS", meta=meta)
            except NotImplementedError:  # no result backend configured: progress is in SQL
                self.celery_state = False


def separate_reporting(
    path: Path, out_dir: Path, *, progress: ProgressReporter, **options: Any
) -> FileSeparation:
    """Run `separate_file` (`options` are its keyword arguments) to its result, reporting each
    progress event on the way."""
    # separate_file is a generator; closing it early runs its cleanup (partial files removed).
    events = cast(Generator[RunProgress | FileSeparation], separate_file(path, out_dir, **options))
    try:
        for event in events:
            if isinstance(event, FileSeparation):
                return event
            progress.report(*progress_of(event))
    finally:
        events.close()
    raise AssertionError("separate_file ended without a result")


def progress_of(event: RunProgress) -> tuple[str, float]:
    """The stage and overall fraction (0..`SEPARATE_END`) of one `separate_file` event."""
    fraction = event.done / event.total if event.total else 0.0
    fraction = min(max(fraction, 0.0), 1.0)
    if event.stage == "analyze":
        return "analyze", _ANALYZE_SHARE * fraction
    return "separate", _ANALYZE_SHARE + (SEPARATE_END - _ANALYZE_SHARE) * fraction
