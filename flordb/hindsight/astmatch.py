"""Comparing statements of two code versions: keys, alignment, names.

Propagation must recognise "the same statement" across edits that change
identifiers (``net`` renamed ``model``), loop spelling (``enumerate`` added)
or instrumentation (``flor.loop`` wrapped around an iterable). Each helper here
gives one notion of sameness, from strict to loose, so callers can trust the
strict ones for renaming and use the loose ones only to position a line.
"""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
import weakref
from collections import Counter
from dataclasses import dataclass

from flordb.hindsight.locate import FlorNames, flor_names, literal_name

BUILTIN_NAMES = frozenset(dir(builtins))
COMPOUND = (
    ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try,
    ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match,
)
if hasattr(ast, "TryStar"):
    COMPOUND = COMPOUND + (ast.TryStar,)
BLOCK_FIELDS = ("body", "orelse", "finalbody")
# Wrappers around an iterable that do not change which items a loop visits.
TRANSPARENT_ITER_CALLS = frozenset({"enumerate", "tqdm", "trange"})

EXACT, ABSTRACT, SHAPE = "exact", "abstract", "shape"


@dataclass(frozen=True)
class ModuleInfo:
    """What key-making needs to know about one version's module."""

    flor: FlorNames
    keep: frozenset[str]  # names too global to abstract away: builtins, imports, flordb

    @classmethod
    def of(cls, tree: ast.Module) -> "ModuleInfo":
        """Build from a parsed module; imports anywhere count, as scripts import late."""
        flor = flor_names(tree)
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported.update(_import_binding(a) for a in node.names if a.name != "*")
        keep = BUILTIN_NAMES | imported | flor.modules | set(flor.functions)
        return cls(flor=flor, keep=frozenset(keep))


def _import_binding(alias: ast.alias) -> str:
    return alias.asname or alias.name.split(".")[0]



# ---------------------------------------------------------------- API spellings

# Functions renamed across library versions without changing what they compute.
RENAMED_CALLS = {"clip_grad_norm": "clip_grad_norm_", "clip_grad_value": "clip_grad_value_",
                 "xavier_uniform": "xavier_uniform_", "xavier_normal": "xavier_normal_",
                 "kaiming_uniform": "kaiming_uniform_", "kaiming_normal": "kaiming_normal_"}
# Calls that only move or wrap a value: ``Variable(x)``, ``x.cuda()``, ``x.to(device)``.
WRAPPING_CALLS = frozenset({"Variable"})
MOVING_METHODS = frozenset({"cuda", "cpu", "to"})


class _Normalize(ast.NodeTransformer):
    """Rewrite old API spellings into one form, and ``self.x`` into a name ``self.x``.

    ``loss.data[0]`` becomes ``loss.item()``; ``Variable(x)`` and
    ``x.cuda()`` become ``x``; ``clip_grad_norm`` becomes ``clip_grad_norm_``;
    ``accelerator.backward(loss)`` and ``scaler.scale(loss).backward()``
    become ``loss.backward()``, ``scaler.step(optimizer)`` ``optimizer.step()``.
    An attribute of ``self`` becomes one name so that ``self.loss`` and a
    local ``loss`` compare like two spellings of one variable.
    """

    def visit_Subscript(self, node):
        self.generic_visit(node)
        v = node.value
        if (isinstance(v, ast.Attribute) and v.attr == "data" and isinstance(node.slice, ast.Constant)
                and node.slice.value == 0):
            return ast.Call(func=ast.Attribute(value=v.value, attr="item", ctx=ast.Load()), args=[], keywords=[])
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name in WRAPPING_CALLS and node.args:
            return node.args[0]
        one_arg = len(node.args) == 1 and not node.keywords
        if isinstance(f, ast.Attribute) and one_arg and (
                name == "backward" or (name == "step" and _is_scaler(f.value))):
            # accelerator.backward(loss) / scaler.step(optimizer): loss.backward() / optimizer.step()
            return ast.Call(func=ast.Attribute(value=node.args[0], attr=name, ctx=ast.Load()), args=[], keywords=[])
        if isinstance(f, ast.Attribute) and one_arg and name == "scale" and _is_scaler(f.value):
            return node.args[0]  # scaler.scale(loss) is the loss, scaled for mixed precision
        if isinstance(f, ast.Attribute) and f.attr in MOVING_METHODS and len(node.args) <= 1:
            return f.value
        return node

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return ast.Name(id=f"self.{node.attr}", ctx=node.ctx)
        if node.attr in RENAMED_CALLS:
            node.attr = RENAMED_CALLS[node.attr]
        return node

    def visit_Name(self, node):
        if node.id in RENAMED_CALLS:
            return ast.Name(id=RENAMED_CALLS[node.id], ctx=node.ctx)
        return node


