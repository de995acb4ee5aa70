"""One lock-retry loop for the catalog: readers and the writer wait for a held lock the same way."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import duckdb
import pytest

from flordb.errors import CatalogBusyError, StoreError
from flordb.store import catalog as catalog_module
from flordb.store import readonly
from flordb.store.readonly import connect_retrying

HOLD = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


@pytest.fixture
def held(tmp_path):
    """A DuckDB file whose write lock another process holds until ``release()``."""
    path = tmp_path / "flor.duckdb"
    duckdb.connect(str(path)).close()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"

    def release():
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(30)

    yield path, release
    release()


def test_a_held_lock_is_waited_for_then_reported_busy(held):
    path, _release = held
    t0 = time.monotonic()
    with pytest.raises(CatalogBusyError, match="stayed locked by another process for 0 s; retry, or raise"):
        connect_retrying(lambda: duckdb.connect(str(path), read_only=True), path, 0.3, damaged="x")
    assert 0.3 <= time.monotonic() - t0 < 5


def test_a_lock_released_meanwhile_lets_the_connection_through(held):
    path, release = held
    timer = threading.Timer(0.4, release)
    timer.start()
    t0 = time.monotonic()
    con = connect_retrying(lambda: duckdb.connect(str(path), read_only=True), path, 30, damaged="x")
    try:
        assert con.execute("SELECT 42").fetchone() == (42,) and time.monotonic() - t0 >= 0.3
    finally:
        con.close()
        timer.join()


def test_a_damaged_file_is_one_line_with_what_to_do_at_once(tmp_path):
    path = tmp_path / "flor.duckdb"
    path.write_bytes(b"not a database" * 500)
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        connect_retrying(lambda: duckdb.connect(str(path), read_only=True), path, 30, damaged="do this")
    assert time.monotonic() - t0 < 5 and not isinstance(err.value, CatalogBusyError)
    assert str(err.value).endswith("; do this") and "\n" not in str(err.value)


def test_reader_and_writer_share_the_loop(monkeypatch, tmp_path):
    calls = []
    real = readonly.connect_retrying

    def spy(connect, path, timeout, *, damaged):
        calls.append(damaged)
        return real(connect, path, timeout, damaged=damaged)

    monkeypatch.setattr(readonly, "connect_retrying", spy)
    monkeypatch.setattr(catalog_module, "connect_retrying", spy)
    from flordb.store.layout import Layout

    layout = Layout(work_tree=tmp_path, home=tmp_path / ".flordb")
    with catalog_module.Catalog(layout, create=True) as cat:
        assert cat.con is not None
    readonly.connect_reader(layout.catalog).close()
    assert calls == ["run `flordb doctor --rebuild` to rebuild it from the segments",
                     "run `flordb doctor` to check the store"]
