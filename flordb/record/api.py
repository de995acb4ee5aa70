"""The runtime API: log, arg, loop, checkpointing, commit.

The implementation is picked once per mode. Until the first call, each public
function is a *starter* that begins the run; the run then rebinds the names on
this module and on ``flordb`` to its fast bound versions, so a ``flor.log`` in a
hot loop is one tuple and one list append.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TypeVar

from flordb.record.args import take_overrides

T = TypeVar("T")

# Taken at import so that the user's own argparse never sees them.
OVERRIDES = take_overrides(sys.argv)

_run = None
_broken = False  # the store could not be opened once: do not retry on every call


def current_run():
    """The active run, started if needed (None when FlorDB is disabled)."""
    global _run, _broken
    if (_run is None or _run.finished) and not _broken:
        try:
            _run = _make_run()
        except Exception as exc:  # e.g. a read-only store: train without FlorDB rather than crash
            from flordb.record.run import report

            report(f"recording is off for this process: {exc}")
            _run, _broken = None, True
        _bind(_run)
    return _run


def _make_run():
    from flordb.store.layout import locate

    if os.environ.get("FLORDB_DISABLE", "") not in ("", "0"):
        return None
    task = os.environ.get("FLORDB_REPLAY_TASK")
    if task:
        from flordb.record.replay import ReplayRun

        return ReplayRun(locate(), OVERRIDES, task)
    from flordb.record.run import Run

    return Run(locate(), OVERRIDES)


def _bind(run) -> None:
    """Swap the public names for the run's fast implementations."""
    import flordb

    if run is None:
        impl = {"log": _log_off, "loop": _loop_off, "arg": _arg_off}
    else:
        impl = {"log": run.make_log(), "loop": run.loop, "arg": run.arg}
    for key, fn in impl.items():
        setattr(flordb, key, fn)
        globals()[key] = fn


def _unbind() -> None:
    import flordb

    for key, fn in STARTERS.items():
        setattr(flordb, key, fn)
        globals()[key] = fn


def _log_off(name: str, value: T) -> T:
    return value


def _loop_off(name: str, iterable: Iterable[T]) -> Iterable[T]:
    return iterable


def _arg_off(name: str, default: T) -> T:
    """Recording off: overrides still apply, so the script behaves the same."""
    if name not in OVERRIDES:
        return default
    from flordb.record.args import cast

    try:
        return cast(OVERRIDES[name], default)
    except ValueError:
        return default


def log_starter(name: str, value: T) -> T:
    """Record ``value`` under ``name`` at the current loop coordinates; returns ``value``."""
    current_run()
    return globals()["log"](name, value) if globals()["log"] is not log_starter else value


def loop_starter(name: str, iterable: Iterable[T]) -> Iterator[T]:
    """Iterate ``iterable`` as loop ``name`` (0-based coordinates in ``logs``)."""
    current_run()
    fn = globals()["loop"]
    return fn(name, iterable) if fn is not loop_starter else iter(iterable)


def arg_starter(name: str, default: T) -> T:
    """A hyper-parameter: ``default`` unless overridden with ``--kwargs name=value``."""
    current_run()
    fn = globals()["arg"]
    return fn(name, default) if fn is not arg_starter else default


STARTERS = {"log": log_starter, "loop": loop_starter, "arg": arg_starter}
log, loop, arg = log_starter, loop_starter, arg_starter


@contextmanager
def checkpointing(overhead: float | None = None, **objects: Any) -> Iterator[None]:
    """Register objects whose state is saved at main-loop iterations, for replay.

    ``overhead`` bounds the fraction of training time spent checkpointing
    (default 0.05).
    """
    run = current_run()
    if run is None:
        yield
        return
    try:
        run.register(objects, overhead)
    except Exception as exc:  # never crash training
        from flordb.record.run import report

        report(f"checkpointing disabled: {exc}")
    try:
        yield
    except BaseException:
        run.unregister(objects)
        raise
    run.end_loop()  # the loop inside ended: its last iteration is saved (see Run.end_loop)
    run.unregister(objects)


@contextmanager
def iteration(name: str, i: int) -> Iterator[int]:
    """Mark iteration ``i`` of a user-driven loop ``name`` (a ``while`` loop with a counter).

    The same coordinates, checkpoints and flushes as an iteration of
    ``flor.loop(name, ...)``; the body always runs (replay cannot skip it, so
    iterations a replay does not need run without logging).
    """
    run = current_run()
    if run is None:
        yield i
        return
    with run.iteration(name, i):
        yield i


def commit() -> None:
    """Flush and end the current run; the next FlorDB call starts a new one."""
    global _run
    if _run is not None and not _run.finished:
        _run.finish()
    _run = None
    _unbind()
