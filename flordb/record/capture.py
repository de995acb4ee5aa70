"""Console capture: what a script prints, with the loop coordinates it printed at.

Lines written to ``sys.stdout``/``sys.stderr`` and records of the ``logging``
module are kept per run and flushed into its segments as ``console`` rows
(queryable as the ``console`` table). The terminal still receives every byte,
in order. FlorDB's own messages (``flordb: ...``) and progress bars are not kept.

Cheap on the print path: ``sys.stdout`` becomes a line-buffered C
``io.TextIOWrapper`` over a small sink, so a ``print`` costs two C-level
writes and one Python call (the sink's, once per completed line), which
writes the text through to the real stream and appends ``(text, context)``
to a list. Cutting, sampling and converting lines happen in bulk when the run
flushes (or every ``BATCH`` chunks), off the per-print path.

Bounded by design: a line is cut at ``FLORDB_CAPTURE_LINE_CHARS`` characters
(default 1000) and a run keeps at most ``FLORDB_CAPTURE_MAX_LINES`` lines
(default 20000). Lines printed at one loop path (say every ``step``) are kept
one in 1, then one in 2, 4, 8 ... as that path's share fills up, so a
print-per-step loop of any length stays within the ceiling and still covers
the whole run; lines over the ceiling are counted and the count is recorded.
``FLORDB_CAPTURE=0`` turns capture off.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from itertools import repeat
from typing import Any

from flordb.record.context import SHIFT

OWN_PREFIX = "flordb: "  # FlorDB's own messages: never captured
DEFAULT_MAX_LINES = 20_000
DEFAULT_LINE_CHARS = 1_000
BATCH = 3 * 4096  # items (3 per chunk) waiting before they are cut into lines (bounds memory between flushes)
LOGGING = "logging"


def enabled() -> bool:
    return os.environ.get("FLORDB_CAPTURE", "1").strip().lower() not in ("0", "false", "no", "off")


def _env_int(name: str, default: int, low: int) -> int:
    try:
        return max(low, int(os.environ.get(name, default)))
    except ValueError:
        return default


class Capture:
    """The captured lines of one run, waiting for the next flush."""

    def __init__(self, cur: list, blocks, max_lines: int | None = None, line_chars: int | None = None):
        self.cur = cur  # cur[0]: the current loop context (see record/context.py)
        self.blocks = blocks
        self.max_lines = _env_int("FLORDB_CAPTURE_MAX_LINES", DEFAULT_MAX_LINES, 1) if max_lines is None else max_lines
        self.line_chars = (_env_int("FLORDB_CAPTURE_LINE_CHARS", DEFAULT_LINE_CHARS, 16)
                           if line_chars is None else line_chars)
        self.per_path = max(1, self.max_lines // 2)  # a path's share; the rest is left for the others
        self.phase = max(min(self.per_path, 16), self.per_path // 16)  # chunks kept at each stride before it doubles
        # Flat lists, three or five items per entry, so that no container the GC tracks
        # outlives a print (holding thousands of tuples made every collection scan them).
        # Chunks as written, in order: bytes, ctx, channel; a logging record's bytes are
        # empty and its channel is the tuple ("logging", text, logger, level).
        self.pending: list = []
        self.partial: dict[str, str] = {}  # channel -> the start of a line not ended yet
        self.encoding: dict[str, str] = {}  # channel -> the encoding of its byte chunks
        self.lines: list = []  # kept lines: ctx, channel, logger, levelno, text
        self.paths: dict[int, list[int]] = {}  # block -> [seen, next to keep, stride, kept at stride, kept]
        self.by_path: dict[tuple, list[int]] = {}  # blocks of one loop path share its state
        self.kept = 0
        self.seen = 0  # lines printed (their newlines), kept or not
        self.unkept = 0  # lines seen but not kept for another reason (empty, FlorDB's own, a record's copy)
        self.open = True
        self.expect: str | None = None  # a logging record's message its stream handler may print next
        self.tees: list[_Tee] = []
        self.saved: list[tuple[str, Any]] = []  # (sys attribute, the stream it held)
        self.handler: _Handler | None = None

    @property
    def dropped(self) -> int:
        """Lines printed that the ceiling did not keep."""
        return max(0, self.seen - self.kept - self.unkept)

    # -- cutting chunks into lines (in bulk, off the print path) -------------------

    def take(self) -> None:
        """Cut the pending chunks into lines and keep those the ceiling allows.

        A chunk is usually one printed line. Sampling decides on the chunk's
        loop path alone, before any text work, so a dropped line costs a few
        operations; only kept chunks, unfinished lines and logging records are
        decoded and cut.
        """
        items = self.pending[:]
        del self.pending[: len(items)]
        chunks, ctxs, channels = items[0::3], items[1::3], items[2::3]
        self.seen += b"".join(chunks).count(b"\n")
        partial, paths, shift, encoding = self.partial, self.paths, SHIFT, self.encoding
        lines_extend, limit, max_lines = self.lines.extend, self.line_chars, self.max_lines
        phase, per_path, kept = self.phase, self.per_path, self.kept
        last_block, st = -1, None
        i, n = -1, len(chunks)
        try:
            while i + 1 < n:
                i += 1
                chunk, ctx, channel = chunks[i], ctxs[i], channels[i]
                if chunk[-1:] == b"\n" and channel not in partial:
                    block = ctx >> shift
                    if block != last_block:
                        st, last_block = paths.get(block) or self._path_state(block), block
                    st[0] += 1
                    if st[0] <= st[1]:  # not sampled: dropped, without looking at its text
                        k = st[1] - st[0]  # how many more of this path will be dropped
                        if k >= 8 and not partial:
                            k = min(k, n - i - 1)
                            if k >= 8 and _plain_lines(chunks, ctxs, i + 1, k, block):
                                st[0] += k  # all at once: whole lines of this block, nothing pending
                                i += k
                        continue
                    st[3] += 1  # sampled: as _sampled, inlined (this runs for every kept line)
                    if st[3] >= phase:
                        st[2] *= 2
                        st[3] = 0
                    st[1] = st[0] + st[2] - 1
                    st[4] += 1
                    if st[4] >= per_path:
                        st[1] = 1 << 62  # this path's share is full
                    text = str(chunk, encoding.get(channel, "utf-8"), "replace")[:-1]
                    if (kept >= max_lines or self.expect is not None or not text or "\n" in text or "\r" in text
                            or text.startswith(OWN_PREFIX) or text.isspace()):
                        self.kept = kept
                        self.cut(chunk, ctx, channel)
                        kept = self.kept
                        continue
                    kept += 1  # the common case: one printed line, kept as it is (see add)
                    lines_extend((ctx, channel, None, None, text if len(text) <= limit else text[:limit] + "…"))
                else:
                    self.kept = kept
                    if type(channel) is tuple:
                        self.record(channel[1], ctx, channel[2], channel[3])
                    else:
                        self.cut(chunk, ctx, channel)
                    kept = self.kept
        finally:
            self.kept = kept

    def _path_state(self, block: int) -> list[int]:
        st = self.by_path.setdefault(self.blocks.table[block][0], [0, 0, 1, 0, 0])
        self.paths[block] = st
        return st

    def _sampled(self, st: list[int]) -> None:
        """A chunk of this path is kept: the next one kept is ``stride`` chunks on; strides double."""
        st[3] += 1
        if st[3] >= self.phase:
            st[2] *= 2
            st[3] = 0
        st[1] = st[0] + st[2] - 1
        st[4] += 1
        if st[4] >= self.per_path:
            st[1] = 1 << 62  # this path's share is full

    def cut(self, chunk: bytes, ctx: int, channel: str) -> None:
        """Lines of a chunk (with the unfinished line before it), each kept as :meth:`line` allows."""
        text = str(chunk, self.encoding.get(channel, "utf-8"), "replace")
        start = self.partial.pop(channel, None)
        parts = text.split("\n")
        if start is not None:
            parts[0] = start + parts[0]
        rest = parts.pop()
        if rest:
            cap = 4 * self.line_chars
            self.partial[channel] = rest[-cap:] if len(rest) > cap else rest
        for line in parts:
            if "\r" in line:  # a carriage return overwrites: keep what the terminal shows
                line = line.rstrip("\r").rsplit("\r", 1)[-1]
            self.line(channel, line, ctx)

    def line(self, channel: str, text: str, ctx: int) -> None:
        """A complete line written to a stream (without its newline)."""
        if not text or text.startswith(OWN_PREFIX) or text.isspace():
            self.unkept += 1
            return
        expect, self.expect = self.expect, None
        if expect is not None and text.endswith(expect):
            self.unkept += 1
            return  # the stream copy of a logging record already captured
        self.add(channel, None, None, text, ctx)

    def record(self, text: str, ctx: int, logger: str, level: int) -> None:
        """A ``logging`` record's message."""
        if text.startswith(OWN_PREFIX):
            return
        lines = self.lines
        if lines and lines[-3] is None and lines[-1].endswith(text[: self.line_chars]) and text:
            # A handler of a child logger already wrote it through our stream: annotate that line.
            lines[-3], lines[-2] = logger, level
            return
        self.expect = text.splitlines()[-1] if text else None
        self.seen += 1
        block = ctx >> SHIFT
        st = self.paths.get(block) or self._path_state(block)
        st[0] += 1
        if st[0] <= st[1]:
            return
        self._sampled(st)
        self.add(LOGGING, logger, level, text, ctx)

    def add(self, channel: str, logger: str | None, level: int | None, text: str, ctx: int) -> None:
        if self.kept >= self.max_lines:
            return
        self.kept += 1
        if len(text) > self.line_chars:
            text = text[: self.line_chars] + "…"
        self.lines.extend((ctx, channel, logger, level, text))

    # -- flushing ------------------------------------------------------------------

    def drain(self, final: bool = False) -> tuple[list, list[dict]]:
        """Captured lines, removed from the buffer: a flat list, five items per line
        (ctx, channel, logger, level, text), for ``SegmentWriter.write(console=...)``;
        and, at the end of the run, a ``console`` event saying how many were not kept."""
        try:
            self.take()
            if final:
                for channel in list(self.partial):
                    self.seen += 1
                    self.line(channel, self.partial.pop(channel).rsplit("\r", 1)[-1], self.cur[0])
        except Exception:  # capture must never cost the run its records
            pass
        lines = self.lines[:]
        del self.lines[: len(lines)]
        notes = []
        if final and self.dropped:
            notes.append({"kind": "console", "name": "capture", "path": (), "coord": (), "n": None,
                          "txt": f"{self.dropped} more lines were printed than the capture ceiling keeps"
                                 f" ({self.max_lines} lines; FLORDB_CAPTURE_MAX_LINES)"})
        return lines, notes

    # -- installing ------------------------------------------------------------------

    def install(self) -> None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name, None)
            if stream is None or not callable(getattr(stream, "write", None)):
                continue
            try:
                stream.flush()  # what was written before goes out first
            except Exception:
                pass
            tee = _Tee.over(stream, name, self)
            self.encoding[name] = tee.encoding
            self.saved.append((name, stream))
            setattr(sys, name, tee)
            self.tees.append(tee)
        self.handler = _Handler(self)
        logging.getLogger().addHandler(self.handler)

    def close(self) -> None:
        """Stop capturing; put the streams back where nobody wrapped them after us."""
        for tee in self.tees:
            try:
                tee.flush()  # a line not ended yet reaches the terminal and the capture
            except Exception:
                pass
        self.open = False
        for tee, (name, stream) in zip(self.tees, self.saved):
            tee.sink.stop()  # a reference kept to the tee writes through, uncaptured
            if getattr(sys, name, None) is tee:
                setattr(sys, name, stream)
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)


