"""The Celery app's configuration and the pure helpers: no services needed."""

from __future__ import annotations

import pytest

from mss_jobs.errors import ConfigError
from mss_jobs.settings import load_settings
from workers.app import create_app
from workers.tasks import SEPARATE_TASK, broker_priority


def test_app_routes_to_two_separate_queues_with_late_acks() -> None:
    settings = load_settings(
        broker_url="redis://127.0.0.1:6379/13", queue_bulk="batch", visibility_timeout_seconds=3000
    )
    conf = create_app(settings).conf

    queues = {q.name: (q.exchange.name, q.routing_key) for q in conf.task_queues}
    assert queues == {"interactive": ("interactive", "interactive"), "batch": ("batch", "batch")}
    assert conf.task_default_queue == "interactive"
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"]
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 3000
    assert options["queue_order_strategy"] == "priority"
    assert options["priority_steps"] == list(range(10))
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (1800, 2400)
    assert SEPARATE_TASK in create_app(settings).tasks


def test_app_needs_a_broker() -> None:
    with pytest.raises(ConfigError, match="MSS_BROKER_URL"):
        create_app(load_settings(broker_url=None))


@pytest.mark.parametrize(("priority", "expected"), [(9, 0), (5, 4), (0, 9)])
def test_urgent_jobs_get_the_redis_priority_served_first(priority: int, expected: int) -> None:
    assert broker_priority(priority) == expected


@pytest.mark.parametrize("priority", [-1, 10])
def test_priority_out_of_range_is_refused(priority: int) -> None:
    with pytest.raises(ValueError, match="priority"):
        broker_priority(priority)
