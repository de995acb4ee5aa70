"""Runs that start from other runs: ``flor.load_checkpoint`` and ``flor.resume_file``.

``load_checkpoint(run, name=None, iteration=None)`` returns the state a
recorded run saved (``flor.checkpointing``), read from the run's segments and
the content-addressed object store: nothing runs, and DuckDB is never opened
(this is the record path, DESIGN decision 1). Called in a training script it
also records that this run starts from that state (``runs.parent_run`` and
``parent_iteration`` in the catalog), and a replay of this run loads the very
same blobs, whatever happened to the parent's files since.

``resume_file(path)`` is for resume blocks that load a file the script wrote
itself (``torch.load(flor.resume_file(args.resume))``): it records the content
hash of the file and keeps its bytes in the object store; a replay gets a path
to the same bytes, or refuses with the reason.

Trust model: checkpoints are loaded with the functions of
:mod:`flordb.record.state` (the formats ``flor.checkpointing`` writes); load
only runs of a store you trust, as you would only ``torch.load`` your own files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from flordb.errors import RecordError
from flordb.store.layout import Layout, locate
from flordb.store.segments import segment_files

PENDING: list[dict] = []  # lineage events seen before the run started; the run takes them
_calls = {"checkpoint": 0, "file": 0}  # replay: the k-th call matches the k-th recorded one


class _Holder:
    """Stands in for a live object, so :func:`state.restore` hands back a state dict."""

    def __init__(self) -> None:
        self.value = None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: Any) -> None:
        self.value = sd


def _layout() -> Layout:
    from flordb.record import api

    run = api._run
    return run.layout if run is not None else locate()


def _resolve_run(layout: Layout, run: str) -> str:
    if not isinstance(run, str) or not run:
        raise RecordError(f"flor.load_checkpoint: name a recorded run by its id, not {run!r}")
    if (layout.run_dir(run) / "run.json").is_file():
        return run
    try:
        found = sorted(e.name for e in os.scandir(layout.segments) if e.name.startswith(run) and e.is_dir())
    except FileNotFoundError:
        found = []
    found = [f for f in found if (layout.run_dir(f) / "run.json").is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise RecordError(f"flor.load_checkpoint: no run {run!r} in {layout.home}; see `flordb runs`")
    raise RecordError(f"flor.load_checkpoint: {run!r} matches {len(found)} runs; give more of the id")


def _rows(layout: Layout, run_id: str, kind: str) -> list[dict]:
    """Rows of one kind from a run's segments, in write order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for attempt in range(3):  # ingest may fold the segments of a finished run while we read them
        out: list[dict] = []
        try:
            for f in segment_files(layout.run_dir(run_id)):
                table = pq.read_table(f, columns=["kind", "seq", "name", "coord", "txt", "aux", "n"])
                table = table.filter(pc.equal(table["kind"].cast("string"), kind))
                out += table.to_pylist()
        except FileNotFoundError:
            if attempt == 2:
                raise
            continue
        return sorted(out, key=lambda r: r["seq"])
    return []


def checkpoints(run: str, layout: Layout | None = None) -> dict[int, dict[str, tuple[str, str]]]:
    """iteration -> {object name: (format, digest)} of a recorded run (``__rng__`` included)."""
    layout = layout or _layout()
    run_id = _resolve_run(layout, run)
    out: dict[int, dict[str, tuple[str, str]]] = {}
    for r in _rows(layout, run_id, "ckpt"):
        out.setdefault(int(r["coord"][0]), {})[r["name"]] = (r["aux"], r["txt"])
    return out


