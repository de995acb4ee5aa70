"""The ``flordb`` command: thin click commands that parse and call the core.

Results go to stdout, plans/progress/prompts to stderr. Exit codes: 0 success,
1 a negative verdict or a failed operation, 2 bad input.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from flordb.cli.common import handle_errors

# Commands defined in their own module, imported only when that command runs (or for --help):
# one line here per command, so `flordb query` never loads what `flordb compare` needs.
LAZY_COMMANDS = {
    "compare": "flordb.cli.compare_cmd:compare",
    "extract": "flordb.cli.extract_cmd:extract",
    "doctor": "flordb.cli.doctor_cmd:doctor",
    "ui": "flordb.ui.command:ui",
}


class LazyGroup(click.Group):
    """A click group whose commands in LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, _, attr = LAZY_COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flordb")
def cli() -> None:
    """FlorDB: query your training runs with SQL, even what you forgot to log."""


FORMAT = click.option(
    "--format", "-f", "fmt", type=click.Choice(["table", "csv", "json", "vertical"]), default="table",
    show_default=True, help="Output format.",
)


EXECUTOR = click.option(
    "--executor", type=click.Choice(["local", "ray"]), default=None,
    help="Where replay tasks run (default: FLORDB_EXECUTOR, else local).",
)
ADDRESS = click.option("--address", default=None, help="Ray cluster: auto or HOST:PORT (default: RAY_ADDRESS).")


def _executor_settings(executor: str | None, address: str | None) -> None:
    """--executor/--address are the settings FLORDB_EXECUTOR/RAY_ADDRESS for this command."""
    import os

    if executor:
        os.environ["FLORDB_EXECUTOR"] = executor
    if address:
        os.environ["RAY_ADDRESS"] = address


@cli.command(context_settings={"ignore_unknown_options": True})  # SQL may start with "--" (a comment)
@click.argument("sql")
@FORMAT
@click.option("--yes", "-y", "replay", flag_value="yes", help="Replay missing columns without asking.")
@click.option("--no-replay", "replay", flag_value="no", help="Never replay; fail on missing columns.")
@click.option("--allow-files", "allow_files", multiple=True, type=click.Path(), metavar="PATH",
              help="Let the query read this local file or directory (read-only; repeatable).")
@EXECUTOR
@ADDRESS
@handle_errors
def query(sql: str, fmt: str, replay: str | None, allow_files: tuple[str, ...], executor: str | None,
          address: str | None) -> None:
    """Run one SQL statement; `logs` is the wide view of every run.

    \b
    flordb query "SELECT epoch, avg(loss) FROM logs GROUP BY ALL ORDER BY ALL"
    """
    _executor_settings(executor, address)
    if replay == "yes":
        _warm_worker()  # first: it imports libraries while this process imports the query side
    import warnings

    from flordb.api import query_rows
    from flordb.hindsight.partial import PartialAnswerWarning
    from flordb.tabular import render

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PartialAnswerWarning)
        df = query_rows(sql, replay=replay or "ask", allow_files=allow_files)
    click.echo(render(df, fmt))
    partial = [w for w in caught if issubclass(w.category, PartialAnswerWarning)]
    for w in caught:
        if w not in partial:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if partial:  # the summary is already on stderr: a partial answer is a negative verdict
        sys.exit(1)


def _warm_worker() -> None:
    """A query allowed to replay starts a local worker before it plans (see executors.local.prestart_early)."""
    from flordb.hindsight.executors import executor_name

    try:
        if executor_name() == "local":
            from flordb.hindsight.executors.local import prestart_early
            from flordb.store.layout import locate

            prestart_early(locate())
    except Exception:  # only a head start: the replay starts its workers itself
        pass


