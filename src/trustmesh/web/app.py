"""The ASGI app: the API and the pages over one `Workspace`, and the one place errors become HTTP responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from trustmesh import __version__
from trustmesh.errors import Problem, TrustmeshError
from trustmesh.service import Workspace
from trustmesh.web import (
    access_api,
    access_pages,
    api,
    contracts_api,
    governance_api,
    governance_pages,
    pages,
    privacy_api,
    query_api,
    query_pages,
    render,
    session,
)
from trustmesh.web.auth import SignInRequired

STATIC = Path(__file__).parent / "static"
PROBLEM_JSON = "application/problem+json"
DESCRIPTION = """Discover the data products of a trustmesh mesh: domains, datasets with their contracts, schemas,
classification and versions, and full-text search with facets.

Every page of the web UI has a JSON twin: add `.json` to its URL (`/products/bts.flights-dp.json`, `/.json?q=delay`).
Access requests, grants, decisions and the audit trail (`/api/v1/access/…`, `/api/v1/audit…`, `/api/v1/me`)
and governed queries (`POST /api/v1/query`) need `Authorization: Bearer <token>`: an API token from `trustmesh user token PERSON`, or an OIDC JWT where
`platform.oidc` is configured.

Every route but `/api/v1/health` needs `Authorization: Bearer <token>`.

Errors are RFC 9457 problem details (`application/problem+json`): `type`, `title`, `status`, `detail` (what went
wrong and the fix), `instance`, and `problems` (each with file, line, path and fix where known); `error` repeats
`detail` for older clients."""


def wants_html(request: Request) -> bool:
    """Page routes get HTML errors; the API, JSON twins and everything else get JSON."""
    path = request.url.path
    return not (path.startswith("/api/") or path.endswith(".json") or path in ("/docs", "/redoc", "/openapi.json"))


def _problems(exc: Exception) -> list[dict[str, Any]]:
    return [p.to_dict() if isinstance(p, Problem) else {"message": str(p)} for p in getattr(exc, "problems", [])]


def problem_response(request: Request, status: int, message: str, problems: list[dict[str, Any]],
                     headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's one error shape: RFC 9457 problem details, plus `error` (the detail again) and `problems`."""
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": message,
            "instance": request.url.path, "error": message, "problems": problems}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def trustmesh_error(request: Request, exc: Exception) -> Response:
    """Every `TrustmeshError` as its own `http_status`, with the message that names the fix."""
    assert isinstance(exc, TrustmeshError)
    if isinstance(exc, SignInRequired):
        return render.sign_in_redirect(request, exc)
    status, message, problems = exc.http_status, str(exc), _problems(exc)
    if wants_html(request):
        return render.render_error(request, status, message, problems)
    return problem_response(request, status, message, problems)


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown URLs and wrong methods: an HTML page for people, problem details otherwise."""
    assert isinstance(exc, HTTPException)
    if wants_html(request):
        return render.render_error(request, exc.status_code, str(exc.detail), [])
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such URL {request.url.path} — fix: see /docs for the API's routes"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path} — fix: see /docs for its methods"
    return problem_response(request, exc.status_code, message, [], getattr(exc, "headers", None))


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    message = "the request is not valid: " + "; ".join(f"{p['path']}: {p['message']}" for p in problems)
    if wants_html(request):
        return render.render_error(request, 400, "the request's parameters are not valid", problems)
    return problem_response(request, 422, message, problems)


MAX_BODY_BYTES = 2 * 2**20  # a request body is read whole before it is parsed: SQL is at most 100,000 characters


class BodyLimit:
    """Refuse a request body past `MAX_BODY_BYTES` (HTTP 413) before anything parses it.

    The body is read up to the limit, then handed to the app as it arrived; a declared Content-Length past
    the limit is refused without reading.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            await self._refuse(scope, receive, send)
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                await self._refuse(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = problem_response(request, 413, f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB "
                                    "— fix: send less (a query is at most 100,000 characters)", [])
        await response(scope, receive, send)


def create_app(workspace: Workspace, *, owns_workspace: bool = False) -> FastAPI:
    """The server for one mesh; with `owns_workspace` it also closes the workspace on shutdown.

    Example: `uvicorn.run(create_app(Workspace.open(Path("demo-mesh"))))`
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        workspace.catalog  # noqa: B018 - open the metastore once, before request threads race to create it
        try:
            yield
        finally:
            if owns_workspace:
                workspace.close()

    app = FastAPI(title="trustmesh", version=__version__, description=DESCRIPTION, docs_url="/docs",
                  redoc_url=None, lifespan=lifespan)
    app.state.workspace = workspace
    app.include_router(api.platform)
    app.include_router(api.router)
    app.include_router(access_api.router)
    app.include_router(query_api.router)
    app.include_router(contracts_api.router)
    app.include_router(privacy_api.router)
    app.include_router(governance_api.router)
    app.include_router(session.router)
    app.include_router(governance_pages.router)
    app.include_router(pages.router)
    app.include_router(access_pages.router)
    app.include_router(query_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(TrustmeshError, trustmesh_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodyLimit)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory `trustmesh serve` runs: the mesh named by $TRUSTMESH_MESH (else the usual lookup)."""
    return create_app(Workspace.open(), owns_workspace=True)
