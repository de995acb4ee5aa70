"""What a query asks of hindsight: fill columns no run recorded, refresh stale ones.

Called by the query orchestrator (:mod:`flordb.api`) between planning and
executing a statement; hindsight never calls back into it. ``where`` is the
statement's WHERE over ``logs`` as a sqlglot tree (or None), which narrows the
runs and iterations replayed.
"""

from __future__ import annotations

import json
import weakref
from typing import Optional, Union

import sqlglot
from sqlglot import exp

from flordb.errors import HindsightError
from flordb.store.catalog import Catalog

Where = Optional[Union[str, exp.Expression]]

# Names a statement's fill just replayed, per catalog handle (one per statement): its refresh does
# not plan the same replay again (runs whose tasks failed are retried by the next query).
_FILLED: "weakref.WeakKeyDictionary[Catalog, set[str]]" = weakref.WeakKeyDictionary()


def fill_missing(cat: Catalog, missing: list[str], where: Where, mode: str) -> bool:
    """A query named columns no run recorded: replay them if the current code logs them.

    False when some name is logged by no statement (the query's error stands);
    True when the replay ran and its values can be read.
    """
    from flordb.hindsight.api import replay
    from flordb.hindsight.extract import offer
    from flordb.hindsight.plan import locate_statements

    # "replay.<name>" is missing because <name> is: it comes with it.
    missing = [n for n in missing if not (n.startswith("replay.") and n[len("replay."):] in missing)]
    extracted = offer(cat, missing, mode)  # printed but never logged: read it from the console lines
    found = locate_statements(cat.layout.work_tree, missing)
    if set(found) | extracted != set(missing):
        return False
    if not found:
        return True
    cat.close()  # never hold the catalog while workers run
    try:
        report = replay(list(found), workers=None, layout=cat.layout, only_missing=True, confirm_mode=mode,
                        where=where, quiet_if_nothing=bool(extracted))
    finally:
        cat.open()
    if report.results:
        _FILLED.setdefault(cat, set()).update(found)
    if extracted:
        return True  # answer with what was extracted, whatever the replay of the rest did
    names = ", ".join(missing)
    if not report.plan.runs and report.plan.refused:
        reasons = "; ".join(sorted({r for _, _, r in report.plan.refused}))
        raise HindsightError(f"{names}: no recorded version could take the statement ({reasons})")
    if report.plan.runs and not report.results:
        raise HindsightError(f"{names}: no run recorded it, and the replay was not run")
    if report.results and not any(r.ok for r in report.results):
        raise HindsightError(f"{names}: every replay task failed; see {report.failed[0].log}")
    return True


def explain_missing(cat: Catalog, missing: list[str], where: Where) -> str | None:
    """The replay plan that would fill ``missing``, as text; None when the current code logs none of them."""
    from flordb.hindsight.api import render_plan
    from flordb.hindsight.plan import locate_statements, plan_replay

    if set(locate_statements(cat.layout.work_tree, missing)) != set(missing):
        return None
    return render_plan(plan_replay(cat, missing, where=where, only_missing=True))


def replayed_statements(cat: Catalog, names: list[str], where: Where = None) -> dict[str, list[str]]:
    """The statement texts each name's replayed values still come from, oldest replay first.

    A replay whose values were all replaced by a later one no longer counts; one
    narrowed by WHERE replaces only its part, so older statements may remain.
    With ``where`` (a predicate over ``logs``), only the rows it selects count.
    """
    serving = _serving_replays(cat, names, where)
    out: dict[str, list[str]] = {}
    for replay_id, names_, statement in cat.execute(
        "SELECT replay_id, names, statement FROM replays WHERE strategy IS DISTINCT FROM 'extract' ORDER BY started"
    ).fetchall():
        try:
            texts = json.loads(statement or "{}")
        except json.JSONDecodeError:  # one statement, stored as plain text
            texts = {n: statement for n in names_}
        for n, t in texts.items():
            text = t.split(": ", 1)[-1]
            if n in names and (replay_id, n) in serving and text not in out.setdefault(n, []):
                out[n].append(text)
    return {n: texts for n, texts in out.items() if texts}


