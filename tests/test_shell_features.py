"""The shell people keep open: .mode, .timer, .output, row limit, reverse search, completion with kinds."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from conftest import base_env, make_project
from flordb.cli.shell import Shell, run_shell

TRAIN = """
import flordb as flor
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(50)):
        flor.log("loss", lr / (1 + step))
    flor.log("acc", 0.5 + epoch / 10)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("shellx") / "proj")
    (root / "train.py").write_text(TRAIN)
    subprocess.run([sys.executable, "train.py"], cwd=root, env=base_env(root), check=True, capture_output=True)
    # The current code logs a name no run recorded: completion offers it as hindsight-capable.
    (root / "train.py").write_text(TRAIN + '    flor.log("grad_norm", 1.0)\n')
    return root


@pytest.fixture
def home(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project)
    monkeypatch.delenv("FLORDB_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return project


def run(text: str, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    out = io.StringIO()
    rc = run_shell(stdin=io.StringIO(text), stdout=out)
    return rc, out.getvalue(), capsys.readouterr().err


def test_mode_markdown_timer_and_maxrows(home, capsys):
    rc, out, err = run(".mode markdown\n.timer on\n.maxrows 5\nSELECT epoch, step, loss FROM logs ORDER BY ALL;\n"
                       ".maxrows 0\n.mode csv\nSELECT count(loss) AS n FROM logs;\n", capsys)
    assert rc == 0, err
    assert out.startswith("|   epoch |   step |      loss |\n|----")
    assert "(150 rows, 145 more not shown (.maxrows to change))" in out
    assert out.count("\n|") >= 6 and "n\n150\n" in out
    assert "Time: " in err and "Output format: markdown" in err


def test_output_sends_results_to_a_file(home, capsys, tmp_path):
    target = tmp_path / "out.csv"
    rc, out, err = run(f".mode csv\n.output {target}\nSELECT DISTINCT epoch FROM logs ORDER BY 1;\n.output\n"
                       "SELECT 1 AS back;\n", capsys)
    assert rc == 0, err
    assert target.read_text() == "epoch\n0\n1\n2\n"
    assert out == "back\n1\n"
    assert run(".output /nonexistent-dir/x.csv\n", capsys)[0] == 2


def test_bad_on_off_is_an_error(home, capsys):
    rc, _, err = run(".timer maybe\n", capsys)
    assert rc == 2 and "expected on or off" in err


def test_reverse_search_then_ctrl_c_keeps_the_shell(home):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text("SELECT 41 + 1 AS answer;\r")
        inp.send_text("\x12SELECT 41")  # Ctrl-R, then type part of the earlier statement
        inp.send_text("\x03")  # Ctrl-C leaves the search, not the shell
        inp.send_text("\x03")  # Ctrl-C drops the input line
        inp.send_text("SELECT 7 AS seven;\r")
        inp.send_text("\x04")
        rc = run_shell(stdout=out, pt_input=inp, pt_output=DummyOutput())
    text = out.getvalue()
    assert rc == 0
    assert "answer" in text and "seven" in text and text.rstrip().endswith("Goodbye!")


def test_completion_shows_type_and_kind_and_hindsight_names(home):
    from prompt_toolkit.document import Document

    sh = Shell(interactive=True)
    sh.refresh()
    sh.wait_for_refresh(timeout=30)
    got = {c.text: c.display_meta_text for c in sh.completer.get_completions(Document("SELECT "), None)}
    assert got["loss"] == "DOUBLE log" and got["epoch"] == "BIGINT loop" and got["lr"] == "DOUBLE arg"
    assert got["run_id"] == "VARCHAR run"
    assert got["grad_norm"].startswith("hindsight")
