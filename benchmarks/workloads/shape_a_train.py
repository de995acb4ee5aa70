"""Benchmark workload in shape (a) of issue 8: train(epoch) and evaluate() called from the epoch loop.

A shuffled DataLoader, dropout, an LR scheduler stepped per epoch, the best
model saved with torch.save when validation improves, the learning rate
annealed by hand when validation gets worse. One torch thread; sizes from the
environment (``BENCH_EPOCHS``, ``BENCH_N`` training examples, ``BENCH_HIDDEN``),
so an epoch takes about 2 s at the full setting. Hindsight statements go at
``# <step-statement>`` (inside the step loop, in train()) and
``# <epoch-statement>`` (after the call to train(), at epoch level). Prints
``train_loop_seconds=<s>`` and ``epoch_seconds=<s>,<s>,...``.
"""

import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import flordb as flor

env = os.environ.get
epochs = int(env("BENCH_EPOCHS", "30"))
n = int(env("BENCH_N", "16384"))
hidden = int(env("BENCH_HIDDEN", "256"))
torch.set_num_threads(1)
torch.manual_seed(0)

X = torch.randn(n + 1024, 64)
Y = (X @ torch.randn(64, 10) + 0.5 * torch.randn(n + 1024, 10)).argmax(dim=1)
train_loader = DataLoader(TensorDataset(X[:n], Y[:n]), batch_size=128, shuffle=True)
val_loader = DataLoader(TensorDataset(X[n:], Y[n:]), batch_size=512)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 10)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        return self.fc3(self.drop(F.relu(self.fc2(F.relu(self.fc1(x))))))


model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)


def train(epoch):
    model.train()
    for data, target in flor.loop("step", train_loader):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
        flor.log("loss", loss.item())
        # <step-statement>


def evaluate():
    model.eval()
    total = 0.0
    with torch.no_grad():
        for data, target in val_loader:
            total += F.cross_entropy(model(data), target, reduction="sum").item()
    return total / 1024


best_val, prev_val, times = float("inf"), float("inf"), []
t0 = time.perf_counter()
with flor.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler):
    for epoch in flor.loop("epoch", range(epochs)):
        e0 = time.perf_counter()
        train(epoch)
        # <epoch-statement>
        val_loss = evaluate()
        flor.log("val_loss", val_loss)
        if val_loss < best_val:
            best_val = val_loss
            torch.save(model.state_dict(), "best.pt")
        if val_loss > prev_val:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        prev_val = val_loss
        scheduler.step()
        times.append(time.perf_counter() - e0)
print(f"train_loop_seconds={time.perf_counter() - t0:.4f}", flush=True)
print("epoch_seconds=" + ",".join(f"{t:.4f}" for t in times), flush=True)
