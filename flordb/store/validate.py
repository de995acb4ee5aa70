"""Check each store file on its own; move a damaged one aside instead of failing.

The segments are the truth and the catalog is an index (DESIGN decision 8),
so one truncated segment, a ``run.json`` of ``{}`` or an ``end.json`` of
``[1]`` must not block every query: ingest asks this module about each file,
and a file that is not what FlorDB writes is *quarantined*: moved under
``.flordb/quarantine/<run>/``, named in a one-line warning, recorded in the
catalog's ``quarantine`` table (``flordb runs`` and ``flordb doctor`` report
it). Healthy files of the same run and of other runs are ingested as usual.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What a run.json must hold, and the types its optional fields may have.
_NUM = (int, float)
_RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (str,), "script": (str,), "argv": (list,), "started": _NUM, "pid": (int,), "host": (str,),
    "user_head": (str,), "user_branch": (str,), "skipped": (list,), "mode": (str,), "replay_of": (str,),
    "replay_id": (str,), "perf_start": _NUM, "startup": _NUM, "cwd": (str,), "git_dir": (str,),
    "work_tree": (str,), "heartbeat": _NUM,
}
_END_FIELDS: dict[str, tuple[type, ...]] = {"status": (str,), "ended": _NUM, "error": (str,), "threads": (int,)}
# Columns every segment has (see flordb.store.segments), with the Arrow type family each must be.
_SEGMENT_COLUMNS = {
    "kind": "string", "seq": "integer", "name": "string", "path": "list", "coord": "list", "vtype": "integer",
    "num": "floating", "txt": "string", "t0": "floating", "t1": "floating", "t2": "floating", "n": "integer",
    "aux": "string",
}


@dataclass
class Damaged:
    """A file ingest refused: where it was, why, and where it went."""

    run_id: str
    file: str  # path relative to the store
    reason: str
    moved_to: str | None = None


class DamagedFile(Exception):
    """Raised by the checks below; ``reason`` is one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def read_json_file(path: Path) -> Any:
    """The JSON in ``path``; None when it does not exist (yet); DamagedFile when it is not JSON."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedFile(f"cannot read it: {exc.strerror or exc}") from None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DamagedFile(f"not valid JSON ({type(exc).__name__})") from None


def _check_fields(obj: Any, fields: dict[str, tuple[type, ...]], what: str) -> dict:
    if not isinstance(obj, dict):
        raise DamagedFile(f"{what} is a JSON {type(obj).__name__}, not an object")
    for key, types in fields.items():
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (types == _NUM and isinstance(value, bool)):
            raise DamagedFile(f"{what} field {key!r} has type {type(value).__name__}")
        if types == _NUM and value != value:  # NaN
            raise DamagedFile(f"{what} field {key!r} is NaN")
    for key in ("argv", "skipped"):
        if key in fields and obj.get(key) is not None and not all(isinstance(x, str) for x in obj[key]):
            raise DamagedFile(f"{what} field {key!r} is not a list of strings")
    return obj


def run_meta(run_dir: Path) -> dict | None:
    """``run.json`` checked; None while the run is still being created."""
    meta = read_json_file(run_dir / "run.json")
    if meta is None:
        return None
    meta = _check_fields(meta, _RUN_FIELDS, "run.json")
    if meta.get("run_id") != run_dir.name:
        raise DamagedFile(f"run.json names run {meta.get('run_id')!r}, not its directory {run_dir.name!r}")
    return meta


def end_meta(run_dir: Path) -> dict | None:
    """``end.json`` checked; None while the run is going on."""
    end = read_json_file(run_dir / "end.json")
    if end is None:
        return None
    return _check_fields(end, _END_FIELDS, "end.json")


def check_segment(path: Path) -> None:
    """The segment's footer and schema are what :class:`SegmentWriter` writes.

    Cheap (only the footer is read); damage inside the data pages is found
    when the batch load fails and each file is then loaded on its own.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.stat().st_size == 0:
            raise DamagedFile("empty file")
        schema = pq.read_schema(path)
    except DamagedFile:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise DamagedFile(f"not a readable Parquet file ({_one_line(exc)})") from None
    for column, family in _SEGMENT_COLUMNS.items():
        idx = schema.get_field_index(column)
        if idx < 0:
            raise DamagedFile(f"no column {column!r}")
        if not _is_family(schema.field(idx).type, family):
            raise DamagedFile(f"column {column!r} has type {schema.field(idx).type}")


def _is_family(typ, family: str) -> bool:
    import pyarrow.types as t

    if t.is_dictionary(typ):
        typ = typ.value_type
    return {
        "string": lambda: t.is_string(typ) or t.is_large_string(typ) or t.is_null(typ),
        "integer": lambda: t.is_integer(typ) or t.is_null(typ),
        "floating": lambda: t.is_floating(typ) or t.is_null(typ),
        "list": lambda: t.is_list(typ) or t.is_large_list(typ),
    }[family]()


def quarantine(home: Path, path: Path, run_id: str, reason: str) -> Damaged:
    """Move ``path`` under ``home/quarantine/<run_id>/`` and say so in one line."""
    rel = _relative(path, home)
    dest_dir = home / "quarantine" / run_id
    dest = dest_dir / path.name
    n = 1
    while dest.exists():
        n += 1
        dest = dest_dir / f"{path.name}.{n}"
    moved: str | None = None
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        moved = _relative(dest, home)
    except OSError:
        pass  # a read-only store: the file stays, and is refused again next time
    where = f"moved to {moved}" if moved else "left in place (the store is not writable)"
    _warn(f"damaged file {rel} ({reason}) was not ingested; {where}; `flordb doctor` lists such files")
    return Damaged(run_id, rel, reason, moved)


def _relative(path: Path, home: Path) -> str:
    try:
        return str(Path(path).relative_to(home))
    except ValueError:
        return str(path)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _warn(message: str) -> None:
    try:
        print(f"flordb: warning: {message}", file=sys.stderr)
    except Exception:
        pass


def now() -> float:
    return time.time()
