"""One recorded run: its identity, its buffers, its loops and its end.

A run starts lazily at the first FlorDB call and ends at process exit, at
``flor.commit()``, or with an uncaught exception. Everything here must stay
cheap: no DuckDB, no query code, and nothing that can raise into training.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from flordb.record.args import ARGV, LABEL_PREFIX, labels
from flordb.store.layout import Layout
from flordb.record.context import MARK, TOP, Blocks
from flordb.store.segments import IMMUTABLE, SegmentWriter, encode, write_json_atomic



def report(message: str) -> None:
    """A logging problem is reported on stderr; training goes on."""
    try:
        print(f"flordb: {message}", file=sys.stderr)
    except Exception:
        pass


_refused_names: set[str] = set()


def normalize_name(name: Any) -> str | None:
    """The name ``flor.log`` stores for ``name``: ``str(name)``; None (refused) for None and "".

    One warning per distinct name. Lone surrogates are escaped when the
    segment is written (flordb.store.segments.clean_text).
    """
    if name is None or name == "":
        key = repr(name)
        if key not in _refused_names:
            _refused_names.add(key)
            report(f"flor.log({key}, ...) ignored: a name must be a non-empty string")
        return None
    try:
        text = str(name)
    except Exception:
        text = f"<{type(name).__name__}>"
    if not isinstance(text, str) or not text:
        text = f"<{type(name).__name__}>"
    key = f"{type(name).__name__}:{text}"
    if key not in _refused_names:
        _refused_names.add(key)
        report(f"flor.log name {text!r} is a {type(name).__name__}, not a string; stored as {text!r}")
    return text


def new_run_id() -> str:
    """Sortable by start time to the millisecond (the suffix starts with it), unique across processes and hosts."""
    now = time.time()
    millis = int(now * 1000) % 1000
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{millis:03x}{secrets.randbelow(4096):03x}"


def flush_interval() -> float:
    try:
        return float(os.environ.get("FLORDB_FLUSH_INTERVAL", "0"))
    except ValueError:
        return 0.0


class Run:
    """Record mode: buffers events and writes them as segments."""

    mode = "record"

    def __init__(self, layout: Layout, overrides: dict[str, str]):
        self.layout = layout
        self.run_id = new_run_id()
        self.dir = layout.run_dir(self.run_id)
        self.overrides = overrides
        self.used_overrides: set[str] = set()
        self.args: dict[str, Any] = {}
        self.buffer: list = []  # (name, value, ctx) triples of atomic values, appended by flor.log
        self.pending_args: list = []
        self.events: list = []  # loop/iter/ckpt rows
        self.blocks = Blocks()
        self.cur = [TOP]  # cur[0] is the current loop context, an int (see record/context.py)
        self.objects: dict[str, Any] = {}
        self.outer_path: tuple = ()
        self.outer_paths: set[tuple] = set()
        self.user_loops: dict[tuple, tuple[int, int]] = {}  # flor.iteration path -> (parent ctx, block ctx)
        self.nested_exit: float | None = None
        self.outer_total: int | None = None
        self.checkpointed: int | None = None  # iteration checkpointed in the current iteration
        self.saved: int | None = None  # the last main-loop iteration whose checkpoint was submitted
        self.ended: tuple[int, bool] | None = None  # the last main-loop iteration that ended, had it a nested loop
        self.ckpt_writer = None
        self.ckpt_policy = None
        self.ckpt_seconds: float | None = None
        self.main_frame = None  # the frame iterating the main loop: its plain variables go with checkpoints
        self.finished = False
        self.lock = threading.Lock()
        self.writer = SegmentWriter(self.dir)
        self.capture = None  # console capture (record/capture.py), installed at start
        self.min_flush = flush_interval()
        self.last_flush = 0.0
        self.start()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "<interactive>"
        meta = {
            "run_id": self.run_id,
            "mode": self.mode,
            "script": _relative(script, self.layout.work_tree),
            "argv": list(ARGV) or sys.argv[1:],
            "labels": labels(self.overrides),
            "started": self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "work_tree": str(self.layout.work_tree),
            "perf_start": time.perf_counter(),  # loop times are on this clock
            "startup": _process_age(),
            "cwd": _relative(os.getcwd(), self.layout.work_tree),
        }
        meta.update(self.version_info())
        meta.update(self.extra_meta())
        write_json_atomic(self.dir / "run.json", meta)
        self.heartbeat = _start_heartbeat(self.dir / "heartbeat")
        _warm_up_writer()
        atexit.register(self.finish)
        _chain_excepthook(self)
        if self.mode == "record":
            from flordb.record.capture import start as start_capture

            self.capture = start_capture(self.cur, self.blocks)
            from flordb.record import lineage

            self.events.extend(lineage.PENDING)  # flor.load_checkpoint called before the run started
            lineage.PENDING.clear()

    def version_info(self) -> dict:
        """Snapshot the code on a private git ref; never touches the user's git state."""
        try:
            from flordb.version import snapshot

            snap = snapshot(self.layout.work_tree, self.layout.private_git, keep_out=(self.layout.home,))
            return {
                "version": snap.commit,
                "git_dir": snap.git_dir,
                "user_head": snap.head,
                "user_branch": snap.branch,
                "skipped": list(snap.skipped),
                "private_git": snap.private,
            }
        except Exception as exc:  # versioning must not stop training
            report(f"could not snapshot the code version: {exc}")
            return {"version": None}

    def extra_meta(self) -> dict:
        return {}

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        with self.lock:
            if self.finished:
                return
            self.finished = True
        if getattr(self, "heartbeat", None) is not None:
            self.heartbeat.set()
        if status == "finished":
            self.end_loop()
        self.close_checkpoints()
        if self.capture is not None:
            self.capture.close()
        self.flush(force=True)  # every segment is on disk before end.json says the run ended
        unused = {k for k in self.overrides if not k.startswith(LABEL_PREFIX)} - self.used_overrides
        if unused:
            report(f"--kwargs {', '.join(sorted(unused))} matched no flor.arg call")
        try:
            write_json_atomic(
                self.dir / "end.json",
                {"status": status, "ended": time.time(), "error": error, "threads": _torch_threads(),
                 **_resource_use()},
            )
        except Exception as exc:
            report(f"could not close the run: {exc}")
            return
        if self.mode == "record":
            report(f"run {self.run_id} {status}; query it: flordb query \"SELECT * FROM logs WHERE run_id = '{self.run_id}'\"")

    def close_checkpoints(self) -> None:
        if self.ckpt_writer is not None:
            try:
                self.ckpt_writer.close()
            except Exception as exc:
                report(f"checkpoints may be incomplete: {exc}")

    # -- buffers ---------------------------------------------------------------

    def flush(self, force: bool = False) -> None:
        """Write what is buffered as one segment; called per main-loop iteration and at exit.

        Synchronous on purpose: when iteration i + 1 starts, iteration i is on
        disk, so a crash loses at most the iteration in progress.
        """
        now = time.perf_counter()
        if not force and now - self.last_flush < self.min_flush:
            return
        self.last_flush = now
        logs = self.buffer[:]
        del self.buffer[: len(logs)]
        args, self.pending_args = self.pending_args, []
        console = None
        if self.capture is not None:
            console, notes = self.capture.drain(final=self.finished)
            self.events.extend(notes)
        events = self.events[:]
        del self.events[: len(events)]
        try:
            self.writer.write(logs, args, events, self.blocks.table, console=console)
        except Exception as exc:
            report(f"could not write records ({len(logs)} lost): {exc}")

    # -- user calls ----------------------------------------------------------------

    def make_log(self):
        """The bound ``flor.log`` of this run: one tuple and one append per call."""
        append, cur = self.buffer.append, self.cur

        def log(name, value):
            try:  # free when nothing raises; flor.log never raises into training
                if type(name) is not str or not name:
                    name = normalize_name(name)
                    if name is None:
                        return value
                if type(value) is not float and type(value) not in IMMUTABLE:
                    append((name, encode(name, value), cur[0]))  # now: it may change, or pin a tensor's graph
                else:
                    append((name, value, cur[0]))
            except Exception as exc:
                report(f"flor.log could not record a value: {type(exc).__name__}")
            return value

        return log

    def register(self, objects: dict, overhead: float | None) -> None:
        """Objects saved at each main-loop iteration (DESIGN decision 4)."""
        self.objects.update(objects)
        if self.ckpt_writer is None:
            from flordb.record.checkpoint import CheckpointPolicy, CheckpointWriter
            from flordb.store.objects import ObjectStore

            self.ckpt_policy = CheckpointPolicy(0.05 if overhead is None else overhead)
            self.ckpt_writer = CheckpointWriter(ObjectStore(self.layout.objects), self._checkpoint_written)

    def _checkpoint_written(self, iteration: int, entries: list) -> None:
        """Called from the writer thread once the blobs are durable."""
        path = self.outer_path
        for name, fmt, digest, nbytes, seconds in entries:
            self.events.append({"kind": "ckpt", "name": name, "path": path, "coord": (iteration,),
                                "txt": digest, "aux": fmt, "n": nbytes, "t0": seconds})

    def maybe_checkpoint(self, iteration: int) -> None:
        """Checkpoint at the nested loop's exit, or at the end of an iteration without one."""
        if self.checkpointed == iteration or not self.objects or self.ckpt_writer is None:
            return
        self.checkpointed = iteration
        is_last = self.outer_total is not None and iteration == self.outer_total - 1
        try:
            if self.ckpt_policy.should_checkpoint(iteration, is_last):
                from flordb.record.carry import snapshot

                self.ckpt_seconds = self.ckpt_writer.submit(iteration, self.objects, snapshot(self.main_frame))
                self.saved = iteration
        except Exception as exc:
            report(f"checkpoint of iteration {iteration} failed: {exc}")

    def end_loop(self) -> None:
        """The main loop ended: save its last iteration if the policy did not.

        A loop whose length is unknown while it runs (``flor.iteration``, a
        generator) cannot tell the policy which iteration is the last, and a
        replay of the run's end (or of its last iterations) wants that state.
        Called when such a loop is known to be over: its iterable is exhausted,
        another main loop starts, ``flor.checkpointing`` exits, the run
        finishes (not when an exception ends it). A checkpoint of an iteration
        without a nested loop is its end state, which is the state now; one with
        a nested loop is the nested loop's exit state, gone by now, so that
        iteration is left to the policy.
        """
        ended, self.ended = self.ended, None
        if ended is None or not self.objects or self.ckpt_writer is None:
            return
        i, nested = ended
        if nested or self.saved == i:
            return
        try:
            from flordb.record.carry import snapshot, user_frame

            self.ckpt_writer.submit(i, self.objects, snapshot(self.main_frame or user_frame()))
            self.saved = i
            self.ckpt_writer.flush()  # its rows carry this loop's path (see _checkpoint_written)
        except Exception as exc:
            report(f"checkpoint of iteration {i} failed: {exc}")

    def unregister(self, objects: dict) -> None:
        for key in objects:
            self.objects.pop(key, None)

    def arg(self, name: str, default: Any) -> Any:
        value = default
        if name in self.overrides:
            self.used_overrides.add(name)
            from flordb.record.args import cast

            try:
                value = cast(self.overrides[name], default)
            except ValueError as exc:
                report(f"--kwargs {name}: {exc}; using the default {default!r}")
        if name in self.args and self.args[name] != value:
            report(f"flor.arg({name!r}) called twice with different values; keeping the first")
            return self.args[name]
        if name not in self.args:
            self.args[name] = value
            self.pending_args.append((name, value))
        return value

    def marking(self) -> tuple:
        """Where a loop's context changes, what marks captured text with it (record/capture.py); Nones without."""
        return (self.capture and self.capture.marking) or (None, None)

    def enter(self, ctx: int) -> None:
        """The current loop context is now ``ctx`` (off the per-iteration path of ``flor.loop``)."""
        self.cur[0] = ctx
        text, mark = self.marking()
        if mark is not None:
            text(MARK)
            mark(ctx)

    def loop(self, name: str, iterable: Iterable) -> Iterator:
        parent = self.cur[0]
        parent_path, parent_coord = self.blocks.decode(parent)
        path = (*parent_path, str(name))
        if len(path) == 1:
            return self.outer_loop(path, iterable)
        return self.inner_loop(path, parent, parent_coord, iterable)

    def outer_loop(self, path: tuple, iterable: Iterable) -> Iterator:
        """A top-level loop: timed per iteration, flushed per iteration, with a progress bar."""
        events, perf = self.events, time.perf_counter
        self.end_loop()  # the previous main loop is over
        bar = _progress(path[0], iterable)
        self.outer_path = path
        self.outer_total = _length(iterable)
        if path in self.outer_paths:  # its coordinates repeat: tell the catalog
            events.append({"kind": "reloop", "path": path})
        self.outer_paths.add(path)
        base = self.blocks.open(path, ())
        i = -1
        from flordb.record.carry import user_frame

        self.main_frame = user_frame()
        try:
            for i, item in enumerate(iterable):
                self.enter(base + i)
                self.nested_exit = None
                self.checkpointed = None
                self.ckpt_seconds = None
                t0 = perf()
                yield item
                t1 = perf()
                self.enter(TOP)
                events.append({"kind": "iter", "path": path, "coord": (i,), "t0": t0, "t1": t1,
                               "t2": self.nested_exit})
                self.end_iteration(i, t0, t1)
                if bar is not None:
                    bar.update(1)
            i = None
            if self.outer_total is None:
                self.end_loop()  # exhausted
        finally:
            if i is not None:  # left mid-iteration (a break, an exception): no state is an iteration's end
                self.ended = None
            self.enter(TOP)
            self.main_frame = None
            if bar is not None:
                bar.close()

    def end_iteration(self, i: int, t0: float, t1: float) -> None:
        self.ended = (i, self.nested_exit is not None)
        if self.objects:
            self.maybe_checkpoint(i)
            if self.ckpt_policy is not None:
                spent = self.ckpt_seconds or 0.0  # the policy wants training time without checkpoints
                self.ckpt_policy.observe(max(0.0, t1 - t0 - spent), self.ckpt_seconds)
        self.flush()

    def inner_loop(self, path: tuple, parent: int, coord: tuple, iterable: Iterable) -> Iterator:
        cur = self.cur
        before = self.blocks.open(path, coord) - 1  # context of iteration n is before + n + 1
        t0 = time.perf_counter()
        n = 0
        text, mark = self.marking()
        try:
            if mark is None:
                for n, item in enumerate(iterable, 1):
                    cur[0] = before + n
                    yield item
            else:
                for n, item in enumerate(iterable, 1):
                    cur[0] = before + n
                    text(MARK)
                    mark(before + n)
                    yield item
        finally:
            self.enter(parent)
            t1 = time.perf_counter()
            self.events.append({"kind": "loop", "path": path, "coord": coord, "n": n, "t0": t0, "t1": t1})
            if len(path) == 2 and self.nested_exit is None:
                self.nested_exit = t1
                self.on_nested_exit(coord[0])

    # -- user-driven loops (flor.iteration) ------------------------------------------

    @contextmanager
    def iteration(self, name: str, i: int) -> Iterator[None]:
        """Iteration ``i`` of loop ``name``: the coordinates of ``flor.loop``'s iteration ``i``.

        Consecutive calls under the same enclosing iteration share one loop
        execution (block); a top-level one is a main-loop iteration: timed,
        checkpointed and flushed at its end like one of ``outer_loop``.
        """
        parent = self.cur[0]
        parent_path, parent_coord = self.blocks.decode(parent)
        path = (*parent_path, str(name))
        try:
            i = int(i)
            if not 0 <= i < (1 << 32):
                raise ValueError
        except (TypeError, ValueError):
            report(f"flor.iteration({name!r}, {i!r}): the iteration must be an int >= 0; not recorded")
            yield
            return
        last = self.user_loops.get(path)
        if last is None or last[0] != parent:
            if len(path) == 1:
                self.end_loop()  # the previous main loop is over
                if path in self.outer_paths:
                    self.events.append({"kind": "reloop", "path": path})
                self.outer_paths.add(path)
            last = self.user_loops[path] = (parent, self.blocks.open(path, parent_coord))
        if len(path) == 1:
            with self.outer_iteration(path, last[1], i):
                yield
            return
        self.enter(last[1] + i)
        try:
            yield
        finally:
            self.enter(parent)

    @contextmanager
    def outer_iteration(self, path: tuple, base: int, i: int) -> Iterator[None]:
        perf = time.perf_counter
        self.outer_path = path
        from flordb.record.carry import user_frame

        self.main_frame = user_frame()
        self.outer_total = None
        self.enter(base + i)
        self.nested_exit = None
        self.checkpointed = None
        self.ckpt_seconds = None
        t0 = perf()
        try:
            yield
        except BaseException:
            self.enter(TOP)
            self.ended = None  # the state is no iteration's end state
            self.main_frame = None
            raise
        t1 = perf()
        self.enter(TOP)
        self.events.append({"kind": "iter", "path": path, "coord": (i,), "t0": t0, "t1": t1, "t2": self.nested_exit})
        self.end_iteration(i, t0, t1)
        self.main_frame = None

    def on_nested_exit(self, iteration: int) -> None:
        """The first nested loop of a main-loop iteration ended: its exit state is worth saving."""
        if self.objects:
            self.maybe_checkpoint(iteration)


