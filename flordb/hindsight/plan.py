"""Plan a hindsight replay: which runs, which versions, which iterations, how.

For every selected run lacking the names: take its code version, place the
current statements into it (:func:`flordb.hindsight.propagation.propagate`),
record the patched version as a commit whose parent is the snapshot, decide
the strategy from the patched tree (:mod:`flordb.hindsight.analyze`), and cut
the needed main-loop iterations into tasks costed from the run's recorded
timings (:mod:`flordb.hindsight.tasks`). Versions where placement refuses are
listed, not guessed.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path

import sqlglot
from sqlglot import exp

from flordb.errors import HindsightError, PropagationError, QueryError, UnknownColumnError
from flordb.hindsight.analyze import (
    NESTED, PREFIX, SUFFIX, carried_restorable, carried_state, nested_skip_safety, placement,
)
from flordb.hindsight.helpers import attach_helpers, helper_placement, with_flor_import
from flordb.hindsight.locate import find_log_statements, script_statements
from flordb.hindsight.propagation import propagate
from flordb.hindsight.tasks import (  # noqa: F401  (the plan types stay importable from here)
    Calibration, ReplayPlan, RunFacts, RunPlan, Statement, Task, _useful_chunks, _worth_splitting, calibrate,
    make_tasks,
)
from flordb.sql.engine import prepare, run
from flordb.sql.logs import ident
from flordb.sql.schema import LogsSchema, load_schema
from flordb.store.catalog import Catalog
from flordb.store.objects import ObjectStore
from flordb.store.segments import decode

# -- locating the statements ---------------------------------------------------------


def python_files(work_tree: Path) -> list[Path]:
    skip = {".git", ".flordb", ".venv", "venv", "node_modules", "__pycache__", ".tox", "build", "dist"}
    out = []
    for root, dirs, files in os.walk(work_tree):
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".")]
        out += [Path(root) / f for f in files if f.endswith(".py")]
    return sorted(out)


def locate_statements(work_tree: Path, names: list[str], scripts: set[str] | None = None) -> dict[str, Statement]:
    """The current code's ``flor.log("<name>", ...)`` for each name (first match wins,
    preferring the scripts the runs recorded)."""
    found: dict[str, Statement] = {}
    files = python_files(work_tree)
    if scripts:
        files.sort(key=lambda f: str(f.relative_to(work_tree)) not in scripts)
    for path in files:
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if not any(f'"{n}"' in source or f"'{n}'" in source for n in names if n not in found):
            continue
        for st in find_log_statements(source):
            if st.name in names and st.name not in found:
                found[st.name] = Statement(st.name, str(path.relative_to(work_tree)), st.lineno, st.text)
    return found


# -- reading what a run recorded ----------------------------------------------------------


def run_facts(cat: Catalog, run_id: str, main_loop: str, store: ObjectStore) -> RunFacts:
    ex = cat.execute
    row = ex(
        "SELECT r.version, v.git_dir, r.script, r.cwd, r.argv, r.clock0, r.startup, r.duration, r.threads,"
        " r.peak_rss, r.gpus FROM runs r LEFT JOIN versions v USING (version) WHERE r.run_id = ?",
        [run_id],
    ).fetchone()
    version, git_dir, script, cwd, argv, clock0, startup, duration, threads, peak_rss, gpus = row
    args = {n: decode(vt, num, txt) for n, vt, num, txt in
            ex("SELECT name, vtype, num, txt FROM args WHERE run_id = ?", [run_id]).fetchall()}
    iters = ex(
        """SELECT i.coord[1], i.t0, i.t1, l.t0, l.t1 FROM loops i
           LEFT JOIN (SELECT coord, min(t0) AS t0, arg_min(t1, t0) AS t1 FROM loops
                      WHERE run_id = ? AND kind = 'loop' AND len(path) = 2 AND path[1] = ? AND replay_id IS NULL
                      GROUP BY coord) l ON l.coord = i.coord
           WHERE i.run_id = ? AND i.kind = 'iter' AND i.path = [?] AND i.replay_id IS NULL
           ORDER BY 1""",
        [run_id, main_loop, run_id, main_loop],
    ).fetchall()
    ckpts: dict[int, dict[str, list[str]]] = {}
    sizes: dict[int, int] = {}
    for it, name, digest, fmt, nbytes in ex(
        "SELECT iteration, name, digest, format, nbytes FROM checkpoints WHERE run_id = ? ORDER BY iteration",
        [run_id],
    ).fetchall():
        ckpts.setdefault(it, {})[name] = [fmt, digest]
        sizes[it] = sizes.get(it, 0) + (nbytes or 0)
    usable = {i: c for i, c in ckpts.items() if "__rng__" in c and all(store.has(d) for _, d in c.values())}
    recorded = {r[0] for r in ex("SELECT DISTINCT name FROM log_names WHERE run_id = ? AND NOT replayed",
                                 [run_id]).fetchall()}
    return RunFacts(run_id, version, git_dir, script, cwd or ".", list(argv or []), args, iters, usable,
                    sizes, recorded, clock0, startup, duration, threads, peak_rss, gpus or 0)


# -- choosing runs and iterations from WHERE ------------------------------------------------


def pushdown(where: str | None, schema: LogsSchema, main_loop: str | None,
             filling: list[str] | tuple = ()) -> exp.Expression | None:
    """The conjuncts of ``where`` that only use run, arg and main-loop columns.

    Others (log values, inner loops) cannot narrow a replay, so they are
    dropped: the replay then covers more, never less, than the query needs.
    A conjunct on a column being filled (``filling``: ``WHERE g IS NOT NULL``,
    ``w_norm > 5``) is dropped too, known or not: the replay computes it.
    """
    if not where:
        return None
    try:
        cond = sqlglot.parse_one(where, read="duckdb", into=exp.Condition) if isinstance(where, str) else where
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"cannot parse --where {where!r}: {str(exc).splitlines()[0]}") from None
    keep = []
    for conj in cond.flatten() if isinstance(cond, exp.And) else [cond]:
        cols = {c.name for c in conj.find_all(exp.Column)}
        if cols & set(filling):
            continue
        unknown = [c for c in cols if c not in schema.columns]
        if unknown:
            raise UnknownColumnError(unknown, schema.names)
        if all(schema.columns[c].kind in ("run", "arg") or c == main_loop for c in cols):
            keep.append(conj)
    return exp.and_(*keep) if keep else None


def selected_iterations(cat: Catalog, cond: exp.Expression | None, main_loop: str,
                        run_ids: list[str]) -> dict[str, list[int]]:
    select = exp.select(exp.column(ident("run_id")), exp.column(ident(main_loop))).distinct().from_("logs")
    if cond is not None:
        select = select.where(cond.copy())
    p, _ = prepare(cat, select)
    rows = run(cat, p, fetch="rows").rows  # plain rows: planning needs neither pandas nor pyarrow
    out: dict[str, list[int]] = {r: [] for r in run_ids}
    for run_id, i in rows:
        if run_id in out and i is not None and not (isinstance(i, float) and math.isnan(i)):
            out[run_id].append(int(i))
    return {r: sorted(v) for r, v in out.items()}


# -- patching ---------------------------------------------------------------------------------


def patch_source(old: str, current: str, statements: list[Statement]) -> str:
    """Insert each statement of the current code into the old source, one line each."""
    patched = old
    for st in statements:
        patched = propagate(current, st.lineno, patched)
    return patched


# -- the planner --------------------------------------------------------------------------


def plan_replay(cat: Catalog, names: list[str], where: str | None = None, workers: int | None = None,
                only_missing: bool = False, work_tree: Path | None = None, capacity=None,
                executor: str = "local", where_word: str = "cores") -> ReplayPlan:
    """Everything a replay needs, before anything runs.

    Runs are grouped by the script they ran; each run gets its own script's
    statements (``train.py`` and ``finetune.py`` may both log ``lr_now``).
    ``workers`` is an upper bound; how many tasks run at once is what fits
    ``capacity`` (default: this machine; a callable is asked only when there
    is something to replay) given each run's threads, memory and GPUs.
    """
    from flordb.hindsight.executors.scheduler import machine, plan_workers

    auto_split = workers is None  # default workers: split a run only where it pays off
    max_workers = workers
    workers = workers or 1
    layout = cat.layout
    work_tree = work_tree or layout.work_tree
    schema = load_schema(cat)
    runs = cat.execute(
        "SELECT run_id, version, script FROM runs WHERE mode = 'record' AND status <> 'running' ORDER BY started"
    ).fetchall()
    scripts = list(dict.fromkeys(r[2] for r in runs if r[2]))
    found = locate_statements(work_tree, names, set(scripts))
    missing = [n for n in names if n not in found]
    if missing:
        raise UnknownColumnError(missing, schema.names)
    groups = attach_helpers(script_statements(work_tree, names, scripts), found, names, scripts, work_tree)
    groups = groups or {found[names[0]].script: [found[n] for n in names]}
    plan = ReplayPlan(names=names, statements=[], runs=[], refused=[], workers=workers, where=where,
                      only_missing=only_missing)
    for script, statements in groups.items():
        _plan_script(cat, plan, script, statements, [r for r in runs if r[2] == script], schema, work_tree)
    # How many tasks fit at once (threads, memory, GPUs of the runs); then tasks: spare workers split
    # runs into ranges; estimates calibrated by the past replays of each script.
    capacity = (capacity() if callable(capacity) else capacity) if plan.runs else None
    capacity = capacity or machine()
    probe = []
    for rp in plan.runs:
        sts = rp.statements or plan.statements
        probe += make_tasks(rp, rp.facts, rp.placement, sts, [st.name for st in sts], rp.patched, 1)[:1]
    fit = plan_workers(probe * max(int(capacity.cpus), max_workers or 0, 1), capacity, max_workers, where_word)
    plan.schedule, plan.workers = fit, fit.workers
    cals: dict[str, Calibration] = {}
    per_run = max(1, math.ceil(plan.workers / max(1, len(plan.runs))))
    for rp in plan.runs:
        sts = rp.statements or plan.statements
        script = rp.facts.script or sts[0].script
        if script not in cals:
            cals[script] = calibrate(cat, script, executor, fit.workers)
        cal = cals[script]
        rp.facts.worker_start = cal.start
        chunks = _worth_splitting(rp, per_run) if auto_split else min(per_run, _useful_chunks(rp, per_run))
        rp.tasks = make_tasks(rp, rp.facts, rp.placement, sts, [st.name for st in sts], rp.patched, chunks)
        for t in rp.tasks:
            t.estimate = t.model * cal.factor
        rp.estimate = sum(t.estimate for t in rp.tasks)
    plan.calibration = next(iter(cals.values()), None)
    return plan


def recorded_loops(cat: Catalog, run_ids: list[str]) -> tuple[str | None, str | None]:
    """The main loop and the nested loop the runs entered: loop structure is what ran.

    The nested loop of an iteration is the first ``flor.loop`` entered during
    it, wherever it is written (a function, a method, two calls down).
    """
    if not run_ids:
        return None, None
    row = cat.execute(
        "SELECT path[1], count(*) AS n FROM loops WHERE kind = 'iter' AND len(path) = 1 AND replay_id IS NULL"
        " AND list_contains(?, run_id) GROUP BY 1 ORDER BY n DESC, 1 LIMIT 1", [run_ids]).fetchone()
    if row is None:
        return None, None
    nested = cat.execute(
        """SELECT first_name, count(*) AS n FROM (
               SELECT run_id, coord, arg_min(path[2], t0) AS first_name FROM loops
               WHERE kind = 'loop' AND len(path) = 2 AND path[1] = ? AND replay_id IS NULL
                 AND list_contains(?, run_id) GROUP BY run_id, coord)
           GROUP BY 1 ORDER BY n DESC, 1 LIMIT 1""", [row[0], run_ids]).fetchone()
    return row[0], nested[0] if nested else None


def _plan_script(cat: Catalog, plan: ReplayPlan, script: str, statements: list[Statement], candidates: list,
                 schema: LogsSchema, work_tree: Path) -> None:
    """Add the runs of one script to ``plan``."""
    from flordb.version import commit_patched, read_file

    names = [st.name for st in statements]
    current = (work_tree / script).read_text()
    main_loop, nested_loop = recorded_loops(cat, [r[0] for r in candidates])
    helper = {st.name for st in statements if st.script != script}  # in a module the script imports
    places = {st.name: helper_placement(st, script, main_loop, nested_loop) if st.name in helper
              else placement(current, st.lineno, main_loop, nested_loop) for st in statements}
    statements = [Statement(st.name, st.script, st.lineno, st.text,
                            f"in {st.script}, which {script} imports" if st.name in helper
                            else places[st.name].describe()) for st in statements]
    plan.statements += statements
    main_loop = main_loop or next((p.main_loop for p in places.values() if p.main_loop), None)

    cond = pushdown(plan.where, schema, main_loop, plan.names)
    its = None  # run -> selected main-loop iterations, when WHERE narrows them
    if cond is not None and main_loop:
        its = selected_iterations(cat, cond, main_loop, [r[0] for r in candidates])
    elif cond is not None:
        sel = exp.select(exp.column(ident("run_id"))).distinct().from_("logs").where(cond.copy())
        chosen = {row[0] for row in run(cat, prepare(cat, sel)[0], fetch="rows").rows}
        candidates = [r for r in candidates if r[0] in chosen]

    store = ObjectStore(cat.layout.objects)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    patched_cache: dict[str, tuple[str | None, str | None]] = {}
    only_missing = plan.only_missing
    for run_id, version, _ in candidates:
        if its is not None and not its.get(run_id):
            continue  # WHERE selects no row of this run: neither replayed nor refused
        if not version:
            plan.refused.append((run_id, "", "the run has no recorded code version"))
            continue
        facts = run_facts(cat, run_id, main_loop or "", store)
        if only_missing and facts.recorded & set(names):
            continue  # the run executed the statement itself: where it logged nothing, there is nothing
        if version not in patched_cache:
            try:
                files = {}
                for f in dict.fromkeys([script, *(st.script for st in statements)]):
                    mine = [st for st in statements if st.script == f]
                    if mine:
                        text = current if f == script else (work_tree / f).read_text()
                        before = read_file(facts.git_dir, version, f)
                        files[f] = patch_source(before if f == script else with_flor_import(before, text), text,
                                                mine)
                commit = commit_patched(facts.git_dir, version, files, f"flordb hindsight: {', '.join(names)}")
                patched_cache[version] = (commit, None)
            except PropagationError as exc:
                patched_cache[version] = (None, exc.reason)
            except Exception as exc:  # a version we cannot read: say so, keep the others
                patched_cache[version] = (None, str(exc))
        commit, reason = patched_cache[version]
        if commit is None:
            plan.refused.append((run_id, version, reason or "no confident place"))
            continue
        patched_text = read_file(facts.git_dir, commit, script)
        own = [n for n in names if n not in helper]
        lineno = _line_of(patched_text, own[0]) if own else None
        place = placement(patched_text, lineno, main_loop, nested_loop) if lineno else places[names[0]]
        positions = {placement(patched_text, _line_of(patched_text, n) or 1, main_loop, nested_loop).position
                     for n in own} | {NESTED for n in names if n in helper}
        strategy, note = _strategy(positions, place, facts)
        if helper:
            note += f"; {places[sorted(helper)[0]].reason}"
        warm_skip, warm_reason = nested_skip_safety(patched_text, main_loop, nested_loop)
        carried = carried_state(patched_text, main_loop, nested_loop, strategy == "suffix") if strategy != "prefix" else ""
        carry, carry_ok = {}, set()
        if carried and facts.checkpoints:
            carry, why = carried_restorable(patched_text, main_loop, nested_loop, strategy == "suffix")
            carry_ok = _checkpoints_saving(store, facts, carry) if carry else set()
            if carry and not carry_ok:
                why = (f"{carried}; its checkpoints saved no variables"
                       " (recorded before FlorDB saved them, or not plain values)")
            carried = carried if carry_ok else why or carried
        restored = ", ".join(n for ns in carry.values() for n in ns) if carry_ok else ""
        iterations = [r[0] for r in facts.iterations]
        if its is not None:
            iterations = [i for i in iterations if i in set(its.get(run_id, []))]
        if only_missing:
            have = _have(cat, run_id, names)
            if have and strategy in ("prefix", "suffix"):
                continue
            iterations = [i for i in iterations if i not in have]
            if not iterations and strategy not in ("prefix", "suffix"):
                continue
        if strategy in ("skip", "reexec") and not iterations:
            continue
        if strategy == "suffix" and carried and carry_ok:
            note += f"; carried variables {restored} restored from checkpoints"
        elif strategy == "suffix" and carried and facts.checkpoints:
            note += f"; every iteration runs again (nested loops skipped where safe): {carried}"
        if iterations and iterations[0] > 0 and strategy in ("skip", "reexec") and facts.checkpoints:
            if carried and carry_ok:
                note += f"; carried variables {restored} restored from checkpoints"
            elif carried:
                note += f"; replay starts at iteration 0: {carried}"
            elif not warm_skip and any(r[3] is not None for r in facts.iterations):
                note += f"; earlier iterations re-run their nested loop: {warm_reason}"
        rp = RunPlan(
            run_id=run_id, version=version, args=facts.args, strategy=strategy, iterations=iterations,
            checkpoints=(len(facts.checkpoints), len(facts.iterations)), estimate=0.0,
            replay_id=f"{stamp}-{secrets.token_hex(2)}", patched=commit, note=note,
            facts=facts, placement=place, warm_skip=warm_skip, carried=carried, statements=statements,
            carry=carry if carry_ok else {}, carry_ok=carry_ok, anywhere=bool(helper),
        )
        plan.runs.append(rp)


def _checkpoints_saving(store: ObjectStore, facts: RunFacts, carry: dict) -> set[int]:
    """Checkpoint iterations whose saved variables hold every name of ``carry`` (runs recorded
    before FlorDB saved variables have none: their replays start at iteration 0, as before)."""
    from flordb.record.carry import VARS_NAME, decode

    out = set()
    for i, saved in facts.checkpoints.items():
        entry = saved.get(VARS_NAME)
        if entry is None:
            continue
        try:
            got = decode(store.get(entry[1]))
        except Exception:  # unreadable: that checkpoint is not a starting point
            continue
        if all(n in got.get(scope, {}) for scope, names in carry.items() for n in names):
            out.add(i)
    return out


def _line_of(source: str, name: str) -> int | None:
    hits = find_log_statements(source, name)
    return hits[0].lineno if hits else None


def _strategy(positions: set[str], place, facts: RunFacts) -> tuple[str, str]:
    if positions == {PREFIX}:
        return "prefix", "statement before the main loop: only the prefix runs"
    if positions == {SUFFIX}:
        return "suffix", "statement after the main loop: restore the last state, run the suffix"
    if SUFFIX in positions or PREFIX in positions:
        raise HindsightError("replay one statement position at a time (prefix, loop and suffix names mixed)")
    no_ckpt = "no usable checkpoints: full re-execution from the start"
    if NESTED in positions:
        note = "statement inside the nested loop: re-run the nested loop"
        return "reexec", note if facts.checkpoints else f"{note}; {no_ckpt}"
    if not facts.checkpoints:
        return "reexec", no_ckpt
    if not place.skip_nested:
        return "reexec", f"nested loop re-run: {place.reason}"
    missing = len(facts.iterations) - len([i for i, *_ in facts.iterations if i in facts.checkpoints])
    note = "nested loop skipped (restored from checkpoints)"
    if missing:
        note += f"; {missing} iteration(s) without checkpoint re-run"
    return "skip", note


def _have(cat: Catalog, run_id: str, names: list[str]) -> set[int]:
    """Main-loop iterations where every name already has a value for this run."""
    rows = cat.execute(
        "SELECT coord[1], count(DISTINCT name) FROM records WHERE run_id = ? AND list_contains(?, name)"
        " AND len(coord) >= 1 GROUP BY 1",
        [run_id, names],
    ).fetchall()
    return {int(i) for i, n in rows if n == len(set(names)) and i is not None}
