"""One replay per (run, name) at a time: claims in the store (DESIGN decision 7).

Two queries started at the same moment that both need ``grad_norm`` for the
same runs must not both replay them. Before a replay executes a run, it
claims (run, name) for each name: an exclusive ``flock`` on a small file under
``.flordb/claims/``. A second replay that finds a claim held waits for it and
uses its results rather than producing the values again. The operating
system drops the lock when the claimant's process ends, however it ends, so a
crashed claimant's claim expires by itself. The file also remembers when the
last replay of (run, name) finished: a plan made before that is stale, and
the values it wanted are already there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from flordb.store.layout import Layout

OK, BUSY, DONE = "ok", "busy", "done"


def claim_path(layout: Layout, run_id: str, name: str) -> Path:
    safe = hashlib.sha1(name.encode()).hexdigest()[:16]
    return layout.home / "claims" / run_id / f"{safe}.claim"


@dataclass
class Claims:
    """The claims this process holds; release them with :meth:`finish` or :meth:`release`."""

    layout: Layout
    held: dict[tuple[str, str], int] = field(default_factory=dict)  # (run, name) -> locked fd

    def acquire(self, run_id: str, names: list[str], since: float, replay_id: str = "") -> tuple[str, dict]:
        """Claim (run, name) for every name, or none of them.

        Returns (``ok``, {}), (``busy``, holder) when another live process holds
        one, or (``done``, last) when a replay of them finished after ``since``.
        """
        taken = []
        for name in names:
            path = claim_path(self.layout, run_id, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                self._unlock(taken)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return BUSY, _read(path)
                raise
            taken.append(((run_id, name), fd))
            last = _read(path)
            if (last.get("finished") or 0) > since:
                self._unlock(taken)
                return DONE, last
        info = {"pid": os.getpid(), "host": socket.gethostname(), "replay_id": replay_id, "claimed": time.time()}
        for key, fd in taken:
            finished = _read(claim_path(self.layout, *key)).get("finished")
            _write(fd, {**info, "finished": finished})
            self.held[key] = fd
        return OK, {}

    def finish(self, run_id: str, names: list[str], replay_id: str = "") -> None:
        """The replay of (run, names) is done and ingested: remember when, then let go."""
        for name in names:
            fd = self.held.pop((run_id, name), None)
            if fd is None:
                continue
            _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "replay_id": replay_id,
                        "finished": time.time()})
            _close(fd)

    def release(self) -> None:
        """Let go of every claim still held (a failed or cancelled replay: nothing finished)."""
        self._unlock(list(self.held.items()))
        self.held.clear()

    def _unlock(self, items) -> None:
        for _, fd in items:
            _close(fd)

    def wait(self, run_id: str, names: list[str], poll: float = 0.1, timeout: float | None = None) -> bool:
        """Block until nobody holds a claim on (run, names); False after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for name in names:
            path = claim_path(self.layout, run_id, name)
            if not path.exists():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        break
                    except OSError:
                        if deadline is not None and time.monotonic() > deadline:
                            return False
                        time.sleep(poll)
            finally:
                os.close(fd)  # closing drops the shared lock too
        return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _write(fd: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _close(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
