"""Dot-commands of ``flordb shell``: decorated functions in one registry.

A command is a function ``handler(state, arg) -> Result`` registered with
:func:`special_command`; ``.help`` lists the registry, so a command that is
registered is also documented. ``state`` is the shell's state
(:class:`flordb.cli.shell.ShellState`): the output format, and a way to open
the catalog for the length of one command.

>>> sorted(c.name for c in visible_commands())[:3]
['.format', '.help', '.quit']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import pandas as pd

from flordb.tabular import FORMATS
from flordb.errors import FlorError


@dataclass
class Result:
    """What a statement or a dot-command gives back: rows to render, and/or a status line."""

    df: Optional[pd.DataFrame] = None
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
    df = pd.DataFrame(rows, columns=["command", "aliases", "description"])
    return Result(df, "SQL statements end with ';'. `logs` is the wide view of every run.")


@special_command(".tables", "list tables: `logs` and the catalog's own tables", aliases=(".t",))
def show_tables(state, arg: str) -> Result:
    from flordb.sql.engine import HIDDEN_TABLES, catalog_tables

    with state.catalog() as cat:
        names = [t for t in catalog_tables(cat) if t not in HIDDEN_TABLES]
    return Result(pd.DataFrame({"name": ["logs", *names]}))


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
        df = pd.DataFrame([r[1:] for r in logs_rows], columns=["column", "type", "kind", "logged_at"])
        return Result(df)
    if table:
        if table not in tables:
            close = UnknownColumnError([table], ["logs", *tables]).suggestions[table]
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ShellCommandError(f"unknown table {table!r}{hint}; type .tables")
        return Result(pd.DataFrame(list(tables[table].items()), columns=["column", "type"]))
    rows = logs_rows + [(t, c, typ, "", "") for t, cols in tables.items() for c, typ in cols.items()]
    return Result(pd.DataFrame(rows, columns=["table", "column", "type", "kind", "logged_at"]))


@special_command(".runs", "list runs, like `flordb runs` (`.runs all` includes replays)",
                 usage=".runs [all]", completes=("all",))
def show_runs(state, arg: str) -> Result:
    from flordb.sql.runs import list_runs

    if arg not in ("", "all"):
        raise ShellCommandError(f"unexpected argument {arg!r}; usage: .runs [all]")
    with state.lock:
        return Result(list_runs(include_replays=arg == "all", layout=state.layout))


@special_command(".format", "set the output format: table, csv, json or vertical",
                 usage=".format [table|csv|json|vertical]", completes=FORMATS)
def set_format(state, arg: str) -> Result:
    if not arg:
        return Result(status=f"Output format: {state.fmt}")
    if arg.lower() not in FORMATS:
        raise ShellCommandError(f"unknown format {arg!r}; choose one of {', '.join(FORMATS)}")
    state.fmt = arg.lower()
    return Result(status=f"Output format: {state.fmt}")


@special_command(".quit", "leave the shell (also Ctrl-D)", aliases=(".exit", ".q"))
def quit_shell(state, arg: str) -> Result:
    raise ExitShell()
