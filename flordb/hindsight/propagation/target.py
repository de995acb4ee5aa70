"""Step 1: where the statement sits in the current code."""

from __future__ import annotations

import ast

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import BLOCK_FIELDS, COMPOUND
from flordb.hindsight.locate import FlorNames, flor_names, log_call
from flordb.hindsight.propagation.model import Frame, describe, first_line


def target_path(tree: ast.Module, lineno: int, flor: FlorNames | None = None,
                lines: list[str] | None = None) -> tuple[list[Frame], int]:
    """The chain of blocks holding the statement at ``lineno``, and its index in the last.

    Only simple statements can be propagated: inserting a compound statement
    would mean inserting its body too, which is more than one statement.
    Given the source ``lines``, a blank or comment line gets its own reason.
    """
    flor = flor or flor_names(tree)
    if lines is not None and (not 0 < lineno <= len(lines) or lines[lineno - 1].strip()[:1] in ("", "#")):
        raise PropagationError(f"line {lineno} of the current code is blank, a comment, or missing")
    frames = [Frame(tree, "body")]
    while True:
        block = frames[-1].block
        hits = [i for i, s in enumerate(block) if first_line(s) <= lineno <= s.end_lineno]
        if not hits:
            raise PropagationError(f"line {lineno} of the current code holds no statement")
        i = _pick_on_line(block, hits, lineno, flor)
        stmt = block[i]
        if not isinstance(stmt, COMPOUND):
            return frames, i
        inner = next((Frame(stmt, f) for f in BLOCK_FIELDS for s in getattr(stmt, f, [])
                      if first_line(s) <= lineno <= s.end_lineno), None)
        if inner is None and any(h.lineno < lineno <= h.end_lineno for h in getattr(stmt, "handlers", [])):
            raise PropagationError(f"line {lineno} of the current code is inside an 'except' block; "
                                   "statements there cannot be propagated")
        if inner is None:
            raise PropagationError(
                f"line {lineno} of the current code is part of {describe(stmt)}, "
                "not a simple statement that can be copied on its own")
        frames.append(inner)


def _pick_on_line(block: list[ast.stmt], hits: list[int], lineno: int, flor: FlorNames) -> int:
    """Choose among statements sharing a line (``a = 1; flor.log(...)``): the single log call."""
    if len(hits) == 1:
        return hits[0]
    logs = [i for i in hits if log_call(block[i], flor) is not None]
    if len(logs) == 1:
        return logs[0]
    raise PropagationError(f"line {lineno} of the current code holds several statements")


