"""Replay tasks, and what they cost: the units the executors run (DESIGN decision 7).

A task is one worker's job: a run, the patched version to execute, the
main-loop iterations to produce values for (and those to execute silently
before them), and the checkpoints it may restore. Costs come from the run's
recorded timings: prefix, per iteration (with or without the nested loop),
suffix, and checkpoint loads; worker start-up from the replay workers that
ran before, and a factor learned from what past replays took against what
this model said (:func:`calibrate`, from the ``replays`` table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOAD_BYTES_PER_SECOND = 200e6  # checkpoint restore throughput assumed by the estimate
WORKER_START = 1.0  # seconds a worker needs before the script's first FlorDB call, when unknown
WORKER_EXIT = 0.4  # interpreter shutdown and the final flush; measured 0.3-1 s with torch loaded


@dataclass(frozen=True)
class Statement:
    name: str
    script: str  # path relative to the project root
    lineno: int
    text: str
    position: str = ""  # where it sits relative to the main loop, in words


@dataclass
class Task:
    """One worker's job: the executor interface's unit (DESIGN decision 7)."""

    task_id: str
    replay_id: str
    run_id: str
    version: str  # the patched version the worker runs
    script: str
    cwd: str
    argv: list[str]
    main_loop: str
    start: int  # first iteration that logs
    stop: int  # iterations >= stop are not run
    warm: int  # first iteration executed (silently before start)
    restore_before: int | None  # flat loops: end state to restore before `warm`
    strategy: str  # skip | reexec | prefix | suffix
    nested: bool
    suffix: bool
    prefix_live: bool
    checkpoints: dict[int, dict[str, list[str]]]
    names: list[str]
    fidelity: list[str]
    args: dict
    estimate: float
    warm_skip: bool = True  # may iterations before `start` skip the nested loop (restoring its exit state)?
    carry: dict = field(default_factory=dict)  # variables restored with checkpoint `carry_at`: {"globals": [...]}
    carry_at: int | None = None
    threads: int | None = None  # torch threads of the recorded run: the worker uses as many
    memory: int | None = None  # bytes: the recorded run's peak RSS
    gpus: int = 0  # GPUs the recorded run used
    model: float = 0.0  # the cost model's estimate before calibration (estimate = model * factor)

    def payload(self) -> dict:
        d = dict(self.__dict__)
        d["checkpoints"] = {str(k): v for k, v in self.checkpoints.items()}
        return d


@dataclass
class RunPlan:
    run_id: str
    version: str
    args: dict
    strategy: str
    iterations: list[int]
    checkpoints: tuple[int, int]  # (usable, iterations)
    estimate: float
    replay_id: str
    patched: str | None = None
    tasks: list[Task] = field(default_factory=list)
    note: str = ""
    facts: "RunFacts | None" = field(default=None, repr=False)
    placement: object = field(default=None, repr=False)
    warm_skip: bool = True  # analyze.nested_skip_safety of the patched version
    carried: str = ""  # analyze.carried_state: why the replay must start at iteration 0 ("" when it need not)
    carry: dict = field(default_factory=dict)  # carried variables restored from checkpoints (record/carry.py)
    carry_ok: set = field(default_factory=set)  # checkpoints whose saved variables hold all of ``carry``
    statements: list = field(default_factory=list)  # this run's script's statements (default: the plan's)
    anywhere: bool = False  # a statement the analysis cannot place (in a helper module): logged wherever it runs


@dataclass
class ReplayPlan:
    names: list[str]
    statements: list[Statement]
    runs: list[RunPlan]
    refused: list[tuple[str, str, str]]  # (run_id, version, reason)
    workers: int
    where: str | None = None
    only_missing: bool = False  # a query's hindsight (fill gaps) rather than an explicit replay
    schedule: object = None  # executors.scheduler.Schedule: workers, capacity, and why
    calibration: "Calibration | None" = None

    @property
    def tasks(self) -> list[Task]:
        return [t for r in self.runs for t in r.tasks]

    @property
    def estimate(self) -> float:
        """Wall-clock estimate: the scheduler's own admission rule, simulated (longest task first)."""
        if self.schedule is not None:
            from flordb.hindsight.executors.scheduler import simulate

            return simulate(self.tasks, self.schedule.capacity, self.workers)
        loads = [0.0] * max(1, self.workers)
        for t in sorted(self.tasks, key=lambda t: -t.estimate):
            loads[loads.index(min(loads))] += t.estimate
        return max(loads) if self.tasks else 0.0



