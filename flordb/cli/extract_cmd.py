"""``flordb extract NAME``: a metric the runs printed, read back from their console lines.

Registered on the ``flordb`` group by :mod:`flordb.cli.main`. Exit codes: 0
done, 1 when extracted values disagree with logged or replayed ones, 2 on bad
input (a pattern without a group, a name nobody printed).
"""

from __future__ import annotations

import sys

import click

from flordb.cli.common import handle_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option("--pattern", "-p", default=None, metavar="REGEX",
              help="Regular expression (RE2) with one group around the number. Default: NAME followed by"
                   " a space, ':' or '=' and a number, as in 'loss 5.21', 'loss: 5.21', 'acc=0.93', \"'lr': 0.001\".")
@click.option("--preview", is_flag=True, help="Show what would be extracted; write nothing.")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "csv", "json", "vertical"]), default="table",
              show_default=True, help="Output format of --preview.")
@handle_errors
def extract(name: str, pattern: str | None, preview: bool, fmt: str) -> None:
    """Turn printed values of NAME into log records (provenance extract-...), comparing with logged ones.

    \b
    flordb extract ppl --preview
    flordb extract loss --pattern 'loss=([0-9.]+)'
    """
    import pandas as pd

    from flordb.tabular import render
    from flordb.hindsight.extract import ExtractError, compare, extract as run_extract, rows, scan
    from flordb.store.catalog import open_catalog

    with open_catalog() as cat:
        cat.ingest()
        ex = scan(cat, name, pattern)
        if not ex.values:
            raise ExtractError(f"no captured console line matches {name!r} (pattern {ex.pattern!r});"
                                 " see SELECT text FROM console, or pass --pattern")
        if preview:
            df = pd.DataFrame([(r, list(p), list(c), float(v), line) for r, p, c, v, line in rows(cat)],
                              columns=["run_id", "path", "coord", name, "line"])
            click.echo(render(df, fmt))
            cmp = compare(cat, ex)
        else:
            ex = run_extract(cat, name, ex=ex)
            cmp = ex.comparison
            click.echo(f"{name}: {ex.values} printed values in {len(ex.runs)} run(s);"
                       f" written for {len(ex.written)} run(s).", err=True)
            for run_id, why in sorted(ex.skipped.items()):
                click.echo(f"  run {run_id}: not written ({why})", err=True)
        if ex.duplicates:
            click.echo(f"  {ex.duplicates} coordinate(s) printed {name} more than once: the first line counts"
                       " (pass --pattern to pick another)", err=True)
        click.echo(cmp.summary(name), err=True)
    if cmp.disagree:
        sys.exit(1)
