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

Two write idioms the data modules share live here too: `insert_unless_taken`, the INSERT that
loses a race on a unique key to the row that won, and `insert_rows`, many rows per statement
(one array per column on PostgreSQL, so a 100,000-row batch intake takes seconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import JSON, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeEngine

from mss_jobs.errors import TransientError

__all__ = [
    "insert_rows",
    "insert_unless_taken",
    "make_engine",
    "make_session_factory",
    "normalize_url",
    "transaction",
]

R = TypeVar("R")

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


def insert_unless_taken(
    session: Session, *, insert: Callable[[], None], find: Callable[[], R | None]
) -> R | None:
    """The row that already holds a unique key (`find`), or None once `insert` added ours.

    Race-safe: the insert runs in a savepoint, so of two concurrent inserts with one key the
    loser meets the unique constraint, rolls back to the savepoint and gets the winner's row. A
    violation about anything but the key is re-raised. Used by `job_intake.create_job`
    (idempotency key) and `batch_intake.create_batch` (batch key).
    """
    existing = find()
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            insert()
    except IntegrityError:
        existing = find()
        if existing is None:  # the violation was not about the key
            raise
        return existing
    return None


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    skip_conflicts_on: Sequence[str] | None = None,
) -> int:
    """Insert `rows` (dicts with the same keys) in one statement; how many were inserted.

    With `skip_conflicts_on`, a row whose key is taken is skipped (`ON CONFLICT DO NOTHING`).
    PostgreSQL gets one array per column, `INSERT … SELECT … FROM unnest(…)`: a handful of
    parameters instead of one per value, which psycopg would otherwise parse out of a
    14,000-placeholder statement on every chunk (4× slower). SQLite binds in process, so a
    plain executemany is as fast there.
    """
    if not rows:
        return 0
    columns = list(rows[0])
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(name) for name in columns)
        arrays = ", ".join(
            f"CAST(:c{index} AS {table.c[name].type.compile(dialect=dialect)}[])"
            for index, name in enumerate(columns)
        )
        conflict = (
            f" ON CONFLICT ({', '.join(map(quote, skip_conflicts_on))}) DO NOTHING"
            if skip_conflicts_on
            else ""
        )
        statement = text(
            f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays})"
            f"{conflict} RETURNING 1"
        )
        arguments = {
            f"c{index}": _pg_array(table.c[name].type, [row[name] for row in rows])
            for index, name in enumerate(columns)
        }
        return len(session.execute(statement, arguments).all())
    if dialect.name == "sqlite":
        insert_rows = sqlite.insert(table)
        if skip_conflicts_on:
            insert_rows = insert_rows.on_conflict_do_nothing(index_elements=skip_conflicts_on)
        key = table.primary_key.columns.values()[0]
        return len(session.execute(insert_rows.returning(key), list(rows)).all())
    raise NotImplementedError(f"no bulk insert for the {dialect.name!r} dialect")


def _pg_array(column_type: TypeEngine[Any], values: list[Any]) -> list[Any]:
    """Column values as psycopg sends them inside an array: JSON as text, enums as strings."""
    if isinstance(column_type, JSON) or isinstance(getattr(column_type, "impl", None), JSON):
        return [None if value is None else json.dumps(value) for value in values]
    return [value.value if isinstance(value, Enum) else value for value in values]


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
