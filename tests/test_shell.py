"""flordb shell: stdin mode, dot-commands, errors, and one interactive session."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flordb.cli import special
from flordb.cli.shell import Shell, load_config, run_shell

TRAIN = textwrap.dedent(
    """
    import flordb as flor
    lr = flor.arg("lr", 0.1)
    for epoch in flor.loop("epoch", range(3)):
        for step in flor.loop("step", range(2)):
            flor.log("loss", round(lr / (1 + 2 * epoch + step), 6))
        flor.log("acc", 0.5 + epoch / 10)
    """
)
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project with two recorded runs (lr=0.1 and lr=0.2) of a tiny script."""
    root = tmp_path_factory.mktemp("shell_project")
    (root / "train.py").write_text(TRAIN)
    env = {**__import__("os").environ, "FLORDB_HOME": str(root / ".flordb")}
    for argv in ([], ["--kwargs", "lr=0.2"]):
        subprocess.run([sys.executable, "train.py", *argv], cwd=root, env=env, check=True,
                       capture_output=True, timeout=120)
    return root


@pytest.fixture
def home(project, monkeypatch, tmp_path) -> Path:
    monkeypatch.chdir(project)
    monkeypatch.setenv("FLORDB_HOME", str(project / ".flordb"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # never the user's own settings
    return project


def shell(text: str, capsys, fmt: str = "table") -> tuple[int, str, str]:
    capsys.readouterr()
    out = io.StringIO()
    rc = run_shell(fmt=fmt, stdin=io.StringIO(text), stdout=out)
    return rc, out.getvalue(), capsys.readouterr().err


# -- stdin mode --------------------------------------------------------------------------


def test_stdin_runs_multiline_sql_and_dot_commands(home, capsys):
    rc, out, err = shell(
        "SELECT epoch,\n"
        "       max(acc) AS n\n"
        "FROM logs\n"
        "GROUP BY ALL ORDER BY ALL;\n"
        ".format csv\n"
        "SELECT lr, max(acc) AS best FROM logs GROUP BY lr ORDER BY lr; SELECT 'a;b' AS s; -- c;\n"
        "SELECT 42 AS answer\n",  # the last statement may lack its `;`
        capsys,
    )
    assert rc == 0, err
    assert out.splitlines()[:3] == ["+---------+-----+", "|   epoch |   n |", "|---------+-----|"]
    assert "|       2 | 0.7 |" in out and "(3 rows)" in out
    assert out.split("(3 rows)\n", 1)[1] == "lr,best\n0.1,0.7\n0.2,0.7\ns\na;b\nanswer\n42\n"
    assert "Output format: csv" in err


def test_bad_statement_reports_one_line_and_later_statements_run(home, capsys):
    rc, out, err = shell("SELEC 1;\nSELECT nope FROM logs;\n.foo\nSELECT 2 AS two;\n", capsys, fmt="csv")
    assert rc == 2
    assert out == "two\n2\n"
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("Error: ") for line in lines)
    assert "syntax" in lines[0].lower()
    assert "'nope'" in lines[1]
    assert lines[2] == "Error: unknown command .foo; type .help"


def test_cli_shell_reads_stdin_and_sets_exit_code(home):
    from click.testing import CliRunner

    from flordb.cli.main import cli

    result = CliRunner().invoke(cli, ["shell", "--format", "csv"], input="SELECT 1 AS one;\nSELECT nope;\n")
    assert result.exit_code == 2
    assert result.stdout == "one\n1\n"
    assert result.stderr.startswith("Error: ")
    ok = CliRunner().invoke(cli, ["shell"], input="SELECT count(loss) AS n FROM logs;")
    assert ok.exit_code == 0 and "12" in ok.stdout


def test_quit_stops_reading(home, capsys):
    for word in (".quit", ".exit", ".q"):
        rc, out, err = shell(f"SELECT 1 AS a;\n{word}\nSELECT 2 AS b;\n", capsys, fmt="csv")
        assert (rc, out, err) == (0, "a\n1\n", "")


# -- dot-commands --------------------------------------------------------------------------


def test_help_lists_every_registered_command(home, capsys):
    rc, out, _ = shell(".help\n", capsys, fmt="csv")
    assert rc == 0
    for cmd in special.visible_commands():
        assert cmd.name in out, cmd.name
        for alias in cmd.aliases:
            assert alias in out
    assert {".help", ".tables", ".schema", ".runs", ".mode", ".timer", ".output", ".maxrows", ".quit"} <= {c.name for c in special.visible_commands()}
    assert ".exit" in special.COMMANDS


def test_readme_documents_every_dot_command():
    if not README.exists():
        pytest.skip("README.md does not exist yet; its shell section will be checked once it does")
    text = README.read_text(encoding="utf-8")
    sections = re.split(r"(?m)^(?=#{1,6} )", text)
    shell_sections = [s for s in sections if re.match(r"#{1,6} .*shell", s, re.I)]
    if not shell_sections:
        pytest.skip("README.md has no shell section yet")
    documented = "\n".join(shell_sections)
    missing = [c.name for c in special.visible_commands() if c.name not in documented]
    assert not missing, f"dot-commands missing from README.md's shell section: {missing}"


def test_schema_logs_shows_kinds_and_types(home, capsys):
    rc, out, _ = shell(".schema logs\n", capsys, fmt="csv")
    assert rc == 0
    rows = out.splitlines()
    assert rows[0] == "column,type,kind,logged_at"
    assert "run_id,VARCHAR,run," in rows
    assert "epoch,BIGINT,loop," in rows and "step,BIGINT,loop," in rows
    assert "lr,DOUBLE,arg," in rows
    assert "loss,DOUBLE,log,epoch/step" in rows and "acc,DOUBLE,log,epoch" in rows


def test_schema_of_other_tables_and_unknown_table(home, capsys):
    rc, out, _ = shell(".schema runs\n", capsys, fmt="csv")
    assert rc == 0 and out.startswith("column,type\nrun_id,VARCHAR\n")
    rc, out, _ = shell(".schema\n", capsys, fmt="csv")
    assert out.startswith("table,column,type,kind,logged_at\nlogs,run_id,") and "\nruns,run_id," in out
    rc, _, err = shell(".schema runz\n", capsys)
    assert rc == 2 and err == "Error: unknown table 'runz' (did you mean 'runs'?); type .tables\n"


def test_tables_lists_logs_first_then_catalog(home, capsys):
    rc, out, _ = shell(".tables\n", capsys, fmt="csv")
    names = out.splitlines()
    assert rc == 0 and names[:2] == ["name", "logs"]
    assert {"runs", "args", "records"} <= set(names) and "schema_version" not in names


def test_runs_is_flordb_runs(home, capsys):
    from flordb.tabular import render
    from flordb.sql.runs import list_runs

    rc, out, _ = shell(".runs\n", capsys, fmt="csv")
    assert rc == 0
    assert out == render(list_runs(), "csv") + "\n"
    assert out.count("\n") == 3 and "lr=0.1" in out and "lr=0.2" in out
    rc, _, err = shell(".runs bogus\n", capsys)
    assert rc == 2 and err.startswith("Error: unexpected argument")


def test_format_switches_and_rejects_unknown(home, capsys):
    rc, out, err = shell(".format json\nSELECT 1 AS a;\n.format\n.format xml\n", capsys)
    assert rc == 2
    assert out.replace(" ", "").replace("\n", "") == '[{"a":1}]'
    assert err.splitlines() == ["Output format: json", "Output format: json",
                                "Error: unknown format 'xml'; choose one of table, csv, json, vertical, markdown"]


# -- interactive mode ------------------------------------------------------------------------


def test_interactive_session_history_and_ctrl_c(home, capsys):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from flordb.store.layout import locate

    history = locate().history
    history.unlink(missing_ok=True)
    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text("SELECT 'cancelled' AS c\x03")  # Ctrl-C drops the input, not the shell
        inp.send_text("SELECT epoch,\n")  # no `;` yet: Enter continues the statement
        inp.send_text("max(acc) AS n FROM logs GROUP BY ALL ORDER BY ALL;\r")
        inp.send_text(".format csv\r")
        inp.send_text("SELECT 7 AS seven;\r")
        inp.send_text("\x04")  # Ctrl-D leaves
        rc = run_shell(stdout=out, pt_input=inp, pt_output=DummyOutput())
    text = out.getvalue()
    assert rc == 0
    assert "cancelled" not in text
    assert "|       1 | 0.6 |" in text and "seven\n7\n" in text
    assert text.rstrip().endswith("Goodbye!")
    assert history.exists()
    saved = history.read_text()
    assert "+SELECT epoch," in saved and "+.format csv" in saved and "cancelled" not in saved


def test_interactive_dot_quit_leaves(home):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text(".quit\r")
        inp.send_text("SELECT 'never' AS x;\r")
        rc = run_shell(stdout=out, pt_input=inp, pt_output=DummyOutput())
    assert rc == 0 and "never" not in out.getvalue()


def test_completer_is_rebuilt_in_background_and_releases_catalog(home):
    from flordb.store.layout import locate

    sh = Shell(interactive=True)
    assert "logs" not in sh.completer.vocab.tables  # before the first refresh: dot-commands only
    assert ".tables" in sh.completer.vocab.commands
    before = sh.completer
    sh.refresh()
    sh.wait_for_refresh(timeout=30)
    assert sh.completer is not before
    assert {"epoch", "step", "lr", "loss", "acc"} <= set(sh.completer.vocab.tables["logs"])
    assert "status" in sh.completer.vocab.tables["runs"]
    # Idle again: another process can open the catalog for writing.
    probe = f"import duckdb; duckdb.connect({str(locate().catalog)!r}).close()"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def test_completer_yields_prompt_toolkit_completions(home):
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    sh = Shell(interactive=True)
    sh.refresh()
    sh.wait_for_refresh(timeout=30)
    got = list(sh.completer.get_completions(Document("SELECT lo"), None))
    assert [c.text for c in got][:1] == ["loss"] and got[0].start_position == -2
    got = list(sh.completer.get_completions(Document(".sch"), None))
    assert [c.text for c in got] == [".schema"] and got[0].start_position == -4
    # While typing, no menu before a word is begun; Tab asks for everything.
    assert list(sh.completer.get_completions(Document("SELECT "), CompleteEvent(text_inserted=True))) == []
    assert len(list(sh.completer.get_completions(Document("SELECT "), CompleteEvent(completion_requested=True)))) > 20


def test_config_file_overrides_defaults(home, tmp_path):
    assert load_config() == {"vi": False, "timing": True, "syntax_highlighting": True}
    rc = tmp_path / "config" / "flordb" / "flordbrc"
    rc.parent.mkdir(parents=True)
    rc.write_text("[main]\ntiming = false\nvi = yes\n")
    assert load_config() == {"vi": True, "timing": False, "syntax_highlighting": True}
