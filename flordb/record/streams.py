"""What ``sys.stdout`` and ``sys.stderr`` are while a run captures its console (see :mod:`flordb.record.capture`).

A block-buffered stdout (a file, a pipe) becomes a :class:`BlockTee`, whose
``write`` is a list's ``append``: the text waits with the capture and goes
out in bulk. A stream that shows each line at once (a terminal, ``stderr``,
``python -u``) becomes a :class:`LineTee`: a line-buffered C text layer over
a :class:`Sink`, which writes each line through and notes it for the capture.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from flordb.record.context import MARK

if TYPE_CHECKING:
    from flordb.record.capture import Capture


def as_text(item: Any) -> str:
    """Something written that is not a ``str`` (``print`` never does that), as text."""
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray)):
        return bytes(item).decode("utf-8", "surrogateescape")
    return str(item)


def raw(stream: Any) -> Any:
    """The terminal stream under a capture tee (for FlorDB's own output, e.g. progress bars)."""
    while isinstance(stream, (LineTee, BlockTee)):
        stream = stream.sink.stream if isinstance(stream, LineTee) else stream.stream
    return stream


class BlockTee(io.TextIOBase):
    """``sys.stdout`` while a run captures, where it was block-buffered: ``write`` is ``list.append``.

    The text goes out encoded as the stream would have encoded it, with its
    error handler; a character it cannot encode is written escaped rather
    than raising into training, long after the ``print`` returned.
    """

    @staticmethod
    def suits(stream: Any) -> bool:
        return (type(stream) is io.TextIOWrapper and not stream.line_buffering and not stream.write_through
                and callable(getattr(getattr(stream, "buffer", None), "write", None)))

    def __init__(self, stream: io.TextIOWrapper, capture: Capture):
        super().__init__()
        self.stream = stream
        self.capture = capture
        self._encoding = stream.encoding or "utf-8"
        self._errors = stream.errors or "strict"
        self._bwrite = stream.buffer.write
        "".encode(self._encoding, self._errors)  # the codec's lookup (an import) here, not on the watcher thread
        self.mode = getattr(stream, "mode", "w")
        self.unflushed = False  # text sent to the stream since it was last flushed
        self.write = capture.text.append  # an instance attribute: what ``print`` finds first
        self.state = "capture"  # or "held" (see hold_back), "each" (see reconfigure), "stopped"

    encoding = property(lambda self: self._encoding)
    errors = property(lambda self: self._errors)
    line_buffering = property(lambda self: False)
    write_through = property(lambda self: False)
    name = property(lambda self: getattr(self.stream, "name", "<stdout>"))
    buffer = property(lambda self: BlockBuffer(self))

    def forward(self, text: str) -> None:
        """Write what was printed (without marks) to the real stream's binary layer."""
        if not text:
            return
        try:
            data = text.encode(self._encoding, self._errors)
        except UnicodeError:
            try:
                data = text.encode(self._encoding, "surrogateescape")  # bytes written to our ``buffer``
            except UnicodeError:
                data = text.encode(self._encoding, "backslashreplace")
        self._bwrite(data)
        self.unflushed = True

    def flush(self) -> None:
        if self.capture.open:
            self.capture.take()
        self.unflushed = False
        self.stream.flush()

    def hold_back(self, limit: int | None) -> None:
        """Printing faster than the text is cut: each ``write`` cuts once more than ``limit`` pieces wait.

        The watcher sets it when text piles up outside loops, and lifts it
        (``None``) when the backlog is gone, so memory stays bounded however
        fast a script prints; ``print`` costs a Python call meanwhile.
        """
        if self.state not in ("capture", "held"):
            return  # stopped, or writing each line at once
        if limit is None:
            self.write, self.state = self.capture.text.append, "capture"
            return
        text, take = self.capture.text, self.capture.take
        append = text.append

        def write(s: str) -> None:
            append(s)
            if len(text) > limit:
                take()

        self.write, self.state = write, "held"

    def stop(self) -> None:
        """Write through from now on, capturing nothing (the run ended, or this is a forked child)."""
        def write(s: str) -> int:
            self.forward(s if isinstance(s, str) else as_text(s))
            return len(s)

        self.write, self.state = write, "stopped"

    def reconfigure(self, **kwargs: Any) -> None:
        """The real stream's; asked to flush each line or write, the tee stops holding text back."""
        self.flush()
        self.stream.reconfigure(**kwargs)
        for key in ("encoding", "errors"):
            setattr(self, f"_{key}", getattr(self.stream, key) or getattr(self, f"_{key}"))
        if self.stream.line_buffering or self.stream.write_through:
            append = self.capture.text.append

            def write(s: str) -> int:
                append(s)
                if self.stream.write_through or "\n" in s:
                    self.flush()
                return len(s)

            self.write, self.state = write, "each"

    def close(self) -> None:  # never closes the real stream
        try:
            self.flush()
        except Exception:
            pass

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # only for what is not found above: never on ``print``'s path
        if name in ("stream", "capture") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.stream, name)