def _plain_lines(chunks: list, ctxs: list, i: int, k: int, block: int) -> bool:
    """Chunks ``i .. i+k-1`` are each one whole line, printed in loop block ``block`` (checked in C, no Python loop).

    Then sampling may drop them as a run: none completes a pending line, none is a
    logging record (an empty chunk), and all belong to the same loop path.
    """
    seg = ctxs[i:i + k]
    low = block << SHIFT
    if min(seg) < low or max(seg) >= low + (1 << SHIFT):
        return False
    part = chunks[i:i + k]
    try:
        return b"".join(part).count(b"\n") == k and all(map(bytes.endswith, part, repeat(b"\n", k)))
    except TypeError:  # a chunk that is not bytes: the one-by-one path decides
        return False


def raw(stream: Any) -> Any:
    """The terminal stream under a capture tee (for FlorDB's own output, e.g. progress bars)."""
    while isinstance(stream, _Tee):
        stream = stream.sink.stream
    return stream


class _Sink(io.RawIOBase):
    """Under the tee's C text layer: writes each flushed chunk through, then notes it.

    The text layer is line-buffered, so a chunk is what was written up to a
    newline (or a ``flush``): one call here per printed line. ``flush`` is
    ``RawIOBase``'s (C, a no-op), because the text layer calls it after every
    line; the tee's own ``flush`` flushes the real stream. This sink writes
    text to streams without a binary layer (a ``StringIO``, a wrapper).
    """

    def __init__(self, stream: Any, channel: str, capture: Capture, encoding: str):
        super().__init__()
        self.stream = stream
        self.channel = channel
        self.capture: Capture | None = capture
        self.encoding = encoding
        self._out = stream.write
        self._extend = capture.pending.extend
        self._cur = capture.cur

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._out(str(b, self.encoding, "surrogateescape"))
        if self.capture is not None:
            self._extend((bytes(b), self._cur[0], self.channel))
            if len(self.capture.pending) >= BATCH:
                self._take()
        return len(b)

    def stop(self) -> None:
        """Write through from now on, capturing nothing (the run ended; a reference to the tee may remain)."""
        self.capture = None

    def _take(self) -> None:
        try:
            self.capture.take()
        except Exception:  # capture must never break printing
            self.capture.pending.clear()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def name(self) -> Any:
        return getattr(self.stream, "name", self.channel)


