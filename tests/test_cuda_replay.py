"""Checkpoint and replay with a model on the GPU (runs only where CUDA is available).

Records two runs of a small MLP trained on the GPU, adds an epoch-level and a
step-level statement, replays them and checks the values against ground-truth
runs with the statements present from the start.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from conftest import q, record, write_script  # noqa: E402
from flordb.hindsight.api import replay  # noqa: E402
from flordb.store.layout import locate  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SCRIPT = """
import torch
import torch.nn.functional as F
import flordb as flor

lr = flor.arg("lr", 1e-3)
torch.manual_seed(0)
torch.backends.cudnn.deterministic = True
device = "cuda"
x_all = torch.randn(1024, 32, device=device)
y_all = (x_all @ torch.randn(32, 4, device=device)).argmax(dim=1)
net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).to(device)
opt = torch.optim.Adam(net.parameters(), lr=lr)

def batches():
    order = torch.randperm(1024, device=device)
    for i in range(0, 1024, 128):
        idx = order[i:i + 128]
        yield x_all[idx], y_all[idx]

with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(4)):
        for x, y in flor.loop("step", batches()):
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            flor.log("loss", loss.item())
            #STEP
        flor.log("acc", (net(x_all).argmax(dim=1) == y_all).float().mean().item())
        #EPOCH
"""
STEP = 'flor.log("grad_norm", torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf")).item())'
EPOCH = 'flor.log("weight_norm", net[0].weight.norm().item())'


def with_statements(text: str) -> str:
    return text.replace("#STEP", STEP).replace("#EPOCH", EPOCH)


def test_gpu_checkpoint_and_replay_match_ground_truth(project):
    write_script(project, SCRIPT)
    for lr in ("0.001", "0.01"):
        record(project, "train.py", "--kwargs", f"lr={lr}", check=True)
    ckpts = q(project, "SELECT count(*) AS n FROM checkpoints")["n"][0]
    assert ckpts > 0
    write_script(project, with_statements(SCRIPT))
    layout = locate(project)
    for name in ("weight_norm", "grad_norm"):
        report = replay([name], workers=2, yes=True, layout=layout, progress=False)
        assert not report.failed, [r.log.read_text() for r in report.failed]
        assert not report.diverged, report.fidelity
    replayed = q(project, "SELECT lr, epoch, step, grad_norm, weight_norm FROM logs ORDER BY lr, epoch, step")
    for lr in ("0.001", "0.01"):
        record(project, "train.py", "--kwargs", f"lr={lr}", check=True)
    truth = q(project, "SELECT lr, epoch, step, grad_norm, weight_norm FROM logs"
                       " WHERE \"replay.grad_norm\" IS NULL AND grad_norm IS NOT NULL ORDER BY lr, epoch, step")
    got = replayed.dropna(subset=["grad_norm"]).reset_index(drop=True)
    assert len(got) == len(truth) == 2 * 4 * 8
    assert got["grad_norm"].tolist() == truth["grad_norm"].tolist()
    assert got["weight_norm"].tolist() == truth["weight_norm"].tolist()
