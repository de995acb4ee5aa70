"""What a walk of a script found, as answers: what replay may skip, and what carries over.

:mod:`flordb.hindsight.flow` walks a script in the order it runs and records
every read and write as an :class:`Event` on a *key* (an owner: ``GLOBAL`` or a
call frame's id, and an attribute path). The :class:`Effects` mixin reads
DESIGN decision 5's answers off those events:

- :meth:`Effects.skip_safety`: may the nested loop be skipped (its exit state
  restored) without changing what runs after it?
- :meth:`Effects.warm_safety`: may iterations executed only to rebuild state
  skip it too (it carries nothing of its own into the next iteration)?
- :meth:`Effects.carried` and :meth:`Effects.restorable`: which state outside
  the nested loop goes from one main-loop iteration to the next, and can a
  replay restore it from the variables saved with each checkpoint?
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX_PH, BEFORE_PH, INSIDE_PH, AFTER_PH, SUFFIX_PH = "prefix", "before", "inside", "after", "suffix"
GLOBAL = "G"  # the owner of module globals

Key = tuple  # (owner, path)


@dataclass
class Event:
    op: str  # "r" read, "w" write (mutation), "b" rebind (whole-name assignment)
    key: Key
    phase: str
    line: int
    text: str  # how the script spells it at that point
    sink: bool = False  # a read that only goes to print/logging
    scope: tuple = ()  # the conditional blocks (if, loop bodies, except) it is in, outermost first


class Effects:
    """The answers of a walk (mixed into :class:`flordb.hindsight.flow.Walk`, which fills the fields)."""

    events: list
    iter_start: int
    ckpt_keys: set
    modules: set
    outer_fids: set
    fresh_fids: set
    main: object
    main_name: str | None
    main_fid: object
    nested: object
    nested_name: str | None
    incomplete: str

    def _ignored(self, key: Key) -> bool:
        owner, path = key
        if path[0] in self.modules and owner == GLOBAL:
            return True
        return self._checkpointed(key)

    def _checkpointed(self, key: Key) -> bool:
        owner, path = key
        return any(o == owner and path[:len(p)] == p for o, p in self.ckpt_keys)

    def _outlives(self, owner) -> bool:
        """Does what this owner holds survive from one iteration to the next?"""
        return owner in self.outer_fids or (isinstance(owner, str) and owner.startswith("obj"))

    @staticmethod
    def _overlap(a: Key, b: Key) -> bool:
        n = min(len(a[1]), len(b[1]))
        return a[0] == b[0] and a[1][:n] == b[1][:n]

    def _killed(self) -> set:
        """Keys rebound in an iteration before every other access to them: nothing carries over.

        A rebind covers the accesses after it in its own block and the blocks
        inside it; one under an ``if`` (or in a loop body) does not cover
        what follows the block: that branch may not run.
        """
        rebinds: dict = {}
        live: set = set()
        for ev in self.events[self.iter_start:]:
            if ev.phase == SUFFIX_PH:
                break
            if ev.op == "b":
                rebinds.setdefault(ev.key, []).append(ev.scope)
            elif not any(ev.scope[:len(s)] == s for s in rebinds.get(ev.key, ())):
                live.add(ev.key)
        return set(rebinds) - live

    def _changed_inside(self) -> dict:
        out: dict = {}
        for ev in self.events:
            if ev.phase == INSIDE_PH and ev.op in ("w", "b") and ev.key[0] not in self.fresh_fids \
                    and not self._ignored(ev.key):
                out.setdefault(ev.key, ev)
        return out

    def skip_safety(self) -> tuple[bool, str]:
        if self.incomplete:
            return False, self.incomplete
        changed = self._changed_inside()
        for ev in self.events:
            if ev.op != "r" or ev.sink or ev.phase not in (BEFORE_PH, AFTER_PH, SUFFIX_PH):
                continue
            for key, w in changed.items():
                if self._overlap(ev.key, key):
                    return False, (f"code outside the nested loop reads {ev.text} (line {ev.line}), which loop"
                                   f" {self.nested_name!r} changes (line {w.line}, as {w.text})")
        return True, ""

    def warm_safety(self) -> tuple[bool, str]:
        """The nested loop carries nothing of its own into the next iteration's nested loop."""
        changed = {k: ev for k, ev in self._changed_inside().items() if self._outlives(k[0])}
        killed = self._killed()
        for ev in self.events:
            if ev.op != "r" or ev.phase != INSIDE_PH:
                continue
            for key, w in changed.items():
                if key not in killed and self._overlap(ev.key, key):
                    return False, (f"loop {self.nested_name!r} carries {w.text} (line {w.line}) from one iteration"
                                   " to the next: skipping it in earlier iterations would change it")
        return True, ""

    def carried_pairs(self, suffix: bool = False) -> list[tuple[Event, Event]]:
        """(write, read) pairs of state carried from one main-loop iteration to the next, uncheckpointed.

        With ``suffix``, reads after the main loop count too.
        """
        killed = self._killed()
        written: dict = {}
        for ev in self.events[self.iter_start:]:
            if ev.phase in (BEFORE_PH, AFTER_PH) and ev.op in ("w", "b") and self._outlives(ev.key[0]) \
                    and ev.key not in killed and not self._ignored(ev.key):
                written.setdefault(ev.key, ev)
        pairs, seen = [], set()
        for ev in self.events[self.iter_start:]:
            if ev.op != "r" or (ev.phase == SUFFIX_PH and not suffix) or (ev.sink and ev.phase != INSIDE_PH):
                continue
            for key, w in written.items():
                if key not in seen and self._overlap(ev.key, key):
                    seen.add(key)
                    pairs.append((w, ev))
        return pairs

    def carried(self, suffix: bool = False) -> str:
        if self.main is None:
            return ""
        if self.incomplete:
            return self.incomplete
        for w, _ in self.carried_pairs(suffix):
            return (f"{w.text} (line {w.line}) carries state from one iteration of loop {self.main_name!r}"
                    " to the next and is not checkpointed")
        return ""

    def restorable(self, suffix: bool = False) -> tuple[dict, str]:
        """The carried variables a replay can restore from a checkpoint's saved variables, or why not.

        Returns (``{"globals": [...], "locals": [...]}``, "") when every carried
        key is a plain name of the main loop's frame or of the module, restored
        where the checkpoint was taken (the nested loop's exit; the end of the
        iteration for flat loops): so no code before the nested loop may read it.
        Else ({}, the first reason, naming the variable and the line).
        """
        if self.main is None or self.incomplete:
            return {}, self.incomplete
        names: dict[str, list[str]] = {}
        for w, _ in self.carried_pairs(suffix):
            owner, path = w.key
            scope = "globals" if owner == GLOBAL else "locals" if owner == self.main_fid else None
            if scope is None or len(path) != 1:
                return {}, (f"{w.text} (line {w.line}) carries state from one iteration of loop"
                            f" {self.main_name!r} to the next and is not checkpointed (not a variable of the"
                            " main loop's frame, so not saved with the checkpoints)")
            if self.nested is not None:
                early = next((ev for ev in self.events[self.iter_start:] if ev.op == "r" and not ev.sink
                              and ev.phase == BEFORE_PH and self._overlap(ev.key, w.key)), None)
                if early is not None:
                    return {}, (f"{w.text} (line {w.line}) carries state from one iteration of loop"
                                f" {self.main_name!r} to the next, and code before loop {self.nested_name!r}"
                                f" reads it (line {early.line}), before the point where it is restored")
            if path[0] not in names.setdefault(scope, []):
                names[scope].append(path[0])
        return names, ""
