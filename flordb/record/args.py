"""Hyper-parameter overrides given as ``--kwargs name=value ...`` on the command line.

They are taken out of ``sys.argv`` when flordb is imported, so that the user's
own argument parser never sees them.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

FLAG = "--kwargs"


# The command line as typed, ``--kwargs`` included (take_overrides removes them from sys.argv).
ARGV: list[str] = []
# ``--kwargs flor.name=... flor.tag=...`` label the run instead of overriding a flor.arg.
LABEL_PREFIX = "flor."


def take_overrides(argv: list[str]) -> dict[str, str]:
    """Remove ``--kwargs k=v ...`` (up to the next ``-``-flag) from argv, in place."""
    if argv is sys.argv:
        ARGV[:] = argv[1:]
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        if argv[i] == FLAG or argv[i].startswith(FLAG + "="):
            first = argv[i][len(FLAG) + 1 :] if argv[i].startswith(FLAG + "=") else None
            j = i + 1
            items = [first] if first else []
            while j < len(argv) and "=" in argv[j] and not argv[j].startswith("-"):
                items.append(argv[j])
                j += 1
            for item in items:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    print(f"flordb: ignoring --kwargs item {item!r}: expected name=value", file=sys.stderr)
                    continue
                overrides[key] = value
            del argv[i:j]
        else:
            i += 1
    return overrides


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def cast(text: str, default: Any) -> Any:
    """Cast an override to the type of the default value."""
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected a boolean (true/false), got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def labels(overrides: dict[str, str]) -> dict:
    """``flor.name`` and ``flor.tag`` (comma-separated) from the overrides: how people name a run."""
    out: dict = {}
    if overrides.get(LABEL_PREFIX + "name"):
        out["name"] = overrides[LABEL_PREFIX + "name"]
    tags = [t.strip() for t in overrides.get(LABEL_PREFIX + "tag", "").split(",") if t.strip()]
    if tags:
        out["tags"] = tags
    return out
