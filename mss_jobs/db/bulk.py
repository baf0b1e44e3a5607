"""Edge: multi-row INSERTs that stay fast at catalog scale, on PostgreSQL and SQLite.

A batch's intake writes 100,000 job rows; SQLAlchemy's generic executemany binds one parameter
per value, and psycopg then parses a 14,000-placeholder statement for every 1,000-row chunk, which
made the intake four times slower than the server needs. PostgreSQL therefore gets one array per
column (`INSERT … SELECT … FROM unnest(…)`), and batch jobs send each distinct params document
once per chunk. SQLite binds in process: a plain executemany is as fast there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from sqlalchemy import JSON, Table, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from mss_jobs.db.jobs import params_hash
from mss_jobs.db.models import Job
from mss_jobs.domain.lifecycle import JobStatus

__all__ = ["BatchRow", "insert_batch_jobs", "insert_rows"]


class BatchRow(Protocol):
    """One accepted row, as `mss_jobs.batches.manifest.ManifestRow` carries it.

    `params` are the effective params (defaults filled in, overrides applied): their hash is
    what result dedup compares.
    """

    @property
    def line(self) -> int: ...
    @property
    def input(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def priority(self) -> int: ...
    @property
    def ref(self) -> str | None: ...


def insert_batch_jobs(
    session: Session,
    *,
    batch_id: uuid.UUID,
    rows: Sequence[BatchRow],
    now: datetime,
    force: bool = False,
) -> int:
    """Insert `rows` as pending jobs of the batch, skipping lines it has; how many were new.

    `force` is the batch's flag, copied onto every job: the worker reads it from the job row.
    """
    if session.get_bind().dialect.name == "postgresql":
        return _insert_jobs_postgresql(session, batch_id=batch_id, rows=rows, now=now, force=force)
    job_table = Job.__table__
    assert isinstance(job_table, Table)
    return insert_rows(
        session,
        job_table,
        [_job_values(row, batch_id=batch_id, now=now, force=force) for row in rows],
        skip_conflicts_on=("batch_id", "batch_line"),
    )


def _job_values(
    row: BatchRow, *, batch_id: uuid.UUID, now: datetime, force: bool
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "status": JobStatus.PENDING,
        "model": row.model,
        "params": dict(row.params),
        "params_hash": params_hash(row.params),
        "input_uri": row.input,
        "priority": row.priority,
        "progress": 0.0,
        "attempts": 0,
        "batch_id": batch_id,
        "batch_line": row.line,
        "client_ref": row.ref,
        "force": force,
        "created_at": now,
        "updated_at": now,
    }


_INSERT_JOBS_POSTGRESQL = text(
    """
    INSERT INTO jobs (id, status, model, params, params_hash, input_uri, priority, progress,
                      attempts, batch_id, batch_line, client_ref, force, created_at, updated_at)
    SELECT item.id, 'pending', item.model, shared.params[item.spec], shared.hashes[item.spec],
           item.input_uri, item.priority, 0, 0, :batch_id, item.line, item.ref, :force, :now,
           :now
    FROM unnest(CAST(:ids AS uuid[]), CAST(:lines AS integer[]), CAST(:inputs AS text[]),
                CAST(:refs AS text[]), CAST(:priorities AS integer[]),
                CAST(:models AS text[]), CAST(:specs AS integer[]))
             AS item(id, line, input_uri, ref, priority, model, spec),
         (SELECT CAST(:params AS jsonb[]) AS params, CAST(:hashes AS text[]) AS hashes) AS shared
    ON CONFLICT (batch_id, batch_line) DO NOTHING
    RETURNING 1
    """
)
"""One chunk of batch jobs as one array per column, and each distinct params document once:
rows of a manifest share a few specs, and sending (and escaping, and parsing) the same JSON a
thousand times was most of the intake's cost."""


def _insert_jobs_postgresql(
    session: Session,
    *,
    batch_id: uuid.UUID,
    rows: Sequence[BatchRow],
    now: datetime,
    force: bool,
) -> int:
    specs: dict[int, int] = {}  # id(params) → 1-based index into the shared arrays
    params: list[str] = []
    hashes: list[str] = []
    indexes: list[int] = []
    for row in rows:
        index = specs.get(id(row.params))  # the rows keep their params alive meanwhile
        if index is None:
            params.append(json.dumps(dict(row.params)))
            hashes.append(params_hash(row.params))
            index = specs[id(row.params)] = len(params)
        indexes.append(index)
    arguments = {
        "batch_id": batch_id,
        "force": force,
        "now": now,
        "ids": [uuid.uuid4() for _ in rows],
        "lines": [row.line for row in rows],
        "inputs": [row.input for row in rows],
        "refs": [row.ref for row in rows],
        "priorities": [row.priority for row in rows],
        "models": [row.model for row in rows],
        "specs": indexes,
        "params": params,
        "hashes": hashes,
    }
    return len(session.execute(_INSERT_JOBS_POSTGRESQL, arguments).all())


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
