"""Resolve the calls a script makes to its own code: functions, methods, partials, lambdas.

The walk (:mod:`flordb.hindsight.flow`) enters a callee's body with its
parameters bound to the caller's variables; this module finds the callee
(functions and nested functions of the script, methods of its classes through
``self`` or a variable bound to an instance, ``functools.partial``, lambdas and
functions passed as arguments) and names every variable by its *key*: the
owner (``GLOBAL`` for module globals, else the id of the call frame that owns
the local) and its attribute path, so ``self.best`` in a method is the caller's
``trainer.best``. What it cannot resolve it leaves unresolved.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from flordb.hindsight.effects import GLOBAL, INSIDE_PH, Key

ITERATOR_MAKERS = frozenset({"iter", "map", "filter", "zip", "enumerate", "cycle", "islice", "chain", "count",
                             "repeat", "tee"})


@dataclass
class Frame:
    fid: int
    name: str
    func: ast.AST | None  # FunctionDef / Lambda, None for the module
    cls: ast.ClassDef | None = None
    self_name: str | None = None
    binding: dict = field(default_factory=dict)  # param -> caller Key, or None (a fresh value)
    arg_exprs: dict = field(default_factory=dict)  # param -> (caller expression, caller frame)
    local_names: set = field(default_factory=set)
    global_names: set = field(default_factory=set)
    parent: "Frame | None" = None  # lexically enclosing function's frame (closures)
    call_line: int | None = None


def path_of(node: ast.AST) -> tuple | None:
    """``self.a.b`` -> ("self", "a", "b"); ``x[i]`` -> ("x",); anything else None."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Name):
            return (node.id, *reversed(parts))
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            parts.clear()  # an item: the container's path
            node = node.value
        else:
            return None


def _local_names(func: ast.AST) -> tuple[set, set]:
    """Names a function binds (its locals) and those it declares global/nonlocal."""
    loc: set = set()
    glob: set = set()
    args = func.args
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if a is not None:
            loc.add(a.arg)
    body = func.body if isinstance(func.body, list) else [func.body]
    stack = list(body)
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Global):
            glob.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            glob.update(f"nonlocal:{x}" for x in n.names)
            glob.update(n.names)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            loc.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            loc.add(n.name)
            continue  # its body is another scope
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            loc.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(n))
    return loc - glob, glob


