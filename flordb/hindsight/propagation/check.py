"""Step 6: refuse unless everything the statement reads exists at the old insertion point.

A placement is only as good as this check: every name the statement reads
must be bound, in the old version, in the scope of the insertion point and
on every path that reaches it (a name bound in one branch of an ``if`` is
not); ``self.x`` needs a class whose code sets ``x``; ``args.x`` needs an
argument parser that defines ``--x``. Loop bodies are assumed to run at
least once, as training loops do.
"""

from __future__ import annotations

import ast

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import BUILTIN_NAMES, SCOPES, read_refs, scope_bindings
from flordb.hindsight.propagation.model import Frame, Version

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
ALL = None  # "every name": what a block that never falls through defines


def check_defined(stmt: ast.stmt, renames: dict[str, str], old: Version, frame: Frame, line: int,
                  new: Version | None = None) -> None:
    """Raise ``PropagationError`` naming the first thing the statement reads that is missing there."""
    visible, star = visible_names(old, frame.node, line)
    for _, text in read_refs(stmt):
        used = renames.get(text, text)
        shown = f"'{text}'" + (f" (called '{used}' there)" if used != text else "")
        root = used.split(".")[0]
        if root not in visible and not star:
            raise PropagationError(
                f"variable {shown} used by the statement is not defined in the old version at that point"
                + (" on every path" if root in _all_bound(old, frame.node) else ""))
        if used.startswith("self."):
            _check_self_attribute(used.split(".")[1], shown, old, frame.node, new, text)
    _check_parsed_args(stmt, renames, old)


def adapt_attributes(stmt: ast.stmt, renames: dict[str, str], old: Version, frame: Frame, line: int) -> dict[str, str]:
    """Spell ``self.x`` as a local ``x`` where the old code has the local, and the reverse.

    The same value is often an attribute in one version and a local in the
    other (a Trainer class against a ``main()``). A reference that does not
    exist at the old insertion point switches spelling when the other one
    does: a local bound on every path, or an attribute the enclosing old
    class sets.
    """
    visible, _ = visible_names(old, frame.node, line)
    cls = _enclosing_class(frame.node, old)
    out = dict(renames)
    for _, text in read_refs(stmt):
        used = out.get(text, text)
        if used.startswith("self."):
            attr = used[5:]
            has = cls is not None and "self" in visible and _class_sets(cls, attr)
            if not has and attr in visible:
                out[text] = attr
        elif "." not in used and used not in visible and cls is not None and "self" in visible \
                and _class_sets(cls, used):
            out[text] = f"self.{used}"
    return {k: v for k, v in out.items() if k != v}


def _class_sets(cls: ast.ClassDef, attr: str) -> bool:
    return _sets_attr(cls, attr) or any(getattr(s, "name", None) == attr or attr in _stores(s) for s in cls.body)


def visible_names(old: Version, owner: ast.AST, line: int) -> tuple[set[str], bool]:
    """Names surely bound after old line ``line`` inside ``owner``'s block, and whether a star import hides some.

    The innermost scope counts bindings made before the line on every path;
    enclosing scopes (the module, outer functions) count all their bindings,
    since they exist by the time a function runs.
    """
    chain, node = [], owner
    while node is not None:
        if isinstance(node, FUNCS + (ast.ClassDef, ast.Module)):
            chain.append(node)
        node = old.parents.get(node)
    visible, star = set(BUILTIN_NAMES), False
    for depth, scope in enumerate(chain):
        if depth > 0 and isinstance(scope, ast.ClassDef):
            continue  # class bodies are not visible from their methods
        bindings, scope_star = scope_bindings(scope)
        star |= scope_star
        if depth == 0:
            visible |= _bound_before(scope, owner, line, old)
            visible |= {n for n, at in bindings if at == 0}  # global statements
        else:
            visible.update(n for n, _ in bindings)
    return visible, star


def _all_bound(old: Version, owner: ast.AST) -> set[str]:
    node = owner
    while node is not None and not isinstance(node, FUNCS + (ast.ClassDef, ast.Module)):
        node = old.parents.get(node)
    return {n for n, _ in scope_bindings(node)[0]} if node is not None else set()


