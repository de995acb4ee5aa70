"""``flordb doctor``: check the store, or rebuild the catalog from the segments (flordb.store.doctor)."""

from __future__ import annotations

import sys

import click

from flordb.cli.common import handle_errors


@click.command()
@click.option("--rebuild", is_flag=True, help="Move the catalog aside and rebuild it from the segments.")
@handle_errors
def doctor(rebuild: bool) -> None:
    """Check the store: run files, segments, catalog, quarantined files.

    \b
    flordb doctor
    flordb doctor --rebuild
    """
    from flordb.store import doctor as doc
    from flordb.store.layout import locate

    layout = locate()
    if rebuild:
        old, runs, rows = doc.rebuild(layout)
        if old is not None:
            click.echo(f"old catalog moved to {old}", err=True)
        click.echo(f"catalog rebuilt from the segments: {runs} runs, {rows} records")
    report = doc.check(layout)
    for finding in report.findings:
        click.echo(str(finding))
    if not report.healthy:
        sys.exit(1)
