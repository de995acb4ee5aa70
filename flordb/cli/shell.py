"""``flordb shell``: an SQL prompt over every run, in the manner of litecli.

On a terminal: a prompt_toolkit session with history in the project store
(``.flordb/shell_history``), multi-line SQL that runs at ``;``, dot-commands
that run at the end of their line, completion, and SQL highlighting. Ctrl-C
cancels the input (or the running statement), Ctrl-D or ``.quit`` leaves.

Not on a terminal: statements are read from stdin, results go to stdout,
errors to stderr as ``Error: ...``, and the exit code is 2 if any statement
failed::

    echo "SELECT count(*) FROM logs; .runs" | flordb shell

The catalog is opened for the length of one statement (or one completion
refresh), never while the prompt waits, so training runs and other shells can
take turns with it.
"""

from __future__ import annotations

import configparser
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from prompt_toolkit.completion import Completer, Completion

from flordb.cli import special
from flordb.cli.completion import Vocabulary, is_blank, is_complete, split_sql, suggest, vocabulary, word_before_cursor
from flordb.tabular import FORMATS, render
from flordb.cli.special import ExitShell, Result
from flordb.errors import FlorError
from flordb.store.layout import Layout, locate

PROMPT = "flordb> "
CONTINUATION = "   ...> "
REFRESH_LOCK_TIMEOUT = 2.0  # a completion refresh gives up quickly when another process holds the catalog
_BARE_EXIT = {"quit", "exit", "\\q"}
MAXROWS = 100  # rows an interactive table shows; `.maxrows 0` shows all


# -- configuration ------------------------------------------------------------------------


