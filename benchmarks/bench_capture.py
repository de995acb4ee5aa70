"""Console capture and extraction figures (issue 14), measured side by side in one run.

    python benchmarks/bench_capture.py              # full sizes, a few minutes
    python benchmarks/bench_capture.py --quick      # smaller sizes, a smoke test (not the figures)
    python benchmarks/bench_capture.py --pairs 21   # more whole-run pairs for the cross-check (default 11)

1. Whole-process overhead of console capture on a training-like script that
   prints one line per step (numpy work per step, 1 thread: OMP/OPENBLAS/MKL
   at 1), with Python's own stdout buffering: the children's stdout is a file
   (``/dev/null``) and ``PYTHONUNBUFFERED`` is unset, so stdout is
   block-buffered, as in a training job whose output goes to a log
   (``--unbuffered``: as ``python -u`` runs it). Capture adds one thread, which
   looks every tenth of a second and cuts the text only when nothing else did
   for half a second (the run's flush at the end of each epoch does it, on the
   script's thread); its CPU time is counted in (c). The overhead is tens of
   ms in a run of a few s of CPU, and the CPU time of whole runs of it varies
   by several % from run to run on a shared machine (at times far more), so
   comparing whole runs cannot resolve 1 %. The overhead is therefore measured
   in parts, each where it happens:

   a. The print path, per printed line, in one process: a child runs the same
      script with capture on, and its loop switches ``sys.stdout`` between
      the capture's stream (``Capture.tees``) and the stream it replaced
      (``Capture.saved``) every B = 10 steps, in the order on off off on on
      off ... within each epoch, timing each block with ``time.thread_time()``
      (the script's thread). The replaced stream is flushed before every
      block, outside the timing, so that both sides start after the same
      system call. Adjacent blocks form a pair, the side that goes first
      alternating, so drift slower than a block (a few ms) cancels; the cost
      per line is the interquartile mean (the mean of the middle half) over
      all pairs of (on - off) / B, with its standard error. Not the plain
      mean: now and then something outside the script slows one block of a
      pair by tens of percent, which moves the mean by more than the effect
      (the control shows it; mean and median are printed next to it). Work of
      the capture inside a block that is not the print path (a cut, on the
      script's thread) is timed and taken out of that block: it is counted in
      (c). Where stdout is block-buffered, a print appends to a
      list and the stream's own encoding and writing move to (c), so this
      part can be below 0. A control run switches between the replaced stream
      and itself: its figure is the method's own bias, which should be 0
      within its standard error.
   b. The marks, per change of loop context: where its iteration changes, a
      loop appends a mark to the captured text (a block-buffered stdout only;
      the sides of (a) both have them). At the end of each epoch of the runs
      of (a), empty nested ``flor.loop`` s of 500 iterations run with the
      marks on and off (``Capture.marking``, read when a loop starts), in the
      same alternating order; the cost per change is the interquartile mean of
      the pairs' (on - off) / 500, times the changes of context in the script
      (one per step, three per epoch, one at the end).
   c. Bulk work, off the print path, in whole runs of the unchanged script
      with capture on: ``Capture.take`` (sending the text out, cutting it into
      lines, sampling), ``Capture.drain`` (the rest of it), the console rows'
      share of each segment write (``SegmentWriter.write`` timed with them,
      less the mean of the same segment written without them to a scratch
      directory just before and after; ``_console_columns``, converting them,
      is printed as a part of it), ``Capture.close``, the watcher thread's
      own CPU time less what it spent in ``take``, and installing capture at
      start (importing ``flordb.record.capture``, which a run without capture
      never imports, and ``capture.start``). Each is wrapped with a thread-time
      accumulator in the child, per thread; they run a few times per run, so
      wrapping costs nothing measurable. Median over the runs of their sum.
   d. The figure: (a x lines printed + b x changes + c) / CPU time (user +
      sys, from ``wait4``) of the whole script with ``FLORDB_CAPTURE=0``,
      median of its runs in (e); its uncertainty, the standard errors of (a)
      and (b) scaled the same way (the spread of the bulk sums over the runs
      is printed too). Target: at most 1 %.
   e. Cross-check: whole runs of the unchanged script, capture on and
      ``FLORDB_CAPTURE=0`` in pairs (the side that goes first alternating)
      after one warm-up run per side; the median and interquartile range of
      the per-pair ratios of CPU time (and of wall time, printed). The output
      says whether the figure of (d) lies inside that interquartile range;
      the judged figure is (d).

   Every child runs alone, pinned to one core (``os.sched_setaffinity``). Its
   work tree holds only the scripts; the stores are outside it, since a run
   snapshots its work tree and would otherwise snapshot every earlier run's
   segments (each run then costs more than the one before). Not counted: the
   interpreter freeing the captured lines at exit (at most
   FLORDB_CAPTURE_MAX_LINES strings), and any effect of the lines capture
   holds between flushes on the speed of the script's own work (the same on
   both sides of (a); the cross-check (e) would show a large one).
2. Extraction of one printed metric from 100 runs x 1,000 captured lines: the
   runs' segments are written with the runtime's own writer, ingested, then
   ``flordb.hindsight.extract.extract`` (scan in DuckDB, write the values as
   segments, ingest them) is timed on the open catalog. Target: at most 1 s.

Exit status 1 when a figure misses its target (``run_all.py`` reports it).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

# The script of every run; the block runs of 1a fill in the two hooks, the others leave them empty.
PRINTING = textwrap.dedent(
    """
    import numpy as np
    import flordb as flor

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64))
    x = rng.standard_normal((64, 64))
    for epoch in flor.loop("epoch", range({epochs})):
        for step in flor.loop("step", range({steps})):
            {at_step}
            for _ in range(4):
                x = np.tanh(x @ w * 0.1)
            loss = float((x ** 2).mean())
            print(f"| epoch {{epoch}} | step {{step}} | lr 0.0010 | loss {{loss:.4f}} | ppl {{np.exp(loss):.2f}}")
        {after_steps}
    """
)

# Put in front of the script in the runs of 1a and 1b: the probe wraps capture's bulk work before the run starts.
PROBE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    import bench_capture
    probe = bench_capture.Probe({out!r}, {scratch!r}, control={control!r})
    """
)

THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
UNBUFFERED = False  # --unbuffered: the children run as ``python -u`` would (each write goes out at once)
CORE = max(os.sched_getaffinity(0))  # every child runs on this one core


# -- inside a child -------------------------------------------------------------------------


class Probe:
    """Thread-time accumulators around capture's bulk work, and the on/off blocks of 1a and 1b.

    Created before the script's first FlorDB call, so its wrappers are in place
    when the run installs capture; writes what it measured to ``out`` at exit
    (its ``atexit`` runs after the run's, which was registered later).
    """

    def __init__(self, out: str, scratch: str, control: bool = False):
        self.clock = time.thread_time
        self.acc: dict[str, float] = defaultdict(float)  # category -> seconds, exclusive of nested categories
        importlib.import_module("flordb.record.run")  # every recording run imports it, with capture or without

        t0 = self.clock()
        from flordb.record import capture  # a run without capture never imports it: part of installing it

        self.acc["install"] += self.clock() - t0
        from flordb.store import segments

        self.out, self.scratch = out, Path(scratch)
        self.calls: dict[str, int] = defaultdict(int)
        self.local = threading.local()  # per thread: the nested time of the wrapped calls in progress
        self.main = threading.get_ident()
        self.bulk = 0.0  # accounted time on the script's thread: taken out of the block it fell in
        self.watcher_wrapped = 0.0  # accounted time on capture's watcher thread
        self.marks_blocks: list = []  # per epoch: [side, seconds per iteration] of each empty-loop block (1b)
        self.blocks: list[list] = []  # per epoch: [side, seconds] of each block
        self.side: str | None = None
        self.streams = None
        self.control = control  # switch between the replaced stream and itself: the method's own bias, nil
        self._wrap(capture.Capture, "take", "take")
        self._wrap(capture.Capture, "drain", "drain")
        self._wrap(capture.Capture, "close", "close")
        self._wrap(capture, "start", "install")
        self._wrap_write(segments)
        columns = segments._console_columns

        def console_columns(*a, **k):  # a part of the segment difference, printed on its own
            t0 = self.clock()
            try:
                return columns(*a, **k)
            finally:
                self.acc["console columns"] += self.clock() - t0

        segments._console_columns = console_columns
        run = threading.Thread.run

        def thread_run(thread):  # the watcher's whole CPU time, when it ends (capture closes it)
            try:
                run(thread)
            finally:
                if thread.name == "flordb-capture":
                    self.acc["watcher idle"] += self.clock() - self.watcher_wrapped

        threading.Thread.run = thread_run
        atexit.register(self.dump)

    def _stack(self) -> list:
        stack = getattr(self.local, "stack", None)
        if stack is None:
            stack = self.local.stack = []
        return stack

    def _account(self, category: str, seconds: float, nested: float) -> None:
        self.acc[category] += seconds - nested
        self.calls[category] += 1
        stack = self._stack()
        if stack:
            stack[-1] += seconds
        elif threading.get_ident() == self.main:
            self.bulk += seconds
        else:
            self.watcher_wrapped += seconds

    def _wrap(self, owner, attr: str, category: str) -> None:
        fn, clock = getattr(owner, attr), self.clock

        def wrapped(*a, **k):
            stack = self._stack()
            stack.append(0.0)
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                self._account(category, clock() - t0, stack.pop())

        setattr(owner, attr, wrapped)

    def _wrap_write(self, segments) -> None:
        """Each segment write with console rows: its time, less that of the same segment without them."""
        write, clock = segments.SegmentWriter.write, self.clock
        scratch = segments.SegmentWriter(self.scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)

        def wrapped(writer, logs, args, events, blocks=None, console=None):
            if not console:
                return write(writer, logs, args, events, blocks, console=console)
            if not scratch.count:  # the first write imports pyarrow, with capture or without: not timed
                write(scratch, logs, args, events, blocks)
            t0 = clock()
            write(scratch, logs, args, events, blocks)  # without, before and after: warm caches either way
            t1 = clock()
            out = write(writer, logs, args, events, blocks, console=console)
            t2 = clock()
            write(scratch, logs, args, events, blocks)
            t3 = clock()
            self._account("segment write", (t2 - t1) - ((t1 - t0) + (t3 - t2)) / 2, 0.0)
            return out

        segments.SegmentWriter.write = wrapped

    def switch(self) -> None:
        """Called every B steps in the block runs: end the block in progress, start the next on the other stream."""
        t = self.clock()
        if self.streams is None:
            from flordb.record import api

            cap = api.current_run().capture
            for tee, (name, stream) in zip(cap.tees, cap.saved):
                if name == "stdout":
                    self.tee = tee
                    self.streams = (stream if self.control else tee, stream)
            self.blocks.append([])
        elif self.side is not None:
            self.blocks[-1].append((self.side, t - self.t0 - (self.bulk - self.bulk0)))
        else:
            self.blocks.append([])
        tee, stream = self.streams
        k = len(self.blocks[-1])
        self.side = "on" if k % 4 in (0, 3) else "off"  # on off off on on off ...: pairs alternate their order
        # What the stream holds goes out before the tee writes to its buffer. Before every block,
        # so that both sides start after the same system call (its cache and TLB misses).
        stream.flush()
        sys.stdout = tee if self.side == "on" else stream
        self.bulk0 = self.bulk
        self.t0 = self.clock()

    def epoch_end(self) -> None:
        t = self.clock()
        if self.side is not None:
            self.blocks[-1].append((self.side, t - self.t0 - (self.bulk - self.bulk0)))
            self.side = None
        if self.streams is not None:
            sys.stdout = self.tee  # the run's own state again: capture closes it at the end

    def marks(self, loops: int = 8, iterations: int = 500) -> None:
        """1b, at the end of an epoch: empty nested loops with capture's marks on and off, alternating."""
        import flordb as flor
        from flordb.record import api

        cap = api.current_run().capture
        marking, got = cap.marking, []
        try:
            for k in range(2 * loops):
                side = "on" if k % 4 in (0, 3) else "off"
                cap.marking = marking if side == "on" else None  # read when a loop starts
                t0 = self.clock()
                for _ in flor.loop("marks", range(iterations)):
                    pass
                got.append((side, (self.clock() - t0) / iterations))
        finally:
            cap.marking = marking
        self.marks_blocks.append(got)

    def dump(self) -> None:
        for thread in threading.enumerate():
            if thread.name == "flordb-capture":
                thread.join(2.0)  # it counts its CPU time as it ends
        Path(self.out).write_text(json.dumps({"acc": self.acc, "calls": self.calls, "blocks": self.blocks,
                                              "marks": self.marks_blocks}))


