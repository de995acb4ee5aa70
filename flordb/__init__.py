"""FlorDB: SQL-queryable hindsight logging for model training.

The record API (``log``, ``arg``, ``loop``, ``checkpointing``, ``commit``) is
imported eagerly and is cheap; the query side (``query``, ``dataframe``,
``replay``, ``compare``) is imported on first use, so a training process never
loads DuckDB. In an interactive session (a notebook, IPython, the Python
prompt) the query side is imported with ``flordb``, so the first query answers
as fast as the next ones.
"""

from flordb.record.api import arg, checkpointing, commit, iteration, log, loop

__all__ = ["log", "arg", "loop", "iteration", "checkpointing", "commit", "load_checkpoint", "resume_file", "query",
           "dataframe", "replay", "compare"]
__version__ = "0.1.0"

_LAZY = {
    "query": "flordb.api",
    "dataframe": "flordb.api",
    "replay": "flordb.hindsight.api",
    "compare": "flordb.comparison",
    "load_checkpoint": "flordb.record.lineage",
    "resume_file": "flordb.record.lineage",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flordb' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def _interactive() -> bool:
    """A notebook, IPython or the Python prompt: where the next thing typed is a query."""
    import sys

    return bool(sys.flags.interactive) or hasattr(sys, "ps1") or "IPython" in sys.modules


if _interactive():
    try:
        from flordb.api import preload as _preload

        _preload()
    except Exception:  # never let a warm-up break the import; the first query will say what is wrong
        pass