def _serving_replays(cat: Catalog, names: list[str], where: Where) -> set[tuple[str, str]]:
    """(replay_id, name) pairs whose values are still in the catalog (in the rows ``where`` selects)."""
    def everywhere(some: list[str]) -> set[tuple[str, str]]:
        return set(cat.execute(
            "SELECT DISTINCT replay_id, name FROM records WHERE replay_id IS NOT NULL AND list_contains(?, name)",
            [list(some)],
        ).fetchall())

    if where is None:
        return everywhere(names)
    from flordb.sql.engine import prepare, run
    from flordb.sql.logs import ident
    from flordb.sql.schema import REPLAY_PREFIX, load_schema

    replayed = [n for n in names if REPLAY_PREFIX + n in load_schema(cat).columns]  # others: never replayed
    try:
        cond = sqlglot.parse_one(where, read="duckdb") if isinstance(where, str) else where
        out: set[tuple[str, str]] = set()
        for n in replayed:
            sel = exp.select(exp.column(ident(REPLAY_PREFIX + n))).distinct().from_("logs").where(cond.copy())
            for (rid,) in run(cat, prepare(cat, sel)[0], fetch="rows").rows:
                if isinstance(rid, str):
                    out.add((rid, n))
        return out
    except Exception:  # a predicate we cannot reuse here: look at every row
        return everywhere(replayed)


def gaps(cat: Catalog, names: list[str], logged_by: list[tuple[str, str]] = ()) -> list[str]:
    """Names some finished runs lack, among runs of the scripts that log them.

    A run lacks a name when it never logged it and no replay of that name was
    tried on it; or, when a replay filled only some main-loop iterations (a
    narrowed ``--where``), when recorded iterations remain that no replay
    covered. A replay that was tried (refused, or whatever it produced) is not
    tried again here, so a statement that logs nothing in some runs does not
    replay them on every query; ``flordb replay`` always can. A failed replay
    is retried (:mod:`flordb.hindsight.partial`). ``logged_by`` adds (name,
    script) pairs whose current code logs the name, so a script none of whose
    runs logged it yet is not left out.
    Cheap: run summaries and the replays table only.
    """
    if not names:
        return []
    missing = {r[0] for r in cat.execute(
        """WITH having_name AS (SELECT DISTINCT l.run_id, l.name, r.script FROM log_names l
                                JOIN runs r USING (run_id) WHERE list_contains(?, l.name)),
                scripts AS (SELECT DISTINCT name, script FROM having_name
                            UNION SELECT unnest(?::VARCHAR[]) AS name, unnest(?::VARCHAR[]) AS script),
                tried AS (SELECT DISTINCT run_id, unnest(names) AS name FROM replays
                          WHERE status IS DISTINCT FROM 'failed')
           SELECT DISTINCT s.name FROM scripts s JOIN runs r ON r.script = s.script
           WHERE r.mode = 'record' AND r.status = 'finished'
             AND NOT EXISTS (SELECT 1 FROM having_name h WHERE h.run_id = r.run_id AND h.name = s.name)
             AND NOT EXISTS (SELECT 1 FROM tried t WHERE t.run_id = r.run_id AND t.name = s.name)""",
        [names, [n for n, _ in logged_by], [sc for _, sc in logged_by]],
    ).fetchall()}
    covered: dict[tuple[str, str], set[int] | None] = {}  # None: the whole run
    for run_id, names_, strategy, iterations, status in cat.execute(
        "SELECT run_id, names, strategy, iterations, status FROM replays WHERE list_has_any(names, ?)", [names]
    ).fetchall():
        if status == "failed":
            continue  # failed replays are retried by the next query that needs them
        for n in set(names_) & set(names):
            have = covered.setdefault((run_id, n), set())
            if have is None or status == "refused" or strategy in ("prefix", "suffix"):
                covered[(run_id, n)] = None
            else:
                have.update(_parse_ranges(iterations))
    recorded_by_run = set(cat.execute(
        "SELECT DISTINCT run_id, name FROM log_names WHERE NOT replayed AND list_contains(?, name)", [names]
    ).fetchall())
    partial = {key: its for key, its in covered.items()
               if its is not None and key[1] not in missing and key not in recorded_by_run}
    if partial:
        recorded: dict[str, set[int]] = {}
        for run_id, i in cat.execute(
            "SELECT run_id, coord[1] FROM loops WHERE kind = 'iter' AND replay_id IS NULL"
            " AND list_contains(?, run_id)", [sorted({r for r, _ in partial})]
        ).fetchall():
            recorded.setdefault(run_id, set()).add(int(i))
        missing |= {n for (run_id, n), its in partial.items() if recorded.get(run_id, set()) - its}
    return sorted(missing)


