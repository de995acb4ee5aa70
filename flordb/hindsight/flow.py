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

Three modules, one job each: this one walks statements and expressions in
order; :mod:`flordb.hindsight.calls` resolves calls and names variables by key;
:mod:`flordb.hindsight.effects` reads the answers (skip safety, carried state)
off the events.
"""

from __future__ import annotations

import ast
import itertools

from flordb.hindsight.calls import Calls, Frame, path_of
from flordb.hindsight.effects import (  # noqa: F401  (the phases are part of this module's surface)
    AFTER_PH, BEFORE_PH, GLOBAL, INSIDE_PH, PREFIX_PH, SUFFIX_PH, Effects, Event,
)
from flordb.hindsight.locate import flor_names

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


class Walk(Calls, Effects):
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

    def read(self, path: tuple, frame: Frame, line: int, sink: bool = False) -> None:
        self.events.append(Event("r", self.key(path, frame), self.phase, line, ".".join(path), sink,
                                 tuple(self.scope)))

    def write(self, path: tuple, frame: Frame, line: int, op: str) -> None:
        self.events.append(Event(op, self.key(path, frame), self.phase, line, ".".join(path), scope=tuple(self.scope)))


class _Budget(Exception):
    pass


def walk(tree: ast.Module, main_loop: str | None = None, nested_loop: str | None = None) -> Walk:
    return Walk(tree, main_loop, nested_loop).run()
