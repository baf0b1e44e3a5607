"""mss_jobs.periodic.PeriodicThread: runs now and every interval, survives a failing run, stops
at once. No services needed; waits are bounded by events, not sleeps."""

from __future__ import annotations

import logging
import threading

import pytest

from mss_jobs.periodic import PeriodicThread

log = logging.getLogger("tests.periodic")


def test_runs_at_once_then_repeatedly_until_stopped() -> None:
    calls: list[int] = []
    third = threading.Event()

    def tick() -> None:
        calls.append(len(calls))
        if len(calls) == 3:
            third.set()

    ticker = PeriodicThread(tick, 0.01, name="tick", log=log)
    ticker.start()
    assert third.wait(10), "three runs did not happen"
    assert ticker.running
    assert ticker.started
    assert ticker.stop() is True
    assert not ticker.started
    assert not ticker.running
    settled = len(calls)
    assert calls[:3] == [0, 1, 2]
    assert ticker.stop() is True  # stopping twice is harmless
    assert len(calls) == settled  # nothing runs after stop returned


def test_stop_wakes_the_wait_instead_of_sleeping_the_interval() -> None:
    ran = threading.Event()
    ticker = PeriodicThread(ran.set, 3600.0, name="slow", log=log, stop_timeout=5.0)
    ticker.start()
    assert ran.wait(10)
    assert ticker.stop() is True  # joined well before the hour-long interval


def test_a_failing_run_is_reported_and_the_loop_goes_on() -> None:
    errors: list[Exception] = []
    later = threading.Event()
    runs = 0

    def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("database away")
        later.set()

    ticker = PeriodicThread(flaky, 0.01, name="flaky", log=log, on_error=errors.append)
    ticker.start()
    assert later.wait(10)
    ticker.stop()
    assert [str(e) for e in errors] == ["database away"]


def test_a_failing_run_is_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    done = threading.Event()

    def broken() -> bool:
        done.set()
        raise ValueError("bad row")

    ticker = PeriodicThread(broken, 3600.0, name="broken", log=log)
    with caplog.at_level(logging.ERROR, logger="tests.periodic"):
        ticker.start()
        assert done.wait(10)
        ticker.stop()
    (record,) = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


def test_returning_false_ends_the_loop_and_run_works_in_the_foreground() -> None:
    calls = []

    def twice() -> bool:
        calls.append(1)
        return len(calls) < 2

    PeriodicThread(twice, 0.001, name="fg", log=log).run()  # returns by itself
    assert len(calls) == 2


def test_start_twice_and_bad_intervals_are_refused() -> None:
    ticker = PeriodicThread(lambda: None, 3600.0, name="once", log=log)
    ticker.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            ticker.start()
    finally:
        ticker.stop()
    with pytest.raises(ValueError, match="interval"):
        PeriodicThread(lambda: None, 0, name="zero", log=log)
