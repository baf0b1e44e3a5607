"""Edge: the API's side of the broker — send `mss_jobs.separate(job_id)` without importing torch.

`workers.app.create_app` registers the task itself, and `workers.tasks` imports the separation
pipeline (torch), so the API builds a producer-only Celery app here instead, on the same wire
contract as the workers (`mss_jobs.queueing`); the test suite runs the real worker against
messages sent from here.

Publishing fails fast when the broker is down (one quick retry, short connection timeout) and
raises `BrokerUnavailableError`, so a request never hangs on a dead Redis.
"""

from __future__ import annotations

import uuid
from typing import Any, Final, Protocol

from celery import Celery  # type: ignore[import-untyped]
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from mss_jobs.api.errors import BrokerUnavailableError
from mss_jobs.domain.lifecycle import Lane
from mss_jobs.queueing import SEPARATE_TASK, send_separate, shared_celery_config
from mss_jobs.settings import Settings

__all__ = ["SEPARATE_TASK", "CeleryJobQueue", "JobQueue"]

_CONNECT_TIMEOUT_SECONDS: Final = 2.0


class JobQueue(Protocol):
    """Where the API sends job ids to be run."""

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
