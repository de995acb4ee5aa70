"""FlorDB: SQL-queryable hindsight logging for model training.

The record API (``log``, ``arg``, ``loop``, ``checkpointing``, ``commit``) is
imported eagerly and is cheap; the query side (``query``, ``dataframe``,
``replay``, ``compare``) is imported on first use, so a training process never
loads DuckDB.
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
