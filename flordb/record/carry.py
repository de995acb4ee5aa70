"""Plain variables of the main loop's frame, saved with each checkpoint and restored on replay.

State that code outside the nested loop carries from one main-loop iteration
to the next (a ``best_val``, a learning rate annealed by hand, an
early-stopping counter) is usually not passed to ``flor.checkpointing``.
Without it a replay could not start from a checkpoint: it would run every
earlier iteration again to rebuild it. So each checkpoint also saves, as JSON
(never pickled, see the trust model), the plain values bound in the frame that
runs the main loop and in its module: ints, floats, bools, strings, None, and
small tuples and lists of them. A replay restores the names the analysis says
are carried (:mod:`flordb.hindsight.analyze`), at the point the checkpoint was
taken.

Cost: one walk over the frame's variables per checkpoint, none per log.
"""

from __future__ import annotations

import json
import sys
from types import FrameType
from typing import Any

VARS_NAME = "__vars__"  # the checkpoint entry holding the variables
FMT_JSON = "vars_json"
MAX_ITEMS = 1000  # elements of a tuple or list, all levels together
MAX_CHARS = 10_000  # characters of a string
_SKIP_MODULES = ("flordb", "contextlib", "tqdm")
_SCALARS = (int, float, bool, str, type(None))


def user_frame() -> FrameType | None:
    """The innermost frame that is not FlorDB's, contextlib's or tqdm's: the code iterating the main loop."""
    f = sys._getframe(1)
    while f is not None and str(f.f_globals.get("__name__", "")).split(".")[0] in _SKIP_MODULES:
        f = f.f_back
    return f


def _plain(value: Any, budget: list[int]) -> Any:
    """A JSON form of ``value`` (tuples tagged), or raise ValueError when it is not a plain value."""
    t = type(value)
    if t in _SCALARS:
        if t is str and len(value) > MAX_CHARS:
            raise ValueError
        return value
    if t is tuple or t is list:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise ValueError
        items = [_plain(v, budget) for v in value]
        return {"tuple": items} if t is tuple else items
    raise ValueError


def _unplain(value: Any) -> Any:
    if type(value) is dict:
        return tuple(_unplain(v) for v in value["tuple"])
    if type(value) is list:
        return [_unplain(v) for v in value]
    return value


def _plain_names(namespace: dict) -> dict[str, Any]:
    out = {}
    for name, value in namespace.items():
        if name.startswith("__"):
            continue
        try:
            out[name] = _plain(value, [MAX_ITEMS])
        except (ValueError, RecursionError):
            continue
    return out


def snapshot(frame: FrameType | None) -> dict | None:
    """The plain variables of ``frame`` (``locals``, unless it is a module's) and of its module (``globals``)."""
    if frame is None:
        return None
    try:
        out = {"globals": _plain_names(frame.f_globals)}
        if frame.f_locals is not frame.f_globals:
            out["locals"] = _plain_names(frame.f_locals)
        return out
    except Exception:  # never raise into training: the replay then falls back to re-execution
        return None


def encode(saved: dict) -> tuple[str, bytes]:
    return FMT_JSON, json.dumps(saved, separators=(",", ":")).encode()


def decode(data: bytes) -> dict:
    saved = json.loads(data)
    return {scope: {k: _unplain(v) for k, v in names.items()} for scope, names in saved.items()}


def restore(frame: FrameType, saved: dict, names: dict[str, list[str]]) -> list[str]:
    """Bind ``names`` (``{"locals": [...], "globals": [...]}``) in ``frame`` to their saved values.

    Returns the names the checkpoint lacks (nothing is bound for them).
    """
    missing = [n for scope, ns in names.items() for n in ns if n not in saved.get(scope, {})]
    glob = {n: saved["globals"][n] for n in names.get("globals", ()) if n in saved.get("globals", {})}
    frame.f_globals.update(glob)
    loc = {n: saved["locals"][n] for n in names.get("locals", ()) if n in saved.get("locals", {})}
    if loc and frame.f_locals is not frame.f_globals:
        _set_locals(frame, loc)
    return missing


def _set_locals(frame: FrameType, values: dict) -> None:
    """Write into a function frame's local variables (cells included)."""
    if sys.version_info >= (3, 13):  # PEP 667: f_locals writes through
        frame.f_locals.update(values)
        return
    import ctypes

    frame.f_locals.update(values)
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
