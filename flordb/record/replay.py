"""Replay mode: the user's (patched) script re-run by a hindsight worker.

The worker reads a task (written by :mod:`flordb.hindsight.plan`) naming the
recorded run, its hyper-parameters, the main-loop iterations to produce values
for, and the checkpoints it may restore. DESIGN decision 5 gives the
semantics: an iteration is ``pre-code; nested loop; post-code``; the nested
loop is skipped by restoring its exit state when the task allows it, so
post-code side effects happen exactly once, as in the original. Iterations
before ``start`` that the worker executes only rebuild state and log nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from flordb.record.context import TOP
from flordb.record.run import Run, normalize_name, report
from flordb.store.segments import IMMUTABLE, encode
from flordb.store.layout import Layout


class ReplayRun(Run):
    mode = "replay"

    def __init__(self, layout: Layout, overrides: dict[str, str], task_path: str):
        self.task = json.loads(Path(task_path).read_text())
        t = self.task
        self.wanted = set(t["names"]) | set(t.get("fidelity", ()))
        self.live = [bool(t.get("prefix_live"))]
        self.checkpoints: dict[int, dict[str, list]] = {int(k): v for k, v in t.get("checkpoints", {}).items()}
        self.skip_nested = False
        self.main_done = False
        super().__init__(layout, overrides)

    def version_info(self) -> dict:
        return {"version": self.task.get("version")}

    def extra_meta(self) -> dict:
        t = self.task
        return {"replay_of": t["run_id"], "replay_id": t["replay_id"], "task": t.get("task_id")}

    def make_log(self):
        append, cur, live, wanted = self.buffer.append, self.cur, self.live, self.wanted

        def log(name, value):
            try:
                if type(name) is not str:
                    name = normalize_name(name)
                if live[0] and name in wanted:
                    append((name, value if type(value) in IMMUTABLE else encode(name, value), cur[0]))
            except Exception as exc:  # never raise into the replayed script
                report(f"flor.log could not record a value: {type(exc).__name__}")
            return value

        return log

    def arg(self, name: str, default: Any) -> Any:
        """The recorded run's value, so the replay computes what the original did."""
        args = self.task.get("args", {})
        value = args.get(name, default)
        if name not in self.args:
            self.args[name] = value
        return value

    def register(self, objects: dict, overhead: float | None) -> None:
        self.objects.update(objects)  # restored from checkpoints; never saved again

    # -- loops ------------------------------------------------------------------

    def outer_loop(self, path: tuple, iterable: Iterable) -> Iterator:
        t = self.task
        if self.main_done or path[0] != t["main_loop"]:
            yield from super().outer_loop(path, iterable)
            return
        start, stop, warm = t["start"], t["stop"], t["warm"]
        restore_before = t.get("restore_before")
        cur, perf = self.cur, time.perf_counter
        self.outer_path = path
        from flordb.record.carry import user_frame

        self.main_frame = user_frame()
        base = self.blocks.open(path, ())
        i = -1
        for i, item in enumerate(iterable):
            if i < warm:
                continue
            if i >= stop:
                break
            if restore_before is not None and i == warm:
                self.restore(restore_before)
            self.live[0] = i >= start
            self.skip_nested = i in self.checkpoints and bool(t.get("nested")) and (
                t["strategy"] == "skip" or (i < start and t.get("warm_skip", True)))
            cur[0] = base + i
            t0 = perf()
            yield item
            t1 = perf()
            cur[0] = TOP
            self.events.append({"kind": "iter", "path": path, "coord": (i,), "t0": t0, "t1": t1,
                                "t2": None})
            self.flush()
        cur[0] = TOP
        self.main_frame = None
        self.main_done = True
        self.skip_nested = False
        self.live[0] = bool(t.get("suffix"))
        if not t.get("suffix"):
            self.stop_early()

    @contextmanager
    def outer_iteration(self, path: tuple, base: int, i: int) -> Iterator[None]:
        """A main-loop iteration marked with ``flor.iteration``: its body cannot be skipped.

        Iterations before ``start`` run without logging (their nested loop is
        skipped by restoring its exit state where that is allowed, as in warm-up),
        and the worker ends at ``stop`` unless the task needs the suffix.
        """
        t = self.task
        if self.main_done or path[0] != t["main_loop"]:
            with super().outer_iteration(path, base, i):
                yield
            return
        start, stop = t["start"], t["stop"]
        if i >= stop and not t.get("suffix"):
            self.stop_early()
        self.outer_path = path
        from flordb.record.carry import user_frame

        self.main_frame = user_frame()
        self.live[0] = start <= i < stop
        self.skip_nested = i in self.checkpoints and bool(t.get("nested")) and (
            t["strategy"] == "skip" or (i < start and t.get("warm_skip", True)))
        self.cur[0] = base + i
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.cur[0] = TOP
            self.skip_nested = False
            self.live[0] = bool(t.get("suffix")) and i >= stop - 1
        self.events.append({"kind": "iter", "path": path, "coord": (i,), "t0": t0, "t1": time.perf_counter(),
                            "t2": None})
        self.flush()

    def stop_early(self) -> None:
        """The task's last iteration is done: write everything, then leave at once.

        Nothing after this point is replayed, so the interpreter's teardown is
        skipped: with torch loaded it takes about a second, more than a short
        replay's own work. Every value is on disk (``finish``) before the exit.
        """
        self.finish()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed or broken stream: nothing left to keep
                pass
        os._exit(0)

    def inner_loop(self, path: tuple, parent: int, coord: tuple, iterable: Iterable) -> Iterator:
        if len(path) == 2 and self.skip_nested:
            self.skip_nested = False  # only the first nested loop of an iteration is skipped
            self.restore(coord[0])
            return iter(())
        return super().inner_loop(path, parent, coord, iterable)

    def on_nested_exit(self, iteration: int) -> None:
        pass

    def restore(self, iteration: int) -> None:
        """Load the saved exit state of ``iteration`` into the live objects and RNGs."""
        from flordb.record.state import restore
        from flordb.store.objects import ObjectStore

        saved = self.checkpoints[iteration]
        store = ObjectStore(self.layout.objects)
        blobs = {name: (fmt, store.get(digest)) for name, (fmt, digest) in saved.items()}
        missing = set(self.objects) - set(blobs)
        if missing:
            raise RuntimeError(f"checkpoint of iteration {iteration} lacks {sorted(missing)}")
        restored = restore(self.objects, blobs, rng=True)
        for name, value in restored.items():
            if value is not self.objects[name]:
                report(f"replay cannot rebind immutable checkpointed object {name!r}; register a mutable one")
        self.restore_variables(iteration, blobs)

    def restore_variables(self, iteration: int, blobs: dict) -> None:
        """Bind the carried variables the plan names to their values saved with checkpoint ``iteration``.

        Only at the first iteration the worker executes: later ones compute them as the original did.
        """
        from flordb.record import carry

        names = self.task.get("carry")
        if not names or iteration != self.task.get("carry_at"):
            return
        if self.main_frame is None:
            raise RuntimeError("the replay lost the frame of the main loop; cannot restore carried variables")
        if carry.VARS_NAME not in blobs:
            raise RuntimeError(f"checkpoint of iteration {iteration} saved no variables; the plan needs"
                               f" {names}")
        missing = carry.restore(self.main_frame, carry.decode(blobs[carry.VARS_NAME][1]), names)
        if missing:
            raise RuntimeError(f"checkpoint of iteration {iteration} lacks the variables {missing}")