def _replayed_call(kind: str) -> dict | None:
    """In a replay worker: the lineage this call recorded in the original run, if any."""
    task_path = os.environ.get("FLORDB_REPLAY_TASK")
    if not task_path:
        return None
    k = _calls[kind]
    _calls[kind] += 1
    try:
        original = json.loads(Path(task_path).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None
    rows = [r for r in _rows(_layout(), original, "lineage") if r["aux"] == kind]
    return rows[k] if k < len(rows) else None


def _record(event: dict) -> None:
    from flordb.record import api

    run = api._run
    if os.environ.get("FLORDB_REPLAY_TASK"):
        return  # a replay re-reads what the original recorded; it records no lineage of its own
    if run is not None and not run.finished:
        run.events.append(event)
    else:
        PENDING.append(event)


def load_checkpoint(run: str, name: str | None = None, iteration: int | None = None) -> Any:
    """The state ``run`` saved for ``name`` (all objects when None) at ``iteration`` (default: the last).

    State-dict objects (torch modules, optimizers...) come back as state
    dicts, numpy arrays as arrays, other objects as they were pickled.
    """
    layout = _layout()
    recorded = _replayed_call("checkpoint")
    if recorded is not None and iteration is None and recorded["txt"].startswith(run):
        iteration = int(recorded["coord"][0])  # the state the original run started from
    run_id = _resolve_run(layout, run)
    saved = checkpoints(run_id, layout)
    if name is not None:
        saved = {i: objs for i, objs in saved.items() if name in objs}
    if not saved:
        what = f"object {name!r}" if name else "checkpoints"
        raise RecordError(f"flor.load_checkpoint: run {run_id} saved no {what} (flor.checkpointing)")
    if iteration is None:
        iteration = max(saved)
    if iteration not in saved:
        raise RecordError(f"flor.load_checkpoint: run {run_id} has no checkpoint at iteration {iteration};"
                          f" it has {_ranges(sorted(saved))}")
    objs = {n: v for n, v in saved[iteration].items() if n not in ("__rng__", "__vars__")}
    wanted = [name] if name is not None else sorted(objs)
    state = _load(layout, {n: objs[n] for n in wanted})
    _record({"kind": "lineage", "name": name, "path": (), "coord": (iteration,), "txt": run_id,
             "aux": "checkpoint"})
    return state[name] if name is not None else state


def _load(layout: Layout, objs: dict[str, tuple[str, str]]) -> dict[str, Any]:
    from flordb.record.state import restore
    from flordb.store.objects import ObjectStore

    store = ObjectStore(layout.objects)
    holders = {n: _Holder() for n in objs}
    blobs = {n: (fmt, store.get(digest)) for n, (fmt, digest) in objs.items()}
    restored = restore(holders, blobs, rng=False)
    return {n: (v.value if isinstance(v, _Holder) else v) for n, v in restored.items()}


def resume_file(path: str | os.PathLike) -> str:
    """Record the bytes of a file the script loads to resume (a replay gets the same bytes).

    Returns the path to open: ``path`` itself when recording, or when replaying
    and the file is unchanged; otherwise a temporary copy of the recorded bytes.
    """
    from flordb.store.objects import ObjectStore

    layout = _layout()
    store = ObjectStore(layout.objects, fsync=False)
    recorded = _replayed_call("file")
    if os.environ.get("FLORDB_REPLAY_TASK"):
        if recorded is None:
            return os.fspath(path)  # the original run did not load it through resume_file
        digest = recorded["txt"]
        try:
            if hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest:
                return os.fspath(path)
        except OSError:
            pass
        if not store.has(digest):
            raise RecordError(f"cannot replay: {recorded['name']} changed since the run loaded it"
                              f" (sha256 {digest[:12]}), and its recorded bytes are gone from {layout.objects}")
        fd, tmp = tempfile.mkstemp(prefix="flordb-resume-", suffix=Path(path).suffix)
        with os.fdopen(fd, "wb") as f:
            f.write(store.get(digest))
        return tmp
    data = Path(path).read_bytes()
    digest = store.put(data)
    _record({"kind": "lineage", "name": _relative(path, layout), "path": (), "coord": (), "txt": digest,
             "aux": "file", "n": len(data)})
    return os.fspath(path)


def _relative(path: str | os.PathLike, layout: Layout) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(layout.work_tree))
    except ValueError:
        return str(p)


def _ranges(its: list[int]) -> str:
    return ", ".join(map(str, its)) if len(its) <= 6 else f"{its[0]}..{its[-1]} ({len(its)})"