def _bound_before(scope: ast.AST, owner: ast.AST, line: int, old: Version) -> set[str]:
    """Names bound on every path from the start of ``scope`` to just after ``line`` in ``owner``."""
    path, node = set(), owner
    while node is not None and node is not scope:
        path.add(id(node))
        node = old.parents.get(node)
    bound: set[str] = set()
    if isinstance(scope, FUNCS):
        bound |= {p.arg for p in ast.walk(scope.args) if isinstance(p, ast.arg)}
    block = scope.body
    while True:
        inner = None
        for s in block:
            if id(s) in path:
                inner = s
                break
            if s.end_lineno > line:
                break
            got = definite(s)
            if got is ALL:
                return bound  # code after a return: nothing more is known
            bound |= got
        if inner is None:
            return bound
        bound |= _header_bindings(inner)
        if inner is owner:
            block = _owner_block(owner, line)
            if block is not getattr(owner, "body", None) and isinstance(owner, (ast.For, ast.AsyncFor, ast.While, ast.Try)):
                bound |= _or_empty(_block_definite(owner.body))  # an else block runs after the body
            continue
        field = next(f for f in ("body", "orelse", "finalbody", "handlers", "cases")
                     if any(id(c) in path for c in getattr(inner, f, [])))
        if field == "orelse" and isinstance(inner, (ast.For, ast.AsyncFor, ast.While, ast.Try)):
            bound |= _or_empty(_block_definite(inner.body))
        block = getattr(inner, field)
        if field in ("handlers", "cases"):
            sub = next(c for c in block if id(c) in path)
            bound |= _header_bindings(sub)
            block = sub.body


def _owner_block(owner: ast.AST, line: int) -> list[ast.stmt]:
    """The block of ``owner`` that holds the insertion point after ``line``."""
    for f in ("body", "orelse", "finalbody"):
        block = getattr(owner, f, None)
        if block and block[0].lineno - 1 <= line <= block[-1].end_lineno:
            return block
    return getattr(owner, "body", [])


def _header_bindings(node: ast.AST) -> set[str]:
    """Names a compound statement binds before its body runs."""
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return _stores(node.target)
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return set().union(*(_stores(i.optional_vars) for i in node.items if i.optional_vars))
    if isinstance(node, ast.ExceptHandler) and node.name:
        return {node.name}
    if isinstance(node, ast.match_case):
        return {n.name for n in ast.walk(node.pattern) if isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name}
    if isinstance(node, (ast.If, ast.While)):
        return _stores(node.test)
    return set()


def _stores(node: ast.AST) -> set[str]:
    """Names stored anywhere in ``node`` outside nested scopes (targets, walrus)."""
    out, todo = set(), [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, ast.NamedExpr):
            out.add(n.target.id)
        if not isinstance(n, SCOPES):
            todo.extend(ast.iter_child_nodes(n))
    return out


def definite(s: ast.stmt):
    """Names a statement binds on every path through it, or ALL when it never falls through."""
    if isinstance(s, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
        return ALL
    if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {s.name}
    if isinstance(s, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name.split(".")[0]) for a in s.names if a.name != "*"}
    if isinstance(s, ast.If):
        return _meet(_stores(s.test), _block_definite(s.body), _block_definite(s.orelse))
    if isinstance(s, (ast.For, ast.AsyncFor)):  # assumed to run at least once
        return _stores(s.target) | _or_empty(_block_definite(s.body)) | _or_empty(_block_definite(s.orelse))
    if isinstance(s, ast.While):
        if isinstance(s.test, ast.Constant) and s.test.value:
            return _or_empty(_block_definite(s.body))
        return _stores(s.test) | _or_empty(_block_definite(s.body))
    if isinstance(s, (ast.With, ast.AsyncWith)):
        got = _block_definite(s.body)
        return got if got is ALL else _header_bindings(s) | got
    if isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
        main = _block_definite(s.body + s.orelse)
        branches = [main] + [_block_definite(h.body) for h in s.handlers]
        result = branches[0]
        for b in branches[1:]:
            result = _meet(set(), result, b)
        final = _block_definite(s.finalbody)
        return ALL if final is ALL else (final if result is ALL else result | final)
    if isinstance(s, ast.Match):
        result = ALL
        for case in s.cases:
            result = _meet(set(), result, _block_definite(case.body))
        return _stores(s.subject) | (set() if result is ALL else result)
    return _stores(s)


