"""Per-run append-only segment files: the only thing training processes write.

A run directory holds ``run.json`` (written at start), ``seg-NNNNNN.parquet``
files (one per flush) and ``end.json`` (written when the run ends). Every file
appears atomically (written under a temporary name, then renamed), so a reader
never sees half a segment and a crash loses at most the unflushed tail.

One segment is one Parquet table whose rows are tagged by ``kind``:

========  =====================================================================
kind      meaning of the columns
========  =====================================================================
log       ``name`` logged ``value`` (vtype/num/txt) at loop ``path``/``coord``
arg       hyper-parameter ``name`` resolved to ``value``
iter      one iteration ``coord`` of a top-level loop ``path``: t0, t1, and
          ``t2`` the time its nested loop exited (NaN when there was none)
loop      one execution of a nested loop ``path`` inside iteration ``coord`` of
          its parent: ``n`` iterations between t0 and t1
ckpt      checkpoint of object ``name`` at iteration ``coord``: ``txt`` digest,
          ``aux`` format, ``n`` bytes, t0 seconds the training thread spent
========  =====================================================================
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

# Value types, stored in ``vtype``; the query side types columns from them.
NULL, FLOAT, INT, BOOL, STR, JSON, REPR = range(7)

_warned_repr: set[str] = set()


# Values flor.log may keep by reference until the next flush.
IMMUTABLE = frozenset({float, int, str, bool, type(None)})


class Encoded(tuple):
    """A value encoded when it was logged: (vtype, num, txt)."""


def frozen(name: str, value: Any) -> Encoded:
    """Encode now what could change (or pin a tensor's graph) before the flush."""
    return Encoded(encode(name, value))


def encode(name: str, value: Any) -> tuple[int, float | None, str | None]:
    """Map a logged value to (vtype, num, txt) so that numbers stay numbers."""
    t = type(value)
    if t is Encoded:
        return value
    if t is float:
        return FLOAT, value, None
    if t is bool:
        return BOOL, float(value), None
    if t is int:
        return (INT, float(value), None) if abs(value) < 2**63 else (STR, None, str(value))
    if t is str:
        return STR, None, value
    if value is None:
        return NULL, None, None
    return _encode_slow(name, value)


def _encode_slow(name: str, value: Any) -> tuple[int, float | None, str | None]:
    item = getattr(value, "item", None)  # numpy scalars, 0-d arrays and tensors
    if item is not None and getattr(value, "ndim", getattr(value, "dim", lambda: 1)) in (0, ()):
        try:
            return encode(name, item())
        except Exception:
            pass
    if callable(getattr(value, "dim", None)):
        try:
            if value.dim() == 0:
                return encode(name, value.item())
        except Exception:
            pass
    if isinstance(value, bool):
        return BOOL, float(value), None
    if isinstance(value, int):
        return INT, float(value), None
    if isinstance(value, float):
        return FLOAT, float(value), None
    if isinstance(value, str):
        return STR, None, str(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            return JSON, None, json.dumps(value, allow_nan=True, default=_json_default)
        except (TypeError, ValueError):
            pass
    if name not in _warned_repr:
        _warned_repr.add(name)
        print(
            f"flordb: value of {name!r} has type {type(value).__name__}; storing its repr",
            file=sys.stderr,
        )
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the rest of the segment
        text = f"<{type(value).__name__} object: repr failed: {type(exc).__name__}>"
    return REPR, None, text


def _json_default(value: Any) -> Any:
    """numpy scalars and 0-d tensors inside a list/dict; anything else makes the container a repr."""
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (list, tuple, dict)):
        try:
            inner = item()
        except Exception:
            raise TypeError from None
        if inner is None or type(inner) in (bool, int, float, str):
            return inner
    raise TypeError


def decode(vtype: int, num: float | None, txt: str | None) -> Any:
    """Inverse of :func:`encode`, for values read back outside SQL."""
    if vtype == FLOAT:
        return num
    if vtype == INT:
        return int(num)
    if vtype == BOOL:
        return bool(num)
    if vtype == JSON:
        return json.loads(txt)
    if vtype == NULL:
        return None
    return txt


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=str, indent=1))
    os.replace(tmp, path)


