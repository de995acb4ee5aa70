"""Errors as types: one root, one subclass per layer, fields as well as text.

The CLI prints ``Error: <message>`` for any :class:`FlorError` and exits with
its ``exit_code``; Python callers can catch the layer they care about.
"""

from __future__ import annotations

from typing import Iterable, Sequence


class FlorError(Exception):
    """Root of every error FlorDB raises on purpose."""

    exit_code = 2  # bad input, unless a subclass says otherwise

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FlorError):
    """A setting, argument or environment variable is not usable."""


class RecordError(FlorError):
    """A record-side call was used wrongly (never raised into training code)."""


class StoreError(FlorError):
    """The on-disk store or the catalog cannot do what was asked."""

    exit_code = 1


class NoStoreError(StoreError):
    """A command that reads the store was run where there is none (nothing is created)."""

    exit_code = 2


class CatalogBusyError(StoreError):
    """Another process held the catalog for longer than we were willing to wait."""


class VersionError(FlorError):
    """Snapshotting or materializing a code version failed."""

    exit_code = 1


class QueryError(FlorError):
    """The SQL could not be parsed, planned or run."""


class UnknownColumnError(QueryError):
    """The query names columns that no run recorded.

    ``names`` are the missing columns; ``suggestions`` maps each to close
    known names. Hindsight catches this to offer a replay.
    """

    def __init__(self, names: Sequence[str], known: Iterable[str]):
        from difflib import get_close_matches  # imported when there is an error to explain, not at CLI start

        known = list(known)
        self.names = list(names)
        self.suggestions = {n: get_close_matches(n, known, n=3, cutoff=0.6) for n in self.names}
        parts = []
        for n in self.names:
            close = self.suggestions[n]
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            parts.append(f"{n!r}{hint}")
        super().__init__(
            f"unknown column {', '.join(parts)}: no run recorded it"
            " and no flor.log statement in the current code logs it"
        )


class HindsightError(FlorError):
    """Replay could not be planned or run."""

    exit_code = 1


class PropagationError(HindsightError):
    """No confident place for a statement in an old version.

    ``reason`` says why, in words a user can act on.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"cannot place the statement: {reason}")


class CompareError(FlorError):
    """The two sides of a comparison could not be selected or aligned."""