@dataclass
class RunFacts:
    run_id: str
    version: str
    git_dir: str
    script: str
    cwd: str
    argv: list[str]
    args: dict
    iterations: list[tuple[int, float, float, float | None, float | None]]  # i, t0, t1, nested t0, nested t1
    checkpoints: dict[int, dict[str, list[str]]]
    ckpt_bytes: dict[int, int]
    recorded: set[str]
    clock0: float | None
    startup: float | None
    duration: float | None
    threads: int | None = None
    peak_rss: int | None = None  # bytes
    gpus: int = 0
    worker_start: float | None = None  # calibrated: what replay workers of this script took to start


@dataclass
class Calibration:
    """What past replays teach the cost model (see :func:`calibrate`)."""

    factor: float = 1.0  # actual task seconds / modelled task seconds
    start: float | None = None  # median worker start-up, seconds
    replays: int = 0  # how many past replays the factor comes from

    def describe(self) -> str:
        if not self.replays:
            return "cost model: recorded timings (no past replays to calibrate with yet)"
        start = f", worker start {self.start:.1f} s" if self.start is not None else ""
        return f"cost model: recorded timings x {self.factor:.2f}{start}, calibrated on {self.replays} past replay(s)"


def calibrate(cat, script: str, executor: str = "local", workers: int | None = None) -> Calibration:
    """Learn from the last replays of ``script`` (else of any script) on ``executor``."""
    cal = Calibration()
    try:
        start = cat.execute(
            "SELECT median(startup) FROM (SELECT w.startup FROM replay_workers w JOIN runs r ON w.replay_of = r.run_id"
            " WHERE w.mode = 'replay' AND r.script = ? AND w.startup IS NOT NULL AND w.status = 'finished'"
            " ORDER BY w.started DESC LIMIT 20)", [script]).fetchone()[0]
        cal.start = float(start) if start is not None else None
        # The closest past replays first: same script and as many workers side by side (they share
        # memory bandwidth and caches), then the same script, then any.
        for extra, params in ((" AND r.script = ? AND p.workers = ?", [script, workers]),
                              (" AND r.script = ?", [script]), ("", [])):
            if "workers" in extra and workers is None:
                continue
            row = cat.execute(
                "SELECT sum(work), sum(model), count(*) FROM (SELECT p.work, p.model FROM replays p"
                " JOIN runs r USING (run_id) WHERE p.work > 0 AND p.model > 0 AND p.status IN ('ok', 'diverged')"
                " AND p.executor = ?" + extra + " ORDER BY p.started DESC LIMIT 10)",
                [executor, *params]).fetchone()
            if row and row[2]:
                cal.factor = min(4.0, max(0.25, row[0] / row[1]))
                cal.replays = int(row[2])
                break
    except Exception:  # a catalog from before migration 015: the plain model
        pass
    return cal


# -- cost and tasks -----------------------------------------------------------------------------


def iteration_cost(facts: RunFacts, i: int, skip: bool) -> float:
    row = next((r for r in facts.iterations if r[0] == i), None)
    if row is None:
        return 0.0
    _, t0, t1, n0, n1 = row
    full = (t1 - t0) if t1 is not None and t0 is not None else 0.0
    if skip and n0 is not None and n1 is not None and i in facts.checkpoints:
        return max(0.0, full - (n1 - n0)) + 0.01 + facts.ckpt_bytes.get(i, 0) / LOAD_BYTES_PER_SECOND
    return full


def prefix_cost(facts: RunFacts) -> float:
    first = facts.iterations[0][1] if facts.iterations else None
    pre = (first - facts.clock0) if first is not None and facts.clock0 is not None else 0.0
    start = facts.worker_start if facts.worker_start is not None else facts.startup
    return (start if start is not None else WORKER_START) + max(0.0, pre)


def suffix_cost(facts: RunFacts) -> float:
    if not facts.iterations or facts.duration is None or facts.clock0 is None:
        return 0.0
    return max(0.0, facts.duration - (facts.iterations[-1][2] - facts.clock0))


def warm_start(facts: RunFacts, start: int, nested: bool, skip_ok: bool = True,
               carried: bool = False, carry_ok: set | None = None) -> tuple[int, int | None]:
    """First iteration to execute, and for flat loops the end state to restore first.

    With a nested loop, checkpoint c is the exit state of c's nested loop:
    execute from c with its nested loop skipped. Without one, checkpoint c is
    the state at the end of c: restore it and execute from c + 1. When the
    nested loop may not be skipped (code after it reads what its body assigns),
    no exit state is a valid starting point: execute from the start. Neither
    is one when code outside the nested loop carries uncheckpointed state from
    one iteration to the next (``carried``): every earlier iteration runs, with
    its nested loop skipped where that is safe; unless that state is plain
    variables saved with checkpoints (``carry_ok``: the checkpoints that hold
    them), restored along with the objects.
    """
    earlier = [c for c in facts.checkpoints if c < start and (not carried or c in (carry_ok or ()))]
    if not earlier or start == 0 or (nested and not skip_ok):
        return 0, None
    c = max(earlier)
    return (c, None) if nested else (c + 1, c)


