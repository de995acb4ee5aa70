"""Start the web application: bind (127.0.0.1 by default), print the URL with its token, serve."""

from __future__ import annotations

import secrets
import sys

from flordb.errors import ConfigError
from flordb.store.layout import Layout, locate


def url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/runs?token={token}"


def serve(host: str = "127.0.0.1", port: int = 5000, open_browser: bool = False, layout: Layout | None = None,
          token: str | None = None) -> None:
    try:
        import uvicorn

        from flordb.ui.app import LOCAL_HOSTS, create_app
    except ImportError as exc:
        raise ConfigError(f"flordb ui needs the ui extra ({exc.name} is missing): pip install 'flordb[ui]'") from None
    layout = layout or locate()
    token = token or secrets.token_urlsafe(24)
    hosts = set(LOCAL_HOSTS) | {host, f"[{host}]"}
    if host not in LOCAL_HOSTS:
        print(f"Warning: serving on {host}; anyone who can reach it and has the token can read the store.",
              file=sys.stderr)
        import socket

        hosts |= {socket.gethostname(), socket.getfqdn()}
    app = create_app(layout, token=token, hosts=hosts)
    # open pages keep a change stream open: Ctrl-C closes them after 2 s rather than waiting for the browser
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    address = url(host, port, token)
    print(f"FlorDB UI for {layout.work_tree}\n    {address}", file=sys.stderr, flush=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [address]).start()
    server.run()


def start_in_thread(layout: Layout, host: str = "127.0.0.1", port: int = 0, token: str | None = None):
    """Serve in a background thread (tests, benchmarks): returns (server, base URL, token).

    Stop it with ``server.should_exit = True``. Port 0 picks a free port.
    """
    import socket
    import threading
    import time

    import uvicorn

    from flordb.ui.app import create_app

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    token = token or secrets.token_urlsafe(24)
    app = create_app(layout, token=token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="flordb-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the UI server did not start on {host}:{port}")
        time.sleep(0.02)
    return server, f"http://{host}:{port}", token
