"""The job database: typed ORM tables, sessions, the data functions, and migrations.

Import each name from the module that defines it; this package re-exports nothing.

    schema.py           jobs, job_outputs, job_events, batches, batch_rejections (SQLAlchemy 2.0
                        typed ORM, portable types), `utcnow`, `table_of`
    session.py          make_engine / make_session_factory / transaction (PostgreSQL or an SQLite
                        file); insert_unless_taken (race-safe insert on a unique key) and
                        insert_rows (many rows per statement, unnest arrays on PostgreSQL)
    migrate.py          upgrade(url) / downgrade(url) with the Alembic scripts in migrations/

    job_intake.py       creating jobs: params_hash, the idempotent create_job, a batch's job
                        rows in bulk (insert_batch_jobs)
    job_transitions.py  every state change of a job, each one guarded UPDATE plus its
                        job_events row: claim, progress, input, outputs (record_output upsert),
                        succeeded, failed, cancel, retry, delete
    job_queries.py      reads: get, keyset-paginated list, history, outputs, dedup, the events
                        since a job last finished
    recovery.py         worker deaths, the retry requeue, the reaper, stale batch jobs handed back
    results.py          the result cache: record the input and decide reuse / defer / separate

    batch_intake.py     create a batch, add its rows and rejections, finish intake; the batch
                        errors and the batch row lock
    batch_dispatch.py   take pending jobs, re-publish stale queued ones; cancel, retry failed,
                        complete and delete a batch
    batch_queries.py    counts, progress and pace, a page of jobs, the report

The lifecycle enums (JobStatus, BatchStatus, EventKind) live in `mss_jobs.domain.lifecycle`.
"""

__all__: list[str] = []
