"""Step 7: the patched old text: one statement inserted, every old line kept byte-identical."""

from __future__ import annotations

import ast
import io

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import read_refs
from flordb.hindsight.propagation.model import Frame, Version, describe, source_lines


def statement_text(source: str, stmt: ast.stmt, renames: dict[str, str], indent: str) -> str:
    """The statement's source with names replaced, re-indented for the old block.

    Editing the original characters (rather than unparsing) keeps the user's
    quotes, spacing and line breaks.
    """
    lines = source_lines(source)[stmt.lineno - 1: stmt.end_lineno]
    first_col = _char_col(lines[0], stmt.col_offset)
    base = lines[0][:first_col]
    lines[-1] = lines[-1][:_char_col(lines[-1], stmt.end_col_offset)]
    edits = sorted(((n.lineno, _char_col(lines[n.lineno - stmt.lineno], n.col_offset),
                     _char_col(lines[n.lineno - stmt.lineno], n.end_col_offset), renames[text])
                    for n, text in read_refs(stmt) if text in renames and n.end_lineno == n.lineno),
                   reverse=True)
    for line_no, start, end, text in edits:
        k = line_no - stmt.lineno
        lines[k] = lines[k][:start] + text + lines[k][end:]
    in_string = _lines_inside_strings(stmt)
    out = [indent + lines[0][first_col:]]
    for k, line in enumerate(lines[1:], start=stmt.lineno + 1):
        if k in in_string:
            out.append(line)
        elif base.strip() == "" and line.startswith(base):
            out.append(indent + line[len(base):])
        else:
            out.append(indent + line.lstrip())
    return "\n".join(out)


def _char_col(line: str, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def _lines_inside_strings(stmt: ast.stmt) -> set[int]:
    """Lines that continue a multi-line string literal, whose leading spaces are data."""
    inside = set()
    for n in ast.walk(stmt):
        if isinstance(n, (ast.Constant, ast.JoinedStr)) and n.end_lineno and n.end_lineno > n.lineno:
            if isinstance(n, ast.JoinedStr) or isinstance(n.value, (str, bytes)):
                inside.update(range(n.lineno + 1, n.end_lineno + 1))
    return inside


def block_indent(frame: Frame, old: Version) -> str:
    """The exact indentation characters of the old block, tabs included."""
    lines = source_lines(old.source)
    for s in frame.block:
        line = lines[s.lineno - 1]
        prefix = line.encode("utf-8")[: s.col_offset].decode("utf-8", errors="ignore")
        if prefix.strip() == "":
            return prefix
    raise PropagationError(
        f"{describe(frame.node)} in the old version is written on one line; "
        "a line cannot be inserted into it without rewriting it")


def splice(source: str, line: int, text: str) -> str:
    """Insert ``text`` after old line ``line``, leaving every existing line untouched."""
    lines = io.StringIO(source, newline="").readlines()
    newline = next((ln[len(ln.rstrip("\r\n")):] for ln in lines if ln.endswith(("\n", "\r"))), "\n")
    if line > 0 and not lines[line - 1].endswith(("\n", "\r")):
        lines[line - 1] += newline
    inserted = newline.join(text.split("\n")) + newline
    return "".join(lines[:line]) + inserted + "".join(lines[line:])