_NORMALIZED: "weakref.WeakKeyDictionary[ast.AST, ast.AST]" = weakref.WeakKeyDictionary()
_KEYS: "weakref.WeakKeyDictionary[ast.AST, dict]" = weakref.WeakKeyDictionary()


def _is_scaler(node: ast.AST) -> bool:
    """A mixed-precision gradient scaler, by its name (``scaler``, ``self.grad_scaler``, ``loss_scaler``)."""
    text = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "scaler" in text.lower()


def normalize(node: ast.AST) -> ast.AST:
    """A normalized copy of ``node`` (see ``_Normalize``); the original is untouched.

    Copies are cached per node and shared: callers must not modify them.
    """
    found = _NORMALIZED.get(node)
    if found is None:
        found = _NORMALIZED[node] = _Normalize().visit(copy.deepcopy(node))
    return found


def _cached(kind: str, node: ast.AST, make):
    keys = _KEYS.get(node)
    if keys is None:
        keys = _KEYS[node] = {}
    if kind not in keys:
        keys[kind] = make()
    return keys[kind]


def read_refs(stmt: ast.stmt) -> list[tuple[ast.expr, str]]:
    """What the statement reads from its surroundings: free names and ``self.x`` attributes.

    Each comes with its text (``"loss"``, ``"self.loss"``), the unit in
    which names are matched, renamed and checked.
    """
    refs = []
    free = free_name_nodes(stmt)
    selfs = {id(n) for n in free if n.id == "self"}
    parents = {id(c): p for p in ast.walk(stmt) for c in ast.iter_child_nodes(p)}
    for n in free:
        parent = parents.get(id(n))
        if id(n) in selfs and isinstance(parent, ast.Attribute) and parent.value is n:
            refs.append((parent, f"self.{parent.attr}"))
        else:
            refs.append((n, n.id))
    return refs


# ---------------------------------------------------------------- keys

