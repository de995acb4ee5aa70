"""Content-addressed blob store for checkpoint objects.

A blob is stored under ``<root>/<first two hex digits>/<remaining 62>`` named by
the sha256 of its bytes. Writes go to a temporary file in the destination
directory, are flushed (and fsync'ed unless ``fsync=False``) and then moved into
place with :func:`os.replace`, so a reader never sees a partial object and
concurrent processes writing the same digest are harmless: they write the same
bytes and the last rename wins. ``put`` is idempotent: an object already present
is not rewritten.

This module is used on the training side (from the checkpoint writer thread)
and must stay free of DuckDB (design decision 1).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from flordb.errors import StoreError

_HEX = frozenset("0123456789abcdef")


class ObjectStore:
    """Content-addressed store of immutable byte blobs (sha256 hex digests)."""

    def __init__(self, root: Path, *, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync

    def __repr__(self) -> str:
        return f"ObjectStore({str(self.root)!r})"

    # -- addressing -----------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Where the object ``digest`` lives (whether or not it exists)."""
        if len(digest) != 64 or not _HEX.issuperset(digest):
            raise StoreError(f"not a sha256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    # -- writing --------------------------------------------------------------
    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data`` and return its sha256 hex digest (atomic, idempotent)."""
        digest = hashlib.sha256(data).hexdigest()
        dest = self.path(digest)
        if dest.is_file():
            return digest
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        except OSError as e:
            raise StoreError(f"cannot write checkpoint object into {self.root}: {e}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(e, OSError):
                raise StoreError(f"cannot write checkpoint object into {self.root}: {e}") from e
            raise
        return digest

    # -- reading --------------------------------------------------------------
    def get(self, digest: str, *, verify: bool = True) -> bytes:
        """The bytes of ``digest``; ``StoreError`` if missing or corrupt."""
        p = self.path(digest)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"checkpoint object {digest[:12]} is missing from {self.root}"
            ) from None
        except OSError as e:
            raise StoreError(f"cannot read checkpoint object {digest[:12]}: {e}") from e
        if verify and hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(
                f"checkpoint object {digest[:12]} in {self.root} is corrupt"
                " (its content does not match its digest)"
            )
        return data
