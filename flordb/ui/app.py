"""The Starlette application behind ``flordb ui``: routes as a list, every page with a JSON twin.

``/runs`` is the page; ``/runs.json`` is what the page fetches (same query
string). Security: a random token is required for everything (from the URL
once, then a same-site cookie); state changes are POSTs carrying the token in
a header, which a cross-origin page cannot send; requests from another origin
or for another host name (DNS rebinding) are refused; SQL is read-only as in
the CLI; every asset is served from the package (no CDN).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from flordb.errors import FlorError
from flordb.ui import curves as curves_mod
from flordb.ui import views
from flordb.ui.jobs import Jobs

COOKIE = "flordb_token"
HEADER = "x-flordb-token"
PAGES = ("runs", "curves", "sql", "compare")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
STATIC = Path(__file__).parent / "static"
CHANGES_EVERY = 0.5  # seconds between looks at the store while a page listens for changes


def plotly_js() -> Path:
    """The plotting library's own bundled browser build, shipped inside the plotly wheel."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


class Guard:
    """ASGI middleware: host, origin and token checks before any route runs."""

    def __init__(self, app, token: str, hosts: set[str]):
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        req = Request(scope)
        problem = self.refuse(req)
        if problem is not None:
            return await JSONResponse({"error": problem}, status_code=403, headers=security_headers())(
                scope, receive, send)
        set_cookie = req.query_params.get("token") is not None and req.cookies.get(COOKIE) != self.token

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                for k, v in security_headers().items():
                    if k.lower().encode() not in have:
                        headers.append((k.lower().encode(), v.encode()))
                if set_cookie:
                    headers.append((b"set-cookie",
                                    f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refuse(self, req: Request) -> str | None:
        host_header = req.headers.get("host") or ""
        host = host_header.split("]")[0] + "]" if host_header.startswith("[") else host_header.rsplit(":", 1)[0]
        if host not in self.hosts:
            return f"host {host!r} not served"
        origin = req.headers.get("origin")
        if origin is not None and origin != f"http://{host_header}":
            return "cross-origin requests are refused"
        if req.method == "POST":
            given = req.headers.get(HEADER, "")
        elif req.method in ("GET", "HEAD"):
            given = req.query_params.get("token") or req.cookies.get(COOKIE) or req.headers.get(HEADER, "")
        else:
            return f"method {req.method} not allowed"
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return "a valid token is required: open the URL `flordb ui` printed (it ends in ?token=...)"
        return None


def security_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def create_app(layout, token: str | None = None, hosts: set[str] | None = None) -> Starlette:
    """The application over the store at ``layout``; ``app.state.token`` is the token it requires."""
    token = token or secrets.token_urlsafe(24)
    jobs = Jobs(layout)

    async def data(fn, *args, **kwargs) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(fn, layout, *args, **kwargs))
        except FlorError as exc:
            return JSONResponse({"error": exc.message}, status_code=400)

    def page_view(name: str):
        async def view(request: Request) -> Response:
            html = (STATIC / "page.html").read_text()
            html = html.replace("{{page}}", name).replace("{{token}}", token)
            return HTMLResponse(html)
        return view

    async def index(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=302)

    async def runs_json(request: Request) -> Response:
        p = request.query_params
        try:
            offset = int(p.get("offset") or 0)
            limit = int(p.get("limit") or views.PAGE_SIZE)
        except ValueError as exc:
            return JSONResponse({"error": f"bad parameter: {exc}"}, status_code=400)
        return await data(views.runs, p.get("where"), p.get("metric") or None, p.get("status") or None,
                          p.get("sort") or "started", p.get("dir", "desc") != "asc", offset, limit)

    async def curves_json(request: Request) -> Response:
        p = request.query_params
        try:
            width = int(p.get("width") or curves_mod.MAX_BUCKETS)
            x0 = float(p["x0"]) if p.get("x0") else None
            x1 = float(p["x1"]) if p.get("x1") else None
            if not all(math.isfinite(v) for v in (x0, x1) if v is not None):
                raise ValueError("x0 and x1 must be finite numbers")
        except ValueError as exc:
            return JSONResponse({"error": f"bad parameter: {exc}"}, status_code=400)
        ys = [y for y in (p.get("y") or "").split(",") if y]
        return await data(views.curves_page, ys, curves_mod.parse_runs(p.get("runs")), p.get("x") or None,
                          width, x0, x1, p.get("encoding") or "json")

    async def sql_json(request: Request) -> Response:
        return await data(views.sql, request.query_params.get("q") or "")

    async def compare_json(request: Request) -> Response:
        return await data(views.compare, curves_mod.parse_runs(request.query_params.get("runs")))

    async def columns_json(request: Request) -> Response:
        return await data(views.columns)

    async def complete_json(request: Request) -> Response:
        p = request.query_params
        cursor = int(p["cursor"]) if (p.get("cursor") or "").isdigit() else None
        return await data(views.complete, p.get("text") or "", cursor)

    async def source_json(request: Request) -> Response:
        p = request.query_params
        return await data(views.source, p.get("version") or "", p.get("path") or "")

    async def replay_post(request: Request) -> Response:
        try:
            body = await request.json()
            names = [str(n) for n in body["names"]]
            where = body.get("where") or None
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send JSON {"names": [...], "where": "..."}'}, status_code=400)
        if not names:
            return JSONResponse({"error": "name at least one column to replay"}, status_code=400)
        job = jobs.start(names, where)
        return JSONResponse(job.as_dict(), status_code=202)

    async def tag_post(request: Request) -> Response:
        try:
            body = await request.json()
            run_id, tag = str(body["run"]), str(body["tag"])
            remove, kind = bool(body.get("remove")), str(body.get("kind") or "tag")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send JSON {"run": ..., "tag": ..., "remove": false}'}, status_code=400)
        return await data(views.tag, run_id, tag, remove, kind)

    def job_of(request: Request):
        return jobs.jobs.get(request.path_params["job"])

    async def job_json(request: Request) -> Response:
        job = job_of(request)
        if job is None:
            return JSONResponse({"error": "no such replay"}, status_code=404)
        return JSONResponse(job.as_dict())

    async def job_events(request: Request) -> Response:
        """Server-sent events: one message per change, until the replay ends."""
        job = job_of(request)
        if job is None:
            return JSONResponse({"error": "no such replay"}, status_code=404)

        async def stream():
            seen = -1
            while True:
                seen = await run_in_threadpool(jobs.wait_change, job, seen, 1.0)
                yield f"data: {json.dumps(job.as_dict())}\n\n"
                if job.state != "running":
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def changes(request: Request) -> Response:
        """Server-sent events: the store's news (``views.generation``), once at start and again when it moves.

        The disk is looked at every ``CHANGES_EVERY`` seconds while a page listens (a running
        run's new records are ingested then), so open pages redraw only when there is news.
        """
        async def stream():
            last = None
            while True:
                try:
                    gen = await run_in_threadpool(views.generation, layout)
                except FlorError:
                    gen = None  # no store yet: the page keeps its error until one appears
                if gen != last:
                    yield f"data: {json.dumps({'generation': gen})}\n\n"
                    last = gen
                if await request.is_disconnected():
                    return
                await asyncio.sleep(CHANGES_EVERY)

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        cache = {"Cache-Control": "private, max-age=86400"}  # assets only; data is never cached
        if name == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript", headers=cache)
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file() or path.suffix not in (".js", ".css"):
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(path, headers=cache)

    routes = [
        Route("/", index),
        *(Route(f"/{p}", page_view(p)) for p in PAGES),
        Route("/runs.json", runs_json),
        Route("/curves.json", curves_json),
        Route("/sql.json", sql_json),
        Route("/compare.json", compare_json),
        Route("/-/columns.json", columns_json),
        Route("/-/complete.json", complete_json),
        Route("/-/source.json", source_json),
        Route("/-/replay", replay_post, methods=["POST"]),
        Route("/-/tag", tag_post, methods=["POST"]),
        Route("/-/jobs/{job}.json", job_json),
        Route("/-/jobs/{job}/events", job_events),
        Route("/-/changes", changes),
        Route("/-/static/{name}", static),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Guard, token=token, hosts=hosts or LOCAL_HOSTS)
    app.state.token = token
    app.state.jobs = jobs
    return app
