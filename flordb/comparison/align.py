"""Alignment of two runs' values on shared loop coordinates, and the tolerance check (pure functions)."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-8

# Columns of Comparison.frame besides the loop coordinates; a loop with one of
# these names is shown as ``loop.<name>``.
RESERVED = ("name", "a", "b", "abs_diff", "rel_diff", "match", "side", "seq_a", "seq_b", "value", "seq", "vtype")


# ------------------------------------------------------------------ alignment (pure)


def _internal(loops: Iterable[str]) -> dict[str, str]:
    return {l: f"loop.{l}" for l in loops if l in RESERVED}


def align(
    a: pd.DataFrame,
    b: pd.DataFrame,
    loops_a: Sequence[str] | None = None,
    loops_b: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Align one name's values from two sides on their shared loop coordinates.

    ``a`` and ``b`` have one row per coordinate: a column per loop (the
    loops, outermost first, default every column but ``value``/``seq``), the
    logged ``value`` and optionally ``seq`` (log order within the run).
    Returns the loop columns (shared loops first, then the deeper side's),
    ``a``, ``b``, ``side`` (``both``, ``a`` or ``b``: which side has the
    row), ``seq_a`` and ``seq_b``, sorted by coordinates.
    """
    extra = {"value", "seq", "vtype"}
    loops_a = list(loops_a) if loops_a is not None else [c for c in a.columns if c not in extra]
    loops_b = list(loops_b) if loops_b is not None else [c for c in b.columns if c not in extra]
    ren_a, ren_b = _internal(loops_a), _internal(loops_b)
    loops_a = [ren_a.get(l, l) for l in loops_a]
    loops_b = [ren_b.get(l, l) for l in loops_b]

    def prep(df: pd.DataFrame, rename: dict, loops: list[str], tag: str) -> pd.DataFrame:
        out = df.rename(columns=rename)
        seq = out["seq"] if "seq" in out.columns else pd.Series(np.nan, index=out.index)
        out = pd.DataFrame({**{l: out[l].to_numpy() for l in loops},
                            tag: out["value"].to_numpy(), f"seq_{tag}": seq.to_numpy(dtype=float)})
        for l in loops:
            out[l] = out[l].astype("Int64")
        return out

    fa, fb = prep(a, ren_a, loops_a, "a"), prep(b, ren_b, loops_b, "b")
    shared = [l for l in loops_a if l in loops_b]
    extra_a = [l for l in loops_a if l not in shared]
    extra_b = [l for l in loops_b if l not in shared]
    key = list(shared)
    if extra_a and extra_b:
        # different inner loops (epoch/step vs epoch/batch): pair in order within each shared coordinate
        fa = fa.sort_values(loops_a, kind="stable").reset_index(drop=True)
        fb = fb.sort_values(loops_b, kind="stable").reset_index(drop=True)
        for f in (fa, fb):
            f["\x1fk"] = f.groupby(shared, sort=False).cumcount() if shared else np.arange(len(f))
        key.append("\x1fk")
    elif not key:
        # nothing shared (a value logged outside any loop, against one in a loop): one value to broadcast
        fa["\x1fk"] = 0
        fb["\x1fk"] = 0
        key = ["\x1fk"]
    for f in (fa, fb):
        for k in key:
            f[k] = f[k].astype("Int64")
    merged = fa.merge(fb, on=key, how="outer", indicator=True, sort=False)
    merged["side"] = merged.pop("_merge").map({"both": "both", "left_only": "a", "right_only": "b"}).astype(str)
    merged = merged.drop(columns=[k for k in key if k.startswith("\x1f")])
    loops = [*shared, *extra_a, *extra_b]
    merged = merged[[*loops, "a", "b", "side", "seq_a", "seq_b"]]
    if loops:
        merged = merged.sort_values(loops, kind="stable", na_position="first")
    return merged.reset_index(drop=True)


def _is_null(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return bool(isinstance(x, (float, np.floating)) and math.isnan(x))
    except TypeError:
        return False


def _is_numeric(values: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return True
    return all(_is_null(x) or (isinstance(x, (int, float, bool, np.number, np.bool_)) and not isinstance(x, str))
               for x in values)


def check(frame: pd.DataFrame, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> pd.DataFrame:
    """Add ``abs_diff``, ``rel_diff`` and ``match`` to an aligned frame (one name).

    ``match`` is ``numpy.isclose(a, b, rtol, atol, equal_nan=True)`` on rows
    both sides have (NA on one-sided rows): NaN equals NaN only when both are
    NaN. Non-numeric values match when equal. ``abs_diff`` is ``|a - b|``
    (0 for two equal infinities or two NaNs, NaN when exactly one is NaN),
    ``rel_diff`` is ``abs_diff / |b|`` (inf when b is 0 and a is not).
    """
    out = frame.copy()
    both = out["side"].eq("both").to_numpy()
    n = len(out)
    if _is_numeric(out["a"]) and _is_numeric(out["b"]):
        av = pd.to_numeric(out["a"], errors="coerce").astype(float).to_numpy()
        bv = pd.to_numeric(out["b"], errors="coerce").astype(float).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            close = np.isclose(av, bv, rtol=rtol, atol=atol, equal_nan=True)
            same = (av == bv) | (np.isnan(av) & np.isnan(bv))
            diff = np.where(same, 0.0, np.abs(av - bv))
            rel = np.where(diff == 0, 0.0, diff / np.abs(bv))
    else:
        close = np.array([(_is_null(x) and _is_null(y)) or (not _is_null(x) and not _is_null(y) and _eq(x, y))
                          for x, y in zip(out["a"], out["b"])], dtype=bool)
        diff = rel = np.full(n, np.nan)
    out["abs_diff"] = np.where(both, diff, np.nan)
    out["rel_diff"] = np.where(both, rel, np.nan)
    out["match"] = pd.array([bool(c) if m else pd.NA for c, m in zip(close, both)], dtype="boolean")
    return out


def _eq(x: Any, y: Any) -> bool:
    try:
        return bool(x == y)
    except (TypeError, ValueError):
        return False


def _order_key(frame: pd.DataFrame, i: int) -> tuple:
    """Log order of row ``i``: A's sequence number, else B's, else its position."""
    sa, sb = frame.at[i, "seq_a"], frame.at[i, "seq_b"]
    if not _is_null(sa):
        return (0, float(sa), i)
    if not _is_null(sb):
        return (0, float(sb), i)
    return (1, 0.0, i)


def coordinates_of(frame: pd.DataFrame, i: int, loops: Sequence[str]) -> dict[str, int]:
    return {l: int(frame.at[i, l]) for l in loops if l in frame.columns and not _is_null(frame.at[i, l])}


