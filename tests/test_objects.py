import hashlib
import multiprocessing as mp
import os

import pytest

from flordb.errors import StoreError
from flordb.store.objects import ObjectStore


def test_put_get_has(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    assert not (tmp_path / "objects").exists()  # created lazily
    data = b"hello checkpoint"
    d = store.put(data)
    assert d == hashlib.sha256(data).hexdigest()
    assert store.has(d)
    assert store.get(d) == data
    assert store.path(d) == tmp_path / "objects" / d[:2] / d[2:]
    assert store.path(d).read_bytes() == data


def test_put_is_idempotent(tmp_path):
    store = ObjectStore(tmp_path)
    d1 = store.put(b"x" * 1000)
    mtime = store.path(d1).stat().st_mtime_ns
    d2 = store.put(bytearray(b"x" * 1000))
    assert d1 == d2
    assert store.path(d1).stat().st_mtime_ns == mtime  # not rewritten
    assert len(list(store.path(d1).parent.iterdir())) == 1


def test_empty_blob(tmp_path):
    store = ObjectStore(tmp_path, fsync=False)
    d = store.put(b"")
    assert store.get(d) == b""


def test_missing_raises_store_error(tmp_path):
    store = ObjectStore(tmp_path / "objs")
    d = hashlib.sha256(b"never stored").hexdigest()
    assert not store.has(d)
    with pytest.raises(StoreError) as e:
        store.get(d)
    assert f"checkpoint object {d[:12]} is missing from {tmp_path / 'objs'}" == str(e.value)


def test_bad_digest_and_corruption(tmp_path):
    store = ObjectStore(tmp_path)
    with pytest.raises(StoreError):
        store.path("../../etc/passwd")
    d = store.put(b"abc")
    p = store.path(d)
    os.chmod(p, 0o644)
    p.write_bytes(b"abd")
    with pytest.raises(StoreError, match="corrupt"):
        store.get(d)
    assert store.get(d, verify=False) == b"abd"


class Boom(Exception):
    pass


def test_failed_write_leaves_no_temp(tmp_path, monkeypatch):
    store = ObjectStore(tmp_path)

    def bad_replace(src, dst):
        raise Boom("disk on fire")

    monkeypatch.setattr(os, "replace", bad_replace)
    with pytest.raises(Boom):
        store.put(b"data")
    monkeypatch.undo()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []
    d = store.put(b"data")
    assert store.get(d) == b"data"
    assert [p.name for p in store.path(d).parent.iterdir()] == [d[2:]]


def test_oserror_becomes_store_error(tmp_path, monkeypatch):
    store = ObjectStore(tmp_path)

    def bad_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", bad_replace)
    with pytest.raises(StoreError, match="No space left"):
        store.put(b"data")
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def _writer(root, data, n):
    store = ObjectStore(root, fsync=False)
    for _ in range(n):
        store.put(data)
        # delete and rewrite so the race on the same digest really happens
        try:
            os.unlink(store.path(hashlib.sha256(data).hexdigest()))
        except FileNotFoundError:
            pass
    store.put(data)


def test_concurrent_processes_same_digest(tmp_path):
    data = os.urandom(200_000)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, data, 30)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = ObjectStore(tmp_path)
    d = hashlib.sha256(data).hexdigest()
    assert store.get(d) == data
    assert [p.name for p in store.path(d).parent.iterdir()] == [d[2:]]  # no temp files left