# -- the parent -----------------------------------------------------------------------------


def _pin() -> None:
    os.sched_setaffinity(0, {CORE})


def _child(script: Path, work: Path, side: str, home: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + sys) of one run of the script.

    The script's directory (its work tree, snapshotted by every run) holds
    nothing else: the stores are next to it, not in it, so that no run
    snapshots the segments of the runs before it.
    """
    env = dict(os.environ, FLORDB_HOME=str(work / (home or f"home{side}")), FLORDB_PROGRESS="0",
               FLORDB_CAPTURE=side, PYTHONPATH=str(REPO), **THREADS)
    env.pop("PYTHONUNBUFFERED", None)  # Python's own default: stdout to a file is block-buffered
    if UNBUFFERED:
        env["PYTHONUNBUFFERED"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script)], cwd=script.parent, env=env, preexec_fn=_pin,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{script.name} failed (FLORDB_CAPTURE={side}, exit {proc.returncode})")
    return wall, usage.ru_utime + usage.ru_stime


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def direct_pairs(script: Path, pairs: int, work: Path) -> dict:
    """1e: whole runs, capture on and off, in pairs."""
    for side in ("1", "0"):  # warm-up: file caches, bytecode, the private git repository
        _child(script, work, side)
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    for k in range(pairs):
        order = ("1", "0") if k % 2 == 0 else ("0", "1")
        got = {side: _child(script, work, side) for side in order}
        on.append(got["1"])
        off.append(got["0"])
    cpu = [100.0 * (a[1] / b[1] - 1.0) for a, b in zip(on, off)]
    wall = [100.0 * (a[0] / b[0] - 1.0) for a, b in zip(on, off)]
    return {
        "pairs": pairs, "cpu_on_s": statistics.median(x[1] for x in on),
        "cpu_off_s": statistics.median(x[1] for x in off), "cpu_off_runs_s": [x[1] for x in off],
        "wall_on_s": statistics.median(x[0] for x in on), "wall_off_s": statistics.median(x[0] for x in off),
        "cpu_pct_quartiles": _quartiles(cpu), "wall_pct_quartiles": _quartiles(wall),
    }


def probed(script: Path, work: Path, tag: str, control: bool = False) -> dict:
    out, scratch = work / "probe" / f"{tag}.json", work / "probe" / f"scratch-{tag}"
    text = script.read_text()
    probed_script = script.with_name(f"probed-{tag}.py")
    probed_script.write_text(PROBE.format(here=str(HERE), out=str(out), scratch=str(scratch), control=control) + text)
    _child(probed_script, work, "1", home="home-probe")
    return json.loads(out.read_text())


def block_pairs(runs: list[dict], key: str = "blocks", per: int = 1) -> list[float]:
    """The cost (seconds) per unit of each pair of adjacent blocks, (on - off) / per: lines in 1a, iterations in 1b."""
    costs = []
    for got in runs:
        for epoch in got[key]:
            for first, second in zip(epoch[0::2], epoch[1::2]):
                t = dict((first, second))
                if set(t) == {"on", "off"}:
                    costs.append((t["on"] - t["off"]) / per)
    return costs


def _per_line(runs: list[dict], block: int) -> dict:
    costs = block_pairs(runs, per=block)
    q1, median, q3 = _quartiles(costs)
    iqm, iqm_se = _interquartile_mean(costs)
    return {"pairs": len(costs), "mean_ns": 1e9 * statistics.fmean(costs),
            "se_ns": 1e9 * statistics.stdev(costs) / len(costs) ** 0.5 if len(costs) > 1 else 0.0,
            "iqm_ns": 1e9 * iqm, "iqm_se_ns": 1e9 * iqm_se,
            "median_ns": 1e9 * median, "iqr_ns": (1e9 * q1, 1e9 * q3)}


def _interquartile_mean(xs: list[float]) -> tuple[float, float]:
    """The mean of the middle half, and its standard error (Tukey-McLaughlin: winsorized spread).

    A pair of blocks is a few ms of CPU on a shared machine: now and then one
    block of a pair is slowed by tens of percent by something outside the
    script (the control run shows it), which moves the plain mean by more than
    the effect measured. The middle half is robust to those and, unlike the
    median, still moves with every pair.
    """
    ys = sorted(xs)
    n = len(ys)
    if n < 4:
        return statistics.fmean(ys), 0.0
    g = n // 4
    mid = ys[g:n - g]
    wins = [ys[g]] * g + mid + [ys[n - g - 1]] * g
    return statistics.fmean(mid), statistics.stdev(wins) / (len(mid) / n * n ** 0.5)


BULK = ("take", "drain", "segment write", "close", "watcher idle")


def _per_iteration(runs: list[dict]) -> dict:
    """1b: the marks' cost per loop iteration, from the pairs of adjacent empty-loop blocks: on - off."""
    costs = block_pairs(runs, key="marks")  # already per iteration
    iqm, iqm_se = _interquartile_mean(costs)
    return {"pairs": len(costs), "iqm_ns": 1e9 * iqm, "iqm_se_ns": 1e9 * iqm_se}


