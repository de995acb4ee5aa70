"""Which way to checkpoint: synchronous, clone + background thread, or fork.

Synthetic MLP (torch.nn.Sequential of Linear layers, ~26 MB of parameters)
with Adam (whose state doubles that), trained on a fixed random batch on CPU.

Measures, in one process, the wall time of an ``--iters``-iteration training
loop (until every checkpoint is durable) with a checkpoint every iteration and
with one every ``--every`` iterations (plus the last), under each strategy and
without checkpoints. Runs alternate between strategies within a repetition
(order rotated); medians of ``--reps``; reported as ratios to the loop without
checkpoints. The blocking time per checkpoint is the median training-thread
time of one checkpoint call in the sparse mode, where the background is idle.

Strategies:
  sync    capture + serialize + sha256 + write on the training thread
  thread  CheckpointWriter: clone on the training thread, serialize + write on
          a background thread (at most 2 copies pending)
  fork    os.fork(): the child serializes its copy-on-write snapshot and writes
          it; at most 2 children in flight (the parent waits for the oldest)

Run: python benchmarks/checkpoint_strategies.py [--iters 20] [--reps 3] [--every 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flordb.record.checkpoint import CheckpointWriter  # noqa: E402
from flordb.record.state import capture, serialize, serialize_one, serialize_rng  # noqa: E402
from flordb.store.objects import ObjectStore  # noqa: E402


def make_job(width: int, layers: int, batch: int):
    torch.manual_seed(0)
    mods: list[torch.nn.Module] = []
    for _ in range(layers):
        mods += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    mods.append(torch.nn.Linear(width, 10))
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, width)
    y = torch.randint(0, 10, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return model, opt, step


class Sync:
    name = "sync"

    def __init__(self, store: ObjectStore):
        self.store = store

    def checkpoint(self, it: int, objects: dict) -> None:
        for _name, (_fmt, data) in serialize(capture(objects)).items():
            self.store.put(data)

    def finish(self) -> None:
        pass


class Thread:
    name = "thread"

    def __init__(self, store: ObjectStore):
        self.writer = CheckpointWriter(store, lambda it, entries: None)

    def checkpoint(self, it: int, objects: dict) -> None:
        self.writer.submit(it, objects)

    def finish(self) -> None:
        self.writer.close()
        if self.writer.errors:
            raise RuntimeError(f"writer errors: {self.writer.errors}")

    def idle(self) -> None:
        self.writer.flush()


class Fork:
    name = "fork"

    def __init__(self, store: ObjectStore, max_children: int = 2):
        self.store = store
        self.max_children = max_children
        self.children: list[int] = []

    def _reap(self, pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"checkpoint child {pid} failed")

    def checkpoint(self, it: int, objects: dict) -> None:
        while len(self.children) >= self.max_children:
            self._reap(self.children.pop(0))
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: its memory is a snapshot of the parent's
            code = 1
            try:
                for obj in objects.values():
                    _fmt, data = serialize_one("state_dict", obj.state_dict())
                    self.store.put(data)
                from flordb.record.state import capture_rng

                self.store.put(serialize_rng(capture_rng())[1])
                code = 0
            finally:
                os._exit(code)
        self.children.append(pid)

    def finish(self) -> None:
        while self.children:
            self._reap(self.children.pop(0))

    def idle(self) -> None:
        self.finish()


def run_loop(
    strategy_cls, step, objects, iters: int, base: Path, every: int = 1
) -> tuple[float, float]:
    """Wall seconds of ``iters`` iterations (checkpoints durable), median call seconds."""
    root = Path(tempfile.mkdtemp(prefix="ckpt-", dir=base))
    store = ObjectStore(root)
    strat = strategy_cls(store) if strategy_cls else None
    calls: list[float] = []
    t0 = time.perf_counter()
    for it in range(iters):
        step()
        if strat is not None and (it % every == 0 or it == iters - 1):
            c0 = time.perf_counter()
            strat.checkpoint(it, objects)
            calls.append(time.perf_counter() - c0)
    if strat is not None:
        strat.finish()
    wall = time.perf_counter() - t0
    shutil.rmtree(root)
    return wall, (statistics.median(calls) if calls else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--every", type=int, default=5, help="the sparse checkpoint period")
    ap.add_argument("--width", type=int, default=1792)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="flordb-bench-", dir=args.dir))
    model, opt, step = make_job(args.width, args.layers, args.batch)
    objects = {"model": model, "optimizer": opt}
    for _ in range(3):
        step()  # warm up; creates Adam state
    pbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    sbytes = sum(len(d) for _f, d in serialize(capture(objects)).values())
    t0 = time.perf_counter()
    for _ in range(5):
        step()
    it_s = (time.perf_counter() - t0) / 5
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads;"
        f" parameters {pbytes / 1e6:.1f} MB, serialized state {sbytes / 1e6:.1f} MB;"
        f" iteration {it_s * 1e3:.0f} ms; writing to {base}"
    )

    strategies = [("sync", Sync), ("thread", Thread), ("fork", Fork)]
    names = ["none"] + [n for n, _ in strategies]
    classes = {"none": None, **dict(strategies)}
    modes = [1, args.every]
    walls = {(n, k): [] for n in names for k in modes}
    calls = {(n, k): [] for n in names for k in modes}
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for k in modes:
            for n in order:
                w, c = run_loop(classes[n], step, objects, args.iters, base, every=k)
                walls[n, k].append(w)
                calls[n, k].append(c)
    shutil.rmtree(base, ignore_errors=True)

    med = statistics.median
    print()
    print(
        f"{args.iters} iterations; median of {args.reps} alternating runs; ratio = loop wall"
        f" time (until all checkpoints are durable) / loop without checkpoints"
    )
    print(
        f"{'strategy':<9}{'blocking/ckpt':>15}{'ratio every ' + str(args.every):>17}"
        f"{'call, every 1':>15}{'ratio every 1':>15}"
    )
    for n in names:
        e = args.every
        b = f"{med(calls[n, e]) * 1e3:.0f} ms" if n != "none" else "-"
        c = f"{med(calls[n, 1]) * 1e3:.0f} ms" if n != "none" else "-"
        r1 = med(walls[n, 1]) / med(walls["none", 1])
        re_ = med(walls[n, e]) / med(walls["none", e])
        print(f"{n:<9}{b:>15}{re_:>16.2f}x{c:>15}{r1:>14.2f}x")
    print(
        f"(none: {med(walls['none', 1]) / args.iters * 1e3:.0f} ms/iteration;"
        f" blocking = median training-thread time of one checkpoint call when checkpointing"
        f" every {args.every} iterations, so the background is idle)"
    )


if __name__ == "__main__":
    main()
