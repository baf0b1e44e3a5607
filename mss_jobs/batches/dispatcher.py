"""Edge: the batch dispatcher — keeps each active batch's jobs flowing to the broker, never more
than its `max_in_flight` at a time.

One round, per active batch: take pending jobs into the room the batch has (`take_pending`
moves them to `queued` and commits), publish their ids, and complete the batch when nothing is
left. Then re-publish queued batch jobs untouched for `stale_after` (their message may have died
with a broker restart; a duplicate is a no-op claim). Rounds repeat every `interval`.

So Redis never holds a whole catalog: 100,000 rows wait as `pending` rows in SQL and enter the
bulk queue a few at a time as workers finish — which also lets an interactive job, on its own
queue consumed first, start next. Everything the dispatcher knows is in the database, so it can
stop at any time and any number can run (the API runs one per process by default, or
`mss-jobs dispatcher` alone): row locks make them share the work, none takes a job twice.

If publishing fails (broker down), the jobs taken stay `queued` and the stale scan publishes them
again once the broker is back and `stale_after` has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db.batch_dispatch import Dispatch, mark_completed, stale_queued, take_pending
from mss_jobs.db.schema import MAX_MAX_IN_FLIGHT, Batch
from mss_jobs.db.session import transaction
from mss_jobs.domain.lifecycle import BatchStatus
from mss_jobs.errors import BrokerUnavailableError, TransientError
from mss_jobs.periodic import PeriodicThread
from mss_jobs.queueing import JobQueue

__all__ = ["DispatchRound", "Dispatcher"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_SECONDS: Final = 30.0


@dataclass(frozen=True, slots=True)
class DispatchRound:
    """What one round did."""

    published: int = 0
    republished: int = 0
    completed: int = 0
    failed_publishes: int = 0


class Dispatcher:
    """Feeds batches to `queue`; `run_once()` for one round, `start()`/`stop()` for a thread."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        queue: JobQueue,
        *,
        interval: float = 2.0,
        stale_after: timedelta = timedelta(minutes=15),
    ) -> None:
        self.sessions = sessions
        self.queue = queue
        self.interval = interval
        self.stale_after = stale_after
        self._thread = PeriodicThread(
            self.run_once,
            interval,
            name="mss-dispatcher",
            log=log,
            on_error=_log_failed_round,
            stop_timeout=_STOP_TIMEOUT_SECONDS,
        )

    def run_once(self) -> DispatchRound:
        """One round over every active batch, then the stale scan."""
        published = completed = failed = 0
        with transaction(self.sessions) as session:
            active = list(
                session.scalars(
                    select(Batch.id)
                    .where(Batch.status == BatchStatus.ACTIVE)
                    .order_by(Batch.priority.desc(), Batch.created_at)
                )
            )
        for batch_id in active:
            with transaction(self.sessions) as session:
                taken = take_pending(session, batch_id=batch_id, limit=MAX_MAX_IN_FLIGHT)
            sent, lost = self._publish(taken)
            published, failed = published + sent, failed + lost
            with transaction(self.sessions) as session:
                completed += mark_completed(session, batch_id=batch_id)
        with transaction(self.sessions) as session:
            stale = stale_queued(session, older_than=self.stale_after)
        republished, lost = self._publish(stale)
        if republished:
            log.warning(
                "re-published %d batch job(s) queued for over %s", republished, self.stale_after
            )
        return DispatchRound(published, republished, completed, failed + lost)

    def _publish(self, dispatches: Sequence[Dispatch]) -> tuple[int, int]:
        """Send each job id; stop at the first broker failure (the rest wait for the stale
        scan). Returns (sent, not sent)."""
        for sent, dispatch in enumerate(dispatches):
            try:
                self.queue.enqueue(dispatch.job_id, lane=dispatch.lane, priority=dispatch.priority)
            except BrokerUnavailableError as exc:
                log.warning(
                    "dispatch stopped: %s; %d job(s) wait for the stale scan",
                    exc,
                    len(dispatches) - sent,
                )
                return sent, len(dispatches) - sent
        return len(dispatches), 0

    # -- thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Rounds in a daemon thread; RuntimeError if it is already running."""
        self._thread.start()

    def run(self) -> None:
        """Rounds every `interval` in this thread until `stop()`; a failing round is logged."""
        self._thread.run()

    def stop(self) -> None:
        self._thread.stop()


def _log_failed_round(exc: Exception) -> None:
    if isinstance(exc, TransientError):
        log.warning("dispatch round failed (will retry): %s", exc)
    else:
        log.error("dispatch round failed", exc_info=exc)
