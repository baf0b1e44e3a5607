"""The job database: typed ORM tables, sessions, the data functions, and migrations.

    models.py   jobs, job_outputs, job_events (SQLAlchemy 2.0 typed ORM, portable types)
    enums.py    JobStatus, EventKind
    session.py  make_engine / make_session_factory / transaction (PostgreSQL or an SQLite file)
    jobs.py     keyword-only data functions: every job state change, as one guarded UPDATE;
                re-exports queries.py (get, keyset-paginated list, history, dedup) and
                outputs.py (record_output upsert, list_outputs)
    migrate.py  upgrade(url) / downgrade(url) with the Alembic scripts in migrations/

Callers import the data functions from `mss_jobs.db.jobs` and the rest from here.
"""

from mss_jobs.db.enums import TERMINAL_STATUSES, EventKind, JobStatus
from mss_jobs.db.models import Base, Job, JobEvent, JobOutput
from mss_jobs.db.session import make_engine, make_session_factory, transaction

__all__ = [
    "TERMINAL_STATUSES",
    "Base",
    "EventKind",
    "Job",
    "JobEvent",
    "JobOutput",
    "JobStatus",
    "make_engine",
    "make_session_factory",
    "transaction",
]
