"""Completion for ``flordb shell``: pure functions on strings, no I/O.

:func:`suggest` answers "what could the word at the cursor be?" from the text
before the cursor and a :class:`Vocabulary` (tables and their columns, `logs`
included, and the dot-commands). The shell builds a Vocabulary from the catalog
in a background thread and swaps it in whole; this module never sees a
connection. :func:`split_sql` is the one scanner that knows where a statement
ends (``;`` outside quotes and comments); the shell splits input with it too.

>>> v = Vocabulary({"logs": ["run_id", "epoch", "loss"], "runs": ["run_id", "status"]}, {".tables": ()})
>>> suggest("SELECT lo", v)
['loss']
>>> suggest("SELECT loss FROM l", v)
['logs']
>>> suggest(".ta", v)
['.tables']
>>> split_sql("SELECT ';'; SELECT 2; SEL")
(["SELECT ';'", 'SELECT 2'], ' SEL')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

KEYWORDS = (
    "WHERE", "GROUP BY", "ORDER BY", "LIMIT", "HAVING", "OFFSET", "QUALIFY", "SELECT", "FROM",
    "JOIN", "LEFT JOIN", "INNER JOIN", "CROSS JOIN", "FULL OUTER JOIN", "ON", "USING", "AS",
    "AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "BETWEEN", "CASE", "WHEN", "THEN",
    "ELSE", "END", "DISTINCT", "ALL", "ASC", "DESC", "NULLS", "WITH", "UNION", "UNION ALL",
    "INTERSECT", "EXCEPT", "OVER", "PARTITION BY", "WINDOW", "ROWS", "EXISTS", "CAST", "TRUE",
    "FALSE", "DESCRIBE", "SHOW", "SUMMARIZE", "PIVOT", "UNPIVOT", "EXCLUDE", "REPLACE",
)
STATEMENT_STARTS = ("SELECT", "WITH", "DESCRIBE", "SHOW", "SUMMARIZE", "PIVOT", "FROM")
FUNCTIONS = (
    "avg", "count", "min", "max", "sum", "first", "last", "any_value", "arg_min", "arg_max",
    "median", "mode", "quantile_cont", "stddev", "variance", "corr", "list", "string_agg",
    "round", "abs", "coalesce", "greatest", "least", "lag", "lead", "row_number", "rank",
    "cast", "strftime", "date_trunc", "epoch_ms", "regexp_matches", "left", "length",
)
# Words after which the next word names a table.
_TABLE_BEFORE = {"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "DESCRIBE", "SUMMARIZE"}
# Keywords after which (directly or after an operator) expressions, hence columns, follow.
_EXPR_AFTER = {"SELECT", "WHERE", "BY", "ON", "HAVING", "AND", "OR", "NOT", "WHEN", "THEN", "ELSE",
               "CASE", "QUALIFY", "BETWEEN", "DISTINCT", "IN", "IS", "LIKE", "ILIKE", "USING", "ALL",
               "EXCLUDE", "OVER", "PARTITION", "RETURNING", "SET", "VALUES", "LIMIT", "OFFSET"}
_RESERVED = {w for kw in KEYWORDS for w in kw.split()} | {"SELECT", "FROM", "TABLE", "ORDER", "GROUP"}
_OPERATORS = {"(", ",", "=", "<", ">", "+", "-", "*", "/", "%", "!", "|"}
_PLAIN_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'|[A-Za-z_$][\w$]*|\d+(?:\.\d*)?|\.|\S')


@dataclass
class Vocabulary:
    """What completion knows: tables with their columns (`logs` first), dot-commands and
    what each one's argument completes to ("tables" or a tuple of words)."""

    tables: dict[str, list[str]] = field(default_factory=dict)
    commands: dict[str, object] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)  # column -> "DOUBLE log", shown next to a completion