def figure_capture(epochs: int, steps: int, block: int, block_runs: int, bulk_runs: int, pairs: int,
                   work: Path) -> dict:
    lines = epochs * steps
    (work / "tree").mkdir()
    (work / "probe").mkdir()
    plain = work / "tree" / "printing.py"
    plain.write_text(PRINTING.format(epochs=epochs, steps=steps, at_step="", after_steps=""))
    blocks = work / "tree" / "blocks.py"
    blocks.write_text(PRINTING.format(epochs=epochs, steps=steps, at_step=f"if step % {block} == 0: probe.switch()",
                                      after_steps="probe.epoch_end(); probe.marks()"))
    block_got = [probed(blocks, work, f"blocks{r}") for r in range(block_runs)]
    line = _per_line(block_got, block)
    marks = _per_iteration(block_got)
    changes = epochs * (steps + 3) + 1  # where the plain script's loop context changes: each step, 3 per epoch, the end
    control = _per_line([probed(blocks, work, "control", control=True)], block)
    bulk = [probed(plain, work, f"bulk{r}") for r in range(bulk_runs)]
    direct = direct_pairs(plain, pairs, work)

    parts = {k: statistics.median(b["acc"].get(k, 0.0) for b in bulk) for k in (*BULK, "console columns", "install")}
    calls = {k: statistics.median(b["calls"].get(k, 0) for b in bulk) for k in ("take", "drain", "segment write")}
    totals = sorted(sum(b["acc"].get(k, 0.0) for k in (*BULK, "install")) for b in bulk)  # per run, with install
    fixed_s = statistics.median(totals)
    cpu_off = direct["cpu_off_s"]
    print_path_s = 1e-9 * line["iqm_ns"] * lines
    marks_s = 1e-9 * marks["iqm_ns"] * changes
    overhead = 100.0 * (print_path_s + marks_s + fixed_s) / cpu_off
    lo, hi = direct["cpu_pct_quartiles"][0], direct["cpu_pct_quartiles"][2]
    return {
        "lines": lines, "block": block, "block_runs": block_runs, "per_line": line, "control": control,
        "print_path_ms": 1e3 * print_path_s, "marks": marks, "changes": changes, "marks_ms": 1e3 * marks_s,
        "bulk_runs": bulk_runs,
        "bulk_ms": 1e3 * (fixed_s - parts["install"]), "bulk_range_ms": (1e3 * totals[0], 1e3 * totals[-1]),
        "parts_ms": {k: 1e3 * v for k, v in parts.items()}, "calls": calls, "install_ms": 1e3 * parts["install"],
        "cpu_off_s": cpu_off, "overhead_pct": overhead,
        "overhead_se_pct": 100.0 * 1e-9 * (line["iqm_se_ns"] * lines + marks["iqm_se_ns"] * changes) / cpu_off,
        "direct": direct, "inside_direct_iqr": lo <= overhead <= hi,
    }