def config_paths() -> list[Path]:
    """The packaged defaults, then the user's file (``$XDG_CONFIG_HOME/flordb/flordbrc``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [Path(__file__).with_name("flordbrc"), Path(base) / "flordb" / "flordbrc"]


def load_config() -> dict[str, bool]:
    parser = configparser.ConfigParser()
    parser.read_dict({"main": {"vi": "false", "timing": "true", "syntax_highlighting": "true"}})
    parser.read([str(p) for p in config_paths()], encoding="utf-8")
    main = parser["main"]

    def flag(key: str) -> bool:
        try:
            return main.getboolean(key)
        except ValueError:
            return parser.BOOLEAN_STATES.get(parser.defaults().get(key, "false"), False)

    return {key: flag(key) for key in ("vi", "timing", "syntax_highlighting")}


# -- state shared with the dot-commands -------------------------------------------------------


@dataclass
class ShellState:
    """What a statement or dot-command may touch: the output format and the catalog."""

    layout: Layout
    fmt: str = "table"
    interactive: bool = False
    timer: bool = False  # print "Time: ..." after each result (.timer on|off)
    maxrows: int | None = None  # rows shown by table/vertical output; the rest counted (.maxrows N)
    pager: bool = False  # page results longer than the terminal (.pager on|off)
    output: str | None = None  # results go to this file instead of stdout (.output FILE)
    # Held while this process uses the catalog, so a completion refresh never races a statement.
    lock: threading.RLock = field(default_factory=threading.RLock)

    @contextmanager
    def catalog(self, timeout: float | None = None) -> Iterator:
        """The catalog, opened (and new segments ingested) for the length of a ``with`` block."""
        from flordb.store.catalog import open_catalog

        kwargs = {"create": False, "lazy": True, **({} if timeout is None else {"timeout": timeout})}
        with self.lock, open_catalog(self.layout, **kwargs) as cat:
            cat.ingest_if_changed()  # and a refresh that finds nothing new keeps the query connection open
            yield cat

    def release(self) -> None:
        """While the prompt waits, not even the read-only query connection holds the catalog open."""
        from flordb.store.catalog import close_readers

        with self.lock:
            close_readers()

    @property
    def replay(self) -> str:
        """Hindsight asks on a terminal; reading a script, it never replays unasked."""
        return "ask" if self.interactive else "no"


def execute(state: ShellState, text: str) -> Result:
    """One statement or dot-command line -> a Result (raises FlorError on failure)."""
    if special.is_special(text):
        return special.execute(state, text)
    from flordb.api import query_rows

    with state.lock:
        return Result(query_rows(text, replay=state.replay, layout=state.layout))


def build_vocabulary(state: ShellState, timeout: float | None = REFRESH_LOCK_TIMEOUT) -> Vocabulary:
    """What completion knows, read from the catalog in one short visit, with each column's type and kind.

    Names the current code logs but no run recorded complete too, marked "hindsight":
    a query naming one replays it.
    """
    from flordb.sql.engine import HIDDEN_TABLES, catalog_tables
    from flordb.sql.schema import load_schema

    with state.catalog(timeout=timeout) as cat:
        logs = load_schema(cat)
        tables = {t: c for t, c in catalog_tables(cat).items() if t not in HIDDEN_TABLES}
    meta = {c.name: f"{c.type} {c.kind}" for c in logs.columns.values()}
    for cols in tables.values():
        for name, typ in cols.items():
            meta.setdefault(name, typ)
    capable = sorted(n for n in _logged_by_current_code(state.layout) if n not in logs.columns)
    for n in capable:
        meta[n] = "hindsight: logged by the current code, no run recorded it"
    return vocabulary([*logs.names, *capable], {t: list(c) for t, c in tables.items()}, command_vocabulary(),
                      meta)


def _logged_by_current_code(layout: Layout) -> set[str]:
    try:
        from flordb.hindsight.locate import find_log_statements
        from flordb.hindsight.plan import python_files

        names: set[str] = set()
        for path in python_files(layout.work_tree)[:500]:
            try:
                source = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            if ".log(" in source:
                names.update(st.name for st in find_log_statements(source))
        return names
    except Exception:  # completion never fails on odd code
        return set()


def _import_what_refresh_needs() -> None:
    """Import on the calling thread the modules :func:`build_vocabulary` imports lazily.

    The refresh runs on a background thread while the user's statement may
    import on the main one; two threads importing the same packages can hand
    one of them a half-initialized module (issue 11), so the thread imports nothing.
    """
    global _imported_for_refresh
    if _imported_for_refresh:
        return
    import importlib.readers  # noqa: F401  (the schema files, read at catalog open)
    import importlib.resources.readers  # noqa: F401

    import numpy  # noqa: F401
    import pyarrow.parquet  # noqa: F401  (ingest reads segments; pyarrow imports numpy and cloudpickle)

    import flordb.hindsight.locate  # noqa: F401
    import flordb.hindsight.plan  # noqa: F401
    import flordb.schema  # noqa: F401
    import flordb.sql.engine  # noqa: F401
    import flordb.sql.schema  # noqa: F401
    import flordb.store.catalog  # noqa: F401

    _imported_for_refresh = True


_imported_for_refresh = False


def command_vocabulary() -> dict[str, object]:
    return {name: cmd.completes for name, cmd in special.COMMANDS.items()}


# -- the shell --------------------------------------------------------------------------------


class Shell:
    def __init__(self, fmt: str = "table", stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                 interactive: bool = False, layout: Layout | None = None):
        if fmt not in FORMATS:
            raise FlorError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.config = load_config() if interactive else {"timing": False}
        self.state = ShellState(layout or locate(), fmt, interactive, timer=bool(self.config.get("timing")),
                                maxrows=MAXROWS if interactive else None, pager=interactive)
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        self.completer = _Completer(Vocabulary(commands=command_vocabulary()))
        self._refresh_guard = threading.Lock()
        self._refresh_wanted = False
        self._refreshing = False
        self._refresh_thread: threading.Thread | None = None

    # -- running input ------------------------------------------------------------------

    def run_text(self, text: str) -> bool:
        """Everything in one submitted input: a dot-command line, or SQL statements split at ``;``."""
        if special.is_special(text):
            return self.run_one(text.strip())
        stmts, rest = split_sql(text)
        ok = True
        for sql in [*stmts, rest]:
            if not is_blank(sql):
                ok = self.run_one(sql.strip()) and ok
        return ok

    def run_one(self, text: str) -> bool:
        """Run and print one statement; an error is one line on stderr. ExitShell passes through."""
        start = time.perf_counter()
        try:
            result = execute(self.state, text)
        except FlorError as exc:
            return self._error(exc.message)
        except KeyboardInterrupt:
            if not self.state.interactive:
                raise
            return self._error("cancelled")
        except ExitShell:
            raise
        except Exception as exc:  # a shell outlives a bug: report it and go on
            first = (str(exc).strip().splitlines() or [""])[0]
            return self._error(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
        finally:
            if self.state.interactive:
                self.refresh()
        self._show(result, time.perf_counter() - start)
        return True

    def _show(self, result: Result, seconds: float) -> None:
        if result.df is not None:
            state = self.state
            to_file = state.output is not None
            width = None if (self.out is sys.stdout and not to_file) else 0  # auto-vertical only on a terminal
            text = render(result.df, state.fmt, width=width, limit=None if to_file else state.maxrows)
            if to_file:
                with open(state.output, "a", encoding="utf-8") as f:
                    print(text, file=f)
            elif state.pager and self.out is sys.stdout and _longer_than_terminal(text):
                import click

                click.echo_via_pager(text + "\n")
            else:
                print(text, file=self.out, flush=True)
        if result.status:
            print(result.status, file=self.err, flush=True)
        if self.state.timer and result.df is not None:
            print(f"Time: {seconds:.3f}s", file=self.err, flush=True)

    def _error(self, message: str) -> bool:
        print(f"Error: {message}", file=self.err, flush=True)
        return False

    # -- stdin mode -------------------------------------------------------------------------

    def run_stream(self, stream: IO[str]) -> int:
        """Read statements from a stream: SQL split at ``;`` outside quotes, dot-commands by line."""
        ok = True
        buffer = ""
        try:
            for line in stream:
                if is_blank(buffer) and special.is_special(line):
                    buffer = ""
                    ok = self.run_one(line.strip()) and ok
                    continue
                buffer += line
                stmts, buffer = split_sql(buffer)
                for sql in stmts:
                    if not is_blank(sql):
                        ok = self.run_one(sql) and ok
            if not is_blank(buffer):  # a last statement without its `;`
                ok = self.run_one(buffer.strip()) and ok
        except ExitShell:
            pass
        return 0 if ok else 2

    # -- interactive mode ---------------------------------------------------------------------

    def run_interactive(self, pt_input=None, pt_output=None) -> int:
        session = self._session(pt_input, pt_output)
        version = _version()
        print(f"FlorDB {version} shell. End SQL with ';'. Type .help for commands, Ctrl-D to leave.",
              file=self.out, flush=True)
        self.refresh()
        try:
            while True:
                try:
                    text = session.prompt()
                except KeyboardInterrupt:  # Ctrl-C drops the input, not the shell
                    continue
                except EOFError:
                    break
                if text.strip().lower() in _BARE_EXIT:
                    break
                if is_blank(text):
                    continue
                try:
                    self.run_text(text)
                except ExitShell:
                    break
        finally:
            self.wait_for_refresh(timeout=5)
        print("Goodbye!", file=self.out, flush=True)
        return 0

    def _session(self, pt_input=None, pt_output=None):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.application.current import get_app
        from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
        from prompt_toolkit.completion import DynamicCompleter
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import FileHistory

        history_path = self.state.layout.history
        history_path.parent.mkdir(parents=True, exist_ok=True)

        made: list = []

        @Condition
        def multiline() -> bool:  # Enter inserts a newline until the input is a complete statement
            # The input buffer, never the current one: during a reverse search (Ctrl-R) that is the
            # search field, and a layout that changed under the search crashed prompt_toolkit.
            text = made[0].default_buffer.text if made else get_app().current_buffer.text
            return not (is_complete(text) or text.strip().lower() in _BARE_EXIT)

        session = PromptSession(
            message=PROMPT,
            prompt_continuation=lambda width, line_number, is_soft_wrap: CONTINUATION,
            multiline=multiline,
            history=FileHistory(str(history_path)),
            auto_suggest=AutoSuggestFromHistory(),
            completer=DynamicCompleter(lambda: self.completer),
            complete_while_typing=True,
            lexer=_sql_lexer() if self.config.get("syntax_highlighting") else None,
            vi_mode=bool(self.config.get("vi")),
            key_bindings=_key_bindings(),
            input=pt_input,
            output=pt_output,
        )
        made.append(session)
        return session

    # -- completion refresh -------------------------------------------------------------------

    def refresh(self) -> None:
        """Rebuild the completer in a background thread and swap it in whole when done."""
        with self._refresh_guard:
            self._refresh_wanted = True
            if self._refreshing:
                return  # the running refresh will go round once more
            self._refreshing = True
            _import_what_refresh_needs()  # here, not on the thread: see the function
            self._refresh_thread = threading.Thread(
                target=self._refresh_loop, name="flordb-completion-refresh", daemon=True
            )
            self._refresh_thread.start()

    def _refresh_loop(self) -> None:
        while True:
            with self._refresh_guard:
                if not self._refresh_wanted:
                    self._refreshing = False
                    return
                self._refresh_wanted = False
            try:
                self.completer = _Completer(build_vocabulary(self.state))
            except Exception:  # busy or broken catalog: keep the completer we have
                pass
            self.state.release()

    def wait_for_refresh(self, timeout: float | None = None) -> None:
        thread = self._refresh_thread
        if thread is not None:
            thread.join(timeout)


class _Completer(Completer):
    """prompt_toolkit's face of :func:`flordb.cli.completion.suggest`; immutable, swapped whole."""

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab

    def get_completions(self, document, complete_event):
        before = document.text_before_cursor
        word = word_before_cursor(before, self.vocab)
        asked = complete_event is None or complete_event.completion_requested
        if not word and not asked and not before.endswith("."):
            return  # while typing, pop up only once a word is begun (Tab shows everything)
        for text in suggest(before, self.vocab, full_text=document.text):
            meta = self.vocab.meta.get(text[1:-1].replace('""', '"') if text.startswith('"') else text)
            yield Completion(text, start_position=-len(word), display_meta=meta)


