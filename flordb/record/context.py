"""Loop coordinates as plain integers, so that ``flor.log`` allocates nothing the GC tracks.

A *block* is one execution of a loop: its path of loop names and the
coordinates of the enclosing iterations (its prefix). Iteration ``n`` of block
``b`` is the int ``(b << 32) | n``. A loop sets the current context with one
addition per iteration; a log record is ``(name, value, ctx)`` of atomic values,
which CPython's collector untracks at once. Keeping tuples in the buffer made
full collections scan them and cost more than the logging itself.
"""

from __future__ import annotations

from flordb.store.segments import MASK, SHIFT  # the segment format owns the encoding

__all__ = ["MARK", "MASK", "SHIFT", "TOP", "Blocks"]
TOP = 0  # block 0: outside any loop
# Where the context changes in captured text (record/capture.py): a lone surrogate, which no
# stream with a strict or surrogateescape error handler can print, so it never comes from a script.
MARK = "\udfff"


class Blocks:
    """The table of loop executions of one run; block 0 is "outside any loop"."""

    def __init__(self) -> None:
        self.table: list[tuple[tuple[str, ...], tuple[int, ...]]] = [((), ())]

    def open(self, path: tuple[str, ...], prefix: tuple[int, ...]) -> int:
        """Register a loop execution; returns the context of its iteration 0."""
        self.table.append((path, prefix))
        return (len(self.table) - 1) << SHIFT

    def decode(self, ctx: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(path, coord) of a context."""
        path, prefix = self.table[ctx >> SHIFT]
        return (path, (*prefix, ctx & MASK)) if path else ((), ())
