"""Walk a script in the order it runs, through the calls it makes.

:mod:`flordb.hindsight.analyze` asks two kinds of question of a script: in
which phase of a main-loop iteration a statement runs, and which state the
nested loop changes and who reads it afterwards. Both need the program as it
runs rather than as it is written: the batch loop lives in ``train()``, in a
``Trainer.train_epoch()`` method, two calls down. This module walks the module
body statement by statement and, at every call it can resolve (functions and
nested functions of the script, methods of its classes through ``self`` or a
variable bound to an instance, ``functools.partial``, lambdas and functions
passed as arguments), walks the callee's body with the arguments bound to
the caller's variables. It records, in order:

- the phase each statement is reached in (prefix, before / inside / after the
  nested loop, suffix);
- every read and write of a variable or attribute path, as a *key*: the owner
  (``"G"`` for module globals, else the id of the call frame that owns the
  local) and the path (``("self", "best")`` becomes the caller's
  ``("trainer", "best")``), so a callee's parameters and ``self`` resolve to
  what the caller passed;
- the objects passed to ``flor.checkpointing``.

The walk is an approximation of one iteration: both branches of an ``if`` are
taken, loops are walked once. What it cannot resolve it leaves out, and
:mod:`analyze` turns "not reached" into re-execution.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass, field

from flordb.hindsight.locate import flor_names

PREFIX_PH, BEFORE_PH, INSIDE_PH, AFTER_PH, SUFFIX_PH = "prefix", "before", "inside", "after", "suffix"
GLOBAL = "G"
BUDGET = 40_000  # statements visited before the walk gives up (deep or repeated call trees)

# Method calls that do not change their receiver; any other method call may.
PURE_METHODS = frozenset("""
item size dim numel tolist numpy cpu detach clone float double long int half bool view reshape argmax argmin
max min sum mean std var eq ne lt gt le ge format join get keys values items copy state_dict parameters
named_parameters buffers named_buffers children modules squeeze unsqueeze t permute contiguous type_as
startswith endswith split strip lower upper replace count index pow sqrt norm abs exp log softmax
log_softmax sigmoid tanh relu flatten expand expand_as repeat transpose matmul mm bmm dot add sub mul div
astype all any isnan isinf round floor ceil clamp clip sort argsort topk unique nonzero chunk get_lr
get_last_lr size_average dtype shape
""".split())
# Calls whose arguments only go to the screen or a log file: reading there changes no logged value.
SINK_FUNCS = frozenset({"print", "pprint"})
SINK_OBJECTS = frozenset({"logging", "logger", "log", "LOGGER", "LOG", "tqdm", "pbar", "bar", "progress",
                          "writer", "tb", "tb_writer", "summary_writer", "wandb"})
# Functions that change their first argument.
MUTATING_FUNCS = frozenset({"next", "shuffle"})
WRAPPERS = frozenset({"enumerate", "tqdm", "iter", "zip", "reversed", "list", "islice", "trange"})
APPEND_LIKE = frozenset({"append", "extend", "appendleft", "add", "insert"})
RNG_KEYWORDS = frozenset({"generator", "rng", "random_state"})
ITERATOR_MAKERS = frozenset({"iter", "map", "filter", "zip", "enumerate", "cycle", "islice", "chain", "count",
                             "repeat", "tee"})

Key = tuple  # (owner, path)


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


@dataclass
class Event:
    op: str  # "r" read, "w" write (mutation), "b" rebind (whole-name assignment)
    key: Key
    phase: str
    line: int
    text: str  # how the script spells it at that point
    sink: bool = False  # a read that only goes to print/logging
    scope: tuple = ()  # the conditional blocks (if, loop bodies, except) it is in, outermost first


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


def _loop_call(node: ast.AST, flor) -> ast.Call | None:
    """The ``flor.loop(...)`` call a ``for`` iterates, also through ``enumerate(flor.loop(...))`` and the like."""
    if not isinstance(node, (ast.For, ast.AsyncFor)):
        return None
    it = node.iter
    while isinstance(it, ast.Call):
        if flor.call_target(it) == "loop":
            return it if it.args else None
        if isinstance(it.func, (ast.Name, ast.Attribute)) and it.args and (
                getattr(it.func, "id", None) or getattr(it.func, "attr", None)) in WRAPPERS:
            it = it.args[0]
            continue
        return None
    return None


def _flor_loop(node: ast.AST, flor) -> str | None:
    call = _loop_call(node, flor)
    if call is None:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _flor_iteration(node: ast.AST, flor) -> str | None:
    """``"iter"`` for ``with flor.iteration("iter", i):``, one iteration of a user-driven loop."""
    if not isinstance(node, (ast.With, ast.AsyncWith)):
        return None
    for item in node.items:
        call = item.context_expr
        if isinstance(call, ast.Call) and flor.call_target(call) == "iteration" and call.args:
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                return first.value
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


class Walk:
    """One walk of a module; see the module docstring. Built by :func:`walk`."""

    def __init__(self, tree: ast.Module, main_loop: str | None, nested_loop: str | None):
        self.tree = tree
        self.flor = flor_names(tree)
        self.want_main, self.want_nested = main_loop, nested_loop
        self.main: ast.AST | None = None
        self.main_name: str | None = None
        self.nested: ast.AST | None = None
        self.nested_name: str | None = None
        self.nested_line = 0
        self.phase = PREFIX_PH
        self.phases: dict[int, set] = {}
        self.via: dict[int, str] = {}
        self.inner_loop_of: dict[int, str] = {}
        self.events: list[Event] = []
        self.iter_start = 0  # index in events where the main loop's body starts
        self.ckpt_keys: set = set()
        self.stack: list[Frame] = []
        self.inner: list[str] = []
        self.outer_fids: set = {GLOBAL}  # owners that outlive an iteration
        self.fresh_fids: set = set()  # frames created inside the nested loop
        self.main_depth = 0
        self.main_fid = GLOBAL  # the frame that runs the main loop
        self.scope: list[int] = []  # conditional blocks (if, loop bodies, except) being walked
        self._blocks = itertools.count(1)
        self.visited = 0
        self.incomplete = ""
        self._ids = itertools.count(1)
        self._assign_cache: dict[int, list] = {}
        self._index(tree)

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

    # -- walking ----------------------------------------------------------------------

    def run(self) -> "Walk":
        module = self.module_frame = Frame(fid=GLOBAL, name="<module>", func=None)
        self.stack.append(module)
        try:
            self.block(self.tree.body, module)
        except (_Budget, RecursionError):
            self.incomplete = f"the script is too large to follow through its calls ({BUDGET} statements)"
        except Exception as exc:  # never a traceback for the user: what was not reached re-executes
            self.incomplete = f"the analysis could not follow the script ({type(exc).__name__}: {exc})"
        return self

    def block(self, stmts: list, frame: Frame) -> None:
        for st in stmts:
            self.stmt(st, frame)

    def cond_block(self, stmts: list, frame: Frame) -> None:
        self.scope.append(next(self._blocks))
        try:
            self.block(stmts, frame)
        finally:
            self.scope.pop()

    def mark(self, st: ast.AST) -> None:
        self.phases.setdefault(id(st), set()).add(self.phase)
        if self.inner and self.phase in (BEFORE_PH, AFTER_PH):
            self.inner_loop_of.setdefault(id(st), self.inner[-1])
        base = self.main_depth if self.phase in (BEFORE_PH, INSIDE_PH, AFTER_PH) else 1
        frames = self.stack[base:]
        if frames and id(st) not in self.via:
            self.via[id(st)] = " → ".join(f"{f.name}() called at line {f.call_line}" for f in frames)

    def stmt(self, st: ast.stmt, frame: Frame) -> None:
        self.visited += 1
        if self.visited > BUDGET:
            raise _Budget()
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in st.decorator_list:
                self.expr(d, frame)
            self.mark(st)
            return
        name = _flor_loop(st, self.flor)
        if name is not None:
            self.flor_for(st, name, frame)
            return
        name = _flor_iteration(st, self.flor)
        if name is not None and self.phase == PREFIX_PH and (self.want_main is None or name == self.want_main):
            self.flor_iteration(st, name, frame)
            return
        if isinstance(st, (ast.If, ast.While)):
            self.expr(st.test, frame)
            self.mark(st)
            self.cond_block(st.body, frame)
            self.cond_block(st.orelse, frame)
        elif isinstance(st, (ast.For, ast.AsyncFor)):
            before = self.phase
            self.expr(st.iter, frame)
            # A generator whose body enters the nested loop: this loop's body runs inside it.
            inside = before == BEFORE_PH and self.phase == AFTER_PH
            if inside:
                self.phase = INSIDE_PH
            self.mark(st)
            self.scope.append(next(self._blocks))
            self.target(st.target, frame, st.lineno)
            self.block(st.body, frame)
            self.scope.pop()
            self.block(st.orelse, frame)
            if inside:
                self.phase = AFTER_PH
        elif isinstance(st, (ast.With, ast.AsyncWith)):
            for item in st.items:
                self.expr(item.context_expr, frame)
                if item.optional_vars is not None:
                    self.target(item.optional_vars, frame, st.lineno)
            self.mark(st)
            self.block(st.body, frame)
        elif isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
            self.mark(st)
            self.block(st.body, frame)
            for h in st.handlers:
                self.cond_block(h.body, frame)
            self.block(st.orelse, frame)
            self.block(st.finalbody, frame)
        elif isinstance(st, ast.Match):
            self.expr(st.subject, frame)
            self.mark(st)
            for case in st.cases:
                self.cond_block(case.body, frame)
        else:
            self.simple(st, frame)

    def flor_for(self, st: ast.For, name: str, frame: Frame) -> None:
        if self.phase == PREFIX_PH and (self.want_main is None or name == self.want_main):
            self.expr(st.iter, frame)
            self.mark(st)
            self.main, self.main_name, self.phase = st, name, BEFORE_PH
            self.main_depth, self.main_fid = len(self.stack), frame.fid
            self.outer_fids |= {f.fid for f in self.stack}
            self.target(st.target, frame, st.lineno, record=False)
            self.iter_start = len(self.events)
            self.block(st.body, frame)
            self.phase = SUFFIX_PH
            self.block(st.orelse, frame)
            return
        if self.phase == BEFORE_PH and (self.want_nested is None or name == self.want_nested):
            self.nested, self.nested_name, self.nested_line = st, name, st.lineno
            self.phase = INSIDE_PH
            self.expr(st.iter, frame)
            self.mark(st)
            it = self._iterable(_loop_call(st, self.flor))
            p = path_of(it) if it is not None else None
            if p and p[-1] in self.shared_iters:
                self.write(p, frame, st.lineno, "w")  # a shared iterator: the loop consumes it
            if p and p[-1] in self.loader_rngs:  # DataLoader(..., generator=g): iterating draws from g
                self.write(self.loader_rngs[p[-1]], frame, st.lineno, "w")
            self.scope.append(next(self._blocks))
            self.target(st.target, frame, st.lineno)
            self.block(st.body, frame)
            self.scope.pop()
            self.block(st.orelse, frame)
            self.phase = AFTER_PH
            return
        self.expr(st.iter, frame)
        self.mark(st)
        self.scope.append(next(self._blocks))
        self.target(st.target, frame, st.lineno)
        pushed = self.phase in (BEFORE_PH, AFTER_PH)
        if pushed:
            self.inner.append(name)
        self.block(st.body, frame)
        self.scope.pop()
        self.block(st.orelse, frame)
        if pushed:
            self.inner.pop()

    def flor_iteration(self, st: ast.With, name: str, frame: Frame) -> None:
        """The body of ``with flor.iteration(name, i):`` is one main-loop iteration.

        Statements after the block (the counter's increment, the loop's exit
        test) run after each iteration, like a suffix; a nested
        ``flor.iteration`` is an ordinary ``with``: its body is never skipped.
        """
        for item in st.items:
            self.expr(item.context_expr, frame)
        self.mark(st)
        self.main, self.main_name, self.phase = st, name, BEFORE_PH
        self.main_depth, self.main_fid = len(self.stack), frame.fid
        self.outer_fids |= {f.fid for f in self.stack}
        self.iter_start = len(self.events)
        self.block(st.body, frame)
        self.phase = SUFFIX_PH

    @staticmethod
    def _iterable(call: ast.Call) -> ast.AST | None:
        it = call.args[1] if len(call.args) > 1 else None
        while isinstance(it, ast.Call) and it.args and isinstance(it.func, ast.Name) and it.func.id in (
                "enumerate", "tqdm", "iter"):
            it = it.args[0]
        return it

    def simple(self, st: ast.stmt, frame: Frame) -> None:
        if isinstance(st, ast.Assign):
            self.expr(st.value, frame, assign_to=st.targets)
            for t in st.targets:
                self.target(t, frame, st.lineno)
        elif isinstance(st, ast.AugAssign):
            self.expr(st.value, frame)
            p = path_of(st.target)
            if p:
                self.read(p, frame, st.lineno)
            self.target(st.target, frame, st.lineno, aug=True)
        elif isinstance(st, ast.AnnAssign):
            if st.value is not None:
                self.expr(st.value, frame)
                self.target(st.target, frame, st.lineno)
        elif isinstance(st, ast.Delete):
            for t in st.targets:
                self.target(t, frame, st.lineno)
        elif isinstance(st, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Pass, ast.Break,
                             ast.Continue)):
            pass
        else:  # Expr, Return, Raise, Assert
            for child in ast.iter_child_nodes(st):
                if isinstance(child, ast.expr):
                    self.expr(child, frame)
        self.mark(st)

    def target(self, t: ast.AST, frame: Frame, line: int, aug: bool = False, record: bool = True) -> None:
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self.target(e, frame, line, aug, record)
            return
        if isinstance(t, ast.Starred):
            self.target(t.value, frame, line, aug, record)
            return
        if not record:
            return
        if isinstance(t, ast.Subscript):
            self.expr(t.slice, frame)
        p = path_of(t)
        if p is None:
            if isinstance(t, (ast.Attribute, ast.Subscript)):
                self.expr(t.value, frame)
            return
        whole = isinstance(t, ast.Name) or isinstance(t, ast.Attribute)
        self.write(p, frame, line, "b" if whole and not aug else "w")

    # -- expressions ------------------------------------------------------------------

    def expr(self, e: ast.AST, frame: Frame, sink: bool = False, assign_to=None) -> None:
        """Reads of ``e`` in evaluation order, with the calls in it walked."""
        if isinstance(e, ast.Call):
            self.call(e, frame, sink, assign_to)
            return
        if isinstance(e, (ast.Name, ast.Attribute, ast.Subscript)) and isinstance(getattr(e, "ctx", None), ast.Load):
            p = path_of(e)
            if p is not None:
                n = e
                while isinstance(n, (ast.Attribute, ast.Subscript)):
                    if isinstance(n, ast.Subscript):
                        self.expr(n.slice, frame, sink)
                    n = n.value
                self.read(p, frame, e.lineno, sink)
                return
        if isinstance(e, ast.Lambda):
            return
        if isinstance(e, ast.NamedExpr):
            self.expr(e.value, frame, sink)
            self.write((e.target.id,), frame, e.lineno, "b")
            return
        for child in ast.iter_child_nodes(e):
            if isinstance(child, ast.expr):
                self.expr(child, frame, sink)
            elif isinstance(child, ast.comprehension):
                self.expr(child.iter, frame, sink)
                for cond in child.ifs:
                    self.expr(cond, frame, sink)

    def call(self, c: ast.Call, frame: Frame, sink: bool, assign_to=None) -> None:
        target = self.flor.call_target(c)
        func = c.func
        if target == "checkpointing":
            for k in c.keywords:
                p = path_of(k.value) if k.value is not None else None
                if p:
                    self.ckpt_keys.add(self.key(p, frame))
                    self.read(p, frame, c.lineno)
            return
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        base = path_of(func.value) if isinstance(func, ast.Attribute) else None
        sink = sink or fname in SINK_FUNCS or bool(base and (base[0] in SINK_OBJECTS or base[-1] in SINK_OBJECTS)) \
            or fname in ("set_postfix", "set_description", "add_scalar", "add_scalars")
        appends = isinstance(func, ast.Attribute) and func.attr in APPEND_LIKE
        got = self.resolve(func, frame) if target is None else None
        if got is not None and (got[0] is None or len(self.stack) > 40 or any(f.func is got[0] for f in self.stack)):
            got = None  # recursion: walk each function once per call chain
        if target is None and got is None:
            if isinstance(func, ast.Attribute):
                fp = path_of(func)
                if fp is not None:  # history.append(x) changes history without reading what is in it
                    self.read(fp, frame, c.lineno, sink or appends)
                else:
                    self.expr(func.value, frame, sink)
            elif not isinstance(func, ast.Name):
                self.expr(func, frame, sink)
        for a in c.args:
            self.expr(a.value if isinstance(a, ast.Starred) else a, frame, sink)
        for k in c.keywords:
            self.expr(k.value, frame, sink)
        if target is not None:
            return
        if got is not None:
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
                self.call(func.value, frame, sink)  # C(...).method(): the constructor runs first
            self.enter(got, c, frame, assign_to)
            return
        # Unresolved: a method call may change its receiver (or the object an attribute
        # holds: self.model(x)), a few functions their argument.
        if isinstance(func, ast.Attribute) and base and fname not in PURE_METHODS and not sink:
            self.write(base + (func.attr,) if func.attr in self.data_attrs else base, frame, c.lineno, "w")
        elif fname in MUTATING_FUNCS and c.args:
            p = path_of(c.args[0])
            if p:
                self.write(p, frame, c.lineno, "w")
        for k in c.keywords:  # torch.randperm(n, generator=g), shuffle(x, random_state=rs): a drawn RNG stream
            p = path_of(k.value) if k.arg in RNG_KEYWORDS else None
            if p and fname not in ("DataLoader", "Generator"):
                self.write(p, frame, c.lineno, "w")

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

    def read(self, path: tuple, frame: Frame, line: int, sink: bool = False) -> None:
        self.events.append(Event("r", self.key(path, frame), self.phase, line, ".".join(path), sink,
                                 tuple(self.scope)))

    def write(self, path: tuple, frame: Frame, line: int, op: str) -> None:
        self.events.append(Event(op, self.key(path, frame), self.phase, line, ".".join(path), scope=tuple(self.scope)))

    # -- answers ---------------------------------------------------------------------

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


class _Budget(Exception):
    pass


def walk(tree: ast.Module, main_loop: str | None = None, nested_loop: str | None = None) -> Walk:
    return Walk(tree, main_loop, nested_loop).run()
