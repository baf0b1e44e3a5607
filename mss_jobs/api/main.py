"""The FastAPI app: builds the shared resources, includes the routers, maps errors to JSON.

    uvicorn --factory mss_jobs.api.main:app_from_env

Every error body is `{"error": {"code": ..., "message": ...}}`: `MssError`s with the status from
`mss_jobs.api.errors.http_status`, request validation failures as 422 `request.invalid` naming
each offending field. Importing this module imports neither torch nor the worker's task code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mss_jobs.api.deps import ApiState
from mss_jobs.api.errors import http_status
from mss_jobs.api.routes import batches, health, jobs, models
from mss_jobs.api.schemas import ErrorBody, ErrorDetail
from mss_jobs.batches.dispatcher import Dispatcher
from mss_jobs.db.session import make_engine, make_session_factory
from mss_jobs.domain.validation import describe_validation_error, error_field
from mss_jobs.errors import MssError
from mss_jobs.queueing import CeleryJobQueue, JobQueue
from mss_jobs.settings import Settings, get_settings
from mss_jobs.storage import storage_from_settings

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, queue: JobQueue | None = None) -> FastAPI:
    """The API for `settings`. `queue` overrides the Celery producer built from the broker URL."""
    engine = make_engine(settings.database_url)
    storage = storage_from_settings(settings)
    sessions = make_session_factory(engine)
    owned_queue = None
    if queue is None and settings.broker_url is not None:
        queue = owned_queue = CeleryJobQueue(settings)
    dispatcher = None
    if queue is not None and settings.run_dispatcher:
        dispatcher = Dispatcher(
            sessions,
            queue,
            interval=settings.dispatch_interval_seconds,
            stale_after=timedelta(seconds=settings.dispatch_stale_seconds),
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if dispatcher is not None:
            dispatcher.start()
        yield
        if dispatcher is not None:
            dispatcher.stop()
        if owned_queue is not None:
            owned_queue.close()
        engine.dispose()

    app = FastAPI(title="mss-jobs", version="0.1.0", lifespan=lifespan)
    app.state.api = ApiState(
        settings=settings,
        sessions=sessions,
        storage=storage,
        queue=queue,
    )
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.add_exception_handler(MssError, _mss_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


def app_from_env() -> FastAPI:
    """The app configured from `MSS_*` variables (for `uvicorn --factory`)."""
    return create_app(get_settings())


async def _mss_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MssError)
    status = http_status(exc)
    if status >= 500:
        log.error("request failed: %s", exc, exc_info=status == 500)
    body = ErrorBody(error=ErrorDetail(code=exc.code, message=exc.message))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never empty here: a request error's location starts with its part (body, query, path …).
    fields = [error_field(error, "") for error in exc.errors()]
    message = describe_validation_error(exc, "")
    body = ErrorBody(error=ErrorDetail(code="request.invalid", message=message, fields=fields))
    return JSONResponse(jsonable_encoder(body.model_dump()), status_code=422)
