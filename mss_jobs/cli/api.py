"""`mss-jobs api`: serve the HTTP API (with an embedded worker when no broker is configured)."""

from __future__ import annotations

import click

from mss_jobs.cli._common import cli_settings, log_to_stderr, service_app

__all__ = ["api"]


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--log-level", default="info", show_default=True)
def api(host: str, port: int, log_level: str) -> None:
    """Serve the HTTP API (and, with no MSS_BROKER_URL, an embedded worker)."""
    import uvicorn

    settings = cli_settings()
    log_to_stderr(log_level)
    with service_app(settings, run_jobs=True) as app:
        mode = "embedded worker, in-memory queue" if settings.embedded else "broker"
        click.echo(f"mss-jobs API on http://{host}:{port} ({mode}); docs at /docs", err=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level.lower())
