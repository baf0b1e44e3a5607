"""Typed dependencies of the route handlers: what `create_app` built, read off `app.state`.

One engine, session factory, storage client and broker producer per app; handlers declare what
they need with the `Annotated` aliases below instead of reaching for globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.queueing import JobQueue
from mss_jobs.settings import Settings
from mss_jobs.storage import ObjectStorage

__all__ = [
    "ApiState",
    "IdempotencyHeader",
    "QueueDep",
    "SessionsDep",
    "SettingsDep",
    "StateDep",
    "StorageDep",
    "error_responses",
]


@dataclass(frozen=True, slots=True)
class ApiState:
    """Everything the handlers share; one per app, built by `mss_jobs.api.main.create_app`."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage: ObjectStorage
    queue: JobQueue | None
    """None when no broker is configured (the embedded worker is not part of the API yet)."""


def get_state(request: Request) -> ApiState:
    state = request.app.state.api
    assert isinstance(state, ApiState), "create_app sets app.state.api"
    return state


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_sessions(state: StateDep) -> sessionmaker[Session]:
    return state.sessions


def get_storage(state: StateDep) -> ObjectStorage:
    return state.storage


def get_queue(state: StateDep) -> JobQueue | None:
    return state.queue


StateDep = Annotated[ApiState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
StorageDep = Annotated[ObjectStorage, Depends(get_storage)]
QueueDep = Annotated[JobQueue | None, Depends(get_queue)]


IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
"""The optional `Idempotency-Key` request header (jobs and batches)."""


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` for error statuses, each answered with an `ErrorBody`."""
    from mss_jobs.api.schemas import ErrorBody

    return {code: {"model": ErrorBody} for code in codes}