def _parse_ranges(text: str | None) -> set[int]:
    """Inverse of :func:`flordb.hindsight.api._ranges`: "0-3,5" -> {0, 1, 2, 3, 5}."""
    out: set[int] = set()
    for part in (text or "").split(","):
        lo, _, hi = part.partition("-")
        if lo.strip().isdigit():
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def refresh(cat: Catalog, names: list[str], replayed: list[str], where: Where, mode: str) -> bool:
    """Before a query reads the log columns ``names``: refresh stale replayed values, fill gaps,
    and never answer partially in silence (:func:`flordb.hindsight.partial.check_answer`).

    ``replayed`` are those of ``names`` some replay ever filled (only they can be stale).
    True when something was replayed, so the query must be planned again.
    """
    from flordb.hindsight.partial import check_answer

    changed = _refresh_and_fill(cat, names, replayed, where, mode)
    check_answer(cat, names, mode)
    return changed


def _refresh_and_fill(cat: Catalog, names: list[str], replayed: list[str], where: Where, mode: str) -> bool:
    from flordb.hindsight.partial import announce_retry, current_scripts

    changed = _refresh_stale(cat, replayed, where, mode) if replayed else False
    missing = cat.cached(f"gaps:{sorted(names)}", lambda: gaps(cat, names, current_scripts(cat, names)))
    missing = [n for n in missing if n not in _FILLED.get(cat, ())]
    if not missing:
        return changed
    from flordb.hindsight.api import ConfirmationRequired, replay, say
    from flordb.hindsight.plan import locate_statements

    logged = sorted(locate_statements(cat.layout.work_tree, missing))
    if not logged:
        return changed
    if mode == "no":
        say(f"{', '.join(logged)}: some runs never logged it; the current code does (replay with --yes to fill them).")
        return changed
    announce_retry(cat, logged)
    cat.close()
    try:
        report = replay(logged, layout=cat.layout, only_missing=True, confirm_mode=mode, where=where,
                        quiet_if_nothing=True)
    except ConfirmationRequired as exc:
        say(f"{exc.message}; answering without those runs' values.")
        return changed
    finally:
        cat.open()
    return changed or bool(report.results) or bool(report.waited)


def _refresh_stale(cat: Catalog, names: list[str], where: Where, mode: str) -> bool:
    """Replayed values come from an older statement than the current code's: ask."""
    from flordb.hindsight.plan import locate_statements

    def stale_in(before: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
        now = locate_statements(cat.layout.work_tree, list(before))
        return {n: (next(t for t in before[n] if t != now[n].text.strip()), now[n].text.strip())
                for n in before if n in now and any(t != now[n].text.strip() for t in before[n])}

    # Over every row first (one cheap scan); only when something is stale there does
    # it matter which of the rows ``where`` selects still hold the older values.
    stale = stale_in(cat.cached(f"replayed_statements:{sorted(names)}", lambda: replayed_statements(cat, names)))
    if stale and where is not None:
        key = f"replayed_statements:{sorted(names)}:{where.sql('duckdb') if isinstance(where, exp.Expression) else where}"
        stale = stale_in(cat.cached(key, lambda: replayed_statements(cat, names, where)))
    if not stale:
        return False
    from flordb.hindsight.api import ConfirmationRequired, confirm, replay, say

    for n, (old, new) in stale.items():
        say(f"{n} was replayed from `{old}`, but the current code logs `{new}`.")
    try:
        go = confirm(f"Re-materialize {', '.join(stale)}?", mode if mode != "no" else "no")
    except ConfirmationRequired:
        go = False
    if not go:
        say("Answering with the values replayed from the earlier statement (pass --yes to re-materialize).")
        return False
    cat.close()
    try:
        replay(list(stale), layout=cat.layout, confirm_mode="yes", where=where)
    finally:
        cat.open()
    return True
