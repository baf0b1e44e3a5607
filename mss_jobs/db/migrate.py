"""Edge: run the Alembic migrations in `migrations/` against a URL, with no ini file needed.

    python -m mss_jobs.db.migrate upgrade [--url URL] [--revision head]
    python -m mss_jobs.db.migrate downgrade [--url URL] [--revision base]

Without `--url`, the settings decide (`MSS_DATABASE_URL`, or the embedded SQLite default). The
migrations live at the repository root beside the package, which is where both a checkout and an
editable install find them; any other layout names the folder in `MSS_MIGRATIONS_DIR`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mss_jobs.db.session import make_engine
from mss_jobs.errors import ConfigError

__all__ = [
    "alembic_config",
    "current_revision",
    "downgrade",
    "ensure_current",
    "head_revision",
    "main",
    "migrations_dir",
    "upgrade",
]

MIGRATIONS_DIR_VARIABLE = "MSS_MIGRATIONS_DIR"


def migrations_dir() -> Path:
    """The Alembic script folder: `$MSS_MIGRATIONS_DIR`, else `<repository>/migrations`."""
    configured = os.environ.get(MIGRATIONS_DIR_VARIABLE)
    folder = Path(configured) if configured else Path(__file__).resolve().parents[2] / "migrations"
    if not (folder / "env.py").is_file():
        raise ConfigError(
            f"no Alembic migrations at {folder} (expected env.py there); "
            f"set {MIGRATIONS_DIR_VARIABLE} to the repository's migrations/ folder"
        )
    return folder


def alembic_config(url: str) -> Config:
    """An Alembic `Config` for `url`, built in code (no ini file, no logging set-up)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url  # not via set_main_option: '%' in a password is ini syntax
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at `url` down to `revision` (`base` drops every table)."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision in `migrations/versions`."""
    return ScriptDirectory.from_config(alembic_config("unused://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at; None before the first upgrade."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def ensure_current(url: str, *, upgrade_if_behind: bool) -> None:
    """Make sure the database at `url` has the schema this code expects.

    Embedded SQLite upgrades itself (`upgrade_if_behind=True`: nobody else shares the file);
    a shared production database is migrated deliberately, once, by `mss-jobs migrate`, so here a
    database behind the code is a `ConfigError` saying so instead of a migration race between
    every API and worker process that starts.
    """
    head = head_revision()
    current = current_revision(url)
    if current == head:
        return
    if upgrade_if_behind:
        upgrade(url)
        return
    raise ConfigError(
        f"the database is at migration {current or 'none (empty)'}, this code needs {head}: "
        "run `mss-jobs migrate` first"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mss_jobs.db.migrate", description=__doc__)
    parser.add_argument("direction", choices=["upgrade", "downgrade"])
    parser.add_argument("--url", help="database URL (default: MSS_DATABASE_URL or embedded)")
    parser.add_argument("--revision", help="target revision (default: head / base)")
    args = parser.parse_args(argv)
    if args.url is None:
        from mss_jobs.settings import load_settings

        args.url = load_settings().database_url
    if args.direction == "upgrade":
        upgrade(args.url, args.revision or "head")
    else:
        downgrade(args.url, args.revision or "base")


if __name__ == "__main__":
    main()
