"""Clauses other than WHERE that name the column being filled (issue 8, "predicates on hindsight columns").

HAVING, ORDER BY, JOIN ... ON and a window clause may name a column no run
recorded; the query replays it (the clause cannot narrow the replay: the replay
computes the column) and answers as a full run of the modified script would.
"""

from __future__ import annotations

import pytest

from conftest import make_project, q, record
from flordb.api import query
from flordb.store.layout import locate

SCRIPT = '''\
import numpy as np
import flordb as flor

w = np.ones(3)
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(3)):
            g = np.sin(w + step)
            w -= 0.3 * g
            flor.log("loss", float((w ** 2).sum()))
            # @step
        flor.log("val", float(np.abs(w).sum()))
'''
STEP = "\n".join(f'flor.log("g{k}", float(g.sum()) * {k})' for k in range(1, 5))

QUERIES = {
    "having": "SELECT epoch, round(avg(g1), 12) AS a FROM logs GROUP BY epoch HAVING avg(g1) > -100 ORDER BY epoch",
    "order_by": "SELECT epoch, step, g2 FROM logs WHERE g2 IS NOT NULL ORDER BY g2 DESC, epoch, step",
    "join_on": ("SELECT a.epoch, a.step, a.g3, b.val FROM logs a JOIN logs b ON a.epoch = b.epoch"
                " AND a.g3 IS NOT NULL AND b.val IS NOT NULL AND a.g3 > -100 ORDER BY ALL"),
    "window": ("SELECT epoch, step, g4, rank() OVER (PARTITION BY epoch ORDER BY g4) AS r FROM logs"
               " WHERE step IS NOT NULL AND epoch = 1 ORDER BY ALL"),
}


@pytest.fixture(scope="module")
def clauses(tmp_path_factory):
    root = tmp_path_factory.mktemp("clauses")
    project, gt = make_project(root / "p"), make_project(root / "gt")
    now = SCRIPT.replace("# @step", STEP.replace("\n", "\n            "))
    record(project, SCRIPT, check=True)
    record(gt, now, check=True)
    (project / "train.py").write_text(now)
    return project, gt


@pytest.mark.parametrize("clause", list(QUERIES))
def test_a_clause_naming_the_column_being_filled_replays_it_without_narrowing(clauses, clause):
    project, gt = clauses
    sql = QUERIES[clause]
    got = list(query(sql, replay="yes", layout=locate(project)).itertuples(index=False, name=None))
    want = list(q(gt, sql).itertuples(index=False, name=None))
    assert got == want and want
    name = f"g{list(QUERIES).index(clause) + 1}"
    # the replay filled every iteration: the clause did not narrow it (the window query's WHERE
    # epoch = 1 does, as a predicate on a loop column)
    count = q(project, f"SELECT count({name}) AS n FROM logs")["n"][0]
    assert count == (3 if clause == "window" else 9)
