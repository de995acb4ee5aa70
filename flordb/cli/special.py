"""Dot-commands of ``flordb shell``: decorated functions in one registry.

A command is a function ``handler(state, arg) -> Result`` registered with
:func:`special_command`; ``.help`` lists the registry, so a command that is
registered is also documented. ``state`` is the shell's state
(:class:`flordb.cli.shell.ShellState`): the output format, and a way to open
the catalog for the length of one command.

>>> sorted(c.name for c in visible_commands())[:3]
['.help', '.maxrows', '.mode']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from flordb.errors import FlorError
from flordb.tabular import FORMATS, Rows


@dataclass
class Result:
    """What a statement or a dot-command gives back: rows to render, and/or a status line."""

    df: Optional[Any] = None  # an Arrow table, a DataFrame or Rows
    status: Optional[str] = None


class ShellCommandError(FlorError):
    """A dot-command was misused (bad argument, unknown table, ...)."""


class CommandNotFound(ShellCommandError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"unknown command {name}; type .help")


class ExitShell(Exception):
    """Raised by ``.quit``/``.exit``: the shell stops reading."""


@dataclass(frozen=True)
class SpecialCommand:
    handler: Callable
    name: str  # canonical name, e.g. ".tables"
    description: str
    usage: str  # e.g. ".schema [table]"
    aliases: tuple[str, ...] = ()
    completes: object = None  # what the argument completes to: "tables", or a tuple of words


COMMANDS: dict[str, SpecialCommand] = {}  # canonical names and aliases, lower case


def special_command(name: str, description: str, *, usage: str | None = None,
                    aliases: tuple[str, ...] = (), completes: object = None):
    """Register the decorated function as the dot-command ``name`` (and its aliases)."""

    def wrapper(fn):
        cmd = SpecialCommand(fn, name, description, usage or name, tuple(aliases), completes)
        for key in (name, *aliases):
            COMMANDS[key.lower()] = cmd
        return fn

    return wrapper


def visible_commands() -> list[SpecialCommand]:
    """Each registered command once, in registration order."""
    return list({id(c): c for c in COMMANDS.values()}.values())


def command_names() -> list[str]:
    """Every name a user may type, aliases included."""
    return list(COMMANDS)


def is_special(text: str) -> bool:
    return text.lstrip().startswith(".")


def parse_special(text: str) -> tuple[str, str]:
    """``".schema  logs;"`` -> ``(".schema", "logs")``; a trailing ``;`` is forgiven."""
    name, _, arg = text.strip().partition(" ")
    return name.strip().rstrip(";").lower(), arg.strip().rstrip(";").strip()


def execute(state, text: str) -> Result:
    """Run one dot-command line; :class:`CommandNotFound` when it is not registered."""
    name, arg = parse_special(text)
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise CommandNotFound(name)
    return cmd.handler(state, arg)


# -- the commands ------------------------------------------------------------------------


@special_command(".help", "list these commands", aliases=(".?",))
def show_help(state, arg: str) -> Result:
    rows = [(c.usage, ", ".join(c.aliases), c.description) for c in visible_commands()]
    df = Rows(["command", "aliases", "description"], [list(r) for r in rows])
    return Result(df, "SQL statements end with ';'. `logs` is the wide view of every run.")


@special_command(".tables", "list tables: `logs` and the catalog's own tables", aliases=(".t",))
def show_tables(state, arg: str) -> Result:
    from flordb.sql.engine import HIDDEN_TABLES, catalog_tables

    with state.catalog() as cat:
        names = [t for t in catalog_tables(cat) if t not in HIDDEN_TABLES]
    return Result(Rows(["name"], [[n] for n in ["logs", *names]]))


@special_command(".schema", "columns and types of a table (for `logs`: kind run/loop/arg/log)",
                 usage=".schema [table]", aliases=(".s",), completes="tables")
def show_schema(state, arg: str) -> Result:
    from flordb.errors import UnknownColumnError
    from flordb.sql.engine import HIDDEN_TABLES, catalog_tables
    from flordb.sql.schema import load_schema

    table = arg.strip().strip('"').strip()
    with state.catalog() as cat:
        logs = load_schema(cat)
        tables = {t: cols for t, cols in catalog_tables(cat).items() if t not in HIDDEN_TABLES}
    logs_rows = [
        ("logs", c.name, c.type, c.kind, ", ".join("/".join(p) for p in c.paths) if c.kind == "log" else "")
        for c in logs.columns.values()
    ]
    if table.lower() == "logs":
        df = Rows(["column", "type", "kind", "logged_at"], [list(r[1:]) for r in logs_rows])
        return Result(df)
    if table:
        if table not in tables:
            close = UnknownColumnError([table], ["logs", *tables]).suggestions[table]
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ShellCommandError(f"unknown table {table!r}{hint}; type .tables")
        return Result(Rows(["column", "type"], [list(kv) for kv in tables[table].items()]))
    rows = logs_rows + [(t, c, typ, "", "") for t, cols in tables.items() for c, typ in cols.items()]
    return Result(Rows(["table", "column", "type", "kind", "logged_at"], [list(r) for r in rows]))


@special_command(".runs", "list runs, like `flordb runs` (`.runs all` includes replays)",
                 usage=".runs [all]", completes=("all",))
def show_runs(state, arg: str) -> Result:
    from flordb.sql.runs import list_runs

    if arg not in ("", "all"):
        raise ShellCommandError(f"unexpected argument {arg!r}; usage: .runs [all]")
    with state.lock:
        return Result(list_runs(include_replays=arg == "all", layout=state.layout))


@special_command(".mode", "set the output format: table, csv, json, vertical or markdown",
                 usage=".mode [table|csv|json|vertical|markdown]", aliases=(".format",), completes=FORMATS)
def set_format(state, arg: str) -> Result:
    if not arg:
        return Result(status=f"Output format: {state.fmt}")
    if arg.lower() not in FORMATS:
        raise ShellCommandError(f"unknown format {arg!r}; choose one of {', '.join(FORMATS)}")
    state.fmt = arg.lower()
    return Result(status=f"Output format: {state.fmt}")


def _on_off(arg: str, usage: str) -> bool:
    word = arg.lower()
    if word not in ("on", "off"):
        raise ShellCommandError(f"expected on or off; usage: {usage}")
    return word == "on"


@special_command(".timer", "print how long each statement took", usage=".timer on|off", completes=("on", "off"))
def set_timer(state, arg: str) -> Result:
    if arg:
        state.timer = _on_off(arg, ".timer on|off")
    return Result(status=f"Timer: {'on' if state.timer else 'off'}")


@special_command(".output", "send results to FILE (appended), or back to the terminal without one",
                 usage=".output [FILE]")
def set_output(state, arg: str) -> Result:
    target = arg.strip().strip("'\"")
    if not target or target.lower() == "stdout":
        state.output = None
        return Result(status="Results go to the terminal")
    path = Path(target).expanduser()
    try:
        path.open("a", encoding="utf-8").close()
    except OSError as exc:
        raise ShellCommandError(f"cannot write {target}: {exc.strerror or exc}") from None
    state.output = str(path)
    return Result(status=f"Results go to {path}")


@special_command(".maxrows", "rows a table shows before \"(N more not shown)\"; 0 shows all",
                 usage=".maxrows [N]")
def set_maxrows(state, arg: str) -> Result:
    if arg:
        if not arg.isdigit():
            raise ShellCommandError(f"expected a number of rows, got {arg!r}; usage: .maxrows N")
        state.maxrows = int(arg) or None
    return Result(status=f"Rows shown: {state.maxrows or 'all'}")


@special_command(".pager", "page results longer than the terminal ($PAGER, else less)", usage=".pager on|off",
                 completes=("on", "off"))
def set_pager(state, arg: str) -> Result:
    if arg:
        state.pager = _on_off(arg, ".pager on|off")
    return Result(status=f"Pager: {'on' if state.pager else 'off'}")


@special_command(".quit", "leave the shell (also Ctrl-D)", aliases=(".exit", ".q"))
def quit_shell(state, arg: str) -> Result:
    raise ExitShell()