def _relative(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root) if not os.path.relpath(path, root).startswith("..") else path
    except ValueError:
        return path


def _warm_up_writer() -> None:
    """Import, on this (the training) thread, what a run's last flush needs.

    concurrent.futures.thread cannot be imported once the interpreter shuts
    down, which is when a run without loops first flushes. Nothing is imported
    on a background thread: a thread importing pyarrow (hence numpy) while the
    script imports numpy made the script see a "partially initialized module
    'numpy'" (issue 11); pyarrow is imported by the first flush instead.
    """
    import concurrent.futures.thread  # noqa: F401


def heartbeat_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("FLORDB_HEARTBEAT_INTERVAL", "10")))
    except ValueError:
        return 10.0


def _start_heartbeat(path: Path) -> threading.Event:
    """Touch ``path`` every few seconds while the process lives (the catalog's liveness test).

    A daemon thread, so it dies with the process, wherever it runs: a run
    killed on another host of a shared project stops beating and is seen as
    interrupted once the beat is older than FLORDB_HEARTBEAT_LIMIT.
    """
    stop = threading.Event()
    interval = heartbeat_interval()

    def beat() -> None:
        while True:
            try:
                path.touch()
            except OSError:
                pass
            if stop.wait(interval):
                return

    try:
        path.touch()
        threading.Thread(target=beat, name="flordb-heartbeat", daemon=True).start()
    except Exception as exc:
        report(f"no heartbeat for this run: {exc}")
    return stop


