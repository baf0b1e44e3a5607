"""The job lifecycle's vocabulary: statuses and event kinds, stored as plain strings.

    queued ──claim──▶ running ──▶ succeeded
      ▲                 │  ╲───▶ failed ─────┐
      │                 ╰──────▶ cancelled ──┤
      ╰──────────── retry ───────────────────╯      (queued can be cancelled too)

A redelivered task may claim a `running` job again (worker crash); nothing leaves a terminal state
except `retry` (failed or cancelled → queued). The transitions themselves live in `jobs.py`, as
SQL `WHERE` clauses, so that two processes cannot both apply conflicting ones.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE_STATUSES", "RETRYABLE_STATUSES", "TERMINAL_STATUSES", "EventKind", "JobStatus"]


class JobStatus(StrEnum):
    """Where a job is in its lifecycle (the string is what the database and the API carry)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once no worker will touch the job again (only `retry` leaves failed/cancelled)."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class EventKind(StrEnum):
    """What a `job_events` row records. Stored without a CHECK: new kinds need no migration."""

    QUEUED = "queued"
    """The job row was created."""
    CLAIMED = "claimed"
    """A worker took a queued job (attempt + 1)."""
    REDELIVERED = "redelivered"
    """A worker took a job that was still running: the previous worker died (attempt + 1)."""
    PROGRESS = "progress"
    """The running job entered a new stage (plain progress updates are not logged)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    """A failed or cancelled job was queued again."""