def print_capture(cap: dict) -> None:
    p, d, line, ctl = cap["parts_ms"], cap["direct"], cap["per_line"], cap["control"]
    print(f"   a. print path: {line['iqm_ns']:.0f} +- {line['iqm_se_ns']:.0f} ns per line (interquartile mean +-"
          f" standard error over {line['pairs']} pairs of {cap['block']}-line blocks from {cap['block_runs']} runs;"
          f" median {line['median_ns']:.0f} ns, mean {line['mean_ns']:.0f} +- {line['se_ns']:.0f} ns, one pair's"
          f" interquartile range {line['iqr_ns'][0]:.0f} .. {line['iqr_ns'][1]:.0f} ns) x {cap['lines']} lines ="
          f" {cap['print_path_ms']:.2f} ms; control (stdout switched between the same stream, {ctl['pairs']}"
          f" pairs): {ctl['iqm_ns']:.0f} +- {ctl['iqm_se_ns']:.0f} ns per line (mean {ctl['mean_ns']:.0f})",
          flush=True)
    m = cap["marks"]
    print(f"   b. marks where the loop context changes: {m['iqm_ns']:.0f} +- {m['iqm_se_ns']:.0f} ns per change"
          f" (interquartile mean over {m['pairs']} pairs of empty-loop blocks) x {cap['changes']} changes ="
          f" {cap['marks_ms']:.2f} ms", flush=True)
    print(f"   c. bulk (median of {cap['bulk_runs']} runs): take {p['take']:.2f} ms ({cap['calls']['take']:.0f} calls;"
          f" sending the text out included) + drain {p['drain']:.2f} ({cap['calls']['drain']:.0f}) + console rows in"
          f" segment writes {p['segment write']:.2f} ({cap['calls']['segment write']:.0f}; converting them"
          f" {p['console columns']:.2f}) + close {p['close']:.2f} + the watcher thread's idle turns"
          f" {p['watcher idle']:.2f} = {cap['bulk_ms']:.2f} ms; install {cap['install_ms']:.2f} ms; together"
          f" {cap['bulk_ms'] + cap['install_ms']:.2f} ms (runs: {cap['bulk_range_ms'][0]:.2f} .."
          f" {cap['bulk_range_ms'][1]:.2f})", flush=True)
    print(f"   d. CPU of the script with FLORDB_CAPTURE=0: {cap['cpu_off_s']:.3f} s (median of {d['pairs']} runs);"
          f" overhead (a {cap['print_path_ms']:.2f} + b {cap['marks_ms']:.2f} + c {cap['bulk_ms']:.2f} + install"
          f" {cap['install_ms']:.2f} ms) / {cap['cpu_off_s']:.3f} s = {cap['overhead_pct']:+.3f} %"
          f" +- {cap['overhead_se_pct']:.3f} (the standard errors of a and b)   <- judged", flush=True)
    c, w = d["cpu_pct_quartiles"], d["wall_pct_quartiles"]
    print(f"   e. cross-check, whole runs, {d['pairs']} pairs: CPU on {d['cpu_on_s']:.3f} s"
          f" off {d['cpu_off_s']:.3f} s, median of pair ratios {c[1]:+.2f} %, interquartile range"
          f" {c[0]:+.2f} .. {c[2]:+.2f} %; wall {w[1]:+.2f} % ({w[0]:+.2f} .. {w[2]:+.2f} %); the figure of d is"
          f" {'inside' if cap['inside_direct_iqr'] else 'OUTSIDE'} the CPU interquartile range", flush=True)


