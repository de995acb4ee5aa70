"""Where a statement sits relative to the main loop, and what replay may skip.

DESIGN decision 5: an iteration of the main loop is ``pre-code; nested loop;
post-code``. "Main loop" and "nested loop" are what runs, not what is written:
the nested loop of an iteration is the first ``flor.loop`` entered during it,
whether it is written inline, in a ``train()`` function the main loop calls, in
a method, or several calls down. So the analysis walks the program in the
order it runs (:mod:`flordb.hindsight.flow`), through every call it can
resolve, and reads the answers off that walk:

- a statement's place (prefix, before/inside/after the nested loop, suffix) is
  the phase in which the walk reaches it, so a statement in a function counts
  at the function's call site;
- the nested loop may be skipped (its exit state restored from a checkpoint)
  only when nothing that runs outside it reads what it changed, other than the
  checkpointed objects; locals of a called function that die when it returns
  do not count, its return value and what it changes in objects reachable from
  outside do;
- iterations before the first needed one may skip the nested loop only when,
  in addition, the loop carries no state of its own into later iterations;
- a replay may start from a checkpoint (rather than from iteration 0) only
  when the code outside the nested loop carries no uncheckpointed state from
  one iteration to the next (a ``best_val_loss``, a learning rate annealed by
  hand, an early-stopping counter).

When the walk is unsure it says so, naming the variable and the line, and the
plan re-executes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from flordb.errors import HindsightError
from flordb.hindsight.flow import AFTER_PH, BEFORE_PH, INSIDE_PH, PREFIX_PH, SUFFIX_PH, Walk, walk

# Where the statement is; the replay strategy follows from it.
PREFIX, BEFORE, AFTER, NESTED, SUFFIX = "prefix", "before nested loop", "after nested loop", "inside nested loop", "suffix"


@dataclass(frozen=True)
class Placement:
    position: str
    main_loop: str | None  # flor.loop name of the main loop
    skip_nested: bool  # may the nested loop be skipped by restoring its checkpoint?
    reason: str  # why it may not, in words
    nested_loop: str | None = None  # flor.loop name of the nested loop, when there is one
    via: str = ""  # the call chain through which the walk reached the statement, in words

    def describe(self) -> str:
        """In words, for plans: "inside loop 'step'", "after loop 'step' in loop 'epoch'"..."""
        main = f"loop {self.main_loop!r}" if self.main_loop else "the script"
        inner = f"loop {self.nested_loop!r}" if self.nested_loop else "the nested loop"
        text = {
            PREFIX: f"before {main}",
            SUFFIX: f"after {main}",
            NESTED: f"inside {inner}",
            BEFORE: f"in {main}, before {inner}" if self.nested_loop else f"in {main}",
            AFTER: f"in {main}, after {inner}",
        }[self.position]
        return f"{text}, via {self.via}" if self.via else text


@lru_cache(maxsize=64)
def _walk(source: str, main_loop: str | None, nested_loop: str | None) -> Walk:
    return walk(ast.parse(source), main_loop, nested_loop)


def _statement_at(tree: ast.AST, lineno: int) -> ast.stmt:
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno == lineno:
            if best is None or (node.end_lineno or 0) < (best.end_lineno or 0):
                best = node
    if best is None:
        raise HindsightError(f"no statement starts at line {lineno}")
    return best


def placement(source: str, lineno: int, main_loop: str | None = None,
              nested_loop: str | None = None) -> Placement:
    """Classify the statement at ``lineno`` of ``source`` for replay.

    ``main_loop`` and ``nested_loop`` are the loop names the recorded runs
    entered (what ran); without them the first ``flor.loop`` reached is the main
    loop and the first one reached inside it the nested loop.
    """
    w = _walk(source, main_loop, nested_loop)
    st = _statement_at(w.tree, lineno)
    main_name, nested_name = w.main_name, w.nested_name
    if w.main is None:
        return Placement(PREFIX, None, False, "the script has no flor.loop")
    phases = w.phases.get(id(st), set())
    via = w.via.get(id(st), "")
    if not phases:
        # Not reached through any call the walk could resolve: say so, and re-execute.
        where = w.enclosing_function(st)
        what = f"function {where}()" if where else "code"
        return Placement(NESTED, main_name, False,
                         f"line {lineno} is in {what} that the analysis could not connect to loop {main_name!r}"
                         " (called through something it cannot resolve): re-executing", nested_name)
    inner = w.inner_loop_of.get(id(st))
    if INSIDE_PH in phases or inner is not None:
        loop_name = nested_name if inner is None else inner
        return Placement(NESTED, main_name, False, f"the statement is inside loop {loop_name!r}", loop_name, via)
    ok, reason = skip_safety(w)
    if phases <= {PREFIX_PH}:
        return Placement(PREFIX, main_name, ok, reason, nested_name, via)
    if phases <= {SUFFIX_PH}:
        return Placement(SUFFIX, main_name, ok, reason, nested_name, via)
    if w.nested is None:
        return Placement(BEFORE, main_name, False, "the main loop has no nested loop", None, via)
    position = AFTER if AFTER_PH in phases or SUFFIX_PH in phases else BEFORE
    return Placement(position, main_name, ok, reason, nested_name, via)


def nested_skip_safety(source: str, main_loop: str | None, nested_loop: str | None = None) -> tuple[bool, str]:
    """May iterations executed only to rebuild state skip the nested loop?

    Independent of where the statement is: warm-up iterations (executed only to
    rebuild state before the first needed one) and the last iteration before a
    suffix skip it only when this holds. Stricter than :func:`skip_safety`: the
    nested loop must also carry nothing of its own into the next iteration's
    nested loop (a shared iterator, a global step counter that is not reset).
    """
    w = _walk(source, main_loop, nested_loop)
    ok, reason = skip_safety(w)
    if not ok:
        return ok, reason
    return w.warm_safety()


def carried_state(source: str, main_loop: str | None, nested_loop: str | None = None,
                  suffix: bool = False) -> str:
    """Why a replay cannot start from a checkpoint, or "" when it can.

    Code outside the nested loop that carries uncheckpointed state from one
    iteration to the next (``best = min(best, val)``, ``lr /= 4``) must run in
    every earlier iteration too, so the replay executes from iteration 0
    (skipping nested loops where that is safe). With ``suffix``, state read
    after the main loop counts too (a suffix statement needs it rebuilt).
    """
    return _walk(source, main_loop, nested_loop).carried(suffix)


def carried_restorable(source: str, main_loop: str | None, nested_loop: str | None = None,
                       suffix: bool = False) -> tuple[dict, str]:
    """The carried variables a replay restores from checkpoints instead of starting at iteration 0.

    ``({"globals": [...], "locals": [...]}, "")`` when every piece of carried
    state is a plain variable of the main loop's frame or module, saved with
    each checkpoint (:mod:`flordb.record.carry`); else ``({}, reason)``.
    """
    return _walk(source, main_loop, nested_loop).restorable(suffix)


def skip_safety(w: Walk) -> tuple[bool, str]:
    if w.main is None:
        return False, "the script has no flor.loop"
    if w.nested is None:
        return False, "the main loop has no nested loop"
    return w.skip_safety()


def checkpointed_names(tree: ast.AST, flor) -> set[str]:
    """Variables passed to ``flor.checkpointing(name=var, ...)``: restored on skip."""
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and flor.call_target(n) == "checkpointing":
            out.update(k.value.id for k in n.keywords if isinstance(k.value, ast.Name))
    return out
