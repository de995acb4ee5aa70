"""Every command and dot-command a user can type is documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import click

from flordb.cli.main import cli

CTX = click.Context(cli)
COMMANDS = {name: cli.get_command(CTX, name) for name in cli.list_commands(CTX)}
README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_cli_command_has_a_readme_example():
    for name in COMMANDS:
        assert re.search(rf"^\s*\$?\s*flordb {name}\b", README, re.M), f"`flordb {name}` has no example in README.md"


def test_every_option_of_query_and_replay_is_documented():
    for cmd in ("query", "replay", "compare", "runs"):
        for param in COMMANDS[cmd].params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--help",):
                    assert opt in README or opt in (Path(__file__).resolve().parents[1] / "docs" / "compare.md").read_text(), \
                        f"flordb {cmd} {opt} is not documented"


def test_every_python_api_name_is_documented():
    import flordb

    for name in flordb.__all__:
        assert f"flor.{name}(" in README or f"flordb.{name}(" in README, f"flor.{name} is not documented"


def test_readme_names_the_two_setup_commands_used_by_ci():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in README and "make demo" in README
    assert "make test" in ci