def build_console_store(home: Path, runs: int, lines: int) -> None:
    """``runs`` finished runs of 10 epochs that printed ``lines`` lines each (as capture writes them)."""
    from flordb.record.context import Blocks
    from flordb.store.segments import SegmentWriter, write_json_atomic

    per_epoch = lines // 10
    for r in range(runs):
        run_id = f"20260101-000000-{r:06x}"
        run_dir = home / "segments" / run_id
        run_dir.mkdir(parents=True)
        write_json_atomic(run_dir / "run.json", {"run_id": run_id, "mode": "record", "script": "train.py",
                                                 "started": 1.0e9 + r, "version": None})
        writer, blocks = SegmentWriter(run_dir), Blocks()
        main = blocks.open(("epoch",), ())
        for epoch in range(10):
            inner = blocks.open(("epoch", "step"), (epoch,))
            events = [{"kind": "iter", "path": ("epoch",), "coord": (epoch,), "t0": 0.0, "t1": 1.0}]
            for step in range(per_epoch):
                loss = 5.0 / (1 + epoch * per_epoch + step) + r * 1e-3
                ctx = inner + step
                path, coord = blocks.decode(ctx)
                events.append({"kind": "console", "name": "stdout", "path": path, "coord": coord,
                               "txt": f"| epoch {epoch} | {step}/{per_epoch} batches | lr 20.00 | loss {loss:.4f}"
                                      f" | ppl {2.718 ** loss:.2f}"})
            assert main >= 0
            writer.write([], [], events, blocks.table)
        write_json_atomic(run_dir / "end.json", {"status": "finished", "ended": 1.0e9 + r + 1, "error": None})


