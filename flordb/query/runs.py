"""The run listing behind ``flordb runs``."""

from __future__ import annotations

import pandas as pd

from flordb.store.catalog import open_catalog
from flordb.store.layout import Layout
from flordb.store.segments import decode


def list_runs(include_replays: bool = False, layout: Layout | None = None) -> pd.DataFrame:
    with open_catalog(layout) as cat:
        cat.ingest()
        where = "" if include_replays else "WHERE mode = 'record'"
        df = cat.execute(
            f"""SELECT run_id, left(version, 7) AS version, script, status,
                       strftime(started, '%Y-%m-%d %H:%M:%S') AS started, round(duration, 1) AS seconds,
                       error, parent_run || '@' || parent_iteration AS parent, run_id AS _id
                FROM runs {where} ORDER BY runs.started, run_id"""  # the timestamp, not the text alias
        ).df()
        args = cat.execute("SELECT run_id, name, vtype, num, txt FROM args ORDER BY rowid").fetchall()
    by_run: dict[str, list[str]] = {}
    for run_id, name, vtype, num, txt in args:
        by_run.setdefault(run_id, []).append(f"{name}={decode(vtype, num, txt)!r}")
    df["args"] = [" ".join(by_run.get(r, [])) for r in df["_id"]]
    if df["parent"].isna().all():  # runs started with flor.load_checkpoint: parent run @ iteration
        df = df.drop(columns=["parent"])
    else:
        df["parent"] = df["parent"].fillna("")
    if df["error"].isna().all():
        df = df.drop(columns=["error"])
    else:
        df["error"] = df["error"].fillna("")  # not "nan" for the runs that did not fail
    return df.drop(columns=["_id"])
