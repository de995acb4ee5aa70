"""What a comparison returns: the two sides, the first divergence, the aligned frame, report and plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from flordb.comparison.align import (
    _is_numeric,
    _order_key,
)
from flordb.errors import CompareError

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
        from flordb.tabular import plain as _plain

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
        from flordb.tabular import table

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


