"""The propagation pipeline: the steps of this package composed in order."""

from __future__ import annotations

from flordb.errors import PropagationError
from flordb.hindsight.propagation.check import adapt_attributes, check_defined
from flordb.hindsight.propagation.frames import match_frames
from flordb.hindsight.propagation.model import Version, source_lines
from flordb.hindsight.propagation.names import rename_map
from flordb.hindsight.propagation.place import already_present, choose_gap, insertion_line
from flordb.hindsight.propagation.search import search_block
from flordb.hindsight.propagation.target import target_path
from flordb.hindsight.propagation.text import block_indent, splice, statement_text


def propagate(new_source: str, lineno: int, old_source: str) -> str:
    """Return ``old_source`` with the statement at ``lineno`` of ``new_source`` inserted.

    The result differs from ``old_source`` by one inserted statement, or not
    at all when the old version already has it. Raises ``PropagationError``
    when there is no confident place, including code shapes the analysis
    does not foresee: those are refusals, never crashes.
    """
    try:
        return _propagate(new_source, lineno, old_source)
    except PropagationError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, StopIteration, RecursionError) as exc:
        raise PropagationError(f"the analysis failed on this code ({type(exc).__name__}: {exc})") from exc


def _propagate(new_source: str, lineno: int, old_source: str) -> str:
    new, old = Version.parse(new_source, "current"), Version.parse(old_source, "old")
    frames, t = target_path(new.tree, lineno, new.info.flor, source_lines(new_source))
    stmt = frames[-1].block[t]
    match = match_frames(frames, new, old)
    new_block = match.new_block
    t = next(k for k, s in enumerate(new_block) if s is stmt)
    old_frame = match.old_frame or search_block(new_block, t, match, new, old)
    renames = rename_map(stmt, new_block, old_frame, match, new, old)
    indent = block_indent(old_frame, old)
    if already_present(stmt, renames, old_frame, new, old):
        return old_source
    gap = choose_gap(new_block, t, old_frame.block, new, old, edges=match.old_frame is not None)
    line = insertion_line(old_frame, gap, old)
    renames = adapt_attributes(stmt, renames, old, old_frame, line)
    check_defined(stmt, renames, old, old_frame, line, new)
    return splice(old_source, line, statement_text(new.source, stmt, renames, indent))
