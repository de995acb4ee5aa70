"""``compare(a, b)``: select the sides, align, check, build the result."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from flordb.comparison.align import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    RESERVED,
    _order_key,
    align,
    check,
    coordinates_of,
)
from flordb.comparison.result import Comparison, Divergence, Side, pair_text, where
from flordb.comparison.sides import (
    _check_tolerance,
    _empty,
    _fill_by_replay,
    _log_names,
    _never_recorded,
    _pair_paths,
    _parse_on,
    _read_side,
    _strip_prefix,
    parse_map,
    resolve_side,
)
from flordb.errors import CompareError

# ------------------------------------------------------------------ compare


def compare(
    a: str,
    b: str,
    on: str | Iterable[str] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    map: Mapping[str, str] | str | Iterable[str] | None = None,  # noqa: A002  (the documented name)
    *,
    strict: bool = False,
    layout=None,
    replay: str = "ask",
) -> Comparison:
    """Compare the log values of two runs, aligned on their shared loop coordinates.

    ``a``/``b``: a run id (unique prefix accepted), a version prefix recorded
    by exactly one run, or a SQL predicate over ``logs`` columns.
    ``on``: log names (side A's names) to compare; default every name both
    sides log. ``map``: ``{name on A: name on B}`` for renamed metrics.
    ``rtol``/``atol``: ``numpy.isclose`` tolerances. ``strict``: rows or
    names on one side only make the comparison disagree. ``replay``: for names
    neither run recorded but the current code logs, "ask" (on a terminal),
    "yes" or "no", as :func:`flordb.query` does.
    Raises :class:`~flordb.errors.CompareError` on bad input.
    """
    from flordb.store.catalog import open_catalog
    from flordb.store.layout import locate

    rtol = _check_tolerance("rtol", rtol)
    atol = _check_tolerance("atol", atol)
    mapping = parse_map(map)
    wanted = _parse_on(on)
    layout = layout or locate()

    with open_catalog(layout) as cat:
        cat.ingest()
        side_a = resolve_side(cat, a, "A")
        side_b = resolve_side(cat, b, "B")
        names_a = _log_names(cat, side_a.run_id)
        names_b = _log_names(cat, side_b.run_id)
        if wanted is None:
            pairs = [(n, mapping.get(n, n)) for n in names_a if mapping.get(n, n) in names_b]
            pairs += [(k, v) for k, v in mapping.items() if (k, v) not in pairs]
            if not pairs:
                raise CompareError(
                    f"run {side_a.run_id} and run {side_b.run_id} share no log name"
                    f" (A logs {', '.join(names_a) or 'nothing'}; B logs {', '.join(names_b) or 'nothing'});"
                    " choose names with --on and --map A_NAME=B_NAME"
                )
        else:
            pairs = []
            for n in wanted:
                n = _strip_prefix(n, names_a)
                pairs.append((n, _strip_prefix(mapping.get(n, n), names_b)))
        missing = [na for na, nb in pairs if na not in names_a and nb not in names_b]
        if missing and replay != "no" and _fill_by_replay(cat, missing, side_a, side_b, replay):
            names_a = _log_names(cat, side_a.run_id)
            names_b = _log_names(cat, side_b.run_id)
            missing = [na for na, nb in pairs if na not in names_a and nb not in names_b]
        if missing:
            shared = list(dict.fromkeys([*names_a, *names_b]))
            raise _never_recorded(missing, side_a, side_b, shared, layout)
        values_a = _read_side(cat, side_a.run_id, [na for na, _ in pairs])
        values_b = _read_side(cat, side_b.run_id, [nb for _, nb in pairs])

    return _build(side_a, side_b, pairs, values_a, values_b, rtol, atol, strict)


def _build(side_a: Side, side_b: Side, pairs, values_a, values_b, rtol, atol, strict) -> Comparison:
    frames, rows, loops = [], [], []
    best: tuple | None = None  # (log-order key, Divergence) of the earliest divergence so far
    for na, nb in pairs:
        pa, pb = values_a.get(na, {}), values_b.get(nb, {})
        parts = []
        for path_a, path_b in _pair_paths(list(pa), list(pb)):
            fa = pa[path_a] if path_a is not None else _empty(path_b)
            fb = pb[path_b] if path_b is not None else _empty(path_a)
            la = list(path_a if path_a is not None else path_b)
            lb = list(path_b if path_b is not None else path_a)
            parts.append(align(fa, fb, la, lb))
        frame = pd.concat(parts, ignore_index=True) if parts else align(_empty(()), _empty(()), [], [])
        frame = check(frame, rtol, atol)
        frame_loops = [c for c in frame.columns if c not in RESERVED and c not in ("abs_diff", "rel_diff")]
        loops += [l for l in frame_loops if l not in loops]
        frame.insert(0, "name", na)
        n_both = int(frame["side"].eq("both").sum())
        only_a = int(frame["side"].eq("a").sum())
        only_b = int(frame["side"].eq("b").sum())
        bad = frame.index[frame["match"].eq(False).fillna(False).to_numpy()]
        first_text = ""
        if len(bad):
            i = min(bad, key=lambda k: _order_key(frame, k))
            key = _order_key(frame, i)
            coords = coordinates_of(frame, i, frame_loops)
            va, vb = frame.at[i, "a"], frame.at[i, "b"]
            ta, tb = pair_text(_py(va), _py(vb))
            first_text = f"{where(coords)}: {ta} vs {tb}"
            if best is None or key < best[0]:
                best = (key, Divergence(na, coords, _py(va), _py(vb), nb if nb != na else None))
        if na not in values_a and nb not in values_b:
            status = "missing"
        elif na not in values_a:
            status = "only in B"
        elif nb not in values_b:
            status = "only in A"
        elif len(bad):
            status = "diverge"
        elif n_both == 0:
            status = "no overlap"
        else:
            status = "agree"
        paths = list(values_a.get(na, {})) or list(values_b.get(nb, {}))
        rows.append({
            "name": na,
            "name_b": nb,
            "loops": ", ".join("/".join(p) or "(top level)" for p in paths),
            "status": status,
            "aligned": n_both,
            "only_a": only_a,
            "only_b": only_b,
            "diverged": int(len(bad)),
            "max_abs_diff": _nanmax(frame["abs_diff"]),
            "max_rel_diff": _nanmax(frame["rel_diff"]),
            "first_divergence": first_text,
        })
        frames.append(frame)

    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    order = ["name", *loops, "a", "b", "abs_diff", "rel_diff", "match", "side", "seq_a", "seq_b"]
    frame = frame.reindex(columns=order)
    for l in loops:
        frame[l] = frame[l].astype("Int64")
    summary = pd.DataFrame(rows, columns=["name", "name_b", "loops", "status", "aligned", "only_a", "only_b",
                                          "diverged", "max_abs_diff", "max_rel_diff", "first_divergence"])
    return Comparison(side_a, side_b, rtol, atol, list(pairs), frame, summary,
                      best[1] if best is not None else None, strict, loops)


def _py(v: Any) -> Any:
    """A plain Python value (NaN stays a float NaN; NA becomes None)."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _nanmax(s: pd.Series) -> float:
    v = pd.to_numeric(s, errors="coerce").astype(float).to_numpy()
    v = v[~np.isnan(v)]
    return float(v.max()) if len(v) else float("nan")
