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


# -- the runtime guard ------------------------------------------------------------------


def skipped_nested(tasks) -> bool:
    """Did any of these tasks restore a nested loop's exit state instead of running it?"""
    return any(t.nested and t.checkpoints and (t.strategy == "skip" or (t.warm < t.start and t.warm_skip))
               or t.restore_before is not None or getattr(t, "carry_at", None) is not None for t in tasks)


def guard_plan(plan, fidelity: dict[str, Fidelity]):
    """Runs whose replay skipped nested loops and then diverged, planned again with re-execution.

    The static analysis decides skipping from the syntax tree; this is the check
    on what actually ran: a value the run recorded that the replay logged
    differently means some state the skipped loops changed was not restored.
    Those runs are executed again from iteration 0 with every nested loop run,
    under a new replay id, so the replays table keeps both attempts. Returns a
    plan of those runs, or None when nothing needs it.
    """
    import copy
    import secrets

    from flordb.hindsight.tasks import make_tasks

    again = []
    for rp in plan.runs:
        fid = fidelity.get(rp.replay_id)
        if fid is None or fid.status != "diverged" or not skipped_nested(rp.tasks):
            continue
        new = copy.copy(rp)
        new.replay_id = f"{rp.replay_id}-g{secrets.token_hex(1)}"
        new.strategy = "reexec" if rp.strategy == "skip" else rp.strategy
        new.warm_skip = False
        new.carried = f"runtime guard: the replay that skipped nested loops diverged ({fid.first})"
        new.carry, new.carry_ok = {}, set()  # and restored no carried variables: every iteration runs
        new.note = f"re-run with re-execution after {rp.replay_id} diverged: {fid.first}"
        sts = rp.statements or plan.statements
        new.tasks = make_tasks(new, new.facts, new.placement, sts, [s.name for s in sts], new.patched, 1)
        for t in new.tasks:
            t.checkpoints = {} if t.restore_before is None else t.checkpoints
        new.estimate = sum(t.estimate for t in new.tasks)
        again.append(new)
    if not again:
        return None
    out = copy.copy(plan)
    out.runs = again
    return out