def figure_extract(runs: int, lines: int, work: Path) -> dict:
    from flordb.hindsight.extract import extract
    from flordb.store.catalog import Catalog
    from flordb.store.layout import Layout

    home = work / "extract-home"
    build_console_store(home, runs, lines)
    layout = Layout(work_tree=work, home=home)
    with Catalog(layout) as cat:  # the runs' lines are in the catalog, settled, as after any earlier command
        cat.ingest()
        n_lines = cat.execute("SELECT count(*) FROM console").fetchone()[0]
    # As `flordb extract ppl` does it: open the catalog, extract, close it (which checkpoints the file)
    t0 = time.perf_counter()
    with Catalog(layout) as cat:
        t1 = time.perf_counter()
        ex = extract(cat, "ppl")
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    with Catalog(layout) as cat:
        stored = cat.execute("SELECT count(*) FROM records WHERE name = 'ppl'").fetchone()[0]
    assert stored == runs * lines, (stored, runs * lines)
    return {"seconds": t3 - t0, "open": t1 - t0, "extract": t2 - t1, "close": t3 - t2, "lines": n_lines,
            "values": ex.values, "runs": len(ex.written)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    ap.add_argument("--pairs", type=int, help="pairs of whole runs for the cross-check (default 11, --quick 2)")
    ap.add_argument("--unbuffered", action="store_true", help="the children run as python -u would")
    a = ap.parse_args()
    global UNBUFFERED
    UNBUFFERED = a.unbuffered
    epochs, steps, block = (2, 1000, 10) if a.quick else (5, 4000, 10)
    block_runs, bulk_runs = (1, 1) if a.quick else (5, 3)
    pairs = a.pairs or (2 if a.quick else 11)
    runs, lines = (20, 200) if a.quick else (100, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mode = "unbuffered (PYTHONUNBUFFERED=1)" if UNBUFFERED else "block-buffered (Python's default for a file)"
        print(f"1. capture: a script printing {epochs * steps} lines, one per step, to a {mode} stdout; threads: 1"
              " per run (OMP/OPENBLAS/MKL_NUM_THREADS=1), capture adds one that looks every 0.1 s; runs one at a"
              f" time, each pinned to core {CORE}; {block_runs} runs switching stdout every {block} steps and one"
              f" control run (a, b), {bulk_runs} runs timing the bulk work (c), {pairs} pairs of whole runs, capture"
              " on and off, after one warm-up run per side (e)",
              flush=True)
        cap = figure_capture(epochs, steps, block, block_runs, bulk_runs, pairs, work)
        print_capture(cap)
        print(f"2. extraction: {runs} runs x {lines} captured lines, one metric (DuckDB, its default threads:"
              f" {os.cpu_count()})", flush=True)
        ext = figure_extract(runs, lines, work)
        print(f"   {ext['values']} values from {ext['lines']} lines of {ext['runs']} runs in {ext['seconds']:.3f} s:"
              f" open {ext['open']:.3f}, extract {ext['extract']:.3f}, close {ext['close']:.3f}", flush=True)
    rows = [(f"capture overhead, print per step, {'unbuffered' if UNBUFFERED else 'block-buffered'} stdout"
             " (parts, CPU)", cap["overhead_pct"], "%", 1.0),
            (f"extract 1 metric, {runs} runs x {lines} lines", ext["seconds"], "s", 1.0)]
    print("\n| figure | measured | target | verdict |\n|---|---|---|---|")
    failed = False
    for name, value, unit, target in rows:
        ok = value <= target
        failed |= not ok
        print(f"| {name} | {value:.3f} {unit} | <= {target:g} {unit} | {'pass' if ok else 'FAIL'} |")
    if a.quick:
        print("(--quick: smaller sizes, one run each for a, b and c, 2 pairs; not the figures)")
    print(json.dumps({"capture": cap, "extract": ext}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