class _BytesSink(_Sink):
    """The sink for a real ``TextIOWrapper`` (the usual ``sys.stdout``): bytes go to its binary layer.

    The tee encoded them with the stream's own encoding and error handler, so
    they are the bytes the stream would have produced; writing them to its
    buffer skips a decode and a second text layer (half the cost of a print).
    The stream was flushed when the tee was installed, so nothing it held is
    overtaken; a stream that flushed every line (a terminal, ``stderr``) still
    does. Chunks are decoded only when the capture cuts them into lines.
    """

    def __init__(self, stream: Any, channel: str, capture: Capture, encoding: str):
        super().__init__(stream, channel, capture, encoding)
        self._bwrite = stream.buffer.write
        self._bflush = stream.buffer.flush
        self.each_line = bool(getattr(stream, "line_buffering", False) or getattr(stream, "write_through", False))
        self.write = self._capturing()  # the text layer looks ``write`` up on the instance first

    def _capturing(self):
        """``write`` as a closure over what it uses: no attribute lookups on the per-print path."""
        bwrite, bflush, extend, cur, channel = self._bwrite, self._bflush, self._extend, self._cur, self.channel
        pending, take = self.capture.pending, self._take
        if self.each_line:
            def write(b) -> int:
                bwrite(b)
                bflush()
                extend((b, cur[0], channel))
                if len(pending) >= BATCH:
                    take()
                return len(b)
        else:
            def write(b) -> int:
                bwrite(b)
                extend((b, cur[0], channel))
                if len(pending) >= BATCH:
                    take()
                return len(b)
        return write

    def stop(self) -> None:
        super().stop()
        bwrite, bflush, each_line = self._bwrite, self._bflush, self.each_line

        def write(b) -> int:
            bwrite(b)
            if each_line:
                bflush()
            return len(b)

        self.write = write


