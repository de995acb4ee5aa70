"""Fidelity: do the values a replay logged again equal what the run recorded?

A mismatch marks the replay as diverged, with the first differing coordinate;
it is stored in ``replays`` and shown to the user, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from flordb.store.catalog import Catalog


@dataclass
class Fidelity:
    compared: int
    first: str | None  # description of the first mismatch

    @property
    def status(self) -> str:
        if self.first:
            return "diverged"
        return "ok" if self.compared else "unchecked"

    @property
    def summary(self) -> str:
        """What ``replays.fidelity`` says: the first mismatch, or how many values were reproduced."""
        if self.first:
            return self.first
        if self.compared:
            return f"{self.compared} recorded value{'s' if self.compared != 1 else ''} reproduced exactly"
        return "unchecked: the replay logged no value the run had recorded"


def check(cat: Catalog, replay_id: str, rtol: float = 0.0) -> Fidelity:
    """Compare the replay's fidelity values with the recorded ones (exact by default)."""
    rows = cat.execute(
        """SELECT f.name, f.path, f.coord, f.num, f.txt, r.num, r.txt,
                  (f.num IS NOT DISTINCT FROM r.num
                   OR (isnan(f.num) AND isnan(r.num))
                   OR abs(f.num - r.num) <= ? * greatest(abs(f.num), abs(r.num)))
                  AND f.txt IS NOT DISTINCT FROM r.txt AS same
           FROM fidelity f JOIN records r
             ON r.run_id = f.run_id AND r.name = f.name AND r.path = f.path AND r.coord = f.coord
            AND r.replay_id IS NULL
           WHERE f.replay_id = ?
           ORDER BY NOT same DESC, f.coord, f.name""",
        [rtol, replay_id],
    ).fetchall()
    bad = [r for r in rows if not r[7]]
    if not bad:
        return Fidelity(len(rows), None)
    name, path, coord, fnum, ftxt, rnum, rtxt, _ = min(bad, key=lambda r: (list(r[2]), r[0]))
    where = ", ".join(f"{p}={c}" for p, c in zip(path, coord)) or "run level"
    got = ftxt if ftxt is not None else fnum
    want = rtxt if rtxt is not None else rnum
    return Fidelity(len(rows), f"{name} at {where}: replayed {got!r}, recorded {want!r}")
