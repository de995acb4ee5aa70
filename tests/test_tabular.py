"""The one renderer: tables that fit the terminal, row limits, JSON objects, NULL apart from NaN."""

from __future__ import annotations

import json

import pyarrow as pa

from flordb.sql.runs import Args
from flordb.tabular import Rows, render


def test_a_too_wide_table_cuts_its_widest_text_column_before_turning_vertical():
    rows = Rows(["run_id", "args"], [["r1", "lr=0.1 " * 20], ["r2", "x=1"]])
    text = render(rows, width=60)
    assert all(len(line) <= 60 for line in text.splitlines()) and "…" in text and "RECORD" not in text
    assert "RECORD 1" in render(rows, width=20)  # no readable cut: one block per row


def test_row_limit_counts_what_it_leaves_out():
    rows = Rows(["i"], [[i] for i in range(250)])
    text = render(rows, limit=100, width=0)
    assert text.endswith("(250 rows, 150 more not shown (.maxrows to change))")
    assert text.count("\n|") == 102 and "|  99 |" in text and "| 100 |" not in text  # header, rule, 100 rows
    assert render(rows, "csv").count("\n") == 250  # data formats are never cut


def test_json_keeps_objects_and_null_apart_from_nan():
    table = pa.table({"x": [None, float("nan"), 1.5]})
    assert json.loads(render(table, "json")) == [{"x": None}, {"x": "nan"}, {"x": 1.5}]
    assert "NULL" in render(table, width=0) and "nan" in render(table, width=0)
    args = Rows(["args"], [[Args({"lr": 0.1, "layers": [8, 4]})]])
    assert json.loads(render(args, "json")) == [{"args": {"lr": 0.1, "layers": [8, 4]}}]
    assert "lr=0.1 layers=[8, 4]" in render(args, "csv")


def test_markdown():
    assert render(Rows(["a", "b"], [[1, "x"]]), "markdown").splitlines()[:2] == ["|   a | b   |", "|-----|-----|"]
