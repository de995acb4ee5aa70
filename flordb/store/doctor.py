"""``flordb doctor``: check the store; ``--rebuild`` remakes the catalog from the segments.

The segments and run files are the truth, the catalog an index (DESIGN
decision 8), so a catalog that will not open is moved aside and rebuilt, and
nothing recorded is lost. Checks never change a file; only ``--rebuild`` does
(and ingest, which quarantines damaged files as it always does).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from flordb.errors import StoreError
from flordb.store.layout import Layout
from flordb.store.segments import iter_run_dirs, segment_files
from flordb.store.validate import DamagedFile, check_segment, end_meta, run_meta


@dataclass
class Finding:
    level: str  # ok | warning | problem
    what: str

    def __str__(self) -> str:
        return f"{self.level}: {self.what}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not any(f.level == "problem" for f in self.findings)

    def add(self, level: str, what: str) -> None:
        self.findings.append(Finding(level, what))


def check(layout: Layout) -> Report:
    """Every run file and segment checked on its own, the catalog opened, quarantined files listed."""
    report = Report()
    runs = segments = 0
    for run_dir in sorted(iter_run_dirs(layout.segments)):
        runs += 1
        for what, fn in (("run.json", run_meta), ("end.json", end_meta)):
            try:
                if fn(run_dir) is None and what == "run.json" and segment_files(run_dir):
                    report.add("warning", f"segments/{run_dir.name} has segments but no run.json"
                                          " (a run starting now, or its run.json was quarantined): not queryable")
            except DamagedFile as bad:
                report.add("problem", f"segments/{run_dir.name}/{what}: {bad.reason}")
        for seg in segment_files(run_dir):
            segments += 1
            try:
                check_segment(seg)
            except DamagedFile as bad:
                report.add("problem", f"segments/{run_dir.name}/{seg.name}: {bad.reason}")
    report.add("ok", f"{runs} runs, {segments} segments checked")
    quarantined = sorted(p for p in (layout.home / "quarantine").rglob("*") if p.is_file())
    for p in quarantined:
        report.add("warning", f"quarantined: {p.relative_to(layout.home)}")
    from flordb.store.catalog import Catalog

    try:
        with Catalog(layout, timeout=10) as cat:
            (n,) = cat.execute("SELECT count(*) FROM runs").fetchone()
            missing = _missing_objects(cat, layout)
        report.add("ok", f"catalog opens; it lists {n} runs")
        for digest, run_id in missing:
            report.add("warning", f"checkpoint object {digest[:12]} of run {run_id} is missing from objects/")
    except StoreError as exc:
        report.add("problem", f"catalog: {exc.message}")
    return report


def _missing_objects(cat, layout: Layout) -> list[tuple[str, str]]:
    from flordb.store.objects import ObjectStore

    store = ObjectStore(layout.objects)
    rows = cat.execute("SELECT DISTINCT digest, run_id FROM checkpoints WHERE digest IS NOT NULL").fetchall()
    out = []
    for digest, run_id in rows:
        try:
            if not store.has(digest):
                out.append((digest, run_id))
        except StoreError:
            out.append((str(digest), run_id))
    return out[:20]


def rebuild(layout: Layout) -> tuple[Path | None, int, int]:
    """Move the catalog aside and ingest every segment again: (old catalog, runs, rows).

    Hindsight's own bookkeeping (replay history, patched versions) lives only in
    the catalog; the values replays produced are segments and come back.
    """
    from flordb.store.catalog import Catalog

    old = None
    if layout.catalog.exists():
        old = layout.catalog.with_name(f"{layout.catalog.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(layout.catalog, old)
            wal = layout.catalog.with_name(layout.catalog.name + ".wal")
            if wal.exists():
                os.replace(wal, old.with_name(old.name + ".wal"))
        except OSError as exc:
            raise StoreError(f"cannot move the catalog aside: {exc.strerror or exc}") from None
    with Catalog(layout) as cat:
        stats = cat.ingest()
        (rows,) = cat.execute("SELECT count(*) FROM records").fetchone()
    return old, stats.runs, rows
