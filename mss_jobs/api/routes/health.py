"""Liveness and readiness: `/healthz` says the process answers, `/readyz` that its dependencies do.

Readiness checks the database (`SELECT 1`), the broker (Redis `PING`, 1 s timeouts; skipped when
no broker is configured) and object storage (an existence check of a probe key, which needs the
bucket to exist and the credentials to work). Any failure answers 503 naming the failed check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import redis
from fastapi import APIRouter, Response, status
from sqlalchemy import text

from mss_jobs.api.deps import ApiState, StateDep
from mss_jobs.api.schemas import ReadinessCheck, ReadinessOut

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_SECONDS: Final = 1.0
PROBE_KEY: Final = "readyz-probe"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ReadinessOut}})
def readyz(state: StateDep, response: Response) -> ReadinessOut:
    """Database, broker and storage reachable; 503 with the failed checks otherwise."""
    probes: dict[str, Callable[[ApiState], str | None]] = {
        "database": _database,
        "broker": _broker,
        "storage": _storage,
    }
    checks = {name: _run(probe, state) for name, probe in probes.items()}
    ready = all(check.ok for check in checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return ReadinessOut(ready=ready, checks=checks)


def _run(probe: Callable[[ApiState], str | None], state: ApiState) -> ReadinessCheck:
    try:
        return ReadinessCheck(ok=True, detail=probe(state))
    except Exception as exc:  # a readiness probe reports every failure, whatever its type
        return ReadinessCheck(ok=False, detail=f"{type(exc).__name__}: {exc}")


def _database(state: ApiState) -> None:
    with state.sessions() as session:
        session.execute(text("SELECT 1"))


def _broker(state: ApiState) -> str | None:
    url = state.settings.broker_url
    if url is None:
        return "no broker configured"
    client = redis.Redis.from_url(
        url,
        socket_timeout=BROKER_TIMEOUT_SECONDS,
        socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
        retry_on_timeout=False,
    )
    try:
        client.ping()
    finally:
        client.close()
    return None


def _storage(state: ApiState) -> None:
    prefix = state.storage.prefix
    state.storage.exists(f"{prefix}/{PROBE_KEY}" if prefix else PROBE_KEY)
