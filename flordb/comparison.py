"""Cross-run comparison: does run B log the same values as run A?

``compare(a, b)`` selects one recorded run per side, aligns every compared log
name on the loop coordinates the two sides share, checks the values with
``numpy.isclose`` semantics and says where they first diverge::

    c = flor.compare("20261126-060956-f3f131", "lr = 0.01", on=["loss"], rtol=1e-5)
    c.agree               # bool
    c.first_divergence    # Divergence(name, coordinates, a, b) or None
    c.frame               # aligned rows: name, loop coordinates, a, b, abs_diff, rel_diff, match, side
    c.summary             # one row per compared name
    c.plot("loss")        # matplotlib Figure: overlay and difference

A side is a run id (or a unique prefix), a version (prefix of the snapshot
commit) that was recorded by exactly one run, or a SQL predicate over the
columns of ``logs`` (``"lr = 0.01"``, ``"version = 'a81c0d2...'"``). A side
that selects several runs is an error that names them.

Alignment (:func:`align`): a name is joined on the loop names both sides'
paths share. Same path: one row per coordinate. One side deeper
(``acc`` per epoch vs per step): the shallower value is repeated on each
deeper coordinate, as in the ``logs`` view. Both sides deeper along
different loops (``epoch/step`` vs ``epoch/batch``): rows are paired in order
within each shared coordinate. Rows one side lacks are kept and counted.

Values: numbers are compared with ``isclose(a, b, rtol, atol)`` (tolerance
relative to B, like numpy); NaN equals NaN only when both are NaN; NULL counts
as NaN. Non-numeric values must be equal. ``rel_diff`` is ``abs_diff / |b|``.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from flordb.errors import CompareError, QueryError, UnknownColumnError
from flordb.store.segments import BOOL, FLOAT, INT, NULL

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-8

# Columns of Comparison.frame besides the loop coordinates; a loop with one of
# these names is shown as ``loop.<name>``.
RESERVED = ("name", "a", "b", "abs_diff", "rel_diff", "match", "side", "seq_a", "seq_b", "value", "seq", "vtype")
_ID_LIKE = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_NUMERIC_VTYPES = {NULL, FLOAT, INT, BOOL}


# ------------------------------------------------------------------ result types


@dataclass(frozen=True)
class Side:
    """The run one side of a comparison selected."""

    label: str  # "A" or "B"
    spec: str  # what the user gave
    run_id: str
    version: str | None
    script: str | None

    @property
    def short_version(self) -> str:
        return (self.version or "?")[:7]

    def describe(self) -> str:
        return f"run {self.run_id}, version {self.short_version}, {self.script or '?'}"

    def legend(self) -> str:
        return f"{self.label}: {self.run_id} ({self.short_version})"

    def as_dict(self) -> dict:
        return {"spec": self.spec, "run_id": self.run_id, "version": self.version, "script": self.script}


@dataclass(frozen=True)
class Divergence:
    """The first value that disagrees: which name, where, and the two values."""

    name: str
    coordinates: dict[str, int]
    a: Any
    b: Any
    name_b: str | None = None

    def where(self) -> str:
        return where(self.coordinates)

    def __str__(self) -> str:
        va, vb = pair_text(self.a, self.b)
        return f"{self.name} ({self.where()}): {va} vs {vb}"

    def as_dict(self) -> dict:
        return {"name": self.name, "name_b": self.name_b or self.name, "coordinates": dict(self.coordinates),
                "a": self.a, "b": self.b}


def where(coordinates: Mapping[str, int]) -> str:
    """``epoch 2, step 17`` (``top level`` for a value logged outside any loop)."""
    return ", ".join(f"{k} {v}" for k, v in coordinates.items()) or "top level"


def _fmt(x: Any, digits: int = 6) -> str:
    if x is None:
        return "NULL"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}g}"
    return repr(x) if isinstance(x, str) else str(x)


def pair_text(a: Any, b: Any) -> tuple[str, str]:
    """Two values printed with just enough digits to tell them apart."""
    for digits in (6, 9, 12, 17):
        ta, tb = _fmt(a, digits), _fmt(b, digits)
        if ta != tb:
            break
    return ta, tb


@dataclass
class Comparison:
    """The result of :func:`compare`. ``agree`` is the verdict."""

    a: Side
    b: Side
    rtol: float
    atol: float
    names: list[tuple[str, str]]  # (name on A, name on B)
    frame: pd.DataFrame
    summary: pd.DataFrame
    first_divergence: Divergence | None
    strict: bool = False
    loops: list[str] = field(default_factory=list)

    @property
    def compared_rows(self) -> int:
        return int((self.frame["side"] == "both").sum()) if len(self.frame) else 0

    @property
    def one_sided(self) -> bool:
        """Rows or whole names present on one side only."""
        s = self.summary
        return bool(len(s)) and bool(((s["only_a"] > 0) | (s["only_b"] > 0)).any())

    @property
    def agree(self) -> bool:
        """Every aligned value agrees within tolerance (and, with ``strict``, nothing is one-sided).

        A comparison that aligned no value at all does not agree: there was
        nothing to agree on.
        """
        if self.first_divergence is not None or self.compared_rows == 0:
            return False
        return not (self.strict and self.one_sided)

    @property
    def verdict(self) -> str:
        tol = f"rtol={self.rtol:g}, atol={self.atol:g}"
        if self.first_divergence is not None:
            return f"diverge: first at {self.first_divergence}"
        if self.compared_rows == 0:
            return "nothing to compare: no coordinate has a value on both sides"
        if self.strict and self.one_sided:
            return f"diverge: values agree within {tol}, but some rows are on one side only (--strict)"
        n = len(self.names)
        return f"agree within {tol} ({self.compared_rows} aligned values, {n} name{'s' if n != 1 else ''})"

    # -- output ------------------------------------------------------------------

    def as_dict(self) -> dict:
        from flordb.cli.render import _plain

        names = [{k: _plain(v) for k, v in row.items()} for row in self.summary.to_dict("records")]
        return {
            "agree": self.agree,
            "verdict": self.verdict,
            "a": self.a.as_dict(),
            "b": self.b.as_dict(),
            "rtol": self.rtol,
            "atol": self.atol,
            "strict": self.strict,
            "names": names,
            "first_divergence": _plain(self.first_divergence.as_dict()) if self.first_divergence else None,
        }

    def report(self) -> str:
        """The text ``flordb compare`` prints."""
        from flordb.cli.render import table

        lines = [f"A: {self.a.describe()}", f"B: {self.b.describe()}", ""]
        shown = self.summary.copy()
        shown["name"] = shown["name"].where(shown["name"] == shown["name_b"],
                                            shown["name"] + " = " + shown["name_b"])
        shown = shown.drop(columns=["name_b", "first_divergence"])
        shown = shown.rename(columns={"only_a": "only A", "only_b": "only B", "max_abs_diff": "max abs diff",
                                      "max_rel_diff": "max rel diff"})
        body = table(shown)
        lines.append(body.rsplit("\n", 1)[0])  # drop the "(n rows)" footer
        for row in self.summary.itertuples(index=False):
            if row.first_divergence:
                lines.append(f"{row.name}: first divergence at {row.first_divergence}")
        lines.append(f"Verdict: {self.verdict}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Comparison {self.a.run_id} vs {self.b.run_id}: {self.verdict}>"

    # -- plot --------------------------------------------------------------------

    def plot(self, name: str | Sequence[str] | None = None):
        """Overlay of A and B and their difference, per name; returns a matplotlib Figure.

        ``name`` is a compared name (its name on side A), a list of them, or
        None for every numeric compared name. The figure is built without
        pyplot (no GUI, no global state): ``fig.savefig("loss.png")`` works
        with the Agg backend anywhere.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise CompareError("plotting needs matplotlib: pip install 'flordb[plot]'") from None

        known = [na for na, _ in self.names]
        if name is None:
            wanted = [n for n in known if self._plottable(n)]
            if not wanted:
                raise CompareError("nothing to plot: no compared name has numeric values")
        else:
            wanted = [name] if isinstance(name, str) else list(name)
            for n in wanted:
                if n not in known:
                    raise CompareError(f"cannot plot {n!r}: it is not compared (compared: {', '.join(known)})")
                if not self._plottable(n):
                    raise CompareError(f"cannot plot {n!r}: its values are not numeric")
        cols = len(wanted)
        fig = Figure(figsize=(6.4 * cols, 6.0), layout="constrained")
        grid = fig.add_gridspec(2, cols, height_ratios=[2, 1])
        for i, n in enumerate(wanted):
            top = fig.add_subplot(grid[0, i])
            bottom = fig.add_subplot(grid[1, i], sharex=top)
            self._plot_one(n, top, bottom)
        state = "agree" if self.agree else "diverge"
        fig.suptitle(f"{self.a.run_id} ({self.a.short_version}) vs {self.b.run_id} ({self.b.short_version}): {state}")
        return fig

    def _plottable(self, name: str) -> bool:
        sub = self.frame[self.frame["name"] == name]
        return len(sub) > 0 and _is_numeric(sub["a"]) and _is_numeric(sub["b"])

    def _plot_one(self, name: str, top, bottom) -> None:
        sub = self.frame[self.frame["name"] == name].reset_index(drop=True)
        name_b = dict(self.names)[name]
        loops = [l for l in self.loops if l in sub.columns and sub[l].notna().any()]
        a = pd.to_numeric(sub["a"], errors="coerce").astype(float).to_numpy()
        b = pd.to_numeric(sub["b"], errors="coerce").astype(float).to_numpy()
        if len(loops) == 1 and sub[loops[0]].notna().all() and sub[loops[0]].is_unique:
            x = sub[loops[0]].astype(float).to_numpy()
            xlabel = loops[0]
            from matplotlib.ticker import MaxNLocator

            bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            x = np.arange(len(sub), dtype=float)
            xlabel = f"{' / '.join(loops)} (aligned order)" if loops else "value (aligned order)"
            if loops:
                outer = sub[loops[0]]
                starts = [j for j in range(len(sub)) if j == 0 or outer.iloc[j] != outer.iloc[j - 1]]
                stride = max(1, math.ceil(len(starts) / 10))
                starts = starts[::stride]
                bottom.set_xticks(starts, [f"{loops[0]} {_int_text(outer.iloc[j])}" for j in starts])
        has_a = ~sub["side"].eq("b").to_numpy()
        has_b = ~sub["side"].eq("a").to_numpy()
        marker = "." if len(sub) <= 200 else None
        top.plot(x[has_a], a[has_a], marker=marker, linewidth=1.4, label=self.a.legend())
        top.plot(x[has_b], b[has_b], marker=marker, linewidth=1.2, linestyle="--", label=self.b.legend())
        both = sub["side"].eq("both").to_numpy()
        diff = np.where(both, a - b, np.nan)
        band = self.atol + self.rtol * np.abs(b)
        bottom.plot(x, diff, color="tab:purple", linewidth=1.2, label="A − B")
        bottom.fill_between(x, -band, band, where=both, color="tab:green", alpha=0.2, step="mid",
                            label=f"tolerance (rtol={self.rtol:g}, atol={self.atol:g})")
        bottom.axhline(0.0, color="grey", linewidth=0.6)

        status = self.summary.set_index("name").loc[name]
        first = status["first_divergence"]
        if first:
            mism = sub.index[sub["match"].eq(False).fillna(False).to_numpy()]
            j = int(min(mism, key=lambda k: _order_key(sub, k)))
            top.axvline(x[j], color="red", linestyle=":", linewidth=1)
            bottom.axvline(x[j], color="red", linestyle=":", linewidth=1)
            top.scatter([x[j], x[j]], [a[j], b[j]], color="red", zorder=5, s=36,
                        label=f"first divergence ({first.split(':')[0]})")
            if np.isfinite(diff[j]):
                bottom.scatter([x[j]], [diff[j]], color="red", zorder=5, s=36)
            title = f"{name}: diverges at {first.split(':')[0]}"
        elif status["status"] == "agree":
            title = f"{name}: agree within rtol={self.rtol:g}, atol={self.atol:g}"
        else:
            title = f"{name}: {status['status']}"
        top.set_title(title)
        top.set_ylabel(name if name_b == name else f"{name} (B: {name_b})")
        top.set_xlabel(xlabel)
        bottom.set_ylabel("A − B")
        bottom.set_xlabel(xlabel)
        top.legend(loc="best", fontsize="small")
        bottom.legend(loc="best", fontsize="small")
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)