def abstract_dump(nodes: list[ast.AST], keep: frozenset[str]) -> str:
    """ast.dump with local identifiers numbered by first use.

    ``loss = criterion(net(x), y)`` and ``loss = criterion(model(x), y)`` get
    the same dump, while ``x = f(x)`` and ``x = f(y)`` do not.
    """
    numbering: dict[str, str] = {}

    class Abstract(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            if node.id in keep:
                return node
            return ast.Name(id=numbering.setdefault(node.id, f"_{len(numbering)}"), ctx=node.ctx)

    return "|".join(ast.dump(Abstract().visit(copy.deepcopy(n))) for n in nodes)


def loop_name(node: ast.AST, info: ModuleInfo) -> str | None:
    """The literal name of a ``flor.loop`` a for-loop iterates, else None."""
    it = node.iter if isinstance(node, (ast.For, ast.AsyncFor)) else None
    if isinstance(it, ast.Call) and info.flor.call_target(it) == "loop":
        return literal_name(it)
    return None


def core_iter(node: ast.For | ast.AsyncFor, info: ModuleInfo) -> tuple[ast.expr, ast.expr]:
    """The loop's (target, iterable) with flor.loop and enumerate-like wrappers removed.

    ``for i, (x, y) in enumerate(flor.loop("step", loader))`` and
    ``for x, y in loader`` both reduce to ``(x, y)`` over ``loader``.
    """
    target, it = node.target, node.iter
    while isinstance(it, ast.Call) and it.args:
        func = it.func
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if info.flor.call_target(it) == "loop" and len(it.args) >= 2:
            it = it.args[1]
        elif fname in TRANSPARENT_ITER_CALLS:
            if fname == "enumerate" and isinstance(target, ast.Tuple) and len(target.elts) == 2:
                target = target.elts[1]
            it = it.args[0]
        else:
            break
    return target, it


def header_nodes(stmt: ast.stmt) -> list[ast.AST]:
    """The parts of a compound statement that identify it, bodies excluded.

    Bodies change between versions far more than headers do, so compound
    statements are compared by header only and their bodies aligned separately.
    """
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return [stmt.target, stmt.iter]
    if isinstance(stmt, (ast.While, ast.If)):
        return [stmt.test]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return list(stmt.items)
    if isinstance(stmt, ast.Match):
        return [stmt.subject]
    return []


def _kind(stmt: ast.stmt) -> str:
    name = getattr(stmt, "name", None)
    return type(stmt).__name__ + (f" {name}" if name else "")


def exact_key(stmt: ast.stmt) -> str:
    """Equal exactly when the statement (header, for compounds) is unchanged, up to API spellings."""
    return _cached("exact", stmt, lambda: _exact_key(stmt))


def _exact_key(stmt: ast.stmt) -> str:
    if isinstance(stmt, COMPOUND):
        return _kind(stmt) + "|" + "|".join(ast.dump(normalize(n)) for n in header_nodes(stmt))
    return ast.dump(normalize(stmt))


def abstract_key(stmt: ast.stmt, info: ModuleInfo) -> str | None:
    """Equal when the statement is the same up to renamed local variables.

    A tiny statement made only of local names (``b()``, ``x = y``) has no
    key: once its names are abstracted nothing is left to recognise it by.
    """
    return _cached(("abstract", id(info)), stmt, lambda: _abstract_key(stmt, info))


def _abstract_key(stmt: ast.stmt, info: ModuleInfo) -> str | None:
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return f"{_kind(stmt)}|{loop_name(stmt, info)}|" + abstract_dump([core_iter(stmt, info)[1]], info.keep)
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return _kind(stmt) + "|" + abstract_dump([i.context_expr for i in stmt.items], info.keep)
    if isinstance(stmt, COMPOUND):
        return _kind(stmt) + "|" + abstract_dump([normalize(n) for n in header_nodes(stmt)], info.keep)
    stmt = normalize(stmt)
    return abstract_dump([stmt], info.keep) if _recognisable(stmt, info) else None


def _recognisable(stmt: ast.stmt, info: ModuleInfo, min_nodes: int = 6) -> bool:
    """Whether a statement keeps something to recognise it by once its names are abstracted."""
    nodes = [n for n in ast.walk(stmt) if not isinstance(n, (ast.expr_context, ast.operator))]
    anchored = any(isinstance(n, (ast.Attribute, ast.Constant)) or (isinstance(n, ast.Name) and n.id in info.keep)
                   for n in nodes)
    return anchored or len(nodes) >= min_nodes


def shape_key(stmt: ast.stmt, info: ModuleInfo) -> str | None:
    """A loose key (what is assigned, which method is called) used only to position.

    ``loss = criterion(out, y)`` and ``loss = F.cross_entropy(out, y)`` share a
    shape; statements without a telling shape get None and never match.
    """
    if isinstance(stmt, ast.Assign):
        return "Assign|" + "|".join(ast.dump(t) for t in stmt.targets)
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        return type(stmt).__name__ + "|" + ast.dump(stmt.target)
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func  # a method keeps its name, a function its whole name
        return "Call|" + (func.id if isinstance(func, ast.Name) else abstract_dump([func], info.keep))
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return "For|" + abstract_dump([core_iter(stmt, info)[1]], info.keep)
    if isinstance(stmt, ast.Return):
        return "Return"
    return None


def value_key(stmt: ast.stmt) -> str | None:
    """What a one-name assignment stores, when that is more than a constant: used only to position.

    ``best_val = val_loss`` and ``best_val_loss = val_loss`` store the same value
    under two names; ``x = 0`` and ``y = 0`` say nothing.
    """
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
            and not isinstance(stmt.value, ast.Constant):
        return "Value|" + ast.dump(normalize(stmt.value))
    return None


# ---------------------------------------------------------------- alignment

@dataclass(frozen=True)
class Pair:
    """Statement ``new`` of one block corresponds to statement ``old`` of another."""

    new: int
    old: int
    strength: str  # EXACT, ABSTRACT or SHAPE


def align(new_block: list[ast.stmt], old_block: list[ast.stmt],
          new_info: ModuleInfo, old_info: ModuleInfo) -> list[Pair]:
    """Pair statements of two blocks in order, strictest evidence first.

    Exact matches split the blocks into gaps; inside each gap, renamed
    statements are matched, then statements of the same shape. Pairs never
    cross, so an anchor's position among its neighbours is preserved.
    """
    passes = (
        (EXACT, exact_key, exact_key),
        (ABSTRACT, lambda s: abstract_key(s, new_info), lambda s: abstract_key(s, old_info)),
        (SHAPE, lambda s: shape_key(s, new_info), lambda s: shape_key(s, old_info)),
        (SHAPE, value_key, value_key),
    )
    return sorted(_align_gap(new_block, old_block, 0, len(new_block), 0, len(old_block), passes),
                  key=lambda p: p.new)


def _align_gap(new_block, old_block, n0, n1, o0, o1, passes) -> list[Pair]:
    if not passes or n0 >= n1 or o0 >= o1:
        return []
    strength, new_key, old_key = passes[0]
    a = [new_key(s) for s in new_block[n0:n1]]
    b = [old_key(s) for s in old_block[o0:o1]]
    # None never equals a sentinel of the other side.
    a = [k if k is not None else ("new", i) for i, k in enumerate(a)]
    b = [k if k is not None else ("old", j) for j, k in enumerate(b)]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    pairs: list[Pair] = []
    prev_n, prev_o = n0, o0
    for block in matcher.get_matching_blocks():
        bn, bo = n0 + block.a, o0 + block.b
        pairs += _align_gap(new_block, old_block, prev_n, bn, prev_o, bo, passes[1:])
        pairs += [Pair(bn + k, bo + k, strength) for k in range(block.size)]
        prev_n, prev_o = bn + block.size, bo + block.size
    return pairs


# ---------------------------------------------------------------- renaming evidence

def name_pairs(new: ast.stmt, old: ast.stmt, new_info: ModuleInfo, old_info: ModuleInfo):
    """Yield (new name, old name, weight) for identifiers in the same position.

    Only called on statements whose abstract keys are equal, so walking both
    trees in the same order visits corresponding identifiers. A pair where
    both sides bind the name (assignment, loop target, parameter) weighs 2:
    the same value is given a different name. A pair of mere uses weighs 1.
    """
    if type(new) is not type(old):
        return  # a loop rewritten as another kind of loop: its header tells nothing about names
    if isinstance(new, (ast.For, ast.AsyncFor)):
        (nt, ni), (ot, oi) = core_iter(new, new_info), core_iter(old, old_info)
        parts = [(ni, oi)] + ([(nt, ot)] if ast.dump(_shape(nt)) == ast.dump(_shape(ot)) else [])
    elif isinstance(new, (ast.FunctionDef, ast.AsyncFunctionDef)):
        # Parameters kept by name are the same; a renamed one pairs by position only
        # with an old parameter that is renamed too (reordering is not renaming).
        na, oa = _params(new), _params(old)
        yield from ((n, n, 2) for n in na if n in oa)
        if len(na) == len(oa):
            yield from ((n, o, 2) for n, o in zip(na, oa) if n not in oa and o not in na)
        return
    elif isinstance(new, (ast.With, ast.AsyncWith)) and len(new.items) == len(old.items):
        parts = list(zip(new.items, old.items))
    elif isinstance(new, COMPOUND):
        parts = list(zip(header_nodes(new), header_nodes(old)))
    else:
        parts = [(new, old)]
    parts = [(normalize(n), normalize(o)) for n, o in parts]
    seen: dict[tuple[str, str], int] = {}
    for n, o in parts:
        nn = [x for x in ast.walk(n) if isinstance(x, ast.Name)]
        on = [x for x in ast.walk(o) if isinstance(x, ast.Name)]
        if len(nn) == len(on):
            for a, b in zip(nn, on):
                binds = isinstance(a.ctx, ast.Store) and isinstance(b.ctx, ast.Store)
                seen[(a.id, b.id)] = max(seen.get((a.id, b.id), 0), 2 if binds else 1)
    yield from ((n, o, w) for (n, o), w in seen.items())


def call_site_pairs(fn: ast.FunctionDef | ast.AsyncFunctionDef, tree: ast.Module):
    """Yield (parameter, argument name, 2) from the calls of ``fn`` in its module.

    When the old code has inline what the current code moved into ``fn``,
    a parameter stands for whatever its callers pass.
    """
    params = _params(fn)
    for call in (c for c in ast.walk(tree) if isinstance(c, ast.Call)):
        f = call.func
        if isinstance(f, ast.Name) and f.id == fn.name:
            offset = 0
        elif isinstance(f, ast.Attribute) and f.attr == fn.name and params[:1] == ["self"]:
            offset = 1
        else:
            continue
        for param, arg in zip(params[offset:], call.args):
            if isinstance(arg, ast.Name):
                yield param, arg.id, 2
        for kw in call.keywords:
            if kw.arg in params and isinstance(kw.value, ast.Name):
                yield kw.arg, kw.value.id, 2


def _shape(node: ast.AST) -> ast.AST:
    """A target with names blanked, to check that two loop targets unpack alike."""
    node = copy.deepcopy(node)
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            n.id = "_"
    return node


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]


