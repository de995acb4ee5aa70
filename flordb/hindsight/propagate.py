"""Place a statement from the current code into an old version of the file.

Hindsight logging replays old runs with a statement they never had. The old
file must keep its text (decision 6 of DESIGN.md): one line is inserted and
every other line stays byte-identical, so tracebacks, line numbers and
comments of the replayed code are those of the original run.

``propagate`` is a pipeline of small steps over ``ast`` trees::

    target_path      where the statement sits in the current code
    match_frames     the enclosing functions/loops/blocks in the old code
    final_blocks     the block of the old code the statement belongs to
    rename_map       what the old code calls the variables the statement reads
    choose_gap       between which two old statements it goes
    check_defined    every name it reads exists there
    splice           the patched old text

Any step that is not confident raises ``PropagationError`` with a reason: a
refusal costs the user a question, a wrong placement costs them a wrong
answer they cannot see.
"""

from __future__ import annotations

import ast
import copy
import io
from collections import Counter
from dataclasses import dataclass, field

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import (
    ABSTRACT, BLOCK_FIELDS, BUILTIN_NAMES, COMPOUND, EXACT, ModuleInfo, abstract_dump, add_votes, align,
    call_site_pairs, collect_votes, core_iter, free_name_nodes, loop_name, name_pairs, scope_bindings,
)
from flordb.hindsight.locate import FlorNames, find_log_statements, flor_names, literal_name, log_call

__all__ = ["propagate"]


@dataclass(frozen=True)
class Frame:
    """A block of statements: the ``field`` list of ``node`` (a module or compound statement)."""

    node: ast.AST
    field: str

    @property
    def block(self) -> list[ast.stmt]:
        return getattr(self.node, self.field)


@dataclass
class Version:
    """One side of the comparison: its text, tree and naming facts."""

    source: str
    tree: ast.Module
    info: ModuleInfo
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)

    @classmethod
    def parse(cls, source: str, label: str) -> "Version":
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError) as exc:
            raise PropagationError(f"the {label} code does not parse: {exc}") from None
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        return cls(source, tree, ModuleInfo.of(tree), parents)


@dataclass
class Match:
    """How the enclosing blocks of the statement map into the old version.

    ``pairs`` are matched (new frame, old frame) from the innermost out.
    ``new_block`` is the current block of the new code that corresponds to
    ``old_frame``: the innermost block, with the bodies of wrappers the old
    code lacks (``with``/``try``) spliced into their parent. ``old_frame`` is
    None while the block must still be found by content, because it sits in
    the function ``searched`` that the old code does not have.
    """

    pairs: list[tuple[Frame, Frame]]
    old_frame: Frame | None
    region: ast.AST
    new_block: list[ast.stmt]
    searched: Frame | None = None
    dropped: list[ast.AST] = field(default_factory=list)


def propagate(new_source: str, lineno: int, old_source: str) -> str:
    """Return ``old_source`` with the statement at ``lineno`` of ``new_source`` inserted.

    The result differs from ``old_source`` by one inserted statement, or not
    at all when the old version already has it. Raises ``PropagationError``
    when there is no confident place.
    """
    new, old = Version.parse(new_source, "current"), Version.parse(old_source, "old")
    frames, t = target_path(new.tree, lineno, new.info.flor, source_lines(new_source))
    stmt = frames[-1].block[t]
    match = match_frames(frames, new, old)
    new_block = match.new_block
    t = next(k for k, s in enumerate(new_block) if s is stmt)
    old_frame = match.old_frame or search_block(new_block, t, match, new, old)
    renames = rename_map(stmt, new_block, old_frame, match, new, old)
    indent = block_indent(old_frame, old)
    if already_present(stmt, renames, old_frame, new, old):
        return old_source
    gap = choose_gap(new_block, t, old_frame.block, new, old, edges=match.old_frame is not None)
    line = insertion_line(old_frame, gap, old)
    check_defined(stmt, renames, old, old_frame, line)
    return splice(old_source, line, statement_text(new.source, stmt, renames, indent))


