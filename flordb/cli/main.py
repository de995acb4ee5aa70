"""The ``flordb`` command: thin click commands that parse and call the core.

Results go to stdout, plans/progress/prompts to stderr. Exit codes: 0 success,
1 a negative verdict or a failed operation, 2 bad input.
"""

from __future__ import annotations

import sys

import click

from flordb.cli.common import handle_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flordb")
def cli() -> None:
    """FlorDB: query your training runs with SQL, even what you forgot to log."""


FORMAT = click.option(
    "--format", "-f", "fmt", type=click.Choice(["table", "csv", "json", "vertical"]), default="table",
    show_default=True, help="Output format.",
)


@cli.command()
@click.argument("sql")
@FORMAT
@click.option("--yes", "-y", "replay", flag_value="yes", help="Replay missing columns without asking.")
@click.option("--no-replay", "replay", flag_value="no", help="Never replay; fail on missing columns.")
@handle_errors
def query(sql: str, fmt: str, replay: str | None) -> None:
    """Run one SQL statement; `logs` is the wide view of every run.

    \b
    flordb query "SELECT epoch, avg(loss) FROM logs GROUP BY ALL ORDER BY ALL"
    """
    from flordb.cli.render import render
    from flordb.query.api import query_table

    df = query_table(sql, replay=replay or "ask")
    click.echo(render(df, fmt))


@cli.command()
@FORMAT
@click.option("--all", "show_all", is_flag=True, help="Include replay workers.")
@handle_errors
def runs(fmt: str, show_all: bool) -> None:
    """List runs: id, version, script, status, start, duration, args."""
    from flordb.cli.render import render
    from flordb.query.runs import list_runs

    click.echo(render(list_runs(include_replays=show_all), fmt))


@cli.command()
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "csv", "json", "vertical"]), default="table")
@handle_errors
def shell(fmt: str) -> None:
    """Interactive SQL shell (reads statements from stdin when it is not a terminal)."""
    from flordb.cli.shell import run_shell

    sys.exit(run_shell(fmt=fmt))


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--where", "-w", default=None, help="SQL predicate over run, arg and main-loop columns.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, help="Parallel workers (default: cores).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def replay(names: tuple[str, ...], where: str | None, workers: int | None, yes: bool) -> None:
    """Fill in NAMES for recorded runs by replaying them with the current flor.log statements.

    \b
    flordb replay weight_norm
    flordb replay grad_norm --where "epoch >= 3" --workers 2 --yes
    """
    from flordb.hindsight.api import replay as run_replay

    report = run_replay(list(names), where=where, workers=workers, yes=yes)
    if report.failed or report.diverged:
        sys.exit(1)


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to build the demo project (default: a new temporary directory).")
@click.option("--yes", "-y", is_flag=True, default=True, hidden=True)
@handle_errors
def demo(directory: str | None, yes: bool) -> None:
    """Record runs of an example, then query them (and replay a forgotten metric)."""
    from flordb.demo import run_demo

    run_demo(directory)


from flordb.cli.compare_cmd import compare  # noqa: E402

cli.add_command(compare)

from flordb.cli.extract_cmd import extract  # noqa: E402

cli.add_command(extract)


def main() -> None:
    cli(prog_name="flordb")


if __name__ == "__main__":
    main()
