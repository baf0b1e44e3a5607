"""The job database: typed ORM tables, sessions, the data functions, and migrations.

    models.py   jobs, job_outputs, job_events, batches, batch_rejections (SQLAlchemy 2.0 typed
                ORM, portable types)
    enums.py    JobStatus, BatchStatus, EventKind
    session.py  make_engine / make_session_factory / transaction (PostgreSQL or an SQLite file)
    jobs.py     keyword-only data functions: every job state change, as one guarded UPDATE;
                re-exports creation.py (params_hash, the idempotent create_job),
                recovery.py (worker deaths, the retry requeue, the reaper, stale batch jobs
                handed back), queries.py (get, keyset-paginated list, history) and
                outputs.py (record_output upsert, list_outputs)
    transitions.py  the guarded UPDATE and the job_events row every change is built from
    results.py  the result cache: record the input and decide reuse / defer / separate
    batches.py  keyword-only data functions of batches: bulk intake, dispatch, cancel, retry,
                completion; re-exports batch_queries.py (counts, progress, listing, report);
                bulk.py writes many rows per statement (unnest arrays on PostgreSQL)
    migrate.py  upgrade(url) / downgrade(url) with the Alembic scripts in migrations/

Callers import the data functions from `mss_jobs.db.jobs` and `mss_jobs.db.batches`, and the
rest from here.
"""

from mss_jobs.db.models import Base, Batch, BatchRejection, Job, JobEvent, JobOutput
from mss_jobs.db.session import make_engine, make_session_factory, transaction
from mss_jobs.domain.lifecycle import TERMINAL_STATUSES, BatchStatus, EventKind, JobStatus

__all__ = [
    "TERMINAL_STATUSES",
    "Base",
    "Batch",
    "BatchRejection",
    "BatchStatus",
    "EventKind",
    "Job",
    "JobEvent",
    "JobOutput",
    "JobStatus",
    "make_engine",
    "make_session_factory",
    "transaction",
]