def _longer_than_terminal(text: str) -> bool:
    import shutil

    return sys.stdout.isatty() and text.count("\n") + 2 > shutil.get_terminal_size((120, 24)).lines


def _key_bindings():
    """Ctrl-C during a reverse search (Ctrl-R) ends the search, keeping the shell and its input."""
    from prompt_toolkit.filters import is_searching
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.search import stop_search

    kb = KeyBindings()

    @kb.add("c-c", filter=is_searching)
    @kb.add("c-g", filter=is_searching)
    def _(event) -> None:
        stop_search()

    return kb


def _sql_lexer():
    try:
        from prompt_toolkit.lexers import PygmentsLexer
        from pygments.lexers.sql import SqlLexer
    except ImportError:
        return None
    return PygmentsLexer(SqlLexer)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("flordb")
    except Exception:
        return ""


def run_shell(fmt: str = "table", stdin: IO[str] | None = None, stdout: IO[str] | None = None, *,
              interactive: bool | None = None, pt_input=None, pt_output=None) -> int:
    """Run the shell; returns the exit code (2 when a statement read from stdin failed).

    ``interactive`` defaults to "stdin is a terminal"; ``pt_input``/``pt_output`` are handed
    to prompt_toolkit (tests drive the prompt with ``create_pipe_input`` and ``DummyOutput``).
    """
    stdin = stdin or sys.stdin
    if interactive is None:
        interactive = pt_input is not None or stdin.isatty()
    shell = Shell(fmt, stdout=stdout, interactive=interactive)
    if interactive:
        return shell.run_interactive(pt_input, pt_output)
    return shell.run_stream(stdin)
