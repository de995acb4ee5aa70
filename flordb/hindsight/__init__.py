"""Hindsight logging: locate a statement, propagate it into old versions, plan and replay.

``from flordb.hindsight import propagate`` gives the propagation function; it
is loaded on first use so that importing a sibling module stays cheap.
"""


def __getattr__(name: str):
    if name == "propagate":
        from flordb.hindsight.propagation import propagate

        return propagate
    raise AttributeError(f"module 'flordb.hindsight' has no attribute {name!r}")
