"""Console capture: what a script prints, with the loop coordinates it printed at.

Lines written to ``sys.stdout``/``sys.stderr`` and records of the ``logging``
module are kept per run and flushed into its segments as ``console`` rows
(queryable as the ``console`` table). The terminal still receives every byte
first: the streams are wrapped by a tee that writes through, then notes the
text. FlorDB's own messages (``flordb: ...``) and progress bars are not kept.

Bounded by design: a line is cut at ``FLORDB_CAPTURE_LINE_CHARS`` characters
(default 1000) and a run keeps at most ``FLORDB_CAPTURE_MAX_LINES`` lines
(default 20000). Lines printed at one loop path (say every ``step``) are kept
one in 1, then one in 2, 4, 8 ... as that path's share fills up, so a
print-per-step loop of any length stays within the ceiling and still covers
the whole run; lines over the ceiling are counted and the count is recorded.
``FLORDB_CAPTURE=0`` turns capture off.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from flordb.record.context import SHIFT

OWN_PREFIX = "flordb: "  # FlorDB's own messages: never captured
DEFAULT_MAX_LINES = 20_000
DEFAULT_LINE_CHARS = 1_000


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
        self.phase = max(min(self.per_path, 16), self.per_path // 16)  # lines kept at each stride before it doubles
        self.lines: list[tuple] = []  # (ctx, channel, logger, levelno, text)
        self.paths: dict[int, list[int]] = {}  # block -> [seen, kept, stride, kept at this stride]
        self.by_path: dict[tuple, list[int]] = {}  # blocks of one loop path share its state
        self.kept = 0
        self.dropped = 0
        self.open = True
        self.expect: str | None = None  # a logging record's message its stream handler may print next
        self.tees: list[_Tee] = []
        self.handler: _Handler | None = None

    # -- taking lines ------------------------------------------------------------

    def line(self, channel: str, text: str) -> None:
        """A complete line written to a stream (without its newline)."""
        if not self.open or not text or text.startswith(OWN_PREFIX) or text.isspace():
            return
        expect, self.expect = self.expect, None
        if expect is not None and text.endswith(expect):
            return  # the stream copy of a logging record already captured
        self.add(channel, None, None, text)

    def record(self, record: logging.LogRecord) -> None:
        """A ``logging`` record (from the handler on the root logger)."""
        if not self.open:
            return
        try:
            text = record.getMessage()
        except Exception:
            return
        if text.startswith(OWN_PREFIX):
            return
        last = self.lines[-1] if self.lines else None
        if last is not None and last[2] is None and last[4].endswith(text[: self.line_chars]) and text:
            # A handler of a child logger already wrote it through our stream: annotate that line.
            self.lines[-1] = (last[0], last[1], record.name, record.levelno, last[4])
            return
        self.expect = text.splitlines()[-1] if text else None
        self.add("logging", record.name, record.levelno, text)

    def add(self, channel: str, logger: str | None, level: int | None, text: str) -> None:
        ctx = self.cur[0]
        block = ctx >> SHIFT
        st = self.paths.get(block)
        if st is None:
            st = self.by_path.setdefault(self.blocks.table[block][0], [0, 0, 1, 0])
            self.paths[block] = st
        st[0] += 1
        if (st[0] - 1) % st[2] or self.kept >= self.max_lines or st[1] >= self.per_path:
            self.dropped += 1
            return
        st[1] += 1
        st[3] += 1
        if st[3] >= self.phase:
            st[2] *= 2
            st[3] = 0
        self.kept += 1
        if len(text) > self.line_chars:
            text = text[: self.line_chars] + "…"
        self.lines.append((ctx, channel, logger, level, text))

    # -- flushing ------------------------------------------------------------------

    def drain(self, final: bool = False) -> list[dict]:
        """Captured lines as segment events (kind ``console``), removed from the buffer."""
        lines = self.lines[:]
        del self.lines[: len(lines)]
        decode = self.blocks.decode
        out = [{"kind": "console", "name": channel, "path": decode(ctx)[0], "coord": decode(ctx)[1],
                "txt": text, "aux": logger, "n": level} for ctx, channel, logger, level, text in lines]
        if final and self.dropped:
            out.append({"kind": "console", "name": "capture", "path": (), "coord": (), "n": None,
                        "txt": f"{self.dropped} more lines were printed than the capture ceiling keeps"
                               f" ({self.max_lines} lines; FLORDB_CAPTURE_MAX_LINES)"})
        return out

    # -- installing ------------------------------------------------------------------

    def install(self) -> None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name, None)
            if stream is None:
                continue
            tee = _Tee(stream, name, self)
            setattr(sys, name, tee)
            self.tees.append(tee)
        self.handler = _Handler(self)
        logging.getLogger().addHandler(self.handler)

    def close(self) -> None:
        """Stop capturing; put the streams back where nobody wrapped them after us."""
        for tee in self.tees:
            tee.finish()
        self.open = False
        for tee in self.tees:
            if getattr(sys, tee.channel, None) is tee:
                setattr(sys, tee.channel, tee.stream)
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)


def raw(stream: Any) -> Any:
    """The terminal stream under a capture tee (for FlorDB's own output, e.g. progress bars)."""
    while isinstance(stream, _Tee):
        stream = stream.stream
    return stream


class _Tee:
    """Writes through to the wrapped stream, then cuts what was written into lines."""

    def __init__(self, stream: Any, channel: str, capture: Capture):
        self.stream = stream
        self.channel = channel
        self.capture = capture
        self._write = stream.write
        self.partial: list[str] = []
        self.partial_len = 0

    def write(self, s):
        n = self._write(s)
        try:
            if "\n" in s:
                self._lines(s)
            elif s and self.partial_len < self.capture.line_chars * 4:
                self.partial.append(s)
                self.partial_len += len(s)
        except Exception:  # capture must never break printing
            pass
        return n

    def _lines(self, s: str) -> None:
        parts = s.split("\n")
        if self.partial:
            parts[0] = "".join(self.partial) + parts[0]
            self.partial, self.partial_len = [], 0
        rest = parts.pop()
        if rest:
            self.partial, self.partial_len = [rest], len(rest)
        line = self.capture.line
        for text in parts:
            if "\r" in text:  # a carriage return overwrites: keep what the terminal shows
                text = text.rstrip("\r").rsplit("\r", 1)[-1]
            line(self.channel, text)

    def finish(self) -> None:
        if self.partial:
            text = "".join(self.partial).rsplit("\r", 1)[-1]
            self.partial, self.partial_len = [], 0
            self.capture.line(self.channel, text)

    def writelines(self, lines) -> None:
        for s in lines:
            self.write(s)

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, flush, buffer, ...
        return getattr(self.stream, name)


class _Handler(logging.Handler):
    def __init__(self, capture: Capture):
        super().__init__(logging.NOTSET)
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.capture.record(record)
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
