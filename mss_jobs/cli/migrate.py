"""`mss-jobs migrate`: bring the database schema to the code's (Alembic)."""

from __future__ import annotations

import click

from mss_jobs.cli._common import cli_settings

__all__ = ["migrate"]


@click.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Upgrade target.")
@click.option("--downgrade", "down_to", default=None, metavar="REV", help="Downgrade to REV.")
def migrate(revision: str, down_to: str | None) -> None:
    """Bring the database schema to the code's (Alembic upgrade head)."""
    from alembic.util import CommandError

    from mss_jobs.db import migrate as migrations

    url = cli_settings().database_url
    before = migrations.current_revision(url)
    try:
        if down_to is not None:
            migrations.downgrade(url, down_to)
        else:
            migrations.upgrade(url, revision)
    except CommandError as exc:  # a revision Alembic does not know, or cannot reach from here
        hint = "--revision" if down_to is None else "--downgrade"
        raise click.BadParameter(str(exc), param_hint=hint) from exc
    click.echo(f"database: {before or 'empty'} → {migrations.current_revision(url) or 'empty'}")