def _block_definite(block: list[ast.stmt]):
    bound: set[str] = set()
    for s in block:
        got = definite(s)
        if got is ALL:
            return ALL
        bound |= got
    return bound


def _meet(base: set[str], a, b):
    """Names bound after two alternative paths: those bound on both (ALL is the identity)."""
    if a is ALL and b is ALL:
        return ALL
    if a is ALL:
        return base | b
    if b is ALL:
        return base | a
    return base | (a & b)


def _or_empty(got):
    return set() if got is ALL else got


# ---------------------------------------------------------------- attributes


def _check_self_attribute(attr: str, shown: str, old: Version, owner: ast.AST, new: Version | None,
                          new_text: str) -> None:
    """``self.attr`` is readable only where the old class sets ``attr``, or inherits it as the new one does."""
    cls = _enclosing_class(owner, old)
    if cls is None:
        if not _sets_attr(old.tree, attr):
            raise PropagationError(f"{shown} used by the statement: the old version never sets 'self.{attr}'")
        return
    if _class_sets(cls, attr):
        return
    if new is not None and new_text.startswith("self.") and cls.bases:
        new_cls = next((c for c in ast.walk(new.tree) if isinstance(c, ast.ClassDef) and c.name == cls.name), None)
        if new_cls is not None and not _sets_attr(new_cls, attr) and \
                [ast.dump(b) for b in new_cls.bases] == [ast.dump(b) for b in cls.bases]:
            return  # inherited from the same base class in both versions
    raise PropagationError(
        f"{shown} used by the statement: the class '{cls.name}' in the old version never sets 'self.{attr}'")


def _enclosing_class(node: ast.AST, old: Version) -> ast.ClassDef | None:
    while node is not None:
        if isinstance(node, ast.ClassDef):
            return node
        node = old.parents.get(node)
    return None


def _sets_attr(tree: ast.AST, attr: str) -> bool:
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and n.attr == attr and isinstance(n.ctx, ast.Store) \
                and isinstance(n.value, ast.Name) and n.value.id == "self":
            return True
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "setattr" and len(n.args) > 1 \
                and isinstance(n.args[1], ast.Constant) and n.args[1].value == attr:
            return True
    return False


def _check_parsed_args(stmt: ast.stmt, renames: dict[str, str], old: Version) -> None:
    """``args.x`` needs ``--x`` in the old argument parser, when ``args`` comes from ``parse_args()``."""
    parsed = set()
    for n in ast.walk(old.tree):
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Attribute) \
                and n.value.func.attr == "parse_args":
            parsed |= {t.id for t in n.targets if isinstance(t, ast.Name)}
    if not parsed:
        return
    dests, dynamic = set(), False
    for n in ast.walk(old.tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument":
            dest = next((k.value.value for k in n.keywords if k.arg == "dest" and isinstance(k.value, ast.Constant)),
                        None)
            flags = [a.value for a in n.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            long = [f for f in flags if f.startswith("--")]
            if not (dest or flags):
                dynamic = True  # flags built at run time: the parser cannot be read here
            dests.add(dest or (long[0] if long else flags[0] if flags else "").lstrip("-").replace("-", "_"))
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("set_defaults", "update"):
            dynamic = True
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "setattr":
            dynamic = True
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name) \
                and n.value.id in parsed:
            dests.add(n.attr)
    if dynamic:
        return
    for n in ast.walk(stmt):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and isinstance(n.ctx, ast.Load):
            root = renames.get(n.value.id, n.value.id)
            if root in parsed and n.attr not in dests:
                raise PropagationError(
                    f"'{n.value.id}.{n.attr}' used by the statement: the old version's argument parser "
                    f"has no '--{n.attr.replace('_', '-')}'")