def make_tasks(run: RunPlan, facts: RunFacts, st_place, statements: list[Statement], names: list[str],
               patched_version: str, chunks: int) -> list[Task]:
    nested = any(r[3] is not None for r in facts.iterations)
    total = len(facts.iterations)
    strategy = run.strategy
    fidelity = sorted(facts.recorded - set(names))
    base = dict(
        replay_id=run.replay_id, run_id=facts.run_id, version=patched_version, script=facts.script or statements[0].script,
        cwd=facts.cwd, argv=facts.argv, main_loop=st_place.main_loop or "", nested=nested,
        names=names, fidelity=fidelity, args=facts.args, threads=facts.threads, memory=facts.peak_rss,
        gpus=facts.gpus or 0,
    )
    skip = strategy == "skip"
    if strategy == "prefix":
        ranges = [(0, 0)]
    elif strategy == "suffix":
        ranges = [(total, total)]
    else:
        its = run.iterations
        ranges = _contiguous(its)
        if chunks > 1:
            ranges = [piece for a, b in ranges for piece in _split(a, b, chunks)]
    tasks = []
    for k, (a, b) in enumerate(ranges):
        warm, restore_before = warm_start(facts, a, nested, run.warm_skip, bool(run.carried), run.carry_ok)
        carry_at = (warm if restore_before is None else restore_before) if run.carry and warm > 0 else None
        needed = {i: facts.checkpoints[i] for i in facts.checkpoints if warm <= i < b or i == restore_before}
        cost = WORKER_EXIT + prefix_cost(facts) + sum(iteration_cost(facts, i, skip or (i < a and run.warm_skip))
                                        for i in range(warm, b))
        if restore_before is not None:
            cost += facts.ckpt_bytes.get(restore_before, 0) / LOAD_BYTES_PER_SECOND
        # A statement whose place is unknown may run before or after the main loop too:
        # the task from the first iteration logs the prefix, the one to the last the suffix.
        suffix = strategy == "suffix" or (run.anywhere and b == total)
        prefix_live = (k == 0 and strategy == "prefix") or (run.anywhere and a == 0)
        if suffix:
            cost += suffix_cost(facts)
        tasks.append(Task(
            task_id=f"{run.replay_id}-{k}", start=a, stop=b, warm=warm, restore_before=restore_before,
            strategy=strategy, suffix=suffix, prefix_live=prefix_live,
            checkpoints=needed, estimate=cost, model=cost, warm_skip=run.warm_skip,
            carry=run.carry if carry_at is not None else {}, carry_at=carry_at, **base,
        ))
    return tasks


def _contiguous(its: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in its:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _split(a: int, b: int, parts: int) -> list[tuple[int, int]]:
    n = b - a
    parts = max(1, min(parts, n))
    edges = [a + (n * k) // parts for k in range(parts + 1)]
    return [(edges[k], edges[k + 1]) for k in range(parts) if edges[k] < edges[k + 1]]


def _useful_chunks(rp: RunPlan, chunks: int) -> int:
    """1 when every chunk would have to re-execute from iteration 0: splitting only adds work."""
    facts = rp.facts
    if facts is None or rp.strategy in ("prefix", "suffix"):
        return chunks
    nested = any(r[3] is not None for r in facts.iterations)
    if not facts.checkpoints or (nested and not rp.warm_skip) or (
            rp.carried and not rp.carry_ok and rp.strategy == "skip"):
        return 1
    return chunks


def _worth_splitting(rp: RunPlan, chunks: int) -> int:
    """At most as many chunks as leave each one at least a worker start's worth of work.

    Applied when the worker count is the default (an explicit ``--workers``
    splits as asked). Every chunk pays a whole worker start (interpreter, imports, the script's
    prefix: seconds with torch), so cutting a cheap replay (nested loops
    skipped) into pieces costs more than it saves, and on a busy machine the
    extra starts compete for the same cores.
    """
    if chunks <= 1 or rp.strategy in ("prefix", "suffix"):
        return chunks
    facts = rp.facts
    if facts is None:
        return chunks
    if _useful_chunks(rp, chunks) == 1:
        return 1  # every chunk would re-execute from iteration 0 (see warm_start)
    skip = rp.strategy == "skip"
    work = sum(iteration_cost(facts, i, skip) for i in rp.iterations)
    start = max(prefix_cost(facts), 0.1)
    return max(1, min(chunks, int(work // start)))