def _torch_threads() -> int | None:
    """torch's intra-op thread count, if the script used torch (replay reuses it)."""
    torch = sys.modules.get("torch")
    try:
        return int(torch.get_num_threads()) if torch is not None else None
    except Exception:
        return None


def _resource_use() -> dict:
    """Peak resident memory (bytes) and GPUs used: what a replay task of this run will need."""
    out: dict = {}
    try:
        import resource

        unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        out["peak_rss"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                           + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * unit
    except Exception:
        pass
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            used = [d for d in range(torch.cuda.device_count()) if torch.cuda.max_memory_allocated(d) > 0]
            out["gpus"] = len(used) or 1
            out["gpu_memory"] = max(torch.cuda.max_memory_allocated(d) for d in used) if used else 0
        else:
            out["gpus"] = 0
    except Exception:
        pass
    return out


def _process_age() -> float | None:
    """Seconds since this process started (Linux), for replay cost estimates."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except Exception:
        return None


def _length(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except Exception:
        return None


def _progress(name: str, iterable: Iterable):
    if os.environ.get("FLORDB_PROGRESS", "1") == "0":
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    from flordb.record.streams import raw

    return tqdm(total=_length(iterable), desc=name, file=raw(sys.stderr), disable=None, leave=False, dynamic_ncols=True)


def _chain_excepthook(run: Run) -> None:
    """Mark the run failed on an uncaught exception, then defer to the previous hook."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            message = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            run.finish("failed", message)
        finally:
            previous(exc_type, exc, tb)

    sys.excepthook = hook
