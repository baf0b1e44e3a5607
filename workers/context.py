"""Edge: what one worker process holds for its whole life — DB sessions, storage, models.

Built lazily on first use *in the process that uses it* and rebuilt if the process id changes:
a prefork child must not reuse the parent's pooled database connections or HTTP sessions, and
building in the parent before the fork would hand every child the same sockets.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.db.session import make_engine, make_session_factory
from mss_jobs.settings import Settings
from mss_jobs.storage import ObjectStorage, storage_from_settings
from workers.model_cache import ModelCache

__all__ = ["LazyWorkerContext", "WorkerContext", "build_context"]


@dataclass(frozen=True, slots=True)
class WorkerContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: ObjectStorage
    models: ModelCache

    def close(self) -> None:
        """Close pooled database connections (a worker process simply exits instead)."""
        self.engine.dispose()


def build_context(settings: Settings) -> WorkerContext:
    storage = storage_from_settings(settings)
    engine = make_engine(settings.database_url)
    return WorkerContext(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        storage=storage,
        models=ModelCache(device="auto", settings=settings),
    )


class LazyWorkerContext:
    """`get()` returns this process's context, building it on the first call after a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._context: WorkerContext | None = None

    def get(self) -> WorkerContext:
        with self._lock:
            if self._context is None or self._pid != os.getpid():
                self._context = build_context(self.settings)
                self._pid = os.getpid()
            return self._context
