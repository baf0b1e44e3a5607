"""Alembic environment of the job database: online migrations only, one connection, one
transaction (PostgreSQL and SQLite both have transactional DDL).

The URL comes from, in order: `config.attributes["url"]` or the `sqlalchemy.url` option (set by
`mss_jobs.db.migrate`), else the settings (`MSS_DATABASE_URL`, or the embedded SQLite default).
SQLite migrates in batch mode (ALTER by copy-and-rename) with foreign keys off, so recreating a
parent table cannot cascade-delete its children.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from mss_jobs.db.schema import Base
from mss_jobs.db.session import make_engine

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    from mss_jobs.settings import load_settings

    return load_settings().database_url


def run_migrations_online() -> None:
    engine = make_engine(_database_url(), sqlite_foreign_keys=False)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                transactional_ddl=True,  # SQLite has it too; a failed revision leaves no trace
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
run_migrations_online()