def _int_text(v: Any) -> str:
    try:
        return str(int(v))
    except (TypeError, ValueError):
        return str(v)


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


# ------------------------------------------------------------------ selecting sides


def _check_tolerance(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CompareError(f"--{name} must be a number, got {value!r}") from None
    if math.isnan(v) or v < 0:
        raise CompareError(f"--{name} must be a non-negative number, got {value!r}")
    return v


def _run_list(rows: Sequence[tuple], limit: int = 6) -> str:
    shown = [f"{r[0]} (version {(r[1] or '?')[:7]}, {r[2] or '?'})" for r in rows[:limit]]
    more = f", and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(shown) + more


def _ambiguous(label: str, spec: str, rows: Sequence[tuple]) -> CompareError:
    return CompareError(
        f"side {label} ({spec!r}) selects {len(rows)} runs: {_run_list(rows)};"
        f" narrow it to one run, e.g. with a longer run id prefix or \"run_id = '{rows[-1][0]}'\""
    )


def resolve_side(cat, spec: str, label: str) -> Side:
    """The one recorded run ``spec`` selects: run id (prefix), version (prefix) or predicate."""
    text = (spec or "").strip()
    if not text:
        raise CompareError(f"side {label} is empty: give a run id, a version, or a predicate such as \"lr = 0.01\"")
    runs = cat.execute(
        "SELECT run_id, version, script FROM runs WHERE mode = 'record' ORDER BY started, run_id"
    ).fetchall()
    if _ID_LIKE.match(text):
        exact = [r for r in runs if r[0] == text]
        if exact:
            return Side(label, text, *exact[0])
        low = text.lower()
        hits = [r for r in runs if r[0].startswith(text) or (r[1] or "").startswith(low)]
        if len(hits) == 1:
            return Side(label, text, *hits[0])
        if len(hits) > 1:
            raise _ambiguous(label, text, hits)
        if not runs:
            raise CompareError(f"side {label}: no run matches {text!r}: no run has been recorded in this project yet")
        latest = ", ".join(r[0] for r in runs[-3:])
        raise CompareError(
            f"side {label}: no run id or version starts with {text!r} (latest runs: {latest}; see `flordb runs`)"
        )
    rows = _predicate_runs(cat, text, label)
    if not rows:
        raise CompareError(f"side {label}: no recorded run satisfies {text!r}")
    if len(rows) > 1:
        raise _ambiguous(label, text, rows)
    return Side(label, text, *rows[0])


def _predicate_runs(cat, text: str, label: str) -> list[tuple]:
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    from flordb.query.engine import prepare, run_plan
    from flordb.query.logs import col

    try:
        trees = [t for t in sqlglot.parse(text, read="duckdb") if t is not None]
    except SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompareError(
            f"side {label}: {text!r} is neither a run id, a version nor a SQL predicate ({first})"
        ) from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Condition):
        raise CompareError(
            f"side {label}: {text!r} is not a predicate; write one condition over run or arg columns,"
            " e.g. \"lr = 0.01\" or \"version = 'a81c0d2...'\""
        )
    lead = ["run_id", "version", "script", "tstamp"]
    select = (
        exp.select(*(col(c) for c in lead)).distinct().from_("logs").where(trees[0])
        .order_by(col("tstamp"), col("run_id"))
    )
    try:
        plan, _ = prepare(cat, select.sql("duckdb"))
        df = run_plan(cat, plan)
    except UnknownColumnError as exc:
        parts = []
        for n in exc.names:
            close = exc.suggestions.get(n) or []
            parts.append(f"{n!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        raise CompareError(f"side {label} ({text!r}): unknown column {', '.join(parts)}") from None
    except QueryError as exc:
        raise CompareError(f"side {label} ({text!r}): {exc.message}") from None
    seen: dict[str, tuple] = {}
    for r in df.itertuples(index=False):
        seen.setdefault(r.run_id, (r.run_id, r.version, r.script))
    return list(seen.values())


# ------------------------------------------------------------------ reading values


def _log_names(cat, run_id: str) -> list[str]:
    """The names a run logged, in the order it first logged them."""
    rows = cat.execute(
        "SELECT name FROM records WHERE run_id = ? GROUP BY name"
        " ORDER BY min(seq) FILTER (WHERE replay_id IS NULL) NULLS LAST, min(seq), name", [run_id]
    ).fetchall()
    return [r[0] for r in rows]


def _decode(vtype: int, num: float | None, txt: str | None) -> Any:
    if vtype in (FLOAT, INT, BOOL):
        return float(num) if num is not None else None
    if vtype == NULL:
        return None
    return txt


def _read_side(cat, run_id: str, names: Sequence[str]) -> dict[str, dict[tuple, pd.DataFrame]]:
    """name -> loop path -> frame (a column per loop, value, seq), one row per coordinate.

    A value logged twice at one coordinate counts once (the last, as in
    ``logs``); a recorded value wins over a replayed one.
    """
    if not names:
        return {}
    df = cat.execute(
        "SELECT name, path, coord, vtype, num, txt, seq, replay_id IS NULL AS original"
        " FROM records WHERE run_id = ? AND list_contains(?, name)",
        [run_id, list(names)],
    ).df()
    out: dict[str, dict[tuple, pd.DataFrame]] = {}
    if df.empty:
        return out
    df["path"] = [tuple(p) if p is not None else () for p in df["path"]]
    df["coord"] = [tuple(int(c) for c in cs) if cs is not None else () for cs in df["coord"]]
    df = df.sort_values(["original", "seq"], kind="stable").drop_duplicates(["name", "path", "coord"], keep="last")
    for (name, path), g in df.groupby(["name", "path"], sort=False):
        coords = list(g["coord"])
        data = {loop: [c[d] if d < len(c) else None for c in coords] for d, loop in enumerate(path)}
        vtypes = g["vtype"].to_numpy()
        if np.isin(vtypes, list(_NUMERIC_VTYPES)).all():  # the common case, without a Python loop
            data["value"] = np.where(vtypes == NULL, np.nan, g["num"].to_numpy(dtype=float))
        else:
            data["value"] = [_decode(int(v), n, t) for v, n, t in zip(vtypes, g["num"], g["txt"])]
        data["seq"] = g["seq"].to_numpy(dtype=float)
        frame = pd.DataFrame(data)
        frame = frame.sort_values(list(path) or ["seq"], kind="stable").reset_index(drop=True)
        out.setdefault(name, {})[path] = frame
    return out


def _pair_paths(pa: Sequence[tuple], pb: Sequence[tuple]) -> list[tuple[tuple | None, tuple | None]]:
    pairs: list[tuple[tuple | None, tuple | None]] = [(p, p) for p in pa if p in pb]
    rest_a = [p for p in pa if p not in pb]
    rest_b = [p for p in pb if p not in pa]
    if len(rest_a) == 1 and len(rest_b) == 1:
        return pairs + [(rest_a[0], rest_b[0])]
    return pairs + [(p, None) for p in rest_a] + [(None, p) for p in rest_b]


def _empty(path: tuple) -> pd.DataFrame:
    return pd.DataFrame({**{l: pd.Series([], dtype="Int64") for l in path}, "value": [], "seq": []})


# ------------------------------------------------------------------ names


def _parse_on(on: str | Iterable[str] | None) -> list[str] | None:
    if on is None:
        return None
    items = on.split(",") if isinstance(on, str) else list(on)
    names = [str(n).strip() for n in items if str(n).strip()]
    if not names:
        raise CompareError("--on names no log name: give names separated by commas, e.g. --on loss,acc")
    return list(dict.fromkeys(names))


def parse_map(items: str | Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``{"loss": "train_loss"}`` from a mapping, ``"loss=train_loss,acc=val_acc"`` or a list of such."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        texts = [items] if isinstance(items, str) else list(items)
        pairs = []
        for text in texts:
            for part in str(text).split(","):
                if not part.strip():
                    continue
                left, sep, right = part.partition("=")
                if not sep:
                    raise CompareError(f"--map {part.strip()!r}: expected NAME_A=NAME_B, e.g. --map loss=train_loss")
                pairs.append((left, right))
    out: dict[str, str] = {}
    for left, right in pairs:
        left, right = str(left).strip(), str(right).strip()
        if not left or not right:
            raise CompareError(f"--map {left}={right}: expected NAME_A=NAME_B with both names given")
        if left in out and out[left] != right:
            raise CompareError(f"--map maps {left!r} twice ({out[left]!r} and {right!r})")
        out[left] = right
    return out


def _strip_prefix(name: str, known: Iterable[str]) -> str:
    """Accept ``log.epoch`` (the ``logs`` column of a log named like a loop) for the log name."""
    known = set(known)
    if name not in known and name.startswith("log.") and name[4:] in known:
        return name[4:]
    return name


def _fill_by_replay(cat, names: Sequence[str], a: Side, b: Side, mode: str) -> bool:
    """Hindsight for a comparison: replay names the current code logs into the two runs.

    The catalog is closed while the workers run, then reopened and re-ingested.
    Without a terminal to ask on and without --yes, nothing is replayed.
    """
    from sqlglot import exp

    from flordb.hindsight.api import ConfirmationRequired, replay, say
    from flordb.hindsight.plan import locate_statements

    if mode == "ask" and not sys.stdin.isatty():
        return False  # nobody to ask: the error that follows says which command fills them
    logged = [n for n in names if n in locate_statements(cat.layout.work_tree, list(names))]
    if not logged:
        return False
    where = exp.In(this=exp.column("run_id"), expressions=[exp.Literal.string(s.run_id) for s in (a, b)])
    cat.close()
    try:
        report = replay(logged, where=where.sql(dialect="duckdb"), layout=cat.layout, only_missing=True,
                        confirm_mode=mode)
    except ConfirmationRequired as exc:
        say(f"{exc.message}.")
        return False
    finally:
        cat.open()
        cat.ingest()
    return bool(report.results)


def _never_recorded(names: Sequence[str], a: Side, b: Side, shared: Sequence[str], layout) -> CompareError:
    from flordb.hindsight.locate import find_log_statements

    hits: dict[str, list[str]] = {}
    scripts = list(dict.fromkeys(s for s in (a.script, b.script) if s))
    for script in scripts:
        path = layout.work_tree / script
        try:
            source = path.read_text()
        except OSError:
            continue
        for n in names:
            for stmt in find_log_statements(source, n):
                hits.setdefault(n, []).append(f"{script}:{stmt.lineno}")
    parts = []
    for n in names:
        runs = f"run {a.run_id}" if a.run_id == b.run_id else f"run {a.run_id} or run {b.run_id}"
        if n in hits:
            ids = ", ".join(f"'{r}'" for r in dict.fromkeys([a.run_id, b.run_id]))
            parts.append(
                f"{n!r} was never recorded by {runs}; the current code logs it ({', '.join(hits[n])}), so"
                f" hindsight replay can fill it in: run `flordb replay {n} --where \"run_id IN ({ids})\"`,"
                " then compare again"
            )
        else:
            close = difflib.get_close_matches(n, shared, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            parts.append(f"{n!r} was never recorded by {runs} and no flor.log in the current code logs it{hint}")
    return CompareError("; ".join(parts))


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
