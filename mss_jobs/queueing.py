"""The broker wire contract shared by the producers (the API, the batch dispatcher) and the
workers (consumer), and the torch-free producer itself. Torch-free.

What a message looks like on Redis must match on both sides: the task name, the queues (each on
its own direct exchange: without one, Celery binds every queue to the default queue's exchange
and key, and tasks sent to `bulk` would land in `interactive`), the emulated priorities and the
key separator. Each side adds its own settings on top (acks, limits, timeouts).

The producer: `workers.app.create_app` registers the task itself, and `workers.tasks` imports
the separation pipeline (torch), so the API and the dispatcher publish through `CeleryJobQueue`,
a producer-only Celery app on this same contract (the test suite runs the real worker against
messages sent from it). Publishing fails fast when the broker is down (one quick retry, short
connection timeout) and raises `BrokerUnavailableError`, so a request never hangs on a dead
Redis. `JobQueue` is what the producers' callers depend on (tests pass a fake).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any, Final, Protocol

from celery import Celery  # type: ignore[import-untyped]
from kombu.entity import Exchange, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from mss_jobs.domain.lifecycle import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY, Lane
from mss_jobs.errors import BrokerUnavailableError
from mss_jobs.settings import Settings

__all__ = [
    "SEPARATE_TASK",
    "CeleryJobQueue",
    "JobQueue",
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


# ---------------------------------------------------------------------------------------------
# the producer
# ---------------------------------------------------------------------------------------------

_CONNECT_TIMEOUT_SECONDS: Final = 2.0


class JobQueue(Protocol):
    """Where the API and the dispatcher send job ids to be run."""

    def enqueue(self, job_id: uuid.UUID, *, lane: Lane, priority: int) -> str: ...


class CeleryJobQueue:
    """Publishes to the worker's queues through a producer-only Celery app."""

    def __init__(self, settings: Settings) -> None:
        if settings.broker_url is None:
            raise ValueError("CeleryJobQueue needs settings.broker_url")
        self._lanes: dict[Lane, str] = {
            "interactive": settings.queue_interactive,
            "bulk": settings.queue_bulk,
        }
        self._app = Celery("mss_jobs", set_as_current=False)
        self._app.conf.update(_producer_config(settings))

    def enqueue(self, job_id: uuid.UUID, *, lane: Lane, priority: int) -> str:
        """Send the job id to `lane`'s queue; call only after the job's row is committed."""
        try:
            return send_separate(self._app, job_id, queue=self._lanes[lane], priority=priority)
        except (KombuOperationalError, RedisError, OSError) as exc:
            raise BrokerUnavailableError(
                f"cannot reach the broker to enqueue job {job_id}: {type(exc).__name__}"
            ) from exc

    def close(self) -> None:
        self._app.close()


def _producer_config(settings: Settings) -> dict[str, Any]:
    """The shared wire contract plus fail-fast publishing (short timeouts, one quick retry)."""
    config = shared_celery_config(settings)
    config["broker_transport_options"].update(
        {
            "socket_connect_timeout": _CONNECT_TIMEOUT_SECONDS,
            "socket_timeout": _CONNECT_TIMEOUT_SECONDS,
        }
    )
    config.update(
        {
            "broker_connection_timeout": _CONNECT_TIMEOUT_SECONDS,
            "broker_connection_retry_on_startup": False,
            "task_publish_retry": True,
            "task_publish_retry_policy": {
                "max_retries": 1,
                "interval_start": 0.1,
                "interval_step": 0.2,
                "interval_max": 0.2,
            },
        }
    )
    return config
