"""Propagation of a statement into old code versions.

The corpus in fixtures/propagate/<case>/ holds hand-written version pairs:
new.py (current code), old.py, case.json ({"lineno", "description",
"expect": "insert" | "unchanged" | "refuse", optionally "reason": a fragment
the refusal must contain}), for inserts expected.py, and SOURCE naming the
public history whose kind of edit the pair reproduces.
"""

import ast
import difflib
import json
import textwrap
from pathlib import Path

import pytest

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import (
    ABSTRACT, EXACT, ModuleInfo, abstract_dump, align, core_iter, free_name_nodes,
)
from flordb.hindsight import propagate
from flordb.hindsight.propagation.check import visible_names
from flordb.hindsight.propagation.model import Version
from flordb.hindsight.propagation.place import choose_gap
from flordb.hindsight.propagation.target import target_path
from flordb.hindsight.propagation.text import splice, statement_text

CORPUS = Path(__file__).parent / "fixtures" / "propagate"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.json").exists())


def read(path: Path) -> str:
    with open(path, newline="", encoding="utf-8") as f:
        return f.read()


def load(name: str):
    d = CORPUS / name
    return json.loads(read(d / "case.json")), read(d / "new.py"), read(d / "old.py"), d


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(source: str, marker: str) -> int:
    (hit,) = [i for i, line in enumerate(source.split("\n"), 1) if marker in line]
    return hit


# ---------------------------------------------------------------- the corpus

def test_corpus_is_big_and_mixed():
    expects = [json.loads(read(CORPUS / c / "case.json"))["expect"] for c in CASES]
    assert len(CASES) >= 80
    assert expects.count("refuse") >= 15 and "unchanged" in expects


@pytest.mark.parametrize("name", CASES)
def test_corpus_case(name):
    case, new, old, d = load(name)
    if case["expect"] == "refuse":
        with pytest.raises(PropagationError) as info:
            propagate(new, case["lineno"], old)
        assert info.value.reason.strip()
        assert case.get("reason", "") in info.value.reason
    elif case["expect"] == "unchanged":
        assert propagate(new, case["lineno"], old) == old
    else:
        assert propagate(new, case["lineno"], old) == read(d / "expected.py")


