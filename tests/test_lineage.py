"""Runs that start from other runs: flor.load_checkpoint, flor.resume_file, runs.parent_run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import base_env, make_project, q, readme_block, record

torch = pytest.importorskip("torch")

from flordb.errors import RecordError  # noqa: E402
from flordb.hindsight.api import replay  # noqa: E402
from flordb.store.layout import locate  # noqa: E402

PRETRAIN = '''\
import torch
import flordb as flor

seed = flor.arg("seed", 0)
torch.manual_seed(seed)
net = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
X = torch.randn(32, 4)
Y = X.sum(1, keepdim=True)
with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(4)):
            opt.zero_grad()
            loss = ((net(X[8 * step:8 * step + 8]) - Y[8 * step:8 * step + 8]) ** 2).mean()
            loss.backward()
            opt.step()
        flor.log("loss", loss.item())
torch.save(net.state_dict(), "pretrain.pt")
'''

# Fine-tuning from a pre-training run's checkpoint, or resuming from a file.
FINETUNE = '''\
import argparse
import torch
import flordb as flor

parser = argparse.ArgumentParser()
parser.add_argument("--resume", default="")
args = parser.parse_args()
parent = flor.arg("parent", "")
torch.manual_seed(1)
net = torch.nn.Linear(4, 1)
if parent:
    net.load_state_dict(flor.load_checkpoint(parent, "model"))
if args.resume:
    net.load_state_dict(torch.load(flor.resume_file(args.resume), weights_only=True))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
X = torch.randn(32, 4)
Y = 2 * X.sum(1, keepdim=True)
with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(2)):
        for step in flor.loop("step", range(4)):
            opt.zero_grad()
            loss = ((net(X[8 * step:8 * step + 8]) - Y[8 * step:8 * step + 8]) ** 2).mean()
            loss.backward()
            opt.step()
        flor.log("ft_loss", loss.item())
        # @post
'''
STATEMENT = 'flor.log("w_sum", float(net.weight.sum()))'


def run_id_of(project, script, n=-1):
    df = q(project, f"SELECT run_id FROM runs WHERE script = '{script}' AND mode = 'record' ORDER BY started")
    return df.run_id.iloc[n]


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    p = make_project(tmp_path_factory.mktemp("lineage") / "proj")
    (p / "pretrain.py").write_text(PRETRAIN)
    (p / "finetune.py").write_text(FINETUNE)
    record(p, "pretrain.py", check=True, timeout=300)
    return p


def test_load_checkpoint_returns_saved_state(proj):
    import flordb as flor

    pre = run_id_of(proj, "pretrain.py")
    saved = torch.load(proj / "pretrain.pt", weights_only=True)
    from flordb.record import lineage
    import os

    layout = locate(proj)

    cwd = os.getcwd()
    os.chdir(proj)
    try:
        os.environ["FLORDB_DISABLE"] = "1"  # inspecting from a notebook: no run of our own
        state = flor.load_checkpoint(pre[:12], "model")
        first = flor.load_checkpoint(pre, "model", iteration=0)
        everything = flor.load_checkpoint(pre)
        with pytest.raises(RecordError, match="no run"):
            flor.load_checkpoint("nosuchrun", "model")
        with pytest.raises(RecordError, match="no checkpoint at iteration 9"):
            flor.load_checkpoint(pre, "model", iteration=9)
    finally:
        os.environ.pop("FLORDB_DISABLE")
        os.chdir(cwd)
        lineage.PENDING.clear()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    assert not torch.equal(first["weight"], saved["weight"])
    assert set(everything) == {"model", "optimizer"} and "state" in everything["optimizer"]
    assert layout.objects.is_dir()


def test_finetune_records_parent_and_replays_after_parent_files_change(proj):
    pre = run_id_of(proj, "pretrain.py")
    record(proj, "finetune.py", "--kwargs", f"parent={pre}", check=True, timeout=300)
    ft = run_id_of(proj, "finetune.py")
    runs = q(proj, f"SELECT parent_run, parent_iteration FROM runs WHERE run_id = '{ft}'")
    assert runs.parent_run.iloc[0] == pre and runs.parent_iteration.iloc[0] == 2
    shown = subprocess.run([sys.executable, "-m", "flordb", "runs", "-f", "csv"], cwd=proj, env=base_env(proj),
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and f"{pre}@2" in shown.stdout
    # The truth: the fine-tune with the new statement, run now.
    (proj / "finetune.py").write_text(FINETUNE.replace("# @post", STATEMENT))
    record(proj, "finetune.py", "--kwargs", f"parent={pre}", check=True, timeout=300)
    truth = q(proj, "SELECT epoch, w_sum FROM logs WHERE w_sum IS NOT NULL ORDER BY epoch").w_sum.tolist()
    # The pre-training run's files change on disk; the store keeps what the fine-tune started from.
    (proj / "pretrain.pt").write_bytes(b"overwritten")
    (proj / "pretrain.py").write_text(PRETRAIN.replace("lr=0.1", "lr=0.5"))
    rep = replay(["w_sum"], where=f"run_id = '{ft}'", yes=True, layout=locate(proj), progress=False)
    assert not rep.failed and not rep.diverged
    got = q(proj, f"SELECT epoch, w_sum FROM logs WHERE run_id = '{ft}' ORDER BY epoch").w_sum.tolist()
    assert got == truth and len(got) == 2


def test_resume_file_replays_the_bytes_it_loaded_or_refuses(tmp_path):
    p = make_project(tmp_path / "resume")
    (p / ".gitignore").write_text("*.pt\n")  # checkpoints stay out of the code snapshots, as usual
    (p / "pretrain.py").write_text(PRETRAIN)
    (p / "finetune.py").write_text(FINETUNE)
    record(p, "pretrain.py", check=True, timeout=300)
    record(p, "finetune.py", "--resume", "pretrain.pt", check=True, timeout=300)
    ft = run_id_of(p, "finetune.py")
    files = q(p, f"SELECT kind, name, digest FROM lineage WHERE run_id = '{ft}'")
    assert list(files.kind) == ["file"] and files.name.iloc[0] == "pretrain.pt" and len(files.digest.iloc[0]) == 64
    (p / "finetune.py").write_text(FINETUNE.replace("# @post", STATEMENT))
    record(p, "finetune.py", "--resume", "pretrain.pt", check=True, timeout=300)
    truth = q(p, "SELECT epoch, w_sum FROM logs WHERE w_sum IS NOT NULL ORDER BY epoch").w_sum.tolist()
    record(p, "pretrain.py", "--kwargs", "seed=5", check=True, timeout=300)  # overwrites pretrain.pt
    rep = replay(["w_sum"], where=f"run_id = '{ft}'", yes=True, layout=locate(p), progress=False)
    assert not rep.failed and not rep.diverged
    got = q(p, f"SELECT epoch, w_sum FROM logs WHERE run_id = '{ft}' ORDER BY epoch").w_sum.tolist()
    assert got == truth
    # Without the recorded bytes, a replay refuses and says why.
    from flordb.store.objects import ObjectStore

    ObjectStore(locate(p).objects).path(files.digest.iloc[0]).unlink()
    rep = replay(["w_sum"], where=f"run_id = '{ft}'", yes=True, layout=locate(p), progress=False)
    assert rep.failed
    log = rep.failed[0].log.read_text()
    assert "changed since the run loaded it" in log and "recorded bytes are gone" in log


def test_readme_finetune_example(proj):
    pre = run_id_of(proj, "pretrain.py", 0)
    (proj / "readme_finetune.py").write_text(readme_block("parent = flor.arg(\"parent\", \"\")"))
    record(proj, "readme_finetune.py", "--kwargs", f"parent={pre[:15]}", check=True, timeout=300)
    runs = q(proj, "SELECT parent_run, parent_iteration FROM runs WHERE script = 'readme_finetune.py'")
    assert runs.parent_run.tolist() == [pre] and runs.parent_iteration.tolist() == [2]
