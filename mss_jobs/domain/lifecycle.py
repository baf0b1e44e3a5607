"""The lifecycle vocabulary of jobs and batches: statuses, event kinds, lanes and priorities.

Statuses and kinds are stored as plain strings in the database and carried as such by the API.

A job:

    pending ──dispatch──▶ queued ──claim──▶ running ──▶ succeeded
      ▲  │                  ▲                 │  ╲───▶ failed ─────┐
      │  │                  │                 ╰──────▶ cancelled ──┤
      │  ╰──cancel──▶ cancelled               (queued can be cancelled too)
      │                     ╰──────────── retry ───────────────────╯
      ╰───────── batch retry-failed (failed → pending) ────────────╯

`pending` exists only for batch jobs: created in bulk, they wait in SQL until the batch dispatcher
moves a bounded number of them to `queued` and publishes their ids (the broker never holds a
whole catalog). A single job starts `queued`. A redelivered task may claim a `running` job again
(worker crash); nothing leaves a terminal state except a retry. The transitions themselves live
in `mss_jobs.db`, as SQL `WHERE` clauses, so that two processes cannot both apply
conflicting ones.

A batch:

    active ──every job finished, manifest fully read──▶ completed
      │  ▲                                                  │
      │  ╰──────── retry-failed (or new rows) ──────────────╯
      ╰──cancel──▶ cancelled          (terminal: nothing reopens a cancelled batch)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal, get_args

__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_PRIORITY",
    "IN_FLIGHT_STATUSES",
    "LANES",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "RETRYABLE_STATUSES",
    "TERMINAL_STATUSES",
    "BatchStatus",
    "EventKind",
    "JobStatus",
    "Lane",
]

Lane = Literal["interactive", "bulk"]
"""The broker lane a job is published to: workers consume `interactive` before `bulk`. Single
jobs default to `interactive`, batch jobs to `bulk`."""
LANES: Final[tuple[Lane, ...]] = get_args(Lane)

MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 9
DEFAULT_PRIORITY: Final = 5
"""Job priorities run 0..9, higher is more urgent (within a lane)."""


class JobStatus(StrEnum):
    """Where a job is in its lifecycle (the string is what the database and the API carry)."""

    PENDING = "pending"
    """A batch job waiting in SQL for the dispatcher; no broker message exists for it."""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once no worker will touch the job again (only a retry leaves failed/cancelled)."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING})
"""Not finished yet: what cancelling applies to."""
IN_FLIGHT_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
"""Handed to the broker and not finished: what a batch's `max_in_flight` bounds."""
RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class BatchStatus(StrEnum):
    """Where a batch is in its lifecycle (see the module docstring)."""

    ACTIVE = "active"
    """Accepting rows and/or dispatching jobs."""
    COMPLETED = "completed"
    """The manifest was read to its end and every job is finished (succeeded, failed or
    cancelled one by one); failed jobs can still be retried, which makes it active again."""
    CANCELLED = "cancelled"
    """Cancelled by the client: its unfinished jobs were cancelled; final."""


class EventKind(StrEnum):
    """What a `job_events` row records. Stored without a CHECK: new kinds need no migration.

    Creating a batch's pending jobs writes no events (100,000 rows would double the intake's
    cost; the batch row records it); every transition after that is logged as for a single job.
    """

    QUEUED = "queued"
    """The job was queued for a worker: a single job when created, a batch job when the
    dispatcher released it from `pending`."""
    CLAIMED = "claimed"
    """A worker took a queued job (attempt + 1)."""
    REDELIVERED = "redelivered"
    """A worker took a job that was still running: the previous worker died (attempt + 1).
    One per worker death; the crash cap (`MSS_MAX_WORKER_DEATHS`) counts them."""
    PROGRESS = "progress"
    """The running job entered a new stage (plain progress updates are not logged)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    """A failed or cancelled job was queued again (a batch job: made pending again), or the
    worker put its job back to queued after a transient error (detail: code, retry,
    max_retries) while Celery's backoff waits."""
    REUSED = "reused"
    """The job succeeded without running the model: it copied the outputs of a finished job with
    the same input content, model and params (detail: `source`, the job copied from)."""
    DEFERRED = "deferred"
    """The worker put the job back to `queued` because a job with the same input content, model
    and params was running (detail: `twin`, `deferrals`); it comes back later to reuse that
    job's result. Neither a retry nor a worker death."""
