"""Per-run append-only segment files: the only thing training processes write.

A run directory holds ``run.json`` (written at start), ``seg-NNNNNN.parquet``
files (one per flush) and ``end.json`` (written when the run ends). Every file
appears atomically (written under a temporary name, then renamed), so a reader
never sees half a segment and a crash loses at most the unflushed tail. Once a
finished run is in the catalog, its segments are folded into one compressed
``seg-FIRST-LAST.parquet`` (:func:`compact`), still the truth the catalog is
rebuilt from. Segments are read by column name (``union_by_name``), so a writer
may add a column (a provenance field, say) without breaking older readers.

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
import re
from operator import itemgetter
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterable

# A loop context is one int: iteration n of block (loop execution) b is (b << SHIFT) | n.
# Segments decode it when flushed; record/context.py builds it on the hot path.
SHIFT = 32
MASK = (1 << SHIFT) - 1

# Value types, stored in ``vtype``; the query side types columns from them.
# Integers are exact: INT fits BIGINT, HUGE fits HUGEINT (both keep the exact
# digits in ``txt`` when a double cannot hold them); larger ones are STR text.
NULL, FLOAT, INT, BOOL, STR, JSON, REPR, HUGE = range(8)
_EXACT_DOUBLE = 2**53

_warned_repr: set[str] = set()


# Values flor.log may keep by reference until the next flush. Anything else is
# encoded when logged, into a plain (vtype, num, txt) tuple: in the buffer, a
# tuple value always means "already encoded".
IMMUTABLE = frozenset({float, int, str, bool, type(None)})


def encode(name: str, value: Any) -> tuple[int, float | None, str | None]:
    """Map a logged value to (vtype, num, txt) so that numbers stay numbers.

    Never raises: a value that cannot be encoded is stored as its ``repr``,
    and when even that fails, as a placeholder naming its type.
    """
    t = type(value)
    if t is float:
        return FLOAT, value, None
    if t is bool:
        return BOOL, float(value), None
    if t is int:
        return encode_int(value)
    if t is str:
        return STR, None, value
    if value is None:
        return NULL, None, None
    try:
        return _encode_slow(name, value)
    except Exception as exc:  # a hostile __getattr__, __len__, __iter__, ...
        return _as_repr(name, value, exc)


def encode_int(value: int) -> tuple[int, float | None, str | None]:
    """Integers stay exact: the digits go to ``txt`` where a double would round them."""
    if -_EXACT_DOUBLE <= value <= _EXACT_DOUBLE:
        return INT, float(value), None
    if -(2**63) <= value < 2**63:
        return INT, float(value), str(value)
    if -(2**127) <= value < 2**127:
        return HUGE, float(value), str(value)
    return STR, None, str(value)


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
        return encode_int(int(value))
    if isinstance(value, float):
        return FLOAT, float(value), None
    if isinstance(value, str):
        return STR, None, str(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            return JSON, None, json.dumps(value, allow_nan=True, default=_json_default)
        except Exception:  # TypeError, ValueError, RecursionError, or an item's own exception
            pass
    return _as_repr(name, value, None)


def _as_repr(name: Any, value: Any, exc: BaseException | None) -> tuple[int, None, str]:
    """The fallback: ``repr(value)``, else a placeholder; one warning per name."""
    try:
        key = name if isinstance(name, str) else repr(name)
        if key not in _warned_repr:
            _warned_repr.add(key)
            why = f" ({type(exc).__name__} while encoding it)" if exc is not None else ""
            print(f"flordb: value of {key!r} has type {type(value).__name__}{why}; storing its repr",
                  file=sys.stderr)
    except Exception:
        pass
    try:
        text = repr(value)
        if type(text) is not str:
            raise TypeError("__repr__ returned a non-string")
    except Exception as err:  # a broken __repr__ must not lose the rest of the segment
        text = f"<{_type_name(value)} object: repr failed: {type(err).__name__}>"
    return REPR, None, text


def _type_name(value: Any) -> str:
    try:
        return str(type(value).__name__)
    except Exception:
        return "unknown"


def clean_text(text: Any) -> str | None:
    """Text Arrow can store: lone surrogates escaped (``\\udc80``), never an exception."""
    if text is None:
        return None
    if type(text) is not str:
        try:
            text = str(text)
        except Exception:
            return f"<{_type_name(text)}>"
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    if vtype in (INT, HUGE):
        return int(txt) if txt is not None else int(num)
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


_ARROW_READY: list = []  # set once pyarrow decided, in this process, whether pandas is there


class _NoPandasHere:
    """A meta-path finder that makes ``import pandas`` fail on one thread only (see below)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" and threading.get_ident() == self.thread:
            raise ImportError("not while FlorDB writes a segment")
        return None


