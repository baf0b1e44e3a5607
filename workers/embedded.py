"""The embedded worker: the production Celery task, consumed in a thread of this process.

With no broker configured (`MSS_BROKER_URL` unset) the API and the CLI still run jobs through the
job system: the row is written and committed, the job id is published, a Celery worker consumes
it, claims the row, separates, uploads and records. The only differences from production are
where the messages live and who consumes them:

- the broker is kombu's in-memory transport (`memory://`), whose queues are shared by every
  connection of one process — so producer and consumer must be the same process;
- the consumer is a `celery.worker.WorkController` (the unmanaged worker: no signal handlers, no
  logging hijack) running the `solo` pool in a daemon thread, one task at a time.

The task, the claim, the retries and the database writes are the production ones. What the
embedded mode gives up: messages die with the process (a job left `queued` when it exits is
re-sent by `resend_queued` at the next start), the in-memory transport has no priorities
(interactive and bulk queues are served in turn), and the solo pool enforces no time limits.
"""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType
from typing import Any, Final

from celery import Celery  # type: ignore[import-untyped]
from celery.worker import WorkController  # type: ignore[import-untyped]
from sqlalchemy import select

from mss_jobs.db.schema import Job
from mss_jobs.db.session import make_engine, make_session_factory, transaction
from mss_jobs.domain.lifecycle import JobStatus
from mss_jobs.errors import ConfigError
from mss_jobs.queueing import send_separate
from mss_jobs.settings import Settings
from workers.app import build_app

__all__ = ["EMBEDDED_BROKER", "EmbeddedWorker", "create_embedded_app"]

log = logging.getLogger(__name__)

EMBEDDED_BROKER: Final = "memory://localhost/"
_START_TIMEOUT_SECONDS: Final = 30.0
_STOP_TIMEOUT_SECONDS: Final = 30.0


def create_embedded_app(settings: Settings) -> Celery:
    """The worker's Celery app on the in-memory broker (settings must have no broker URL)."""
    if not settings.embedded:
        raise ConfigError(
            "the embedded worker runs only without a broker; with MSS_BROKER_URL set, "
            "run `mss-jobs worker` processes instead"
        )
    return build_app(
        settings,
        overrides={
            "broker_url": EMBEDDED_BROKER,
            # Redis-only options mean nothing to memory://; poll its queues often (cheap).
            "broker_transport_options": {"polling_interval": 0.1},
            "result_backend": None,
            # The solo pool cannot enforce time limits; say so instead of pretending.
            "task_soft_time_limit": None,
            "task_time_limit": None,
            "worker_hijack_root_logger": False,
        },
    )


class _Controller(WorkController):  # type: ignore[misc]
    """A WorkController that tells its starter when the consumer is ready."""

    def __init__(self, app: Celery, ready: threading.Event, **options: Any) -> None:
        self._ready = ready
        super().__init__(app=app, **options)

    def on_consumer_ready(self, consumer: Any) -> None:
        self._ready.set()


class EmbeddedWorker:
    """An in-process Celery worker and the job queue that feeds it (`JobQueue` protocol).

    Use as a context manager: entering starts the worker thread (and re-sends jobs a previous
    process left queued), leaving stops it after the running task, if any, finishes.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_embedded_app(settings)
        self._lanes = {"interactive": settings.queue_interactive, "bulk": settings.queue_bulk}
        self._ready = threading.Event()
        self._controller: _Controller | None = None
        self._thread: threading.Thread | None = None

    # -- JobQueue ------------------------------------------------------------------------------

    def enqueue(self, job_id: uuid.UUID, *, lane: str, priority: int) -> str:
        """Publish the job id to the in-memory queue of `lane`."""
        return send_separate(self.app, job_id, queue=self._lanes[lane], priority=priority)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the embedded worker is already started")
        self._controller = _Controller(
            self.app,
            self._ready,
            hostname=f"embedded@{threading.get_native_id()}",
            pool_cls="solo",
            concurrency=1,
            queues=[self.settings.queue_interactive, self.settings.queue_bulk],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
        )
        self._thread = threading.Thread(
            target=self._run, args=(self._controller,), name="mss-embedded-worker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_SECONDS):
            raise RuntimeError("the embedded worker did not start")
        self.resend_queued()

    def _run(self, controller: _Controller) -> None:
        # The pool traces tasks through the thread's current app; make it ours (thread-local,
        # so an API or another app in this process keeps its own).
        self.app.set_current()
        controller.start()

    def stop(self) -> None:
        if self._controller is None or self._thread is None:
            return
        self._controller.stop()
        self._thread.join(_STOP_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            log.warning("the embedded worker did not stop within %.0f s", _STOP_TIMEOUT_SECONDS)
        self._controller = self._thread = None
        self.app.close()

    def resend_queued(self) -> int:
        """Publish every `queued` job again: their messages died with the previous process.

        Harmless for a job whose message still exists — the task is idempotent and a second
        delivery finds the row already claimed or finished.
        """
        engine = make_engine(self.settings.database_url)
        try:
            with transaction(make_session_factory(engine)) as session:
                rows = session.execute(
                    select(Job.id, Job.priority)
                    .where(Job.status == JobStatus.QUEUED)
                    .order_by(Job.priority.desc(), Job.created_at)
                ).all()
        finally:
            engine.dispose()
        for job_id, priority in rows:
            self.enqueue(job_id, lane="interactive", priority=priority)
        if rows:
            log.info("re-sent %d job(s) left queued by a previous run", len(rows))
        return len(rows)

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
