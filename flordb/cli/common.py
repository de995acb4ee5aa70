"""What every command shares: the one place errors become messages and exit codes."""

from __future__ import annotations

import functools
import sys

import click

from flordb.errors import FlorError


def handle_errors(fn):
    """The one place where a FlorError becomes ``Error: ...`` and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FlorError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except OSError as exc:  # a full disk, an unusable FLORDB_HOME: one line, not a traceback
            click.echo(f"Error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''};"
                       " check free space and permissions of the store (FLORDB_HOME)", err=True)
            sys.exit(1)

    return wrapper