def vocabulary(logs_columns: Iterable[str], tables: Mapping[str, Iterable[str]],
               commands: Mapping[str, object] = (), meta: Mapping[str, str] | None = None) -> Vocabulary:
    """A Vocabulary from the columns of `logs`, the catalog's tables and the dot-commands."""
    all_tables = {"logs": list(logs_columns)}
    all_tables.update({t: list(cols) for t, cols in tables.items() if t != "logs"})
    return Vocabulary(all_tables, dict(commands), dict(meta or {}))


# -- statement scanning ----------------------------------------------------------------


def _scan(text: str) -> tuple[list[str], int, str | None, int]:
    """Walk ``text`` once. Returns (complete statements without their ``;``, offset where the
    unfinished rest begins, the open construct at the end (None, "'", '"', "--", "/*") and
    where that construct began)."""
    stmts: list[str] = []
    start, i, n = 0, 0, len(text)
    state: str | None = None
    opened = 0
    while i < n:
        ch = text[i]
        if state is None:
            if ch in "'\"":
                state, opened = ch, i
            elif text.startswith("--", i):
                state, opened = "--", i
                i += 1
            elif text.startswith("/*", i):
                state, opened = "/*", i
                i += 1
            elif ch == ";":
                stmts.append(text[start:i])
                start = i + 1
        elif state in "'\"" and len(state) == 1:
            if ch == state:
                state = None  # a doubled quote ('') closes and reopens: same result
        elif state == "--":
            if ch == "\n":
                state = None
        elif state == "/*" and text.startswith("*/", i):
            state = None
            i += 1
        i += 1
    return stmts, start, state, opened


def split_sql(text: str) -> tuple[list[str], str]:
    """Complete statements (split on ``;`` outside quotes and comments) and the unfinished rest."""
    stmts, start, _, _ = _scan(text)
    return [s.strip() for s in stmts], text[start:]


def is_blank(sql: str) -> bool:
    """Only whitespace and comments?"""
    stripped = re.sub(r"--[^\n]*|/\*.*?(\*/|$)", "", sql, flags=re.S)
    return not stripped.strip()


def is_complete(text: str) -> bool:
    """Would pressing Enter run this input? True for a dot-command line, for blank input,
    and for SQL that ends with ``;`` outside quotes and comments."""
    if is_blank(text) or text.lstrip().startswith("."):
        return True
    stmts, start, state, _ = _scan(text)
    return bool(stmts) and state in (None, "--") and is_blank(text[start:])


# -- suggestions -----------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """``epoch`` stays as is; ``log.epoch`` or a reserved word gets double quotes."""
    if _PLAIN_IDENT.match(name) and name.upper() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def _tables_in(sql: str, vocab: Vocabulary) -> dict[str, str]:
    """alias or name -> table, for the known tables a statement reads."""
    found: dict[str, str] = {}
    tokens = _TOKEN.findall(sql)
    for i, tok in enumerate(tokens):
        if tok.upper() not in ("FROM", "JOIN", ","):
            continue
        if tok == "," and not _last_keyword_is(tokens[:i], "FROM"):
            continue
        if i + 1 >= len(tokens):
            continue
        name = tokens[i + 1].strip('"')
        if name not in vocab.tables:
            continue
        found[name] = name
        rest = tokens[i + 2:i + 4]
        if rest and rest[0].upper() == "AS":
            rest = rest[1:]
        if rest and _PLAIN_IDENT.match(rest[0]) and rest[0].upper() not in _RESERVED:
            found[rest[0]] = name
    return found


def _last_keyword_is(tokens: Sequence[str], word: str) -> bool:
    for tok in reversed(tokens):
        up = tok.upper()
        if up in _RESERVED or up in _TABLE_BEFORE:
            return up == word
    return False


