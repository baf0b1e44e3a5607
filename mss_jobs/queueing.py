"""The broker wire contract shared by the API (producer) and the workers (consumer). Torch-free.

What a message looks like on Redis must match on both sides: the task name, the queues (each on
its own direct exchange: without one, Celery binds every queue to the default queue's exchange
and key, and tasks sent to `bulk` would land in `interactive`), the emulated priorities and the
key separator. Each side adds its own settings on top (acks, limits, timeouts).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any, Final

from kombu.entity import Exchange, Queue

from mss_jobs.domain.lifecycle import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY
from mss_jobs.settings import Settings

__all__ = [
    "SEPARATE_TASK",
    "broker_priority",
    "send_separate",
    "separate_task_id",
    "shared_celery_config",
]

SEPARATE_TASK: Final = "mss_jobs.separate"
"""Name of the worker's separation task; its one argument is the job id."""


def separate_task_id(job_id: uuid.UUID | str) -> str:
    """The Celery task id for one enqueueing of a job: `<job id>.<8 hex>`.

    Carrying the job id makes worker log lines (`Task mss_jobs.separate[<id>] received`) and
    Flower's task list findable by job; the random tail keeps each enqueueing distinct, so a job
    queued again (retry, re-dispatch) never merges with its earlier run in Flower, and a revoked
    task id can never silence a later enqueueing of the same job.
    """
    return f"{job_id}.{secrets.token_hex(4)}"


def send_separate(
    app: Any,
    job_id: uuid.UUID | str,
    *,
    queue: str,
    priority: int,
    countdown: float | None = None,
) -> str:
    """Publish `mss_jobs.separate(job_id)` to `queue` through `app` (any Celery app on this
    contract: the API's producer, a worker, the embedded one); returns the Celery task id.

    Call only after the transaction that created (or re-queued) the job has committed. With
    `countdown`, a worker holds the message that many seconds before running it.
    """
    result = app.send_task(
        SEPARATE_TASK,
        args=[str(job_id)],
        task_id=separate_task_id(job_id),
        queue=queue,
        priority=broker_priority(priority),
        countdown=countdown,
    )
    return str(result.id)


def broker_priority(priority: int) -> int:
    """Job priority (0..9, higher is more urgent) → Redis priority (0..9, 0 is served first)."""
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"{priority=} must be in [{MIN_PRIORITY}, {MAX_PRIORITY}]")
    return MAX_PRIORITY - priority


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def shared_celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings both sides must agree on. `broker_transport_options` is a fresh dict the
    caller may extend."""
    interactive, bulk = settings.queue_interactive, settings.queue_bulk
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds,
            # Redis has no priorities: kombu keeps one list per step and pops them in order.
            "queue_order_strategy": "priority",
            "priority_steps": list(range(MIN_PRIORITY, MAX_PRIORITY + 1)),
            "sep": ":",
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_queues": (_queue(interactive), _queue(bulk)),
        "task_default_queue": interactive,
        "task_default_priority": broker_priority(DEFAULT_PRIORITY),
        "task_send_sent_event": True,
    }