def collect_votes(new_block: list[ast.stmt], old_block: list[ast.stmt],
                  new_info: ModuleInfo, old_info: ModuleInfo, seen: set | None = None) -> Counter:
    """Weigh (new name, old name) pairs over two aligned blocks, recursively.

    Unchanged statements vote for identity, renamed ones for the rename, so a
    single coincidental match cannot outvote consistent usage. ``seen``
    holds statement pairs that already voted: callers that widen the search
    block by block pass the same set, so no pair votes twice.
    """
    seen = set() if seen is None else seen
    votes: Counter = Counter()
    for pair in align(new_block, old_block, new_info, old_info):
        if pair.strength == SHAPE:
            continue
        n, o = new_block[pair.new], old_block[pair.old]
        if (id(n), id(o)) not in seen:
            seen.add((id(n), id(o)))
            add_votes(votes, name_pairs(n, o, new_info, old_info))
        if type(n) is type(o) and isinstance(n, COMPOUND):
            for field_name in BLOCK_FIELDS:
                if hasattr(n, field_name):
                    votes.update(collect_votes(getattr(n, field_name), getattr(o, field_name),
                                               new_info, old_info, seen))
    return votes


def add_votes(votes: Counter, weighted) -> Counter:
    """Add (new, old, weight) triples to a vote counter keyed by (new, old)."""
    for n, o, w in weighted:
        votes[(n, o)] += w
    return votes


