"""Pack replay tasks onto what a machine or cluster has (DESIGN decision 7).

Every task declares what it needs: the recorded run's thread count (a worker
keeps it so floating-point reductions add up in the same order), its peak
memory and a GPU when the run used one. Two workers that keep 2 threads each
on 2 cores would run four busy threads on two cores: ten times slower, not two
times faster. So the scheduler starts a task only when its threads, memory
and GPU fit beside the running ones; ``--workers`` is an upper bound. The
plan's estimate is a simulation of the same admission rule, so it is what the
user waits for.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30


@dataclass(frozen=True)
class Resources:
    """What a task needs or a machine has. ``memory`` 0 means unknown (never limits)."""

    cpus: float
    memory: int = 0
    gpus: float = 0

    def describe(self) -> str:
        parts = [f"{self.cpus:g} core{'s' if self.cpus != 1 else ''}"]
        if self.memory:
            parts.append(f"{self.memory / GIB:.1f} GiB")
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU{'s' if self.gpus != 1 else ''}")
        return ", ".join(parts)


def machine() -> Resources:
    """This machine: the cores this process may use, available memory, visible GPUs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return Resources(cpus=max(1, cores), memory=_available_memory(), gpus=_visible_gpus())


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch (seconds) to ask."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len([p for p in os.listdir("/dev") if p.startswith("nvidia") and p[6:].isdigit()])
    except OSError:
        return 0


def need(task) -> Resources:
    """What one task asks for: the threads, peak memory and GPUs of the run it replays."""
    return Resources(cpus=max(1, getattr(task, "threads", None) or 1), memory=getattr(task, "memory", None) or 0,
                     gpus=getattr(task, "gpus", 0) or 0)


class Pool:
    """Resources in use; the admission rule that the executors and the estimate share."""

    def __init__(self, capacity: Resources, workers: int):
        self.capacity = capacity
        self.workers = max(1, workers)
        self.cpus = 0.0
        self.memory = 0
        self.gpus = 0.0
        self.running = 0

    def fits(self, r: Resources) -> bool:
        if self.running >= self.workers:
            return False
        if self.running == 0:
            return r.gpus <= self.capacity.gpus or not self.capacity.gpus  # alone: runs even if too big
        cap = self.capacity
        return (self.cpus + r.cpus <= cap.cpus
                and (not cap.memory or not r.memory or self.memory + r.memory <= cap.memory)
                and self.gpus + r.gpus <= cap.gpus)

    def take(self, r: Resources) -> None:
        self.cpus += r.cpus
        self.memory += r.memory
        self.gpus += r.gpus
        self.running += 1

    def give(self, r: Resources) -> None:
        self.cpus -= r.cpus
        self.memory -= r.memory
        self.gpus -= r.gpus
        self.running -= 1

    def admit(self, pending: list) -> list:
        """Remove from ``pending`` (in order, longest first) and return the tasks that fit now."""
        started = []
        for task in list(pending):
            r = need(task)
            if self.fits(r):
                self.take(r)
                pending.remove(task)
                started.append(task)
        return started


@dataclass
class Schedule:
    """How many tasks run at once, and why, in words for the plan."""

    workers: int
    capacity: Resources
    reason: str


def plan_workers(tasks_or_needs: list, capacity: Resources | None = None, max_workers: int | None = None,
                 where: str = "cores") -> Schedule:
    """The most tasks that run side by side without oversubscribing, at most ``max_workers``.

    >>> plan_workers([Resources(2)] * 3, Resources(2)).reason
    '2-thread runs on 2 cores: 1 worker'
    """
    capacity = capacity or machine()
    needs = [n if isinstance(n, Resources) else need(n) for n in tasks_or_needs]
    if not needs:
        return Schedule(1, capacity, "nothing to run")
    pool = Pool(capacity, max_workers or len(needs))
    for r in sorted(needs, key=lambda r: (r.cpus, r.memory, r.gpus)):  # smallest first: the most at once
        if pool.fits(r):
            pool.take(r)
    n = max(1, pool.running)
    threads = sorted({int(r.cpus) for r in needs})
    kind = f"{threads[0]}-thread" if len(threads) == 1 else f"{threads[0]}-{threads[-1]}-thread"
    why = f"{kind} runs on {capacity.cpus:g} {where}"
    mem = max(r.memory for r in needs)
    if mem and capacity.memory:
        why += f", {mem / GIB:.1f} of {capacity.memory / GIB:.1f} GiB each"
    if any(r.gpus for r in needs):
        why += f", {capacity.gpus:g} GPU{'s' if capacity.gpus != 1 else ''}"
    why += f": {n} worker{'s' if n != 1 else ''}"
    if max_workers and n == max_workers and n < len(needs):
        why += f" (--workers {max_workers})"
    return Schedule(n, capacity, why)


def simulate(tasks: list, capacity: Resources, workers: int, cost=lambda t: t.estimate) -> float:
    """Wall-clock time of running ``tasks`` under :class:`Pool`'s rule, longest first."""
    pending = sorted(tasks, key=lambda t: -cost(t))
    pool = Pool(capacity, workers)
    now, events, seq = 0.0, [], 0
    while pending or events:
        for task in pool.admit(pending):
            heapq.heappush(events, (now + cost(task), seq, task))
            seq += 1
        if not events:  # nothing fits even alone: cannot happen (a lone task always fits)
            break
        now, _, task = heapq.heappop(events)
        pool.give(need(task))
    return now