class Calls:
    """Call resolution and keys (mixed into :class:`flordb.hindsight.flow.Walk`)."""

    # -- the script's definitions --------------------------------------------------

    def _index(self, tree: ast.Module) -> None:
        self.funcs: dict[str, ast.AST] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self.parent_of: dict[int, ast.AST] = {}
        self.modules: set = {"flor", "flordb"} | set(self.flor.modules) | set(self.flor.functions)
        self.generators: set = set()
        self.attr_types: dict[tuple, str] = {}  # (class, attr) -> class of self.attr = C(...)
        self.data_attrs: set = set()  # attribute names assigned anywhere (obj.attr = ...)
        self.shared_iters: set = set()
        self.loader_rngs: dict = {}  # name of a DataLoader -> path of the generator it draws from
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parent_of[id(child)] = node
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.modules.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in ast.walk(node)):
                    self.generators.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                self.data_attrs.add(node.attr)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.funcs[node.name] = node
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
        for node in ast.walk(tree):  # classes and functions defined under `if` or in functions
            if isinstance(node, ast.ClassDef):
                self.classes.setdefault(node.name, node)
        for cls in self.classes.values():
            for n in ast.walk(cls):
                if (isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                        and isinstance(n.value.func, ast.Name) and n.value.func.id in self.classes):
                    for t in n.targets:
                        p = path_of(t)
                        if p and len(p) == 2 and isinstance(t, ast.Attribute):
                            self.attr_types[(cls.name, p[1])] = n.value.func.id
        for n in ast.walk(tree):
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call):
                f = n.value.func
                fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                for k in n.value.keywords:
                    g = path_of(k.value) if k.arg == "generator" and fname == "DataLoader" else None
                    for t in n.targets if g else ():
                        tp = path_of(t)
                        if tp:
                            self.loader_rngs[tp[-1]] = g
                if fname in ITERATOR_MAKERS or fname in self.generators:
                    for t in n.targets:
                        p = path_of(t)
                        if p:
                            self.shared_iters.add(p[-1])

    def _method(self, cls_name: str | None, name: str) -> ast.AST | None:
        seen = set()
        while cls_name and cls_name in self.classes and cls_name not in seen:
            seen.add(cls_name)
            cls = self.classes[cls_name]
            for n in cls.body:
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name:
                    return n
            bases = [b.id for b in cls.bases if isinstance(b, ast.Name) and b.id in self.classes]
            cls_name = bases[0] if bases else None
        return None

    def _class_of(self, func: ast.AST) -> ast.ClassDef | None:
        parent = self.parent_of.get(id(func))
        return parent if isinstance(parent, ast.ClassDef) else None

    def enclosing_function(self, node: ast.AST) -> str | None:
        n = self.parent_of.get(id(node))
        while n is not None:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return n.name
            n = self.parent_of.get(id(n))
        return None

    def _var_class(self, name: str, frame: Frame) -> str | None:
        """The script class of variable ``name`` when it is bound to ``C(...)`` in the frame's function."""
        for n in self._assigns(frame):
            if (isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
                    and n.value.func.id in self.classes
                    and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)):
                return n.value.func.id
        if name in frame.arg_exprs:
            expr, caller = frame.arg_exprs[name]
            if isinstance(expr, ast.Name):
                return self._var_class(expr.id, caller)
            if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in self.classes:
                return expr.func.id
        if frame.parent is not None:
            return self._var_class(name, frame.parent)
        if frame.func is not None and name not in frame.local_names:
            return self._var_class(name, self.module_frame)  # a global
        return None

    # -- keys --------------------------------------------------------------------

    def key(self, path: tuple, frame: Frame) -> Key:
        root = path[0]
        if frame.func is None:
            return (GLOBAL, path)
        if root in frame.binding:
            bound = frame.binding[root]
            if bound is None:
                return (frame.fid, path)
            return (bound[0], bound[1] + path[1:])
        if root in frame.global_names:
            if f"nonlocal:{root}" in frame.global_names and frame.parent is not None:
                return self.key(path, frame.parent)  # the enclosing function's variable
            return (GLOBAL, path)
        if root in frame.local_names:
            return (frame.fid, path)
        if frame.parent is not None:
            return self.key(path, frame.parent)
        return (GLOBAL, path)

    # -- resolving calls ----------------------------------------------------------------

    def resolve(self, func: ast.AST, frame: Frame, depth: int = 0):
        """(callee, receiver key or None, leading args) for a callable expression, or None."""
        if depth > 4:
            return None
        if isinstance(func, ast.Lambda):
            return func, None, []
        if isinstance(func, ast.Call):  # partial(f, a)(...)
            return self._partial(func, frame, depth)
        if isinstance(func, ast.Name):
            n = func.id
            if n in frame.arg_exprs:
                expr, caller = frame.arg_exprs[n]
                return self.resolve(expr, caller, depth + 1)
            scope = frame
            while scope is not None:
                found = self._bound_in(n, scope, depth)
                if found is not None:
                    return found
                scope = scope.parent
            if n in self.funcs:
                return self.funcs[n], None, []
            if n in self.classes:
                init = self._method(n, "__init__")
                return (init, "new", []) if init is not None else None
            return None
        if isinstance(func, ast.Attribute):
            base = func.value
            if isinstance(base, ast.Name) and frame.self_name and base.id == frame.self_name and frame.cls:
                m = self._method(frame.cls.name, func.attr)
                if m is not None:
                    return m, self.key((base.id,), frame), []
            if isinstance(base, ast.Name):
                cls = self._var_class(base.id, frame)
                if cls is not None:
                    m = self._method(cls, func.attr)
                    if m is not None:
                        return m, self.key((base.id,), frame), []
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id in self.classes:
                m = self._method(base.func.id, func.attr)  # C(...).method()
                if m is not None:
                    return m, (f"obj{id(base)}", ()), []
            p = path_of(base)
            if p and len(p) == 2 and frame.cls and p[0] == frame.self_name:
                cls = self.attr_types.get((frame.cls.name, p[1]))
                m = self._method(cls, func.attr) if cls else None
                if m is not None:
                    return m, self.key(p, frame), []
        return None

    def _assigns(self, frame: Frame) -> list:
        """The assignments in the body of the frame's function (or module), in walk order; computed once."""
        scope = frame.func if frame.func is not None else self.tree
        got = self._assign_cache.get(id(scope))
        if got is None:
            body = scope.body if isinstance(scope.body, list) else []
            got = [n for n in ast.walk(ast.Module(body=body, type_ignores=[])) if isinstance(n, ast.Assign)]
            self._assign_cache[id(scope)] = got
        return got

    def _bound_in(self, name: str, frame: Frame, depth: int):
        scope = frame.func if frame.func is not None else self.tree
        body = scope.body if isinstance(scope.body, list) else []
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name and frame.func is not None:
                return n, None, []
        for n in self._assigns(frame):
            if any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
                v = n.value
                if isinstance(v, ast.Lambda):
                    return v, None, []
                if isinstance(v, ast.Call) and self._is_partial(v):
                    return self._partial(v, frame, depth)
                if isinstance(v, ast.Name) and v.id != name and (v.id in self.funcs or v.id in frame.arg_exprs):
                    return self.resolve(v, frame, depth + 1)
        return None

    @staticmethod
    def _is_partial(call: ast.Call) -> bool:
        f = call.func
        return (isinstance(f, ast.Name) and f.id == "partial") or (isinstance(f, ast.Attribute) and f.attr == "partial")

    def _partial(self, call: ast.Call, frame: Frame, depth: int):
        if not self._is_partial(call) or not call.args:
            return None
        got = self.resolve(call.args[0], frame, depth + 1)
        if got is None:
            return None
        callee, recv, pre = got
        return callee, recv, [*pre, *call.args[1:]]

    def enter(self, got, c: ast.Call, frame: Frame, assign_to) -> None:
        callee, recv, pre = got
        new = Frame(fid=next(self._ids), name=getattr(callee, "name", "<lambda>"), func=callee,
                    cls=self._class_of(callee), call_line=c.lineno)
        new.local_names, new.global_names = _local_names(callee)
        params = [a.arg for a in [*callee.args.posonlyargs, *callee.args.args]]
        if recv is not None and params and new.cls is not None:
            new.self_name = params[0]
            if recv == "new":
                target = assign_to[0] if assign_to and len(assign_to) == 1 else None
                p = path_of(target) if target is not None else None
                new.binding[params[0]] = self.key(p, frame) if p else (f"obj{id(c)}", ())
            else:
                new.binding[params[0]] = recv
            params = params[1:]
        args = [*pre, *c.args]
        for name, a in zip(params, args):
            if isinstance(a, ast.Starred):
                break
            p = path_of(a)
            new.binding[name] = self.key(p, frame) if p else None
            new.arg_exprs[name] = (a, frame)
        for k in c.keywords:
            if k.arg is not None:
                p = path_of(k.value)
                new.binding[k.arg] = self.key(p, frame) if p else None
                new.arg_exprs[k.arg] = (k.value, frame)
        new.parent = self._lexical_parent(callee)
        if self.phase == INSIDE_PH:
            self.fresh_fids.add(new.fid)
        self.stack.append(new)
        try:
            if isinstance(callee, ast.Lambda):
                self.expr(callee.body, new)
            else:
                self.block(callee.body, new)
        finally:
            self.stack.pop()

    def _lexical_parent(self, callee: ast.AST) -> Frame | None:
        """The live frame of the function that lexically encloses ``callee`` (closures)."""
        n = self.parent_of.get(id(callee))
        while n is not None and not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            n = self.parent_of.get(id(n))
        if n is None:
            return None
        for f in reversed(self.stack):
            if f.func is n:
                return f
        return None
