import random
import threading
import time

import numpy as np
import pytest
import torch

from flordb.errors import StoreError
from flordb.record.checkpoint import CheckpointPolicy, CheckpointWriter
from flordb.record.state import RNG_NAME, capture, restore, serialize
from flordb.store.objects import ObjectStore


def roundtrip(objects):
    return serialize(capture(objects))


def make_job(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, opt


def train_step(model, opt):
    x = torch.randn(4, 8)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_bitwise(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# -- state round trips --------------------------------------------------------
def test_linear_adam_roundtrip_continues_bitwise():
    model, opt = make_job(0)
    for _ in range(3):
        train_step(model, opt)
    blobs = roundtrip({"model": model, "optimizer": opt})
    assert blobs["model"][0] == "torch_state_dict"
    assert blobs[RNG_NAME][0] == "rng"
    for _ in range(2):
        train_step(model, opt)  # uninterrupted run
    expected = params(model)

    model2, opt2 = make_job(123)  # different init, fresh optimizer
    out = restore({"model": model2, "optimizer": opt2}, blobs)
    assert out["model"] is model2 and out["optimizer"] is opt2
    for _ in range(2):
        train_step(model2, opt2)
    assert_bitwise(params(model2), expected)


def test_step_lr_scheduler():
    model, opt = make_job(0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(5):
        train_step(model, opt)
        sched.step()
    blobs = roundtrip({"model": model, "optimizer": opt, "sched": sched})
    lrs = []
    for _ in range(4):
        train_step(model, opt)
        sched.step()
        lrs.append(sched.get_last_lr())

    model2, opt2 = make_job(1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=7, gamma=0.1)
    restore({"model": model2, "optimizer": opt2, "sched": sched2}, blobs)
    assert sched2.last_epoch == 5 and sched2.step_size == 2
    lrs2 = []
    for _ in range(4):
        train_step(model2, opt2)
        sched2.step()
        lrs2.append(sched2.get_last_lr())
    assert lrs2 == lrs
    assert_bitwise(params(model2), params(model))


def test_numpy_array_restored_in_place():
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    blobs = roundtrip({"arr": arr})
    assert blobs["arr"][0] == "numpy"
    arr *= 7
    out = restore({"arr": arr}, blobs)
    assert out["arr"] is arr
    np.testing.assert_array_equal(arr, np.arange(12, dtype=np.float64).reshape(3, 4))
    other = np.zeros(5)  # shape changed: cannot be updated in place, returned instead
    out = restore({"arr": other}, blobs)
    assert out["arr"] is not other and out["arr"].shape == (3, 4)


class Counter:
    def __init__(self):
        self.n = 0
        self.hist = []


def test_cloudpickle_objects_in_place_and_immutables_returned():
    d = {"a": 1, "nested": [1, 2]}
    c = Counter()
    c.n, c.hist = 3, [1, 2, 3]
    lst = [1, 2, 3]
    blobs = roundtrip({"d": d, "c": c, "lst": lst, "n": 41, "t": (1, "x")})
    assert blobs["d"][0] == blobs["c"][0] == "cloudpickle"
    d["a"] = 99
    d["new"] = True
    c.n = 100
    c.extra = "added later"
    lst.append(4)
    out = restore({"d": d, "c": c, "lst": lst, "n": 0, "t": ()}, blobs)
    assert out["d"] is d and d == {"a": 1, "nested": [1, 2]}
    assert out["c"] is c and c.n == 3 and c.hist == [1, 2, 3] and not hasattr(c, "extra")
    assert out["lst"] is lst and lst == [1, 2, 3]
    assert out["n"] == 41 and out["t"] == (1, "x")  # caller rebinds these


def test_rng_draws_after_restore_equal_draws_after_capture():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1)  # move off the seed
    blobs = roundtrip({})

    def draw():
        return (
            [random.random() for _ in range(3)],
            np.random.rand(3).tolist(),
            np.random.randn(3).tolist(),
            torch.rand(3).tolist(),
            torch.randn(3).tolist(),
        )

    first = draw()
    draw()
    restore({}, blobs)
    assert draw() == first
    restore({}, blobs, rng=False)
    assert draw() != first


def test_capture_is_a_consistent_copy():
    model, opt = make_job(0)
    train_step(model, opt)
    arr = np.ones(4)
    d = {"k": [1]}
    before = params(model)
    copy = capture({"model": model, "optimizer": opt, "arr": arr, "d": d})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # training mutates right after capture returns
    train_step(model, opt)
    arr += 5
    d["k"].append(2)
    blobs = serialize(copy)

    model2, opt2 = make_job(9)
    arr2 = np.zeros(4)
    d2 = {}
    restore({"model": model2, "optimizer": opt2, "arr": arr2, "d": d2}, blobs)
    assert_bitwise(params(model2), before)
    np.testing.assert_array_equal(arr2, np.ones(4))
    assert d2 == {"k": [1]}


def test_tied_weights_stay_tied_and_restore():
    a = torch.nn.Linear(4, 4, bias=False)
    b = torch.nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    m = torch.nn.ModuleDict({"a": a, "b": b})
    copy = capture({"m": m})
    sd = copy.entries["m"][1]
    assert sd["a.weight"] is sd["b.weight"]
    expected = a.weight.detach().clone()
    blobs = serialize(copy)
    with torch.no_grad():
        a.weight.zero_()
    restore({"m": m}, blobs)
    assert torch.equal(b.weight, expected) and m.b.weight is m.a.weight


def test_restore_missing_object_and_wrong_target():
    blobs = roundtrip({"x": 1})
    with pytest.raises(StoreError, match="no object 'y'"):
        restore({"y": 1}, blobs)
    model, _ = make_job(0)
    blobs = roundtrip({"m": model})
    with pytest.raises(StoreError, match="load_state_dict"):
        restore({"m": object()}, blobs)


def test_capture_reuse_buffers_is_correct():
    model, opt = make_job(0)
    train_step(model, opt)
    c1 = capture({"model": model, "optimizer": opt})
    w1 = c1.entries["model"][1]["0.weight"]
    train_step(model, opt)
    expected = params(model)
    c2 = capture({"model": model, "optimizer": opt}, reuse=c1)
    assert c2.entries["model"][1]["0.weight"] is w1  # recycled
    blobs = serialize(c2)
    model2, opt2 = make_job(5)
    restore({"model": model2, "optimizer": opt2}, blobs)
    assert_bitwise(params(model2), expected)


# -- writer ---------------------------------------------------------------------
class SlowStore(ObjectStore):
    def __init__(self, root, delay):
        super().__init__(root, fsync=False)
        self.delay = delay

    def put(self, data):
        time.sleep(self.delay)
        return super().put(data)


def test_writer_writes_every_checkpoint_and_close_waits(tmp_path):
    store = SlowStore(tmp_path, 0.01)
    written = {}
    threads = {}

    def on_written(it, entries):
        threads[it] = threading.current_thread().name
        written[it] = entries

    writer = CheckpointWriter(store, on_written)
    model, opt = make_job(0)
    arr = np.zeros(3)
    expected = {}
    for it in range(6):
        train_step(model, opt)
        arr += 1
        secs = writer.submit(it, {"model": model, "optimizer": opt, "arr": arr})
        assert secs >= 0
        expected[it] = (params(model), arr.copy())
    writer.close()
    writer.close()  # twice is fine
    assert sorted(written) == list(range(6))
    # the first on the training thread (lazy imports of serialization happen there), the rest in the background
    assert threads == {0: "MainThread", **{it: "flordb-checkpoint-writer" for it in range(1, 6)}}
    for it, entries in written.items():
        names = [e[0] for e in entries]
        assert names == ["model", "optimizer", "arr", RNG_NAME]
        for name, fmt, digest, nbytes, secs in entries:
            assert store.has(digest) and len(store.get(digest)) == nbytes and secs >= 0
        blobs = {name: (fmt, store.get(digest)) for name, fmt, digest, _n, _s in entries}
        m2, o2 = make_job(7)
        a2 = np.empty(3)
        restore({"model": m2, "optimizer": o2, "arr": a2}, blobs, rng=False)
        assert_bitwise(params(m2), expected[it][0])  # recycled buffers never leak across
        np.testing.assert_array_equal(a2, expected[it][1])
    # after close, submit still works (synchronously)
    writer.submit(99, {"arr": arr})
    assert 99 in written


def test_writer_bounded_pending(tmp_path):
    store = SlowStore(tmp_path, 0.05)
    writer = CheckpointWriter(store, lambda it, e: None, max_pending=2)
    t0 = time.perf_counter()
    for it in range(4):
        writer.submit(it, {"x": it})  # 2 puts (x, rng) of 0.05 s each per checkpoint
    blocked = time.perf_counter() - t0
    assert blocked >= 0.15  # the third and fourth submits had to wait
    writer.close()


class FailingStore(ObjectStore):
    def put(self, data):
        raise OSError("disk is full")


def test_writer_errors_reported_once_not_raised(tmp_path, capsys):
    calls = []
    writer = CheckpointWriter(FailingStore(tmp_path), lambda it, e: calls.append(it))
    model, _ = make_job(0)
    for it in range(3):
        writer.submit(it, {"model": model})
    writer.close()
    err = capsys.readouterr().err
    assert err.count("flordb: checkpoint of 'model' failed: ") == 1
    assert "disk is full" in err
    assert calls == []  # incomplete checkpoints are not recorded
    assert len(writer.errors) == 3


def test_writer_capture_error_and_callback_error(tmp_path, capsys):
    def bad_callback(it, entries):
        raise RuntimeError("catalog says no")

    writer = CheckpointWriter(ObjectStore(tmp_path, fsync=False), bad_callback)
    lock = threading.Lock()  # cannot be pickled
    writer.submit(0, {"lock": lock})
    writer.submit(1, {"ok": 1})
    writer.flush()
    err = capsys.readouterr().err
    assert "flordb: checkpoint of 'lock' failed: " in err
    assert "catalog says no" in err
    writer.close()


# -- policy ---------------------------------------------------------------------
def drive(policy, n, iter_s, ckpt_s):
    taken = []
    for it in range(n):
        take = policy.should_checkpoint(it, is_last=(it == n - 1))
        if take:
            taken.append(it)
        policy.observe(iter_s, ckpt_s if take else None)
    return taken


def test_policy_cheap_checkpoints_every_iteration():
    assert drive(CheckpointPolicy(0.05), 20, 1.0, 0.01) == list(range(20))


def test_policy_expensive_checkpoints_every_tenth_and_last():
    p = CheckpointPolicy(0.05)
    taken = drive(p, 45, 1.0, 0.5)
    assert taken == [0, 10, 20, 30, 40, 44]
    assert p.period() == 10


def test_policy_adapts_and_is_deterministic():
    def run():
        p = CheckpointPolicy(0.10)
        taken = []
        for it in range(60):
            take = p.should_checkpoint(it, it == 59)
            taken.append(take)
            ckpt = 0.05 if it < 30 else 0.4  # checkpoints get expensive half way
            p.observe(1.0, ckpt if take else None)
        return taken, p.period()

    (a, pa), (b, pb) = run(), run()
    assert a == b and pa == pb == 4
    first = [i for i, t in enumerate(a) if t and i < 30]
    assert first == list(range(30))
    assert a[-1]
    gaps = [j - i for i, j in zip([i for i, t in enumerate(a) if t], [i for i, t in enumerate(a) if t][1:])]
    assert max(gaps) <= 4


def test_policy_restart_measures_again():
    p = CheckpointPolicy(0.05)
    drive(p, 12, 1.0, 0.5)
    assert p.should_checkpoint(0, False)  # a new loop starts again at 0


# -- GPU (runs only where CUDA is available) ------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_roundtrip_rng_and_writer(tmp_path):
    dev = torch.device("cuda")

    def job(seed):
        torch.manual_seed(seed)
        m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 4)).to(dev)
        return m, torch.optim.Adam(m.parameters(), lr=0.01)

    def step(m, o):
        x = torch.randn(32, 64, device=dev)  # CUDA RNG
        loss = m(x).pow(2).mean()  # dropout: CUDA RNG
        o.zero_grad()
        loss.backward()
        o.step()

    m, o = job(0)
    for _ in range(3):
        step(m, o)
    copy = capture({"model": m, "optimizer": o})
    assert "cuda" in copy.rng
    assert copy.entries["model"][1]["0.weight"].device.type == "cuda"
    for _ in range(2):
        step(m, o)
    expected = params(m)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0)  # mutate after capture
    blobs = serialize(copy)
    m2, o2 = job(1)
    restore({"model": m2, "optimizer": o2}, blobs)
    assert m2[0].weight.device.type == "cuda"
    for _ in range(2):
        step(m2, o2)
    assert_bitwise(params(m2), expected)

    written = {}
    w = CheckpointWriter(ObjectStore(tmp_path, fsync=False), lambda it, e: written.update({it: e}))
    snaps = {}
    for it in range(4):
        step(m2, o2)
        w.submit(it, {"model": m2})
        snaps[it] = params(m2)
    w.close()
    assert sorted(written) == [0, 1, 2, 3] and not w.errors
    store = ObjectStore(tmp_path)
    for it, entries in written.items():
        blobs = {n: (f, store.get(d)) for n, f, d, _b, _s in entries}
        m3, _ = job(2)
        restore({"model": m3}, blobs, rng=False)
        assert_bitwise(params(m3), snaps[it])