# ---------------------------------------------------------------- step 1: where it is now

def target_path(tree: ast.Module, lineno: int, flor: FlorNames | None = None,
                lines: list[str] | None = None) -> tuple[list[Frame], int]:
    """The chain of blocks holding the statement at ``lineno``, and its index in the last.

    Only simple statements can be propagated: inserting a compound statement
    would mean inserting its body too, which is more than one statement.
    Given the source ``lines``, a blank or comment line gets its own reason.
    """
    flor = flor or flor_names(tree)
    if lines is not None and (not 0 < lineno <= len(lines) or lines[lineno - 1].strip()[:1] in ("", "#")):
        raise PropagationError(f"line {lineno} of the current code is blank, a comment, or missing")
    frames = [Frame(tree, "body")]
    while True:
        block = frames[-1].block
        hits = [i for i, s in enumerate(block) if first_line(s) <= lineno <= s.end_lineno]
        if not hits:
            raise PropagationError(f"line {lineno} of the current code holds no statement")
        i = _pick_on_line(block, hits, lineno, flor)
        stmt = block[i]
        if not isinstance(stmt, COMPOUND):
            return frames, i
        inner = next((Frame(stmt, f) for f in BLOCK_FIELDS for s in getattr(stmt, f, [])
                      if first_line(s) <= lineno <= s.end_lineno), None)
        if inner is None and any(h.lineno < lineno <= h.end_lineno for h in getattr(stmt, "handlers", [])):
            raise PropagationError(f"line {lineno} of the current code is inside an 'except' block; "
                                   "statements there cannot be propagated")
        if inner is None:
            raise PropagationError(
                f"line {lineno} of the current code is part of {describe(stmt)}, "
                "not a simple statement that can be copied on its own")
        frames.append(inner)


def _pick_on_line(block: list[ast.stmt], hits: list[int], lineno: int, flor: FlorNames) -> int:
    """Choose among statements sharing a line (``a = 1; flor.log(...)``): the single log call."""
    if len(hits) == 1:
        return hits[0]
    logs = [i for i in hits if log_call(block[i], flor) is not None]
    if len(logs) == 1:
        return logs[0]
    raise PropagationError(f"line {lineno} of the current code holds several statements")


def first_line(stmt: ast.stmt) -> int:
    """A statement's first line, counting decorators, which belong to it."""
    return min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])


def describe(node: ast.AST) -> str:
    """Name a construct the way its header reads, for refusal messages."""
    def short(text: str) -> str:
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return f"the loop 'for {short(ast.unparse(node.target) + ' in ' + ast.unparse(node.iter))}'"
    if isinstance(node, ast.While):
        return f"the loop 'while {short(ast.unparse(node.test))}'"
    if isinstance(node, ast.If):
        return f"the block 'if {short(ast.unparse(node.test))}'"
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return f"the block 'with {short(', '.join(ast.unparse(i) for i in node.items))}'"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"the function '{node.name}'"
    if isinstance(node, ast.ClassDef):
        return f"the class '{node.name}'"
    if isinstance(node, ast.Module):
        return "the module"
    return f"the '{type(node).__name__.lower()}' block"


# ---------------------------------------------------------------- step 2: enclosing blocks

