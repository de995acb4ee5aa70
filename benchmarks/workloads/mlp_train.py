"""Benchmark workload: an MLP on a synthetic classification set, recorded with FlorDB.

Deterministic for a given seed, one torch thread. The size of an epoch is set by
``n`` (training examples) and ``hidden``; the benchmarks pick them so that an
epoch takes about 0.5-1 s (record overhead) or about 2 s (replay) on a CPU core.

    BENCH_EPOCHS=10 BENCH_N=16384 BENCH_HIDDEN=256 python train.py

The benchmarks copy this file into a temporary project as ``train.py`` and
insert hindsight statements at the two marker comments:
``# <step-statement>`` (inside the step loop) and ``# <epoch-statement>``
(after the step loop, at epoch level). It prints ``train_loop_seconds=<s>``,
the wall time of the checkpointed training loop, on stdout. With
``BENCH_CPU_LOG=<file>`` it appends its CPU seconds to that file at exit (replay
workers included), so a benchmark can tell contention from work.
"""

import atexit
import json
import os
import resource
import time


def _cpu_log(path=os.environ.get("BENCH_CPU_LOG")):
    """At exit, append this process's CPU seconds (and its replay task, if any) to BENCH_CPU_LOG."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open(path, "a") as f:
        f.write(json.dumps({"task": os.environ.get("FLORDB_REPLAY_TASK"), "cpu": ru.ru_utime + ru.ru_stime}) + "\n")


if os.environ.get("BENCH_CPU_LOG"):
    atexit.register(_cpu_log)

import torch
import torch.nn.functional as F

import flordb as flor

# Defaults come from the environment so that the plain baseline (FLORDB_DISABLE=1,
# where ``--kwargs`` overrides are not applied) trains exactly the same model.
env = os.environ.get
seed = flor.arg("seed", int(env("BENCH_SEED", "0")))
epochs = flor.arg("epochs", int(env("BENCH_EPOCHS", "10")))
lr = flor.arg("lr", float(env("BENCH_LR", "1e-3")))
batch_size = flor.arg("batch_size", int(env("BENCH_BATCH", "128")))
hidden = flor.arg("hidden", int(env("BENCH_HIDDEN", "256")))
n = flor.arg("n", int(env("BENCH_N", "16384")))

torch.set_num_threads(int(os.environ.get("FLORDB_BENCH_THREADS", "1")))
torch.manual_seed(seed)

features, classes = 64, 10
inputs = torch.randn(n + 2048, features)
teacher = torch.randn(features, classes)
labels = (inputs @ teacher + 0.5 * torch.randn(n + 2048, classes)).argmax(dim=1)
train_x, train_y = inputs[:n], labels[:n]
test_x, test_y = inputs[n:], labels[n:]


def batches():
    order = torch.randperm(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield train_x[idx], train_y[idx]


def accuracy(model):
    with torch.no_grad():
        return (model(test_x).argmax(dim=1) == test_y).float().mean().item()


net = torch.nn.Sequential(
    torch.nn.Linear(features, hidden), torch.nn.ReLU(),
    torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
    torch.nn.Linear(hidden, classes),
)
optimizer = torch.optim.Adam(net.parameters(), lr=lr)

t0 = time.perf_counter()
with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        net.train()
        for x, y in flor.loop("step", batches()):
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
            # <step-statement>
        net.eval()
        # <epoch-statement>
        flor.log("acc", accuracy(net))
print(f"train_loop_seconds={time.perf_counter() - t0:.4f}", flush=True)
