"""Edge: the reaper — fails jobs left `running` by a worker that is gone and will not come back.

Celery's hard time limit kills the pool process running the task and *acknowledges* its message
(`acks_on_failure_or_timeout`), so nothing redelivers it and the job row would stay `running`
forever. Each `celery worker` therefore runs a reaper: a daemon thread in the main process,
started on `worker_ready` and stopped on `worker_shutdown`, that every
`MSS_REAPER_INTERVAL_SECONDS` fails (`worker.lost`) the running jobs nothing wrote to for

    stale_after = MSS_VISIBILITY_TIMEOUT_SECONDS + MSS_REAPER_GRACE_SECONDS

Why this bound: a live attempt writes the row when it claims it and then at least every hard
time limit (it is killed there), so silence longer than the hard limit already proves the
attempt dead. But a worker that died with its message unacknowledged gets that message
redelivered after the visibility timeout (which the settings keep above the hard limit), and
the redelivery re-runs the job — reaping before then would fail a job that was about to be
retried. The grace is the time a redelivered task gets to reach a free worker. All workers must
share these settings.

One indexed UPDATE a sweep (`reap_stale_jobs`), safe with any number of reapers at once; errors
are logged, never raised (the next sweep tries again). The thread uses its own engine, disposed
after every sweep so that no pooled connection is inherited by pool processes forked later.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Final

from celery import Celery  # type: ignore[import-untyped]
from celery.signals import worker_ready, worker_shutdown  # type: ignore[import-untyped]
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db.recovery import hand_back_stale_batch_jobs, reap_stale_jobs
from mss_jobs.db.schema import utcnow
from mss_jobs.db.session import make_engine, make_session_factory, transaction
from mss_jobs.periodic import PeriodicThread
from mss_jobs.settings import Settings
from workers.tasks import WORKER_LOST_CODE

__all__ = ["Reaper", "install_reaper", "reap_once", "stale_after"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_SECONDS: Final = 10.0


def stale_after(settings: Settings) -> timedelta:
    """How long a `running` job may go unwritten before it is reaped (module docstring)."""
    return timedelta(seconds=settings.visibility_timeout_seconds + settings.reaper_grace_seconds)


def reap_once(
    settings: Settings, sessions: sessionmaker[Session], *, now: datetime | None = None
) -> list[uuid.UUID]:
    """One sweep at `now` (default: the current time): stale batch jobs go back to pending (their
    dispatcher re-runs them), other stale jobs fail; returns the failed ids."""
    limit = stale_after(settings)
    seconds = int(limit.total_seconds())
    message = (
        f"no worker reported on this job for over {seconds} s: the process running it was "
        f"killed (hard time limit {settings.job_hard_time_limit_seconds} s) or died, and the "
        "task was not redelivered"
    )
    cutoff = (now or utcnow()) - limit
    with transaction(sessions) as session:
        handed_back = hand_back_stale_batch_jobs(
            session, stale_before=cutoff, max_deaths=settings.max_worker_deaths
        )
        reaped = reap_stale_jobs(
            session, stale_before=cutoff, code=WORKER_LOST_CODE, message=message
        )
    if handed_back:
        log.warning("handed %d stale batch job(s) back to their dispatcher", len(handed_back))
    return reaped


class Reaper:
    """The sweeping thread of `app`'s worker: `start()` sweeps at once, then every interval
    until `stop()`."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.interval = float(settings.reaper_interval_seconds)
        self._thread = PeriodicThread(
            self._tick,
            self.interval,
            name="mss-reaper",
            log=log,
            stop_timeout=_STOP_TIMEOUT_SECONDS,
        )
        self._database: tuple[Engine, sessionmaker[Session]] | None = None

    def start(self) -> None:
        if self._thread.started:
            return
        self._thread.start()
        log.info(
            "reaper started: every %.0f s, jobs silent for %d s fail with %s",
            self.interval,
            int(stale_after(self.settings).total_seconds()),
            WORKER_LOST_CODE,
        )

    def stop(self) -> None:
        if self._thread.started and not self._thread.stop():
            log.warning("reaper did not stop within %.0f s", _STOP_TIMEOUT_SECONDS)

    @property
    def running(self) -> bool:
        return self._thread.running

    def _tick(self) -> bool:
        """One sweep on the reaper's own engine, made by the first; False ends the thread."""
        if self._database is None:
            try:
                engine = make_engine(self.settings.database_url)
            except Exception:
                log.exception("reaper cannot reach the database; not reaping in this worker")
                return False
            self._database = engine, make_session_factory(engine)
        engine, sessions = self._database
        try:
            self.sweep(sessions)
        finally:
            engine.dispose()  # no idle connection for a later fork to inherit
        return True

    def sweep(self, sessions: sessionmaker[Session]) -> list[uuid.UUID]:
        """One sweep, errors logged (the database may be down: the next sweep tries again)."""
        try:
            reaped = reap_once(self.settings, sessions)
        except Exception:
            log.exception("reaper sweep failed")
            return []
        for job_id in reaped:
            log.warning("reaper: job %s was left running; failed with %s", job_id, WORKER_LOST_CODE)
        return reaped

    # -- Celery signal receivers (weakly referenced by the signals: the app keeps us alive) ---

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._owns(sender):
            self.start()

    def on_worker_shutdown(self, sender: Any = None, **_: Any) -> None:
        if self._owns(sender):
            self.stop()

    def _owns(self, sender: Any) -> bool:
        # The signals are process-wide; answer only for a worker of our own app.
        return getattr(sender, "app", None) is self.app


def install_reaper(app: Celery, settings: Settings) -> Reaper:
    """Run a `Reaper` in the main process of every `celery worker` that serves `app`.

    Only the managed worker (`celery worker`) sends `worker_ready`; the embedded in-process
    worker does not, and must not reap: without time limits a live job can be silent for long.
    """
    reaper = Reaper(app, settings)
    app.mss_reaper = reaper  # the signals hold weak references: keep the reaper alive
    worker_ready.connect(reaper.on_worker_ready)
    worker_shutdown.connect(reaper.on_worker_shutdown)
    return reaper
