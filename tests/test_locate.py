"""find_log_statements: which statements log which column, in any spelling of flordb."""

import textwrap

from flordb.hindsight.locate import find_log_statements, flor_names, log_call


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_module_alias_and_positions():
    found = find_log_statements(src("""
        import flordb as flor
        for epoch in flor.loop("epoch", range(3)):
            flor.log("loss", loss.item())
    """))
    assert [(s.name, s.lineno, s.end_lineno) for s in found] == [("loss", 3, 3)]
    assert found[0].text == 'flor.log("loss", loss.item())'
    assert found[0].expr_text == "loss.item()"


def test_plain_import_and_function_import_with_alias():
    found = find_log_statements(src("""
        import flordb
        from flordb import log as record
        flordb.log("a", 1)
        record("b", x + 1)
    """))
    assert [(s.name, s.expr_text) for s in found] == [("a", "1"), ("b", "x + 1")]


def test_name_filter_and_sorted_by_line():
    source = src("""
        import flordb as flor
        def evaluate():
            flor.log("acc", 0.5)
        flor.log("loss", 1.0)
        flor.log("acc", 0.7)
    """)
    assert [s.lineno for s in find_log_statements(source)] == [3, 4, 5]
    assert [s.lineno for s in find_log_statements(source, "acc")] == [3, 5]
    assert find_log_statements(source, "missing") == []


def test_multiline_statement_text_is_dedented():
    found = find_log_statements(src("""
        import flordb as flor
        if True:
            flor.log(
                "summary",
                {"a": 1},
            )
    """))
    assert (found[0].lineno, found[0].end_lineno) == (3, 6)
    assert found[0].text == 'flor.log(\n    "summary",\n    {"a": 1},\n)'
    assert found[0].expr_text == '{"a": 1}'


def test_keyword_arguments_and_assignment_form():
    found = find_log_statements(src("""
        import flordb as flor
        v = flor.log(name="lr", value=opt.lr)
    """))
    assert [(s.name, s.expr_text) for s in found] == [("lr", "opt.lr")]


def test_only_literal_names_and_only_flordb_calls():
    found = find_log_statements(src("""
        import math, logging
        import flordb as flor
        name = "x"
        flor.log(name, 1)
        flor.log(f"w_{name}", 2)
        logging.log("loss", 3)
        math.log(2.0)
        print(flor.log("nested", 4))
    """))
    assert found == []


def test_syntax_error_yields_nothing():
    assert find_log_statements("for x in :\n  flor.log('a', 1)\n") == []


def test_flor_names_and_log_call():
    import ast

    tree = ast.parse("import flordb.record\nfrom flordb import loop\n")
    names = flor_names(tree)
    assert "flordb" in names.imported_modules and names.functions == {"loop": "loop"}
    stmt = ast.parse("flor.log('a', 1)").body[0]
    assert log_call(stmt, names) is not None
