"""The ``flordb ui`` click command (registered lazily by flordb.cli.main)."""

from __future__ import annotations

import click

from flordb.cli.common import handle_errors


@click.command()
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it local).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@handle_errors
def ui(port: int, host: str, open_browser: bool) -> None:
    """Serve the web page: runs, curves, SQL, compare, hindsight (needs flordb[ui]).

    \b
    flordb ui
    flordb ui --port 8080 --open
    """
    from flordb.ui.server import serve

    serve(host=host, port=port, open_browser=open_browser)