def _arrow_without_pandas() -> None:
    """Let pyarrow's first conversion see no pandas unless the process already imported it.

    pyarrow checks whether its input is a pandas object by importing pandas,
    once per process: a quarter of a second and tens of MB in a training run
    (or replay worker) that never used pandas. The check fails fast on this
    thread only; pandas stays importable everywhere else, and pyarrow's own
    pandas functions (``to_pandas``, ``from_pandas``) import it when called.
    """
    import pyarrow as pa

    _ARROW_READY.append(True)
    if "pandas" in sys.modules:
        return
    finder = _NoPandasHere()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow's one check, answered here
    except Exception:
        pass
    finally:
        sys.meta_path.remove(finder)


class SegmentWriter:
    """Turns buffered events of one run into numbered, atomically renamed files."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.count = 0
        self.seq = 0

    def write(self, logs: list, args: list, events: list, blocks: list | None = None,
              console: list | None = None) -> Path | None:
        """Write one segment; ``logs`` are (name, value, ctx) triples whose ctx
        is an int decoded with ``blocks`` (see :mod:`flordb.record.context`),
        ``args`` (name, value) pairs, ``events`` rows of the other kinds as dicts,
        ``console`` captured lines as one flat list, five items per line (ctx,
        channel, logger, level, text; see :mod:`flordb.record.capture`).

        Runs on the training thread at every flush, so the log rows (nearly all
        of a segment) are converted column-wise, with no Python loop per record
        when the values are floats.
        """
        if not logs and not args and not events and not console:
            return None
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not _ARROW_READY:
            _arrow_without_pandas()

        parts = []
        if logs:
            parts.append(_log_columns(logs, blocks or [((), ())]))
        other = [("arg", nm, value, ((), ()), {}) for nm, value in args]
        other += [(ev["kind"], ev.get("name"), None, (ev.get("path", ()), ev.get("coord", ())), ev) for ev in events]
        if console:
            parts.append(_console_columns(console, blocks or [((), ())]))
        if other:
            parts.append(_other_columns(other))
        nrows = len(logs) + len(other) + len(console or ()) // 5
        columns: dict[str, pa.Array] = {}
        for key in _COLUMNS:
            chunks = [part[key] for part in parts]
            columns[key] = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
        columns["kind"] = columns["kind"].dictionary_encode()
        columns["seq"] = pa.array(np.arange(self.seq, self.seq + nrows, dtype=np.int64))
        table = pa.table({key: columns[key] for key in ("kind", "seq", *_COLUMNS[1:])})
        self.count += 1
        self.seq += nrows
        final = self.run_dir / f"seg-{self.count:06d}.parquet"
        tmp = self.run_dir / f".seg-{self.count:06d}.tmp"
        # Measured fastest: snappy, dictionaries only where values repeat, no statistics
        # (the catalog, not the segment, is what queries read).
        pq.write_table(table, tmp, compression="snappy", use_dictionary=["kind", "name", "path"],
                       write_statistics=False)
        os.replace(tmp, final)
        return final


# Columns of a segment (``seq`` is added by the writer, after ``kind``).
_COLUMNS = ("kind", "name", "path", "coord", "vtype", "num", "txt", "t0", "t1", "t2", "n", "aux")


def _contexts(ctxs: list, blocks: list):
    """(path, coord) list arrays from int contexts ``(block << 32) | n``, vectorized.

    A block is a loop execution (path, prefix); the coordinate of iteration n
    is prefix + (n,); block 0 (outside any loop) has an empty coordinate.
    """
    import numpy as np
    import pyarrow as pa

    n = len(ctxs)
    ids = np.fromiter(ctxs, dtype=np.int64, count=n)
    bids, its = ids >> SHIFT, ids & MASK
    low = int(bids.min())
    present = np.flatnonzero(np.bincount(bids - low)) + low  # blocks in this segment, few
    lookup = np.zeros(int(present[-1]) - low + 1, dtype=np.int64)
    lookup[present - low] = np.arange(len(present))
    inv = lookup[bids - low]  # record -> index into present
    used = [blocks[b] for b in present.tolist()]
    depth = np.array([len(p) for p, _ in used], dtype=np.int32)
    width = int(depth.max()) if len(depth) else 0
    prefix = np.zeros((len(used), max(width, 1)), dtype=np.int64)
    for k, (_, pre) in enumerate(used):
        prefix[k, : len(pre)] = pre
    rec_depth = depth[inv]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(rec_depth, out=offsets[1:])
    flat = np.empty(int(offsets[-1]), dtype=np.int64)
    for j in range(width):  # position j of every coordinate that has one
        rows = np.flatnonzero(rec_depth > j)
        last = rec_depth[rows] == j + 1
        flat[offsets[rows] + j] = np.where(last, its[rows], prefix[inv[rows], j])
    coords = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int64()))
    paths = pa.array([list(p) for p, _ in used], type=pa.list_(pa.string()))
    return paths.take(pa.array(inv, type=pa.int64())), coords


def _log_columns(logs: list, blocks: list) -> dict:
    import numpy as np
    import pyarrow as pa

    n = len(logs)
    names = list(map(itemgetter(0), logs))  # map(itemgetter) is several times faster than zip(*logs)
    values = list(map(itemgetter(1), logs))
    ctxs = list(map(itemgetter(2), logs))
    if set(map(type, values)) == {float}:  # the common case: no call per record
        vtype = pa.array(np.full(n, FLOAT, dtype=np.int8))
        num = pa.array(values, type=pa.float64())
        txt = pa.nulls(n, type=pa.string())
    else:
        vt, nums, txts = zip(*(v if type(v) is tuple else encode(nm, v) for nm, v in zip(names, values)))
        vtype = pa.array(vt, type=pa.int8())
        num = pa.array(nums, type=pa.float64())
        txt = _strings(txts)
    path, coord = _contexts(ctxs, blocks)
    nulls = pa.nulls(n, type=pa.float64())
    return {
        "kind": pa.repeat(pa.scalar("log", type=pa.string()), n), "name": _strings(names),
        "path": path, "coord": coord,
        "vtype": vtype, "num": num, "txt": txt, "t0": nulls, "t1": nulls, "t2": nulls,
        "n": pa.nulls(n, type=pa.int64()), "aux": pa.nulls(n, type=pa.string()),
    }


def _console_columns(lines: list, blocks: list) -> dict:
    """Captured console lines (flat: ctx, channel, logger, level, text), column-wise."""
    import pyarrow as pa

    n = len(lines) // 5
    path, coord = _contexts(lines[0::5], blocks)
    nulls = pa.nulls(n, type=pa.float64())
    return {
        "kind": pa.repeat(pa.scalar("console", type=pa.string()), n), "name": _strings(lines[1::5]),
        "path": path, "coord": coord, "vtype": pa.nulls(n, type=pa.int8()), "num": nulls,
        "txt": _strings(lines[4::5]), "t0": nulls, "t1": nulls, "t2": nulls,
        "n": pa.array(lines[3::5], type=pa.int64()), "aux": _strings(lines[2::5]),
    }


def _strings(items) -> "pa.Array":
    """A string column; one bad item (a lone surrogate) is escaped, never costs its neighbours."""
    import pyarrow as pa

    try:
        return pa.array(items, type=pa.string())
    except (pa.ArrowException, UnicodeError, TypeError):
        return pa.array([clean_text(x) for x in items], type=pa.string())


def _other_columns(rows: list) -> dict:
    """Args and loop/iter/ckpt events: few rows per segment, converted one by one."""
    import pyarrow as pa

    vtype, num, txt = [], [], []
    for kind, nm, value, _, ev in rows:
        if kind == "arg":
            vt, x, s = encode(nm, value)
        else:
            vt, x, s = None, None, ev.get("txt")
        vtype.append(vt)
        num.append(x)
        txt.append(s)
    return {
        "kind": pa.array([r[0] for r in rows], type=pa.string()),
        "name": _strings([r[1] for r in rows]),
        "path": pa.array([list(r[3][0]) for r in rows], type=pa.list_(pa.string())),
        "coord": pa.array([list(r[3][1]) for r in rows], type=pa.list_(pa.int64())),
        "vtype": pa.array(vtype, type=pa.int8()),
        "num": pa.array(num, type=pa.float64()),
        "txt": _strings(txt),
        **{k: pa.array([r[4].get(k) for r in rows], type=pa.float64()) for k in ("t0", "t1", "t2")},
        "n": pa.array([r[4].get("n") for r in rows], type=pa.int64()),
        "aux": pa.array([r[4].get("aux") for r in rows], type=pa.string()),
    }


_ONE = re.compile(r"seg-(\d{6})\.parquet")
_FOLDED = re.compile(r"seg-(\d{6})-(\d{6})\.parquet")


def segment_files(run_dir: Path) -> list[Path]:
    """Complete segments of a run, in write order (temporary files excluded).

    A compacted file ``seg-FIRST-LAST.parquet`` (:func:`compact`) stands for the
    segments FIRST..LAST: any of them still present (compaction stopped before
    removing them) is left out, so no record is read twice.
    """
    try:
        names = sorted(e.name for e in os.scandir(run_dir) if e.name.startswith("seg-"))
    except FileNotFoundError:
        return []
    folded = [(int(m[1]), int(m[2])) for m in map(_FOLDED.fullmatch, names) if m]
    if folded:
        names = [n for n in names if not ((m := _ONE.fullmatch(n)) and any(a <= int(m[1]) <= b for a, b in folded))]
    return [run_dir / n for n in names]


def compact(run_dir: Path, con) -> Path | None:
    """Fold the segments of a finished run into one zstd-compressed file, in write order.

    Called once the run's segments are in the catalog. The folded file has the
    columns every segment has (it is checked, ingested and rebuilt from like
    any segment) and is named after the first and last segment it holds; it
    appears atomically, then the originals are removed (a crash in between
    leaves both, and :func:`segment_files` reads the folded one only).
    ``con`` is a DuckDB connection, which reads and writes Parquet.
    """
    files = segment_files(run_dir)
    numbers = [m and int(m[1]) for m in (_ONE.fullmatch(f.name) for f in files)]
    if not files or None in numbers:
        return None  # folded already, or a file FlorDB did not name: left as it is
    final = run_dir / f"seg-{numbers[0]:06d}-{numbers[-1]:06d}.parquet"
    tmp = run_dir / f".{final.name}.{os.getpid()}.tmp"
    target = str(tmp).replace("'", "''")
    try:
        con.execute(  # files and rows keep their order (DuckDB preserves insertion order by default)
            "COPY (SELECT * FROM read_parquet(?, union_by_name = true))"
            f" TO '{target}' (FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION V2, ROW_GROUP_SIZE 1000000)",
            [[str(f) for f in files]],
        )
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for f in files:
        f.unlink(missing_ok=True)
    return final


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