class BlockBuffer:
    """``sys.stdout.buffer`` under a :class:`BlockTee`: bytes keep their place among the text."""

    def __init__(self, tee: BlockTee):
        self.tee = tee

    def write(self, data) -> int:
        self.tee.write(bytes(data).decode(self.tee.encoding, "surrogateescape"))
        return len(data)

    def flush(self) -> None:
        self.tee.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tee.stream.buffer, name)


class Sink(io.RawIOBase):
    """Under the tee's C text layer: writes each flushed chunk through, then notes it.

    The text layer is line-buffered, so a chunk is what was written up to a
    newline (or a ``flush``): one call here per printed line. ``flush`` is
    a C no-op, because the text layer calls it after every line; the tee's
    own ``flush`` flushes the real stream. This sink writes text to streams
    without a binary layer (a ``StringIO``, a wrapper).
    """

    closed = False  # read by the text layer on every write; a sink is never closed (the real stream is not ours)

    def __init__(self, stream: Any, channel: str, capture: Capture, encoding: str):
        super().__init__()
        self.flush = int  # called by the text layer after every line: a C no-op (the tee's flush does the work)
        self.stream = stream
        self.channel = channel
        self.capture: Capture | None = capture
        self.encoding = encoding
        self._out = stream.write
        self._note = capture.note
        self._cur = capture.cur

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._out(str(b, self.encoding, "surrogateescape"))
        if self.capture is not None:
            try:
                self._note(self.channel, bytes(b), self._cur[0])
            except Exception:  # capture must never break printing
                pass
        return len(b)

    def stop(self) -> None:
        """Write through from now on, capturing nothing (the run ended; a reference to the tee may remain)."""
        self.capture = None

    def _take(self) -> None:
        try:
            self.capture.take()
        except Exception:  # capture must never break printing
            pass

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def name(self) -> Any:
        return getattr(self.stream, "name", self.channel)


class BytesSink(Sink):
    """The sink for a real ``TextIOWrapper`` (a terminal's ``sys.stdout``, ``sys.stderr``): bytes go to its binary layer.

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
        bwrite, cur, channel = self._bwrite, self._cur, self.channel
        flushes = self.each_line and not isinstance(self.stream.buffer, io.RawIOBase)  # a raw file has no buffer
        bflush = self._bflush if flushes else int  # ``int()``: a C no-op
        cap = self.capture
        text, marks, take, batch = cap.text.append, cap.marks, self._take, cap.batch
        mark, extend = marks.append, marks.extend
        if cap.block is not None:  # in order with the block-buffered text: a mark there, an entry here
            def write(b) -> int:
                bwrite(b)
                bflush()
                text(MARK)
                mark((channel, b, cur[0]))
                if len(marks) >= batch:
                    take()
                return len(b)
        else:
            def write(b) -> int:
                bwrite(b)
                bflush()
                extend((channel, b, cur[0]))
                if len(marks) >= batch:
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


class LineTee(io.TextIOWrapper):
    """A line-buffered ``sys.stdout``/``sys.stderr`` while a run captures: the C text layer over a :class:`Sink`."""

    sink: Sink

    @classmethod
    def over(cls, stream: Any, channel: str, capture: Capture) -> "LineTee":
        encoding = getattr(stream, "encoding", None) or "utf-8"
        errors = getattr(stream, "errors", None) or "strict"
        fast = isinstance(stream, io.TextIOWrapper) and callable(getattr(getattr(stream, "buffer", None), "write", None))
        sink = (BytesSink if fast else Sink)(stream, channel, capture, encoding)
        tee = cls(sink, encoding=encoding, errors=errors, line_buffering=True)
        tee.sink = sink
        tee.mode = getattr(stream, "mode", "w")
        return tee

    def flush(self) -> None:
        super().flush()
        self.sink.stream.flush()

    def stop(self) -> None:
        self.sink.stop()

    def close(self) -> None:  # never closes the real stream
        try:
            self.flush()
        except Exception:
            pass

    # No __getattr__ forwarding to the real stream: it would slow every ``print``'s
    # lookup of ``write``. What callers read is set in ``over`` (``mode``) or reached
    # through the binary layer (``fileno``, ``isatty``, ``name``).
