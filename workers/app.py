"""The Celery app: Redis broker, two priority-ordered queues, late acknowledgement.

    celery -A workers.app worker -Q interactive,bulk -c 1 -P prefork

`app` is built from the environment (`MSS_*`) on first access, so importing this module reads no
settings; tests and the API call `create_app(settings)` instead.

Delivery guarantees: a task is acknowledged only when it returns (`task_acks_late`), and a task
whose worker process died is re-queued (`task_reject_on_worker_lost`); a worker that vanished
with its message unacknowledged gets it redelivered by Redis after `visibility_timeout`, which the
settings keep above the hard time limit (a live worker would otherwise see its own long task
redelivered). Workers look for such expired messages every quarter visibility timeout (at most
10 s). The task is idempotent, so running twice is harmless.

Priorities: Redis has none, so kombu emulates them with one list per step (`priority_steps`)
and pops the lists in order, 0 first. Job priority (0..9, higher more urgent) is mapped by
`mss_jobs.queueing.broker_priority` (9 - priority) when enqueueing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from mss_jobs.errors import ConfigError
from mss_jobs.queueing import SEPARATE_TASK, shared_celery_config
from mss_jobs.settings import Settings, env_var, load_settings
from workers.reaper import install_reaper
from workers.tasks import register_tasks

__all__ = ["build_app", "celery_config", "create_app"]


def create_app(settings: Settings) -> Celery:
    """A Celery app for `settings` with `mss_jobs.separate` registered."""
    if settings.broker_url is None:
        raise ConfigError(
            f"the Celery worker needs a broker: set {env_var('broker_url')} "
            "(e.g. redis://127.0.0.1:6379/0)"
        )
    app = build_app(settings)
    install_reaper(app, settings)
    return app


def build_app(settings: Settings, *, overrides: Mapping[str, Any] | None = None) -> Celery:
    """A Celery app with our config (plus `overrides`) and `mss_jobs.separate` registered; no
    broker check and no reaper (the embedded worker builds on this too)."""
    app = Celery("mss_jobs", set_as_current=False)
    config = celery_config(settings)
    config.update(overrides or {})
    app.conf.update(config)
    register_tasks(app, settings)
    return app


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours: the shared wire contract plus the consumer's side."""
    config = shared_celery_config(settings)
    config["broker_transport_options"].update(
        {
            # kombu sweeps for expired unacknowledged messages every interval × throttle seconds
            # (100 s by default); sweep every quarter timeout (at most 10 s) instead, so a dead
            # worker's task waits little more than the visibility timeout. One ZRANGE a sweep.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_seconds // 4)),
            "unacked_restore_throttle": 1,
        }
    )
    config.update(
        {
            "result_backend": settings.result_backend,
            "broker_connection_retry_on_startup": True,
            "result_serializer": "json",
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_soft_time_limit": settings.job_soft_time_limit_seconds,
            "task_time_limit": settings.job_hard_time_limit_seconds,
            "task_track_started": True,
            "worker_send_task_events": True,
            "task_routes": {SEPARATE_TASK: {"queue": settings.queue_interactive}},
            "worker_hijack_root_logger": True,
        }
    )
    return config


_default_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """`workers.app.app`, built from the environment on first access (`celery -A workers.app`)."""
    global _default_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _default_app is None:
        _default_app = create_app(load_settings())
    return _default_app
