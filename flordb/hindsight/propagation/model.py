"""The shared vocabulary of propagation: the two versions, blocks, matches, messages."""

from __future__ import annotations

import ast
import io
from dataclasses import dataclass, field

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import ModuleInfo


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


def source_lines(source: str) -> list[str]:
    """Lines split where the tokenizer splits them (\\n, \\r\\n, \\r), without their endings."""
    return [ln.rstrip("\r\n") for ln in io.StringIO(source, newline="").readlines()]