@cli.command()
@FORMAT
@click.option("--all", "show_all", is_flag=True, help="Include replay workers.")
@handle_errors
def runs(fmt: str, show_all: bool) -> None:
    """List runs: id, version, script, status, start, duration, args."""
    from flordb.tabular import render
    from flordb.sql.runs import list_runs

    click.echo(render(list_runs(include_replays=show_all), fmt))
    from flordb.store.catalog import quarantined_count

    n = quarantined_count()
    if n:
        click.echo(f"warning: {n} damaged store files were quarantined; `flordb doctor` lists them", err=True)


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
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="At most this many tasks at once (default: as many as the runs' threads fit on the cores).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print each version's patch (or refusal) and change nothing.")
@EXECUTOR
@ADDRESS
@handle_errors
def replay(names: tuple[str, ...], where: str | None, workers: int | None, yes: bool, dry_run: bool,
           executor: str | None, address: str | None) -> None:
    """Fill in NAMES for recorded runs by replaying them with the current flor.log statements.

    \b
    flordb replay weight_norm
    flordb replay grad_norm --where "epoch >= 3" --workers 2 --yes
    flordb replay grad_norm --dry-run
    flordb replay grad_norm --executor ray --address auto --yes
    """
    if dry_run:
        from flordb.hindsight.api import replay_preview

        click.echo("".join(p.render() for p in replay_preview(list(names), where=where)), nl=False)
        return
    from flordb.hindsight.api import replay as run_replay

    report = run_replay(list(names), where=where, workers=workers, yes=yes, executor=executor, address=address)
    if report.failed or report.diverged:
        sys.exit(1)


@cli.command()
@click.argument("run")
@click.argument("tag")
@click.option("--name", "as_name", is_flag=True, help="Make TAG the run's name (one per run) instead of a tag.")
@click.option("--remove", is_flag=True, help="Take TAG (or with --name, the name) off the run.")
@handle_errors
def tag(run: str, tag: str, as_name: bool, remove: bool) -> None:
    """Tag a run (or name it), so that TAG works wherever a run is expected.

    \b
    flordb tag HEAD baseline
    flordb tag 3f9c2a lr-sweep
    flordb tag HEAD~1 first-try --name
    flordb tag HEAD baseline --remove
    """
    _label(run, "name" if as_name else "tag", tag, remove)


@cli.command()
@click.argument("run")
@click.argument("text")
@handle_errors
def note(run: str, text: str) -> None:
    """Attach a note to a run (a new note replaces the old one).

    \b
    flordb note HEAD "diverged after the lr change"
    """
    _label(run, "note", text)


def _label(ref: str, kind: str, value: str, remove: bool = False) -> None:
    from flordb.sql.runs import label_run

    run_id = label_run(ref, kind, value, remove=remove)
    click.echo(f"{kind} {value.strip()!r} {'removed from' if remove else 'added to'} run {run_id}", err=True)


@cli.command()
@click.option("--to", "target", default="flordb-export.duckdb", show_default=True, metavar="FILE.duckdb|DIR.parquet",
              help="Where to write: a DuckDB file, or a directory of Parquet files.")
@handle_errors
def export(target: str) -> None:
    """Write a read-only copy with `runs` and a materialized `logs` for any DuckDB client.

    \b
    flordb export --to runs.duckdb && duckdb runs.duckdb "SELECT * FROM logs LIMIT 5"
    flordb export --to runs.parquet
    """
    from flordb.sql.export import export as run_export

    path, counts = run_export(target)
    click.echo(f"Wrote {path}: " + ", ".join(f"{n} ({c} rows)" for n, c in counts.items()), err=True)


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to build the demo project (default: a new temporary directory).")
@click.option("--yes", "-y", is_flag=True, default=True, hidden=True)
@handle_errors
def demo(directory: str | None, yes: bool) -> None:
    """Record runs of an example, then query them (and replay a forgotten metric)."""
    from flordb.demo import run_demo

    run_demo(directory)


def main() -> None:
    try:
        cli(prog_name="flordb")
    except SystemExit as exc:
        leave(exc.code)
    leave(0)


def leave(code) -> None:
    """Exit with ``code`` once output is flushed and exit handlers ran, skipping the interpreter's teardown.

    Tearing down a process that loaded duckdb, pyarrow and pandas takes 0.1-0.2 s,
    a third of a small query's time; nothing of ours needs it (connections are
    closed by then, exit handlers still run). With other threads alive (not
    daemons), the ordinary exit waits for them as usual.
    """
    import atexit
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)  # the ordinary exit joins them
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head): nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