class _Tee(io.TextIOWrapper):
    """``sys.stdout``/``sys.stderr`` while a run captures: the C text layer over a :class:`_Sink`."""

    sink: _Sink

    @classmethod
    def over(cls, stream: Any, channel: str, capture: Capture) -> "_Tee":
        encoding = getattr(stream, "encoding", None) or "utf-8"
        errors = getattr(stream, "errors", None) or "strict"
        fast = isinstance(stream, io.TextIOWrapper) and callable(getattr(getattr(stream, "buffer", None), "write", None))
        sink = (_BytesSink if fast else _Sink)(stream, channel, capture, encoding)
        tee = cls(sink, encoding=encoding, errors=errors, line_buffering=True)
        tee.sink = sink
        tee.mode = getattr(stream, "mode", "w")
        return tee

    def flush(self) -> None:
        super().flush()
        self.sink.stream.flush()

    def close(self) -> None:  # never closes the real stream
        try:
            self.flush()
        except Exception:
            pass

    # No __getattr__ forwarding to the real stream: it would slow every ``print``'s
    # lookup of ``write``. What callers read is set in ``over`` (``mode``) or reached
    # through the binary layer (``fileno``, ``isatty``, ``name``).


class _Handler(logging.Handler):
    def __init__(self, capture: Capture):
        super().__init__(logging.NOTSET)
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        cap = self.capture
        if not cap.open:
            return
        try:
            cap.pending.extend((b"", cap.cur[0], (LOGGING, record.getMessage(), record.name, record.levelno)))
        except Exception:
            pass


def start(cur: list, blocks) -> Capture | None:
    """Install capture for a run, unless ``FLORDB_CAPTURE=0``; never raises."""
    if not enabled():
        return None
    try:
        cap = Capture(cur, blocks)
        cap.install()
        return cap
    except Exception:
        return None
