"""`mss-jobs models [list|show|pull]`: the model catalog and its file cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mss_jobs.cli._common import cli_settings, option, progress_bar
from mss_jobs.cli.exit_codes import ExitCode, MssGroup, option_error
from mss_jobs.errors import MssError

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["models_group"]


@click.group("models", cls=MssGroup, invoke_without_command=True)
@click.pass_context
def models_group(ctx: click.Context) -> None:
    """List, inspect and download models (`mss-jobs models` alone lists them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


@models_group.command("list")
def models_list() -> None:
    """Every model, whether its files are here (*), its stems and what it is."""
    from mss_jobs.models.catalog import is_available, list_model_infos

    model_dir = cli_settings().model_dir
    for info in list_model_infos():
        mark = "*" if is_available(info.name, model_dir=model_dir) else " "
        click.echo(f"{mark} {info.name:<24} stems: {', '.join(info.stems):<36} {info.description}")
    click.echo(f"(* = ready here; others need `mss-jobs models pull NAME`; cache: {model_dir})")


@models_group.command("show")
@click.argument("name")
def models_show(name: str) -> None:
    """Details of model NAME: architecture, stems, license, files and where they are cached."""
    from mss_jobs.models.catalog import get_model_info, is_available
    from mss_jobs.models.known import KNOWN_MODELS
    from mss_jobs.models.weights import cache_path

    model_dir = cli_settings().model_dir
    try:
        info = get_model_info(name)
    except MssError as exc:
        raise option_error(exc) from exc
    click.echo(f"name:         {info.name}")
    click.echo(f"kind:         {info.kind}")
    if info.architecture:
        click.echo(f"architecture: {info.architecture}")
    click.echo(f"stems:        {', '.join(info.stems)}")
    click.echo(f"description:  {info.description}")
    if info.license:
        click.echo(f"license:      {info.license}")
    click.echo(f"available:    {'yes' if is_available(name, model_dir=model_dir) else 'no'}")
    known = KNOWN_MODELS.get(name)
    if known is None:
        return
    for role, resource in [("config", known.config)] + [
        ("checkpoint", c) for c in known.checkpoints
    ]:
        if resource is None:
            continue
        path = cache_path(model_dir, resource)
        digest = resource.sha256 or "unknown (not published)"
        if resource.sha256 and len(resource.sha256) < 64:
            digest += "… (prefix)"
        click.echo(f"{role}:")
        click.echo(f"  url:    {resource.url}")
        click.echo(f"  sha256: {digest}")
        click.echo(f"  cached: {path if path.is_file() else 'no'}")


@models_group.command("pull")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Download again even if cached.")
@option("quiet")
def models_pull(names: tuple[str, ...], force: bool, quiet: bool) -> None:
    """Download the files of models NAMES into the model cache (MSS_MODEL_DIR)."""
    from mss_jobs.models.known import get_known_model
    from mss_jobs.models.weights import model_store_from_settings

    store = model_store_from_settings(cli_settings(), pull=True)
    try:
        models = [get_known_model(name) for name in names]
    except MssError as exc:
        raise option_error(exc) from exc
    failures = 0
    for model in models:
        try:
            for resource in model.resources:
                with progress_bar(
                    desc=f"{model.name}: {resource.name}", unit="B", unit_scale=True, disable=quiet
                ) as bar:

                    def advance(done: int, total: int | None, bar: tqdm[Any] = bar) -> None:
                        if total is not None and bar.total != total:
                            bar.total = total
                        bar.update(done - bar.n)

                    store.fetch(resource, progress=advance, force=force)
        except MssError as exc:
            failures += 1
            click.echo(f"error: {model.name}: {exc.code}: {exc}", err=True)
            continue
        click.echo(f"{model.name}: ready in {store.root}")
    if failures:
        raise click.exceptions.Exit(ExitCode.FAILED)
