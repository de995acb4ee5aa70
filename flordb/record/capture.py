"""Console capture: what a script prints, with the loop coordinates it printed at.

Lines written to ``sys.stdout``/``sys.stderr`` and records of the ``logging``
module are kept per run and flushed into its segments as ``console`` rows
(queryable as the ``console`` table). The terminal still receives every byte,
in order. FlorDB's own messages (``flordb: ...``) and progress bars are not kept.

Cheap on the print path. Where ``sys.stdout`` was block-buffered (a file or a
pipe: a training job's log), it becomes a ``BlockTee`` (record/streams.py)
whose ``write`` is a list's ``append``: a ``print`` runs no Python code. The loops of
the run append a mark (:data:`MARK`) to the same list when their iteration
changes, and the context to a list of marks, so each piece of text is placed
at its coordinates later. The text goes out to the real stream in bulk: when
the run flushes (each main-loop iteration), when the script flushes, before a
fork; and from a small thread when none of these happened for ``WATCH``
seconds (a long iteration, a line printed outside loops). A block-buffered
stream only promised its output by the block anyway. A terminal and
``stderr`` flush every line, so there the stream is a ``LineTee``: a
line-buffered C ``io.TextIOWrapper`` over a sink that writes each line
through at once and notes it (one Python call per line). Cutting, sampling
and converting lines happen in bulk, off the print path.

Bounded by design: a line is cut at ``FLORDB_CAPTURE_LINE_CHARS`` characters
(default 1000) and a run keeps at most ``FLORDB_CAPTURE_MAX_LINES`` lines
(default 20000). Lines printed at one loop path (say every ``step``) are kept
one in 1, then one in 2, 4, 8 ... as that path's share fills up, so a
print-per-step loop of any length stays within the ceiling and still covers
the whole run; lines over the ceiling are counted and the count is recorded.
``FLORDB_CAPTURE=0`` turns capture off.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from itertools import compress, repeat
from operator import itemgetter
from typing import Any

from flordb.record.context import MARK, SHIFT
from flordb.record.streams import BlockTee, LineTee, as_text

OWN_PREFIX = "flordb: "  # FlorDB's own messages: never captured
OWN_BYTES = OWN_PREFIX.encode()
DEFAULT_MAX_LINES = 20_000
DEFAULT_LINE_CHARS = 1_000
BATCH = 4096  # marks waiting before a line-buffered stream's writer cuts them into lines
HOLD = 3 * 4096  # pieces of block-buffered text (about 4,096 printed lines) the printing thread cuts, if they pile up
WATCH = 0.5  # seconds: the longest a block-buffered line waits to go out when no loop or flush sends it
WATCH_STEP = 0.1  # seconds between the watcher's looks: a tight print loop outside loops holds this much
LOGGING = "logging"


def enabled() -> bool:
    return os.environ.get("FLORDB_CAPTURE", "1").strip().lower() not in ("0", "false", "no", "off")


def _env_int(name: str, default: int, low: int) -> int:
    try:
        return max(low, int(os.environ.get(name, default)))
    except ValueError:
        return default


class Capture:
    """The captured output of one run, waiting for the next flush.

    With a block-buffered stdout, everything written is in ``text`` (what
    stdout was given, as ``str``) with one :data:`MARK` per entry of
    ``marks``, in the order it happened: an ``int`` is the loop context from
    that point on; a tuple ``(kind, payload, ctx)`` is a line-buffered
    stream's chunk (kind: its channel; payload: bytes) or a logging record
    (kind "logging"; payload: text, logger, level). Tuples of atomic values
    only, which the garbage collector stops tracking at once. Without one,
    ``marks`` holds the same entries flat, three items each, and no marks.
    """

    def __init__(self, cur: list, blocks, max_lines: int | None = None, line_chars: int | None = None):
        self.cur = cur  # cur[0]: the current loop context (see record/context.py)
        self.blocks = blocks
        self.max_lines = _env_int("FLORDB_CAPTURE_MAX_LINES", DEFAULT_MAX_LINES, 1) if max_lines is None else max_lines
        self.line_chars = (_env_int("FLORDB_CAPTURE_LINE_CHARS", DEFAULT_LINE_CHARS, 16)
                           if line_chars is None else line_chars)
        self.per_path = max(1, self.max_lines // 2)  # a path's share; the rest is left for the others
        self.phase = max(min(self.per_path, 16), self.per_path // 16)  # chunks kept at each stride before it doubles
        self.text: list = []
        self.marks: list = []
        self.ctx = cur[0]  # the context where the text not cut yet starts
        self.carry = ""  # text after a mark whose entry was not in ``marks`` yet when it was cut
        self.lock = threading.RLock()  # one cut at a time: the watcher's, a flush's, the run's
        self.partial: dict[str, str] = {}  # channel -> the start of a line not ended yet
        self.encoding: dict[str, str] = {}  # channel -> the encoding of its byte chunks
        self.lines: list = []  # kept lines, flat: ctx, channel, logger, levelno, text
        self.paths: dict[int, list[int]] = {}  # block -> [seen, last dropped, stride, kept at stride, kept]
        self.by_path: dict[tuple, list[int]] = {}  # blocks of one loop path share its state
        self.kept = 0
        self.seen = 0  # lines printed (their newlines), kept or not
        self.unkept = 0  # lines seen but not kept for another reason (empty, FlorDB's own, a record's copy)
        self.open = True
        self.expect: str | None = None  # a logging record's message its stream handler may print next
        self.tees: list = []
        self.saved: list[tuple[str, Any]] = []  # (sys attribute, the stream it held)
        self.handler: Any = None  # the ``logging`` handler, once the script imported logging
        self.block: BlockTee | None = None
        self.marking: tuple | None = None  # for the loops, with a block tee: see ``install``
        self.batch = 3 * BATCH  # items of ``marks`` that make a line-buffered writer cut: 3 per entry, flat
        self.last_take = 0.0  # time.monotonic() of the last cut

    @property
    def dropped(self) -> int:
        """Lines printed that the ceiling did not keep."""
        return max(0, self.seen - self.kept - self.unkept)

    def note(self, kind: str, payload: Any, ctx: int) -> None:
        """A line-buffered stream's chunk (``kind`` its channel, ``payload`` bytes) or a logging record
        (``kind`` "logging", ``payload`` (text, logger, level)), in order with the block-buffered text."""
        if self.block is not None:
            self.text.append(MARK)
            self.marks.append((kind, payload, ctx))
        else:
            self.marks.extend((kind, payload, ctx))
        if len(self.marks) >= self.batch:
            self.take()

    # -- cutting what was written into lines (in bulk, off the print path) ---------

    def take(self) -> None:
        """Send the block-buffered text out, then cut everything written so far into lines."""
        with self.lock:
            self.last_take = time.monotonic()
            if self.handler is None:
                self.listen()
            text, marks = self.text, self.marks
            if self.block is None:  # line-buffered streams only: flat entries, in order
                n = len(marks)
                items = marks[:n]
                del marks[:n]
                try:
                    self._entries(items[0::3], items[1::3], items[2::3])
                except Exception:  # capture must never break printing or cost the run its records
                    pass
                return
            n = len(text)
            if not n:
                return
            items = text[:n]
            del text[:n]  # appends made meanwhile are after these: they stay
            if not self.carry and "stdout" not in self.partial and self._periodic(items):
                return
            try:
                s = "".join(items)
            except TypeError:  # a write of something that is not a str (print never does that)
                s = "".join(map(as_text, items))
            parts = s.split(MARK)  # pieces narrow to one byte a character again (the MARK widened the text)
            printed = "".join(parts)
            self.block.forward(printed)
            lines = printed.count("\n")
            self.seen += lines
            if self.carry:
                lines += self.carry.count("\n")
                s, self.carry = self.carry + s, ""
                parts = s.split(MARK)
            k = len(parts) - 1
            p = min(k, len(marks))
            entries = marks[:p]
            del marks[:p]
            if p < k:  # a mark whose entry another thread is appending now: cut at it, the rest waits
                self.carry = MARK + MARK.join(parts[p + 1:])
                del parts[p + 1:]
            try:
                self._cut(parts, entries, s if p == k else None, lines)
            except Exception:  # capture must never break printing or cost the run its records
                pass

    def _periodic(self, items: list) -> bool:
        """The common cut, without joining the marks into the text: a loop that prints one line per iteration.

        ``items`` are marks, then (mark, line, newline) per iteration, then
        marks, each mark's entry a context, the lines ASCII: checked with a
        few C passes over the list. The lines are the printed ``str`` objects
        themselves; False (nothing done) for anything else.
        """
        n, i = len(items), 0
        while i + 1 < n and items[i + 1] is MARK and items[i] is MARK:  # marks with nothing printed after them
            i += 1
        j = n
        while j > i and items[j - 1] is MARK:
            j -= 1
        k, rest = divmod(j - i, 3)
        if rest or not k:
            return False
        middle = items[i:j]
        if middle[0::3].count(MARK) != k or middle[2::3].count("\n") != k:
            return False
        lines = middle[1::3]
        body = "\n".join(lines)
        if not body.isascii() or body.count("\n") != k - 1:  # ASCII: no mark in a line, one byte a character
            return False
        count = n - 2 * k  # the marks: one per iteration, and those before and after
        entries = self.marks[:count]
        try:
            if len(entries) < count or type(min(entries)) is not int:
                return False
        except TypeError:  # a line-buffered chunk or a logging record among them
            return False
        del self.marks[:count]
        self.block.forward(body + "\n")
        self.seen += k
        self.ctx = entries[-1]
        ctxs = entries[i:i + k]  # line t was printed after the mark of iteration t
        t = 0
        while t < k:
            block = ctxs[t] >> SHIFT
            u = _run_end(ctxs, t, k, block)
            self._sample(lines, ctxs, t, u, block, "stdout", bare=True)
            t = u
        return True

    def _cut(self, parts: list[str], entries: list, text: str | None = None, lines: int = -1) -> None:
        """``parts[0]`` was written at ``self.ctx``, ``parts[j + 1]`` after ``entries[j]``.

        ``text``: the parts joined with :data:`MARK`, and ``lines`` its newlines, when known.
        """
        try:
            only_contexts = not entries or (type(entries[0]) is int and type(min(entries)) is int)
        except TypeError:  # contexts mixed with tuples
            only_contexts = False
        if only_contexts:
            ctxs = [self.ctx, *entries]
            if entries:
                self.ctx = entries[-1]
            chunks = list(compress(parts, parts))
            one_each = text is not None and _one_line_each_part(text, parts, len(chunks), lines)
            self.chunks(chunks, list(compress(ctxs, parts)), "stdout", one_each=one_each)
            return
        if not any(parts):  # no block-buffered text among them
            try:
                kinds = list(map(itemgetter(0), entries))
            except TypeError:  # a context among them
                kinds = None
            if kinds is not None:
                self._entries(kinds, list(map(itemgetter(1), entries)), list(map(itemgetter(2), entries)))
                return
        ctx, chunks, ctxs = self.ctx, [], []
        if parts[0]:
            chunks.append(parts[0])
            ctxs.append(ctx)
        for entry, part in zip(entries, parts[1:]):
            if type(entry) is int:
                ctx = entry
            else:
                if chunks:
                    self.chunks(chunks, ctxs, "stdout")
                    chunks, ctxs = [], []
                self._entry(entry)
            if part:
                chunks.append(part)
                ctxs.append(ctx)
        self.ctx = ctx
        if chunks:
            self.chunks(chunks, ctxs, "stdout")

    def _entry(self, entry: tuple) -> None:
        kind, payload, ctx = entry
        if kind == LOGGING:
            self.record(payload[0], ctx, payload[1], payload[2])
        else:
            self._written([payload], [ctx], kind)

    def _entries(self, kinds: list[str], payloads: list, ctxs: list[int]) -> None:
        """Entries in order: runs of one stream's chunks are cut together."""
        if LOGGING not in kinds and kinds.count(kinds[0] if kinds else None) == len(kinds):
            if kinds:
                self._written(payloads, ctxs, kinds[0])
            return
        i, n = 0, len(kinds)
        while i < n:
            j = i + 1
            while j < n and kinds[j] == kinds[i] and kinds[i] != LOGGING:
                j += 1
            if kinds[i] == LOGGING:
                self._entry((kinds[i], payloads[i], ctxs[i]))
            else:
                self._written(payloads[i:j], ctxs[i:j], kinds[i])
            i = j

    def _written(self, data: list[bytes], ctxs: list[int], channel: str) -> None:
        """Chunks a line-buffered stream wrote, as bytes: decoded only where kept, if its encoding allows."""
        encoding = self.encoding.get(channel, "utf-8")
        self.seen += b"".join(data).count("\n".encode(encoding))
        if _ascii_newlines(encoding):
            self.chunks(data, ctxs, channel, encoding)
        else:
            self.chunks(list(map(str, data, repeat(encoding), repeat("replace"))), ctxs, channel)

    def chunks(self, chunks: list, ctxs: list[int], channel: str, encoding: str | None = None,
               one_each: bool = False) -> None:
        """Pieces of text (``str``; or ``bytes`` in ``encoding``), each written at a context; most are one line each.

        A chunk that ends a line (and continues none) is one unit of sampling;
        runs of one-line chunks of one loop are sampled at once, with work
        only for the lines kept.
        """
        partial, nl = self.partial, b"\n" if encoding else "\n"
        i, n = 0, len(chunks)
        while i < n:
            if channel in partial or chunks[i][-1:] != nl:
                self.cut(_text(chunks[i], encoding), ctxs[i], channel)
                i += 1
                continue
            block = ctxs[i] >> SHIFT
            j = _run_end(ctxs, i, n, block)
            if j - i > 1 and (one_each or _one_line_each(chunks, i, j, nl)):
                self._sample(chunks, ctxs, i, j, block, channel, encoding)
                i = j
                continue
            for k in range(i, j):  # one by one: the same decisions, with the text looked at
                if channel not in partial and chunks[k][-1:] == nl:
                    if chunks[k].count(nl) == 1:
                        self._sample(chunks, ctxs, k, k + 1, block, channel, encoding)
                    else:
                        self._sample_whole(_text(chunks[k], encoding), ctxs[k], block, channel)
                else:
                    self.cut(_text(chunks[k], encoding), ctxs[k], channel)
            i = j

    def _path_state(self, block: int) -> list[int]:
        st = self.paths.get(block)
        if st is None:
            st = self.paths[block] = self.by_path.setdefault(self.blocks.table[block][0], [0, 0, 1, 0, 0])
        return st

    def _advance(self, st: list[int]) -> None:
        """A chunk of this path is kept: the next one kept is ``stride`` chunks on; strides double."""
        st[3] += 1
        if st[3] >= self.phase:
            st[2] *= 2
            st[3] = 0
        st[4] += 1
        st[1] = st[0] + st[2] - 1 if st[4] < self.per_path else 1 << 62  # past its share: none more

    def _sample(self, chunks: list, ctxs: list[int], i: int, j: int, block: int, channel: str,
                encoding: str | None = None, bare: bool = False) -> None:
        """Chunks ``i .. j-1``, one whole line each, of loop ``block``: keep those the sampling keeps.

        The same decisions as :meth:`_advance` one chunk at a time, with work
        only for the chunks kept, and their lines checked and added in C.
        ``bare``: the chunks are lines without their newline.
        """
        st = self._path_state(block)
        seen, last_dropped, stride, at_stride, kept = st
        end = seen + (j - i)
        offset = i - seen - 1  # chunk index of this path's line number x: offset + x
        phase, per_path = self.phase, self.per_path
        keep = []
        while last_dropped < end:  # one turn per stride: the kept chunks are evenly spaced
            x = last_dropped + 1
            c = min(phase - at_stride, (end - x) // stride + 1, per_path - kept)
            keep.extend(range(offset + x, offset + x + c * stride, stride))
            at_stride += c
            kept += c
            x += (c - 1) * stride
            if at_stride >= phase:
                stride *= 2
                at_stride = 0
            last_dropped = x + stride - 1 if kept < per_path else 1 << 62
        st[:] = end, last_dropped, stride, at_stride, kept
        if not keep:
            return
        texts = list(map(chunks.__getitem__, keep))
        n = len(texts)
        if encoding:  # bytes of an encoding whose newline is b"\n"; a line has at most as many characters
            joined, cr, own, space = b"".join(texts), b"\r", OWN_BYTES, bytes.isspace
        else:
            joined, cr, own, space = "".join(texts), "\r", OWN_PREFIX, str.isspace
        if (self.kept + n <= self.max_lines and self.expect is None and cr not in joined and own not in joined
                and max(map(len, texts)) <= self.line_chars + (0 if bare else 1)
                and not any(map(space, texts)) and (not bare or all(texts))):
            lines = texts if bare else _text(joined, encoding)[:-1].split("\n")
            if len(lines) == n:
                rows = [None] * (5 * n)  # the common case: printed lines, kept as they are (see add)
                rows[0::5] = map(ctxs.__getitem__, keep)
                rows[1::5] = repeat(channel, n)
                rows[4::5] = lines
                self.lines.extend(rows)
                self.kept += n
                return
        for k in keep:
            self.cut(chunks[k] + "\n" if bare else _text(chunks[k], encoding), ctxs[k], channel)

    def _sample_whole(self, chunk: str, ctx: int, block: int, channel: str) -> None:
        """A chunk of several whole lines: kept or dropped as one."""
        st = self._path_state(block)
        st[0] += 1
        if st[0] <= st[1]:
            return
        self._advance(st)
        self.cut(chunk, ctx, channel)

    def cut(self, text: str, ctx: int, channel: str) -> None:
        """Lines of a chunk (with the unfinished line before it), each kept as :meth:`line` allows."""
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
        st = self._path_state(ctx >> SHIFT)
        st[0] += 1
        if st[0] <= st[1]:
            return
        self._advance(st)
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
        with self.lock:
            try:
                self.take()
                if final:
                    for channel in list(self.partial):
                        self.seen += 1
                        self.line(channel, self.partial.pop(channel).rsplit("\r", 1)[-1], self.ctx)
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
            if name == "stdout" and BlockTee.suits(stream):
                tee = self.block = BlockTee(stream, self)
                self.batch = BATCH
                # Where its context changes, a loop appends MARK to the text and the context to the marks.
                self.marking = (self.text.append, self.marks.append)
            else:
                tee = LineTee.over(stream, name, self)
            self.encoding[name] = tee.encoding
            self.saved.append((name, stream))
            setattr(sys, name, tee)
            self.tees.append(tee)
        self.listen()
        if self.block is not None:
            _watch(self)
        ref = weakref.ref(self)
        os.register_at_fork(before=lambda: (ref() is not None and ref().forking()),
                            after_in_child=lambda: (ref() is not None and ref().forked()))

    def close(self) -> None:
        """Stop capturing; put the streams back where nobody wrapped them after us."""
        for tee in self.tees:
            try:
                tee.flush()  # a line not ended yet reaches the terminal and the capture
            except Exception:
                pass
        self.open = False
        self.marking = None
        for tee, (name, stream) in zip(self.tees, self.saved):
            tee.stop()  # a reference kept to the tee writes through, uncaptured
            if getattr(sys, name, None) is tee:
                setattr(sys, name, stream)
        try:
            self.take()  # what was written between the flush and the stop
        except Exception:  # a closed or broken stream must not keep the run from ending
            pass
        if self.handler is not None:
            sys.modules["logging"].getLogger().removeHandler(self.handler)

    def listen(self) -> None:
        """Capture ``logging`` records from now on, once the script has imported ``logging``.

        Not imported for it: a script that never logs does not pay for the
        module. Checked at install and at every cut, so a script importing it
        later is listened to from its next flush; a record before that still
        reaches the console through the script's own handler, as a line.
        """
        if self.handler is None and self.open and "logging" in sys.modules:
            self.handler = _handler(self)
            sys.modules["logging"].getLogger().addHandler(self.handler)

    def forking(self) -> None:
        """Before a fork: what is held goes out now, so that the child has no copy of it to write again."""
        if self.open and self.block is not None:
            try:
                self.take()
                self.block.stream.flush()
            except Exception:
                pass

    def forked(self) -> None:
        """In a child process (a DataLoader worker): write through, capture nothing; the parent owns the rest."""
        if not self.open:
            return
        self.lock = threading.RLock()
        self.open = False
        self.marking = None
        self.text.clear()
        self.marks.clear()
        self.carry = ""
        for tee in self.tees:
            tee.stop()


def _watch(capture: Capture) -> None:
    """A daemon thread that sends the block-buffered text out (and cuts it) when nothing else did.

    Loops and flushes do it on the script's own thread as it runs; this is for
    text printed outside loops, or in a long iteration of a loop that does not
    iterate (waiting for data, evaluating): cut when text waited ``WATCH``
    seconds, and the stream flushed then. Text piling up faster than that
    (a tight print loop outside loops) makes the printing thread cut its own
    (``BlockTee.hold_back``) until the backlog is gone: memory stays bounded.
    """
    ref = weakref.ref(capture)

    def watch() -> None:
        flushed = time.monotonic()
        while True:
            time.sleep(WATCH_STEP)  # cheaper than waiting on an event; it ends when capture closes
            cap = ref()
            if cap is None or not cap.open:
                return
            try:
                waiting, now = len(cap.text), time.monotonic()
                if waiting > 2 * HOLD:  # printed faster than cut: the printing thread cuts its own
                    cap.block.hold_back(HOLD)
                elif cap.block.state == "held" and now - cap.last_take >= WATCH:  # quiet again
                    cap.block.hold_back(None)
                elif waiting and now - cap.last_take >= WATCH:
                    cap.take()
                if cap.block.unflushed and now - flushed >= WATCH:  # out of the stream's own buffer too
                    cap.block.unflushed = False
                    cap.block.stream.flush()
                    flushed = now
            except Exception:
                pass
            del cap

    threading.Thread(target=watch, name="flordb-capture", daemon=True).start()


def _run_end(ctxs: list[int], i: int, n: int, block: int) -> int:
    """The end of the run of contexts of loop ``block`` that starts at ``i`` (C slices, doubling steps)."""
    low, high = block << SHIFT, (block + 1) << SHIFT
    j, step = i + 1, 8
    while j < n:
        seg = ctxs[j:j + step]
        if min(seg) >= low and max(seg) < high:
            j += len(seg)
            step *= 2
            continue
        if step == 1:
            break
        step //= 2  # narrow down to where the run ends
    return j


def _one_line_each(chunks: list, i: int, j: int, nl: str | bytes) -> bool:
    """Chunks ``i .. j-1`` each hold exactly one line, ended (checked in C, no Python loop)."""
    part = chunks[i:j]
    return nl[:0].join(part).count(nl) == j - i and all(map(type(nl).endswith, part, repeat(nl)))


def _one_line_each_part(text: str, parts: list[str], pieces: int, lines: int) -> bool:
    """The same for all the non-empty ``parts`` of ``text`` (split at MARK), from counts over ``text``.

    As many newlines as pieces, and each piece ends with one: a newline just
    before every MARK that follows a piece, and at the end of the last one.
    """
    ended = pieces - (1 if parts[-1] else 0)  # pieces followed by a MARK
    return (lines == pieces and text.count("\n" + MARK) == ended
            and (not parts[-1] or parts[-1].endswith("\n")))


def _text(chunk: str | bytes, encoding: str | None) -> str:
    return str(chunk, encoding, "replace") if encoding else chunk


def _ascii_newlines(encoding: str) -> bool:
    """Whether a byte 10 in this encoding's output is always a newline (UTF-8, Latin-1, ...; not UTF-16)."""
    try:
        return "\n".encode(encoding) == b"\n" and "\u00e9\u4e2d".encode(encoding, "replace").find(b"\n") < 0
    except LookupError:
        return False


def _handler(capture: Capture) -> Any:
    """A ``logging`` handler that notes each record's message, logger and level (``logging`` already imported)."""
    logging = sys.modules["logging"]

    class Handler(logging.Handler):
        def emit(self, record: Any) -> None:
            if not capture.open:
                return
            try:
                capture.note(LOGGING, (record.getMessage(), record.name, record.levelno), capture.cur[0])
            except Exception:
                pass

    return Handler(logging.NOTSET)


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
