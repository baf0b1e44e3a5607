"""Edge: engines and transactional sessions from a database URL (PostgreSQL or an SQLite file).

PostgreSQL URLs without a driver (`postgresql://`) are served by psycopg 3, the one installed.
Connections are checked before use (`pool_pre_ping`) so a restarted server costs no failed job.

SQLite is set up for the embedded mode, where the API and worker threads share one file:
foreign keys on (SQLite leaves them off per connection), WAL journal (readers do not block the
writer), connections usable across threads, a 30 s busy timeout, and every transaction opened with
`BEGIN IMMEDIATE`. The last one costs concurrency — one writer at a time, taken when the
transaction starts — and buys correctness: a deferred transaction that reads and then writes can
fail at once with "database is locked" when another writer committed in between, instead of
waiting. SQLite ≥ 3.35 is required (`RETURNING`).

Database failures a retry can fix (connection lost, lock timeout, serialization failure) leave
`transaction()` as `TransientError`; constraint violations stay SQLAlchemy errors (a bug or a
conflict the caller handles).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mss_jobs.errors import TransientError

__all__ = ["make_engine", "make_session_factory", "normalize_url", "transaction"]

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


def normalize_url(url: str | URL) -> URL:
    """Parse `url`, choosing psycopg 3 for PostgreSQL when no driver is named."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, *, sqlite_foreign_keys: bool = True, echo: bool = False) -> Engine:
    """An engine for `url`, configured for its dialect (see the module docstring).

    `sqlite_foreign_keys=False` is for migrations only: SQLite batch mode recreates a table by
    dropping the old one, which with foreign keys on would cascade-delete the children.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, foreign_keys=sqlite_foreign_keys, echo=echo)
    return create_engine(parsed, pool_pre_ping=True, echo=echo)


def _sqlite_engine(url: URL, *, foreign_keys: bool, echo: bool) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module, which would otherwise emit its
        # own deferred BEGIN (and break SAVEPOINT); `_begin` below opens transactions instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable in WAL mode, fewer fsyncs
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (the API returns them afterwards)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back if it raises.

    A database failure worth retrying is re-raised as `TransientError` (chained).
    """
    try:
        with sessions.begin() as session:
            yield session
    except DBAPIError as exc:
        if _is_transient(exc):
            raise TransientError(f"database unavailable: {_reason(exc)}") from exc
        raise


def _is_transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    # sqlite3 also files schema and syntax mistakes under OperationalError; those are bugs.
    reason = _reason(exc).lower()
    return not (reason.startswith("no such ") or "syntax error" in reason)


def _reason(exc: DBAPIError) -> str:
    text = str(exc.orig).strip() if exc.orig is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__