@pytest.mark.parametrize("name", [c for c in CASES if (CORPUS / c / "expected.py").exists()])
def test_patch_only_inserts_one_block(name):
    case, new, old, _ = load(name)
    old_lines = old.splitlines(keepends=True)
    patched_lines = propagate(new, case["lineno"], old).splitlines(keepends=True)
    ops = [op for op in difflib.SequenceMatcher(None, old_lines, patched_lines, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    assert len(ops) == 1 and ops[0][0] == "insert"
    assert len(patched_lines) - len(old_lines) == ops[0][4] - ops[0][3]


# ---------------------------------------------------------------- the steps

def test_target_path_descends_to_the_statement():
    tree = ast.parse(src("""
        for epoch in range(3):
            for x in loader:
                a = 1
                flor.log("a", a)
    """))
    frames, t = target_path(tree, 4)
    assert [type(f.node).__name__ for f in frames] == ["Module", "For", "For"]
    assert t == 1


def test_target_path_refuses_compound_headers():
    tree = ast.parse("for x in y:\n    pass\n")
    with pytest.raises(PropagationError, match="not a simple statement"):
        target_path(tree, 1)


def test_target_path_refuses_except_blocks():
    tree = ast.parse("try:\n    a()\nexcept E:\n    flor.log('e', 1)\n")
    with pytest.raises(PropagationError, match="'except' block"):
        target_path(tree, 4)


def test_abstract_dump_ignores_renamed_locals_only():
    info = ModuleInfo.of(ast.parse("import torch"))
    dump = lambda s: abstract_dump([ast.parse(s).body[0]], info.keep)  # noqa: E731
    assert dump("loss = crit(net(x), y)") == dump("loss = crit(model(x), y)")
    assert dump("x = f(x)") != dump("x = f(y)")
    assert dump("a = torch.zeros(1)") != dump("a = np.zeros(1)")


def test_core_iter_sees_through_enumerate_and_flor_loop():
    info = ModuleInfo.of(ast.parse("import flordb as flor"))
    a = ast.parse('for i, (x, y) in flor.loop("step", enumerate(loader)): pass').body[0]
    b = ast.parse("for x, y in loader: pass").body[0]
    assert [ast.dump(n) for n in core_iter(a, info)] == [ast.dump(n) for n in core_iter(b, info)]


def test_align_prefers_exact_then_renamed():
    info = ModuleInfo.of(ast.parse(""))
    new = ast.parse("a = f(net.w)\nb = g(net)\nprint(b)\n").body
    old = ast.parse("a = f(model.w)\nprint(b)\n").body
    pairs = align(new, old, info, info)
    assert [(p.new, p.old, p.strength) for p in pairs] == [(0, 0, ABSTRACT), (2, 1, EXACT)]
    # a bare call of an unknown function is no evidence of anything once names are abstracted
    assert align(ast.parse("b()").body, ast.parse("x()").body, info, info) == []


def test_free_names_skip_comprehension_variables():
    stmt = ast.parse("flor.log('n', sum(p.norm() for p in net.parameters()))").body[0]
    assert sorted({n.id for n in free_name_nodes(stmt)}) == ["flor", "net", "sum"]


def _gap(new_src: str, old_src: str, edges: bool = True) -> int:
    new, old = Version.parse(new_src, "current"), Version.parse(old_src, "old")
    t = next(i for i, s in enumerate(new.tree.body) if "LOG" in ast.unparse(s))
    return choose_gap(new.tree.body, t, old.tree.body, new, old, edges=edges)


def test_choose_gap_follows_previous_neighbour():
    assert _gap("a()\nLOG()\nc()\n", "a()\nd()\nc()\n") == 1


def test_choose_gap_precedes_next_neighbour_when_previous_is_new():
    assert _gap("a()\nb()\nLOG()\nc()\n", "x()\nc()\n") == 1


def test_choose_gap_refuses_when_both_neighbours_are_unknown():
    with pytest.raises(PropagationError, match="no counterpart"):
        _gap("a()\nb()\nLOG()\nc()\nd()\n", "a()\nx()\nd()\n")


def test_choose_gap_uses_block_edges_only_for_known_blocks():
    assert _gap("LOG()\nb()\n", "x()\nb()\n") == 0
    assert _gap("LOG()\nb()\n", "x()\nb()\n", edges=False) == 1


def test_statement_text_renames_and_reindents():
    source = src("""
        def f(net):
            flor.log(
                "w",  # keep me
                net.w,
            )
    """)
    stmt = ast.parse(source).body[0].body[0]
    text = statement_text(source, stmt, {"net": "model"}, "\t")
    assert text == '\tflor.log(\n\t    "w",  # keep me\n\t    model.w,\n\t)'


def test_splice_keeps_every_line_and_line_endings():
    assert splice("a\r\nb\r\n", 1, "x") == "a\r\nx\r\nb\r\n"
    assert splice("a\nb", 2, "x") == "a\nb\nx\n"
    assert splice("a\n", 0, "x") == "x\na\n"


def test_visible_names_follow_scopes_and_order():
    old = Version.parse(src("""
        import torch
        g = 1
        def f(a):
            b = 2
            c = 3
        h = 4
    """), "old")
    fn = old.tree.body[2]
    visible, star = visible_names(old, fn, 4)
    assert {"torch", "g", "a", "b", "h", "f", "len"} <= visible and "c" not in visible and not star
    visible, _ = visible_names(old, old.tree, 2)
    assert "g" in visible and "h" not in visible


# ---------------------------------------------------------------- refusals and spellings

HEAD = "import flordb as flor\nfrom m import Net, evaluate, loader\nnet = Net()\n"


def test_one_similar_line_is_not_evidence_of_a_rename():
    new = HEAD + src("""
        for epoch in flor.loop("epoch", range(3)):
            for x in loader:
                loss = net(x)
            acc = evaluate(net)
            print(epoch, acc)
            flor.log("acc", acc)
    """)
    old = HEAD + src("""
        for epoch in flor.loop("epoch", range(3)):
            for x in loader:
                loss = net(x)
            print(epoch, loss)
    """)
    with pytest.raises(PropagationError, match="'acc'.*not defined"):
        propagate(new, line_of(new, 'flor.log("acc"'), old)


def test_loop_variable_renamed_through_the_loop_header():
    new = HEAD + 'for epoch in flor.loop("epoch", range(3)):\n    net.step()\n    flor.log("e", epoch)\n'
    old = HEAD + 'for ep in flor.loop("epoch", range(3)):\n    net.step()\n'
    assert propagate(new, 6, old) == old + '    flor.log("e", ep)\n'


def test_bare_log_import_is_spelled_like_the_old_version():
    new = 'from flordb import log, loop\nfrom m import loader, net\nfor x in loop("step", loader):\n' \
          '    net.train_on(x)\n    log("v", 1)\n'
    old = 'import flordb as flor\nfrom m import loader, net\nfor x in flor.loop("step", loader):\n' \
          '    net.train_on(x)\n'
    assert propagate(new, 5, old) == old + '    flor.log("v", 1)\n'


def test_old_version_without_flordb_is_refused():
    new = HEAD + 'for x in loader:\n    net.train_on(x)\n    flor.log("v", 1)\n'
    old = 'from m import Net, loader\nnet = Net()\nfor x in loader:\n    net.train_on(x)\n'
    with pytest.raises(PropagationError, match="does not import flordb"):
        propagate(new, 6, old)


@pytest.mark.parametrize("old_body, reason", [
    ('for epoch in flor.loop("epoch", range(3)): net.step()\n', "on one line"),
    ('for epoch in flor.loop("epoch", range(3)):\n    net.step(); net.zero()\n', "several statements"),
])
def test_old_text_that_cannot_take_a_line(old_body, reason):
    new = HEAD + 'for epoch in flor.loop("epoch", range(3)):\n    net.step()\n    flor.log("e", epoch)\n' \
                 '    net.zero()\n'
    with pytest.raises(PropagationError, match=reason):
        propagate(new, 6, HEAD + old_body)


@pytest.mark.parametrize("lineno", [0, 4, 99])
def test_lines_without_a_statement_are_refused(lineno):
    new = HEAD + "\n# comment\n"
    with pytest.raises(PropagationError):
        propagate(new, lineno, HEAD)


def test_unparsable_old_version_is_refused():
    with pytest.raises(PropagationError, match="old code does not parse"):
        propagate(HEAD + 'flor.log("a", 1)\n', 4, "for x in :\n")


# ---------------------------------------------------------------- the package and its checks

def test_propagate_is_a_function_of_the_hindsight_package():
    import flordb.hindsight as hindsight
    import flordb.hindsight.propagation.pipeline  # noqa: F401  (importing a step must not shadow it)

    assert callable(hindsight.propagate) and hindsight.propagate is propagate


def test_api_spellings_match_across_versions():
    info = ModuleInfo.of(ast.parse("import torch"))
    from flordb.hindsight.astmatch import exact_key

    key = lambda s: exact_key(ast.parse(s).body[0])  # noqa: E731
    assert key("print(loss.data[0])") == key("print(loss.item())")
    assert key("torch.nn.utils.clip_grad_norm(p, 1)") == key("torch.nn.utils.clip_grad_norm_(p, 1)")
    assert key("out = model(Variable(x))") == key("out = model(x)")
    assert key("print(loss.data[1])") != key("print(loss.item())")
    pairs = align(ast.parse("self.loss = crit(out, y)").body, ast.parse("loss = crit(out, y)").body, info, info)
    assert [p.strength for p in pairs] == [ABSTRACT]


def test_a_name_bound_in_one_branch_only_is_refused():
    new = HEAD + src("""
        for x in loader:
            g = net.step(x)
            flor.log("g", g)
    """)
    old = HEAD + src("""
        for x in loader:
            if x:
                g = net.step(x)
    """)
    with pytest.raises(PropagationError, match="'g'.*every path"):
        propagate(new, line_of(new, 'flor.log("g"'), old)
    both = HEAD + src("""
        for x in loader:
            if x:
                g = net.step(x)
            else:
                g = net.step(-x)
    """)
    assert 'flor.log("g", g)' in propagate(new, line_of(new, 'flor.log("g"'), both)


def test_attribute_and_local_are_adapted_both_ways():
    cls_src = src("""
        import flordb as flor
        from m import Net, loader
        class T:
            def __init__(self):
                self.net = Net()
            def fit(self):
                for x in loader:
                    self.loss = self.net(x)
                    flor.log("loss", self.loss)
    """)
    fn_src = src("""
        import flordb as flor
        from m import Net, loader
        def fit():
            net = Net()
            for x in loader:
                loss = net(x)
                flor.log("loss", loss)
    """)
    strip = lambda s: "\n".join(ln for ln in s.split("\n") if "flor.log" not in ln)  # noqa: E731
    assert propagate(cls_src, line_of(cls_src, "flor.log"), strip(fn_src)) == fn_src
    assert propagate(fn_src, line_of(fn_src, "flor.log"), strip(cls_src)) == cls_src


def test_an_attribute_the_old_class_never_sets_is_refused():
    new = src("""
        import flordb as flor
        class T:
            def __init__(self):
                self.a = 1
                self.b = 2
            def step(self):
                self.a += 1
                flor.log("b", self.b)
    """)
    old = src("""
        import flordb as flor
        class T:
            def __init__(self):
                self.a = 1
            def step(self):
                self.a += 1
    """)
    with pytest.raises(PropagationError, match="never sets 'self.b'"):
        propagate(new, line_of(new, "flor.log"), old)


def test_preview_is_the_unified_diff_of_the_patch():
    from flordb.hindsight.propagation import preview

    new = HEAD + 'for x in loader:\n    net.step(x)\n    flor.log("v", 1)\n'
    old = HEAD + 'for x in loader:\n    net.step(x)\n'
    diff = preview(new, [line_of(new, "flor.log")], old, "train.py")
    assert diff.startswith("--- a/train.py\n+++ b/train.py\n")
    assert '+    flor.log("v", 1)\n' in diff and diff.count("\n+") == 2


def test_replay_dry_run_prints_each_version_and_changes_nothing(project, monkeypatch):
    from click.testing import CliRunner

    from conftest import git_state, record, write_script
    from flordb.cli.main import cli

    body = ('import flordb as flor\nw = 1.0\nfor epoch in flor.loop("epoch", range(2)):\n'
            '    w = w * 0.5\n    flor.log("w", w)\n{extra}')
    write_script(project, body.format(extra=""))
    record(project, "train.py", check=True)
    write_script(project, body.format(extra="    flor.log(\"w2\", w * w)\n"))
    record(project, "train.py", check=True)  # a second version, which already logs w2
    monkeypatch.chdir(project)
    before = git_state(project)
    result = CliRunner().invoke(cli, ["replay", "w2", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("# version ") == 2
    assert '+    flor.log("w2", w * w)' in result.output
    assert "unchanged: the version already has the statement" in result.output
    assert git_state(project) == before
    from flordb.store.catalog import open_catalog
    from flordb.store.layout import locate

    with open_catalog(locate(project)) as cat:
        assert cat.execute("SELECT count(*) FROM replays").fetchone()[0] == 0


def test_readme_propagation_example_runs(capsys):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S)
                if "from flordb.hindsight import propagate" in b]
    exec(block, {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == '            flor.log("loss", loss.item())'
    assert "'self.ema'" in out[1]


def test_reordered_parameters_are_not_renames():
    new = src("""
        import flordb as flor
        def train_one_epoch(epoch, model, loader, optimizer):
            for x, y in loader:
                optimizer.zero_grad()
                loss = model(x, y)
                loss.backward()
                optimizer.step()
                flor.log("ep", epoch)
    """)
    old = src("""
        import flordb as flor
        def train_epoch(model, loader, optimizer, epoch):
            for x, y in loader:
                optimizer.zero_grad()
                loss = model(x, y)
                loss.backward()
                optimizer.step()
    """)
    assert propagate(new, 8, old) == old + '        flor.log("ep", epoch)\n'


@pytest.mark.parametrize("old_flag, placed", [
    ('parser.add_argument("-b", "--batch-size", type=int)', True),
    ('parser.add_argument("--bs", dest="batch_size", type=int)', True),
    ('parser.add_argument("--lr", type=float)', False),
    ('parser.add_argument(*["--lr"], type=float)\nparser.set_defaults(batch_size=8)', True),
])
def test_args_attributes_need_the_old_parser_to_define_them(old_flag, placed):
    head = 'import flordb as flor\nimport argparse\nfrom m import loader, net\nparser = argparse.ArgumentParser()\n'
    loop = 'args = parser.parse_args()\nfor x in loader:\n    net.step(x)\n'
    new = head + 'parser.add_argument("--batch-size", type=int)\n' + loop + '    flor.log("bs", args.batch_size)\n'
    old = head + old_flag + "\n" + loop
    if placed:
        assert propagate(new, line_of(new, "flor.log"), old) == old + '    flor.log("bs", args.batch_size)\n'
    else:
        with pytest.raises(PropagationError, match="no '--batch-size'"):
            propagate(new, line_of(new, "flor.log"), old)


def _rewritten_epoch_loop(old_loops: int) -> tuple[str, str]:
    new = src("""
        import flordb as flor
        from m import net, data, evaluate
        start_epoch = 0
        net.setup()
        for epoch in range(start_epoch, 10):
            for batch in data.batches():
                net.fit_batch(batch)
                net.sync()
            net.log_grads()
            net.step_scheduler()
            net.checkpoint()
            flor.log("acc", evaluate(net))
        net.teardown()
    """)
    loop = src("""
        for ep in range(10):
            for batch in data.batches():
                net.forward(batch)
                net.backward()
                net.sync()
    """)
    old = "import flordb as flor\nfrom m import net, data, evaluate\nnet.setup()\n" + loop * old_loops + "net.teardown()\n"
    return new, old


def test_the_only_loop_in_the_same_place_is_the_loop_even_when_rewritten():
    new, old = _rewritten_epoch_loop(1)
    from flordb.hindsight.propagation.computation import MIN_SCORE, similarity, tokens

    n, o = Version.parse(new, "current"), Version.parse(old, "old")
    assert similarity(tokens(n.tree.body[4], n), tokens(o.tree.body[3], o)) < MIN_SCORE  # content alone: no
    assert propagate(new, line_of(new, "flor.log"), old) == old.replace(
        "net.teardown()", '    flor.log("acc", evaluate(net))\nnet.teardown()')
    new, old = _rewritten_epoch_loop(2)  # two candidates in that place: no guess
    with pytest.raises(PropagationError, match="no counterpart"):
        propagate(new, line_of(new, "flor.log"), old)
