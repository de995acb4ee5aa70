"""Completion and statement splitting for flordb shell: pure functions tested on strings."""

from __future__ import annotations

import doctest

import pytest

from flordb.cli import completion, special
from flordb.cli.completion import (
    Vocabulary, is_blank, is_complete, quote_ident, split_sql, suggest, vocabulary, word_before_cursor,
)
from flordb.cli.shell import command_vocabulary


@pytest.fixture
def vocab() -> Vocabulary:
    return vocabulary(
        ["run_id", "version", "tstamp", "script", "epoch", "step", "lr", "loss", "acc", "log.epoch"],
        {"runs": ["run_id", "version", "status"], "args": ["run_id", "name", "num"], "logs": ["ignored"]},
        command_vocabulary(),
    )


def test_docstring_examples():
    for module in (completion, special):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("text, expected", [
    ("SELECT ep", ["epoch", "epoch_ms"]),
    ("SELECT lo", ["loss", '"log.epoch"']),  # a name that needs quotes comes quoted
    ("select lr, ac", ["acc"]),
    ("SELECT * FROM logs WHERE st", ["step", "stddev", "string_agg", "strftime"]),
    ("SELECT * FROM runs WHERE st", ["status", "stddev", "string_agg", "strftime"]),
    ("SELECT * FROM logs l WHERE l.ep", ["epoch"]),
    ("SELECT r.st", []),  # the alias is not known yet from the text before the cursor
    ("SELECT avg(lo", ["loss", '"log.epoch"']),
    ('SELECT "log', ['"log.epoch"']),
])
def test_columns_in_expressions(vocab, text, expected):
    assert suggest(text, vocab) == expected


def test_columns_from_the_whole_statement(vocab):
    # The FROM after the cursor decides the columns, and an alias defined later resolves.
    assert suggest("SELECT st", vocab, full_text="SELECT st FROM runs") == ["status", "stddev", "string_agg", "strftime"]
    assert suggest("SELECT r.st", vocab, full_text="SELECT r.st FROM runs AS r") == ["status"]


def test_logs_columns_come_first_without_from(vocab):
    got = suggest("SELECT ", vocab)
    assert got[:10] == ["run_id", "version", "tstamp", "script", "epoch", "step", "lr", "loss", "acc", '"log.epoch"']
    assert "status" in got and "avg" in got and "WHERE" in got
    assert got.index("status") < got.index("avg") < got.index("WHERE")


@pytest.mark.parametrize("text, expected", [
    ("SELECT * FROM ", ["logs", "runs", "args"]),
    ("SELECT * FROM l", ["logs"]),
    ("SELECT * FROM logs JOIN r", ["runs"]),
    ("select * from logs, a", ["args"]),
    ('SELECT * FROM "ru', ['"runs"']),
])
def test_tables_after_from_and_join(vocab, text, expected):
    assert suggest(text, vocab) == expected


@pytest.mark.parametrize("text, first", [
    ("SELECT * FROM logs ", "WHERE"),
    ("SELECT * FROM logs wh", "where"),  # keywords follow the user's case
    ("SELECT epoch ", "FROM"),
    ("SELECT * FROM logs GR", "GROUP BY"),
    ("", "SELECT"),
    ("se", "select"),
])
def test_keywords(vocab, text, first):
    assert suggest(text, vocab)[0] == first


def test_dot_commands_at_line_start(vocab):
    assert suggest(".", vocab)[:1] == [".help"]
    assert set(suggest(".", vocab)) == set(special.COMMANDS)
    assert suggest(".ta", vocab) == [".tables"]
    assert suggest("  .fo", vocab) == [".format"]
    assert suggest(".schema ", vocab) == ["logs", "runs", "args"]
    assert suggest(".schema r", vocab) == ["runs"]
    assert suggest(".format c", vocab) == ["csv"]
    assert suggest(".runs ", vocab) == ["all"]
    assert ".tables" in suggest("", vocab)  # an empty line offers dot-commands too
    assert word_before_cursor(".sch", vocab) == ".sch"
    assert word_before_cursor(".schema lo", vocab) == "lo"


def test_no_suggestions_inside_strings_or_comments(vocab):
    assert suggest("SELECT * FROM logs WHERE script = 'tr", vocab) == []
    assert suggest("SELECT 1 -- lo", vocab) == []
    assert suggest("SELECT /* lo", vocab) == []


def test_only_the_current_statement_counts(vocab):
    assert suggest("SELECT status FROM runs; SELECT st", vocab) == ["step", "status", "stddev", "string_agg", "strftime"]
    assert suggest("SELECT 1; .ta", vocab) == []  # a dot-command must start the line
    assert suggest("SELECT 1;\n.ta", vocab) == [".tables"]


def test_word_before_cursor(vocab):
    assert word_before_cursor("SELECT lo") == "lo"
    assert word_before_cursor("SELECT l.ep") == "ep"
    assert word_before_cursor('SELECT "log.ep') == '"log.ep'
    assert word_before_cursor("SELECT ") == ""


def test_quote_ident():
    assert quote_ident("epoch") == "epoch"
    assert quote_ident("log.epoch") == '"log.epoch"'
    assert quote_ident("select") == '"select"'
    assert quote_ident('a"b') == '"a""b"'


def test_split_sql():
    assert split_sql("SELECT 1; SELECT 2;") == (["SELECT 1", "SELECT 2"], "")
    assert split_sql("SELECT ';' AS s; SELECT") == (["SELECT ';' AS s"], " SELECT")
    assert split_sql('SELECT 1 AS "a;b"; x') == (['SELECT 1 AS "a;b"'], " x")
    assert split_sql("SELECT 1 -- not; the end\n;") == (["SELECT 1 -- not; the end"], "")
    assert split_sql("SELECT /* ; */ 1;") == (["SELECT /* ; */ 1"], "")
    assert split_sql("SELECT 'it''s;' AS s;") == (["SELECT 'it''s;' AS s"], "")
    assert split_sql("SELECT 'open;") == ([], "SELECT 'open;")


def test_is_complete():
    assert is_complete("SELECT 1;")
    assert is_complete("SELECT 1;  -- done")
    assert is_complete(".tables")
    assert is_complete("   ")
    assert not is_complete("SELECT 1")
    assert not is_complete("SELECT ';")
    assert not is_complete("SELECT 1; SELECT 2")
    assert not is_complete("SELECT 1 /* ; */")


def test_is_blank():
    assert is_blank("  -- only a comment\n /* and another */ ")
    assert not is_blank("-- c\nSELECT 1")