# ---------------------------------------------------------------- names read and bound

SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
          ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def free_name_nodes(stmt: ast.stmt) -> list[ast.Name]:
    """Names the statement reads from its surroundings.

    Names bound inside it (comprehension variables, lambda parameters) are
    its own business and must be neither renamed nor required to exist.
    """
    inner: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.comprehension):
            inner.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Lambda):
            inner.update(p.arg for p in ast.walk(node.args) if isinstance(p, ast.arg))
    reads = []
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and node.id not in inner:
            if isinstance(node.ctx, ast.Load) or (isinstance(stmt, ast.AugAssign) and node is stmt.target):
                reads.append(node)
    return reads


def scope_bindings(scope: ast.AST) -> tuple[list[tuple[str, int]], bool]:
    """(name, line) for every binding made directly in a scope, and whether it star-imports.

    Nested functions and classes bind only their own name here; what happens
    inside them belongs to their own scope.
    """
    found: list[tuple[str, int]] = []
    star = False
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        found += [(p.arg, scope.lineno) for p in ast.walk(scope.args) if isinstance(p, ast.arg)]
    todo = list(getattr(scope, "body", []))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append((node.name, node.lineno))
            continue
        if isinstance(node, SCOPES):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.append((node.id, node.lineno))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            star |= any(a.name == "*" for a in node.names)
            found += [(_import_binding(a), node.lineno) for a in node.names if a.name != "*"]
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.append((node.name, node.lineno))
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            found.append((node.name, node.lineno))
        elif isinstance(node, ast.Global):
            found += [(n, 0) for n in node.names]
        todo.extend(ast.iter_child_nodes(node))
    return found, star