class SegmentWriter:
    """Turns buffered events of one run into numbered, atomically renamed files."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.count = 0
        self.seq = 0

    def write(
        self,
        logs: list,
        args: list,
        events: list,
    ) -> Path | None:
        """Write one segment; ``logs`` are (name, value, (path, coord)) triples,
        ``args`` (name, value) pairs, ``events`` rows of the other kinds as dicts."""
        if not logs and not args and not events:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        kind, name, path, coord, vtype, num, txt = [], [], [], [], [], [], []
        ctx_index: dict[int, int] = {}
        ctxs: list = []
        ctx_of: list[int] = []
        k_append, n_append, v_append, num_append, txt_append = (
            kind.append, name.append, vtype.append, num.append, txt.append,
        )
        c_append = ctx_of.append
        for nm, value, ctx in logs:
            k_append("log")
            n_append(nm)
            vt, x, s = encode(nm, value)
            v_append(vt)
            num_append(x)
            txt_append(s)
            i = ctx_index.get(id(ctx))
            if i is None:
                i = ctx_index[id(ctx)] = len(ctxs)
                ctxs.append(ctx)
            c_append(i)
        nlogs = len(kind)
        for nm, value in args:
            kind.append("arg")
            name.append(nm)
            vt, x, s = encode(nm, value)
            vtype.append(vt)
            num.append(x)
            txt.append(s)
        nfixed = len(kind)
        for ev in events:
            kind.append(ev["kind"])
            name.append(ev.get("name"))
            vtype.append(None)
            num.append(None)
            txt.append(ev.get("txt"))
        nrows = len(kind)
        # Contexts are shared by every record of a loop iteration: convert each once.
        empty_ctx = len(ctxs)
        ctxs.append(((), ()))
        ctx_of.extend([empty_ctx] * (nfixed - nlogs))
        for ev in events:
            ctx_of.append(len(ctxs))
            ctxs.append((ev.get("path", ()), ev.get("coord", ())))
        pad = nfixed
        t0 = [None] * pad + [ev.get("t0") for ev in events]
        t1 = [None] * pad + [ev.get("t1") for ev in events]
        t2 = [None] * pad + [ev.get("t2") for ev in events]
        n = [None] * pad + [ev.get("n") for ev in events]
        aux = [None] * pad + [ev.get("aux") for ev in events]
        indices = pa.array(ctx_of, type=pa.int64())
        paths = pa.array([list(c[0]) for c in ctxs], type=pa.list_(pa.string())).take(indices)
        coords = pa.array([list(c[1]) for c in ctxs], type=pa.list_(pa.int64())).take(indices)
        table = pa.table(
            {
                "kind": pa.array(kind, type=pa.string()).dictionary_encode(),
                "seq": pa.array(range(self.seq, self.seq + nrows), type=pa.int64()),
                "name": pa.array(name, type=pa.string()),
                "path": paths,
                "coord": coords,
                "vtype": pa.array(vtype, type=pa.int8()),
                "num": pa.array(num, type=pa.float64()),
                "txt": pa.array(txt, type=pa.string()),
                "t0": pa.array(t0, type=pa.float64()),
                "t1": pa.array(t1, type=pa.float64()),
                "t2": pa.array(t2, type=pa.float64()),
                "n": pa.array(n, type=pa.int64()),
                "aux": pa.array(aux, type=pa.string()),
            }
        )
        self.count += 1
        self.seq += nrows
        final = self.run_dir / f"seg-{self.count:06d}.parquet"
        tmp = self.run_dir / f".seg-{self.count:06d}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
        return final


def segment_files(run_dir: Path) -> list[Path]:
    """Complete segments of a run, in write order (temporary files excluded)."""
    try:
        names = sorted(e.name for e in os.scandir(run_dir) if e.name.startswith("seg-"))
    except FileNotFoundError:
        return []
    return [run_dir / n for n in names]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def iter_run_dirs(segments: Path) -> Iterable[Path]:
    try:
        return [Path(e.path) for e in os.scandir(segments) if e.is_dir()]
    except FileNotFoundError:
        return []
