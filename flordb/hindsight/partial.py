"""Never a silent partial answer.

When replay tasks fail, the runs they served lack the column. Every query
that reads it then says so on stderr (how many runs, why, how to retry), the
Python API warns with :class:`PartialAnswerWarning` (or raises
:class:`PartialAnswerError` with ``replay="strict"``) and the CLI exits 1.
Failed replays do not count as tried: the next query that needs those values
retries them, showing the earlier failure first. The failure is stored in the
``replays`` table (status ``failed``, the reason in ``fidelity``).
"""

from __future__ import annotations

import sys
import warnings

from flordb.errors import HindsightError


class PartialAnswerWarning(UserWarning):
    """A query answered without the values of runs whose replay failed."""


class PartialAnswerError(HindsightError):
    """``replay="strict"``: a partial answer is an error."""

    exit_code = 1


def failure_reason(results) -> str:
    """One line for the replays table: which task failed, its exit code and its last log line."""
    res = results[0]
    tail = ""
    try:
        lines = res.log.read_text(errors="replace").strip().splitlines() if res.log.exists() else []
        tail = lines[-1].strip() if lines else ""
    except OSError:
        pass
    more = f" (and {len(results) - 1} more task(s))" if len(results) > 1 else ""
    return f"task {res.task.task_id} exited with code {res.returncode}: {tail or 'no output'}{more} [log: {res.log}]"


def failed_runs(cat, names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """For each name: (run_id, reason) of runs whose latest replay of it failed."""
    if not names:
        return {}
    rows = cat.cached(f"failed_runs:{sorted(names)}", lambda: cat.execute(  # asked before every query
        """WITH attempts AS (SELECT run_id, unnest(names) AS name, status, fidelity, started FROM replays)
           SELECT name, run_id, arg_max(fidelity, started) AS why FROM attempts
           WHERE list_contains(?, name) GROUP BY name, run_id
           HAVING arg_max(status, started) = 'failed' ORDER BY name, run_id""",
        [list(names)],
    ).fetchall())
    out: dict[str, list[tuple[str, str]]] = {}
    for name, run_id, why in rows:
        out.setdefault(name, []).append((run_id, why or "the replay failed"))
    return out


def describe(failed: dict[str, list[tuple[str, str]]]) -> str:
    parts = []
    for name, runs in failed.items():
        n = len(runs)
        parts.append(f"{name} is missing from {n} run{'s' if n != 1 else ''} whose replay failed"
                     f" (e.g. run {runs[0][0]}: {runs[0][1]})")
    return "; ".join(parts)


def announce_retry(cat, names: list[str]) -> None:
    """Before a query retries failed replays: show what failed last time."""
    failed = failed_runs(cat, names)
    if failed:
        _say(f"Retrying: {describe(failed)}.")


def check_answer(cat, names: list[str], mode: str) -> None:
    """After the replays a query needed: a partial answer is said, warned, or raised (strict)."""
    failed = failed_runs(cat, names)
    if not failed:
        return
    names_ = " ".join(failed)
    text = (f"partial answer: {describe(failed)}. Run the query again to retry them,"
            f" or `flordb replay {names_}`.")
    if mode == "strict":
        raise PartialAnswerError(text)
    _say(f"flordb: {text}")
    warnings.warn(text, PartialAnswerWarning, stacklevel=4)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def current_scripts(cat, names: list[str]) -> list[tuple[str, str]]:
    """(name, script) for recorded scripts whose current code logs the name.

    Gap filling looks at these as well as at the scripts whose runs logged the
    name, so a second script that starts logging it (``finetune.py`` next to
    ``train.py``) is not answered with NULLs in silence.
    """
    from flordb.hindsight.locate import script_statements

    scripts = [r[0] for r in cat.execute(
        "SELECT DISTINCT script FROM runs WHERE mode = 'record' AND script IS NOT NULL ORDER BY 1").fetchall()]
    found = script_statements(cat.layout.work_tree, list(names), scripts)
    return [(st.name, script) for script, sts in found.items() for st in sts]