def _context(text_before_cursor: str, vocab: Vocabulary, full_text: str | None = None):
    """(the word the completions replace, the candidate texts in order, before filtering)."""
    _, start, state, opened = _scan(text_before_cursor)
    current = text_before_cursor[start:]
    if state in ("'", "--", "/*"):
        return "", []
    if state == '"':  # completing a quoted identifier
        word = text_before_cursor[opened:]
        tokens = _TOKEN.findall(text_before_cursor[start:opened])
        after_from = bool(tokens) and (tokens[-1].upper() in _TABLE_BEFORE
                                       or (tokens[-1] == "," and _last_keyword_is(tokens, "FROM")))
        names = list(vocab.tables) if after_from else _columns(current, vocab)
        return word, ['"' + n.replace('"', '""') + '"' for n in names]
    stripped = current.lstrip()
    lead = current[: len(current) - len(stripped)]
    if stripped.startswith(".") and ("\n" in lead or is_blank(text_before_cursor[:start])):
        name, space, arg = stripped.partition(" ")
        if not space:
            return name, list(vocab.commands)
        words = vocab.commands.get(name.lower())
        choices = list(vocab.tables) if words == "tables" else list(words or ())
        return arg.split(" ")[-1], choices
    word = re.search(r"[\w$]*$", current).group()
    kw = (lambda k: k.lower()) if word and word == word.lower() else (lambda k: k)
    tokens = _TOKEN.findall(current[: len(current) - len(word)])
    if not tokens:  # the start of a statement
        return word, [*map(kw, STATEMENT_STARTS), *vocab.commands]
    statement = current if full_text is None else _statement_at(full_text, len(text_before_cursor))
    if len(tokens) >= 2 and tokens[-1] == ".":  # alias.column
        qualifier = tokens[-2].strip('"')
        table = _tables_in(statement, vocab).get(qualifier, qualifier)
        return word, [quote_ident(c) for c in vocab.tables.get(table, ())]
    last = tokens[-1].upper()
    if last in _TABLE_BEFORE or (last == "," and _last_keyword_is(tokens, "FROM")):
        return word, [quote_ident(t) for t in vocab.tables]
    if last in _EXPR_AFTER or last in _OPERATORS:
        columns = [quote_ident(c) for c in _columns(statement, vocab)]
        return word, [*columns, *FUNCTIONS, *map(kw, KEYWORDS)]
    upper = {t.upper() for t in tokens}
    if "SELECT" in upper and "FROM" not in upper:  # `SELECT a |`: FROM is the likely next word
        return word, [kw("FROM"), kw("AS"), *map(kw, KEYWORDS)]
    return word, list(map(kw, KEYWORDS))


def _statement_at(full_text: str, cursor: int) -> str:
    """The statement the cursor is in, read to its end (so a FROM after the cursor counts)."""
    _, start, _, _ = _scan(full_text[:cursor])
    rest = full_text[start:]
    stmts, _ = split_sql(rest)
    return stmts[0] if stmts else rest


def _columns(statement: str, vocab: Vocabulary) -> list[str]:
    """Columns of the tables the statement reads; all columns (`logs` first) when it names none."""
    tables = list(dict.fromkeys(_tables_in(statement, vocab).values())) or list(vocab.tables)
    return list(dict.fromkeys(c for t in tables for c in vocab.tables.get(t, ())))


def _matches(word: str, candidates: Iterable[str]) -> list[str]:
    """Candidates that start with ``word`` (any case); ``log`` also finds ``"log.epoch"``."""
    prefix = word.lower()
    out = [c for c in candidates
           if c.lower().startswith(prefix) or (c.startswith('"') and c[1:].lower().startswith(prefix))]
    return list(dict.fromkeys(out))


def suggest(text_before_cursor: str, vocab: Vocabulary, full_text: str | None = None) -> list[str]:
    """Completions for the word at the cursor, best first: columns, then functions, then keywords;
    tables after FROM/JOIN; dot-commands at the start of a line.

    >>> v = Vocabulary({"logs": ["epoch", "log.epoch"]}, {})
    >>> suggest('SELECT "log', v)
    ['"log.epoch"']
    """
    word, candidates = _context(text_before_cursor, vocab, full_text)
    return _matches(word, candidates)


def word_before_cursor(text_before_cursor: str, vocab: Vocabulary | None = None) -> str:
    """The text a completion replaces (``suggest``'s answers start with it, case aside)."""
    word, _ = _context(text_before_cursor, vocab or Vocabulary())
    return word