def match_frames(frames: list[Frame], new: Version, old: Version) -> Match:
    """Find each enclosing block of the statement in the old code, outermost first.

    A wrapper the old code lacks (``with flor.checkpointing``, ``try``, a
    ``__main__`` guard) dissolves into its parent block; a function the old
    code lacks (an extracted helper) is searched for by content later; a loop
    or condition the old code lacks means there is no place with the same
    meaning, so we refuse.
    """
    match = Match(pairs=[(frames[0], Frame(old.tree, "body"))], old_frame=Frame(old.tree, "body"),
                  region=old.tree, new_block=frames[0].block)
    for frame in frames[1:]:
        found = find_counterpart(frame.node, match, new, old)
        if found is not None:
            if not getattr(found, frame.field, None):
                raise PropagationError(
                    f"{describe(found)} in the old version has no '{frame.field}' block to hold the statement")
            old_frame = Frame(found, frame.field)
            match.pairs.insert(0, (frame, old_frame))
            match.old_frame, match.region, match.new_block = old_frame, found, frame.block
        elif is_wrapper(frame):
            i = next(k for k, s in enumerate(match.new_block) if s is frame.node)
            match.new_block = match.new_block[:i] + frame.block + match.new_block[i + 1:]
        elif isinstance(frame.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            match.old_frame, match.new_block = None, frame.block
            match.searched = frame
            match.dropped.append(frame.node)
        else:
            raise PropagationError(
                f"{describe(frame.node)} that encloses the statement in the current code "
                "has no counterpart in the old version")
    return match


def is_wrapper(frame: Frame) -> bool:
    """Blocks whose absence in the old code does not change when the statement runs."""
    node = frame.node
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return True
    if isinstance(node, ast.Try):
        return frame.field == "body"
    if isinstance(node, ast.If) and frame.field == "body":
        return ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'
    return False


def frame_strength(new_node: ast.AST, old_node: ast.AST, new: Version, old: Version) -> int:
    """How surely an old compound statement is the counterpart of a new one: 3 sure, 0 no.

    Function names and ``flor.loop`` names are literal anchors (3); identical
    headers are good (2); headers equal up to renaming are weak (1), trusted
    only among the direct children of an already matched block.
    """
    same_kind = type(new_node) is type(old_node)
    if not same_kind or not isinstance(new_node, COMPOUND):
        return 0
    if isinstance(new_node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return 3 if new_node.name == old_node.name else 0
    if isinstance(new_node, (ast.For, ast.AsyncFor)):
        new_name, old_name = loop_name(new_node, new.info), loop_name(old_node, old.info)
        if new_name and new_name == old_name:
            return 3
        if old_name:
            return 0  # a differently named loop, or instrumentation the new code dropped
        new_parts, old_parts = [core_iter(new_node, new.info)[1]], [core_iter(old_node, old.info)[1]]
    elif isinstance(new_node, (ast.With, ast.AsyncWith)):
        new_parts, old_parts = [i.context_expr for i in new_node.items], [i.context_expr for i in old_node.items]
    else:
        new_parts = [getattr(new_node, "test", None) or getattr(new_node, "subject", None)]
        old_parts = [getattr(old_node, "test", None) or getattr(old_node, "subject", None)]
        if new_parts == [None]:
            return 1  # try blocks: only their position tells them apart
    if [ast.dump(n) for n in new_parts] == [ast.dump(n) for n in old_parts]:
        return 2
    return 1 if abstract_dump(new_parts, new.info.keep) == abstract_dump(old_parts, old.info.keep) else 0


def find_counterpart(node: ast.AST, match: Match, new: Version, old: Version) -> ast.AST | None:
    """The old compound statement matching ``node``, or None.

    Literal anchors (function and ``flor.loop`` names) are trusted anywhere:
    among the children of the matched old block, under the last matched
    construct, or in functions it calls (code the current version inlined).
    Weaker evidence is trusted only among the direct children: the
    statement the block alignment pairs with ``node``, else an identical
    header that no other new statement claims. Two equally good candidates
    are a refusal.
    """
    direct = list(match.old_frame.block) if match.old_frame else []
    region = [n for n in ast.walk(match.region) if isinstance(n, ast.stmt) and n is not match.region]
    for candidates in (direct, region, called_statements(match.region, old)):
        found = _unique(node, [o for o in candidates if frame_strength(node, o, new, old) == 3])
        if found is not None:
            return found
    if not direct:
        return None
    paired = {p.new: direct[p.old] for p in align(match.new_block, direct, new.info, old.info)}
    i = next(k for k, s in enumerate(match.new_block) if s is node)
    if i in paired and frame_strength(node, paired[i], new, old) > 0:
        return paired[i]
    taken = set(map(id, paired.values()))
    return _unique(node, [o for o in direct if id(o) not in taken and frame_strength(node, o, new, old) == 2])


def _unique(node: ast.AST, hits: list[ast.AST]) -> ast.AST | None:
    if len(hits) > 1:
        lines = ", ".join(str(h.lineno) for h in hits)
        raise PropagationError(
            f"{describe(node)} that encloses the statement matches several places "
            f"in the old version (lines {lines})")
    return hits[0] if hits else None


def called_statements(region: ast.AST, old: Version) -> list[ast.stmt]:
    """Statements of old functions reachable by calls from ``region``.

    When the current code inlines a helper the old code called, the anchors
    are inside that helper. Calls are resolved by name only (``f(...)`` and
    ``self.f(...)``), which is enough for training scripts.
    """
    defs: dict[str, list[ast.AST]] = {}
    for n in ast.walk(old.tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.setdefault(n.name, []).append(n)
    inside = set(ast.walk(region))
    reached: list[ast.AST] = []
    todo = [region]
    while todo:
        for call in (c for c in ast.walk(todo.pop()) if isinstance(c, ast.Call)):
            f = call.func
            name = f.id if isinstance(f, ast.Name) else f.attr if (
                isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self") else None
            for fn in defs.get(name, []):
                if fn not in inside and fn not in reached:
                    reached.append(fn)
                    todo.append(fn)
    return [n for fn in reached for n in ast.walk(fn) if isinstance(n, ast.stmt)]


# ---------------------------------------------------------------- step 3: the old block

def search_block(new_block: list[ast.stmt], t: int, match: Match, new: Version, old: Version) -> Frame:
    """Find the old block holding the code around the statement, when no header says where.

    Used for statements in a function the old code lacks (an extracted
    helper): the old block must contain the statement's immediate neighbour
    and most of its siblings, and no other block may do as well.
    """
    region = [match.region] + [n for n in ast.walk(match.region) if isinstance(n, ast.stmt) and n is not match.region]
    region += called_statements(match.region, old)
    others = new_block[:t] + new_block[t + 1:]
    scored: list[tuple[int, Frame]] = []
    for node in region:
        for f in BLOCK_FIELDS:
            block = getattr(node, f, None)
            if isinstance(block, list) and block:
                score = _support(others, t, block, new, old)
                if score:
                    scored.append((score, Frame(node, f)))
    where = describe(match.searched.node)
    if not scored:
        raise PropagationError(
            f"the code around the statement in {where} has no counterpart in the old version")
    best = max(s for s, _ in scored)
    winners = [fr for s, fr in scored if s == best]
    if len(winners) > 1:
        lines = ", ".join(str(fr.block[0].lineno) for fr in winners)
        raise PropagationError(
            f"the code around the statement in {where} appears in several places in the old "
            f"version (blocks starting at lines {lines})")
    return winners[0]


def _support(others: list[ast.stmt], t: int, block: list[ast.stmt], new: Version, old: Version) -> int:
    """How many siblings a candidate block shares, or 0 when that is not convincing.

    Convincing means: an immediate neighbour is matched (renamed at most),
    and at least half of the siblings, and at least two of them when there
    are two, are matched.
    """
    strong = {p.new for p in align(others, block, new.info, old.info) if p.strength in (EXACT, ABSTRACT)}
    neighbours = {t - 1, t} & set(range(len(others)))
    if not neighbours & strong:
        return 0
    if len(strong) < min(2, len(others)) or 2 * len(strong) < len(others):
        return 0
    return len(strong)


# ---------------------------------------------------------------- step 4: renaming

def rename_map(stmt: ast.stmt, new_block: list[ast.stmt], old_frame: Frame, match: Match,
               new: Version, old: Version) -> dict[str, str]:
    """Map each name the statement reads to what the old code at that place calls it.

    Evidence is gathered from the nearest block outward and a name is
    decided as soon as the evidence is clear: the same name wins any tie; a
    different name needs weight 2 (a binding, or two uses), since one
    coincidentally similar line (``print(epoch, acc)`` against
    ``print(epoch, loss)``) must not turn ``acc`` into ``loss``. Undecided
    names keep their spelling, and ``check_defined`` judges them.
    """
    names = list(dict.fromkeys(n.id for n in free_name_nodes(stmt)))
    renames = {n: flor_spelling(n, new, old) for n in names if new.info.flor.refers_to_flordb(n)}
    others = [s for s in new_block if s is not stmt]
    seen: set = set()
    levels = [lambda: collect_votes(others, old_frame.block, new.info, old.info, seen)]
    levels += [lambda fn=fn: add_votes(Counter(), call_site_pairs(fn, new.tree))
               for fn in match.dropped if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))]
    levels += [lambda fn=fn: add_votes(Counter(), ((a, p, w) for p, a, w in call_site_pairs(fn, old.tree)))
               for fn in entered_functions(old_frame, match, old)]
    levels += [lambda n=n, o=o: _frame_votes(n, o, new, old, seen) for n, o in match.pairs]
    pending = [n for n in names if n not in renames]
    votes: Counter = Counter()
    for level in levels:
        if not pending:
            break
        votes.update(level())
        for name in list(pending):
            decided = _decide(name, votes)
            if decided is not None:
                renames[name] = decided
                pending.remove(name)
    return {n: o for n, o in renames.items() if n != o}


def entered_functions(old_frame: Frame, match: Match, old: Version) -> list[ast.AST]:
    """Old functions around the insertion point that the current code has inlined.

    Inside such a function the statement's names are the caller's
    arguments under the function's parameter names.
    """
    matched = {id(o.node) for _, o in match.pairs}
    found, node = [], old_frame.node
    while node is not None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and id(node) not in matched:
            found.append(node)
        node = old.parents.get(node)
    return found


def _frame_votes(new_fr: Frame, old_fr: Frame, new: Version, old: Version, seen: set) -> Counter:
    """Votes from a matched enclosing block and its header (loop targets, parameters)."""
    votes = collect_votes(new_fr.block, old_fr.block, new.info, old.info, seen)
    if isinstance(new_fr.node, ast.stmt) and new_fr.field == "body" and (id(new_fr.node), id(old_fr.node)) not in seen:
        seen.add((id(new_fr.node), id(old_fr.node)))
        add_votes(votes, name_pairs(new_fr.node, old_fr.node, new.info, old.info))
    return votes


def _decide(name: str, votes: Counter) -> str | None:
    """The old name for ``name`` if the votes so far are clear, else None."""
    counts = {o: w for (n, o), w in votes.items() if n == name}
    if not counts:
        return None
    top = max(counts.values())
    best = sorted(o for o, w in counts.items() if w == top)
    if name in best:
        return name
    if top < 2:
        return None
    if len(best) > 1:
        raise PropagationError(
            f"variable '{name}' used by the statement corresponds to several names in the old "
            f"version ({', '.join(best)})")
    return best[0]


def flor_spelling(name: str, new: Version, old: Version) -> str:
    """How the old code spells the flordb module or function the statement uses."""
    nf, of = new.info.flor, old.info.flor
    if name in nf.modules:
        if name in of.imported_modules:
            return name
        if of.imported_modules:
            return sorted(of.imported_modules)[0]
        raise PropagationError("the old version does not import flordb under a module name the statement can use")
    wanted = nf.functions[name]
    for alias, func in sorted(of.functions.items()):
        if func == wanted:
            return alias
    if of.imported_modules:
        return f"{sorted(of.imported_modules)[0]}.{wanted}"
    raise PropagationError(f"the old version does not import flordb's '{wanted}'")


# ---------------------------------------------------------------- step 5: the text

def statement_text(source: str, stmt: ast.stmt, renames: dict[str, str], indent: str) -> str:
    """The statement's source with names replaced, re-indented for the old block.

    Editing the original characters (rather than unparsing) keeps the user's
    quotes, spacing and line breaks.
    """
    lines = source_lines(source)[stmt.lineno - 1: stmt.end_lineno]
    first_col = _char_col(lines[0], stmt.col_offset)
    base = lines[0][:first_col]
    lines[-1] = lines[-1][:_char_col(lines[-1], stmt.end_col_offset)]
    edits = sorted(((n.lineno, _char_col(lines[n.lineno - stmt.lineno], n.col_offset),
                     _char_col(lines[n.lineno - stmt.lineno], n.end_col_offset), renames[n.id])
                    for n in free_name_nodes(stmt) if n.id in renames), reverse=True)
    for line_no, start, end, text in edits:
        k = line_no - stmt.lineno
        lines[k] = lines[k][:start] + text + lines[k][end:]
    in_string = _lines_inside_strings(stmt)
    out = [indent + lines[0][first_col:]]
    for k, line in enumerate(lines[1:], start=stmt.lineno + 1):
        if k in in_string:
            out.append(line)
        elif base.strip() == "" and line.startswith(base):
            out.append(indent + line[len(base):])
        else:
            out.append(indent + line.lstrip())
    return "\n".join(out)


def _char_col(line: str, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def _lines_inside_strings(stmt: ast.stmt) -> set[int]:
    """Lines that continue a multi-line string literal, whose leading spaces are data."""
    inside = set()
    for n in ast.walk(stmt):
        if isinstance(n, (ast.Constant, ast.JoinedStr)) and n.end_lineno and n.end_lineno > n.lineno:
            if isinstance(n, ast.JoinedStr) or isinstance(n.value, (str, bytes)):
                inside.update(range(n.lineno + 1, n.end_lineno + 1))
    return inside


def block_indent(frame: Frame, old: Version) -> str:
    """The exact indentation characters of the old block, tabs included."""
    lines = source_lines(old.source)
    for s in frame.block:
        line = lines[s.lineno - 1]
        prefix = line.encode("utf-8")[: s.col_offset].decode("utf-8", errors="ignore")
        if prefix.strip() == "":
            return prefix
    raise PropagationError(
        f"{describe(frame.node)} in the old version is written on one line; "
        "a line cannot be inserted into it without rewriting it")


def already_present(stmt: ast.stmt, renames: dict[str, str], frame: Frame, new: Version, old: Version) -> bool:
    """Whether the old block already has the statement, up to renaming.

    A log of the same name anywhere else in the old file is refused: two
    statements writing one column would make replayed values ambiguous.
    """
    adapted = ast.dump(adapt(stmt, renames))
    if any(ast.dump(s) == adapted for s in frame.block):
        return True
    call = log_call(stmt, new.info.flor)
    name = literal_name(call) if call else None
    if name is not None:
        existing = find_log_statements(old.source, name)
        if existing:
            raise PropagationError(
                f"the old version already logs '{name}' at line {existing[0].lineno} "
                f"('{existing[0].text.strip()}'), differently or elsewhere")
    return False


def adapt(stmt: ast.stmt, renames: dict[str, str]) -> ast.stmt:
    """A copy of the statement as it reads after renaming, for comparison."""
    node = copy.deepcopy(stmt)
    free = {id(n) for n in free_name_nodes(node)}

    class Rename(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.expr:
            if id(n) in free and n.id in renames:
                return ast.parse(renames[n.id], mode="eval").body
            return n

    return Rename().visit(node)


# ---------------------------------------------------------------- step 6: the gap

def choose_gap(new_block: list[ast.stmt], t: int, old_block: list[ast.stmt],
               new: Version, old: Version, edges: bool = True) -> int:
    """Index in ``old_block`` before which the statement goes.

    The statement follows its previous neighbour if the old code has it,
    else precedes its next one. The block's start and end count as
    neighbours only when the old block is the known counterpart (``edges``).
    Failing both, the nearest matched statements on either side must leave
    no old code between them whose order relative to the statement is unknown.
    """
    others = new_block[:t] + new_block[t + 1:]
    to_old = {(p.new if p.new < t else p.new + 1): p.old for p in align(others, old_block, new.info, old.info)}
    last = len(new_block) - 1
    if t - 1 in to_old:
        return to_old[t - 1] + 1
    if t == 0 and edges:
        return 0
    if t + 1 in to_old:
        return to_old[t + 1]
    if t == last and edges:
        return len(old_block)
    before = [i for i in to_old if i < t]
    after = [i for i in to_old if i > t]
    low = to_old[max(before)] + 1 if before else (0 if edges else None)
    high = to_old[min(after)] if after else (len(old_block) if edges else None)
    if low is not None and low == high:
        return low
    def show(i):
        return f"'{ast.unparse(new_block[i]).splitlines()[0]}'"
    around = " and ".join(show(i) for i in (t - 1, t + 1) if 0 <= i <= last) or "none"
    raise PropagationError(
        f"the statements next to it in the current code ({around}) have no counterpart in the old "
        "version, so its position among the old statements is unclear")


def insertion_line(frame: Frame, gap: int, old: Version) -> int:
    """The old line after which the new line goes (0 = before the first line)."""
    block = frame.block
    if gap == 0:
        return first_line(block[0]) - 1
    line = block[gap - 1].end_lineno
    if gap < len(block) and first_line(block[gap]) == line:
        raise PropagationError(
            f"line {line} of the old version holds several statements; "
            "the statement would have to go in the middle of it")
    return line


# ---------------------------------------------------------------- step 7: names defined

def check_defined(stmt: ast.stmt, renames: dict[str, str], old: Version, frame: Frame, line: int) -> None:
    """Refuse when a name the statement reads does not exist at the old insertion point.

    Scopes follow Python: the enclosing function's bindings before the
    line, enclosing functions' and the module's bindings (all of them when
    inside a function, since they exist by the time it runs), then builtins.
    """
    visible, star = visible_names(old, frame.node, line)
    if star:
        return
    for name in dict.fromkeys(n.id for n in free_name_nodes(stmt)):
        used = renames.get(name, name).split(".")[0]
        if used not in visible:
            shown = f"'{name}'" + (f" (called '{used}' there)" if used != name else "")
            raise PropagationError(
                f"variable {shown} used by the statement is not defined in the old version at that point")


def visible_names(old: Version, owner: ast.AST, line: int) -> tuple[set[str], bool]:
    """Names readable after old line ``line`` inside ``owner``'s block, and whether a star import hides some."""
    chain, node = [], owner
    while node is not None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            chain.append(node)
        node = old.parents.get(node)
    visible, star = set(BUILTIN_NAMES), False
    for depth, scope in enumerate(chain):
        if depth > 0 and isinstance(scope, ast.ClassDef):
            continue  # class bodies are not visible from their methods
        bindings, scope_star = scope_bindings(scope)
        star |= scope_star
        innermost = depth == 0
        visible.update(n for n, at in bindings if not innermost or at <= line)
    return visible, star


# ---------------------------------------------------------------- step 8: the patch

def source_lines(source: str) -> list[str]:
    """Lines split where the tokenizer splits them (\\n, \\r\\n, \\r), without their endings."""
    return [ln.rstrip("\r\n") for ln in io.StringIO(source, newline="").readlines()]


def splice(source: str, line: int, text: str) -> str:
    """Insert ``text`` after old line ``line``, leaving every existing line untouched."""
    lines = io.StringIO(source, newline="").readlines()
    newline = next((ln[len(ln.rstrip("\r\n")):] for ln in lines if ln.endswith(("\n", "\r"))), "\n")
    if line > 0 and not lines[line - 1].endswith(("\n", "\r")):
        lines[line - 1] += newline
    inserted = newline.join(text.split("\n")) + newline
    return "".join(lines[:line]) + inserted + "".join(lines[line:])
