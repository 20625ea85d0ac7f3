"""The ASGI app: the API and the pages over one `Workspace`, and the one place errors become HTTP responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from trustmesh import __version__
from trustmesh.errors import Problem, TrustmeshError
from trustmesh.service import Workspace
from trustmesh.web import access_api, api, pages, query_api

STATIC = Path(__file__).parent / "static"
DESCRIPTION = """Discover the data products of a trustmesh mesh: domains, datasets with their contracts, schemas,
classification and versions, and full-text search with facets.

Every page of the web UI has a JSON twin: add `.json` to its URL (`/products/bts.flights-dp.json`, `/.json?q=delay`).
Access requests, grants, decisions and the audit trail (`/api/v1/access/…`, `/api/v1/audit…`, `/api/v1/me`)
and governed queries (`POST /api/v1/query`) need `Authorization: Bearer <token>`: an API token from `trustmesh user token PERSON`, or an OIDC JWT where
`platform.oidc` is configured.

Errors are `{"error": message, "problems": [...]}` with the HTTP status of the error."""


def wants_html(request: Request) -> bool:
    """Page routes get HTML errors; the API, JSON twins and everything else get JSON."""
    path = request.url.path
    return not (path.startswith("/api/") or path.endswith(".json") or path in ("/docs", "/redoc"))


def _problems(exc: Exception) -> list[dict[str, Any]]:
    return [p.to_dict() if isinstance(p, Problem) else {"message": str(p)} for p in getattr(exc, "problems", [])]


async def trustmesh_error(request: Request, exc: Exception) -> Response:
    """Every `TrustmeshError` as its own `http_status`, with the message that names the fix."""
    assert isinstance(exc, TrustmeshError)
    status, message, problems = exc.http_status, str(exc), _problems(exc)
    if wants_html(request):
        return pages.render_error(request, status, message, problems)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, "problems": problems}, status_code=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown URLs and wrong methods: an HTML page for people, FastAPI's usual JSON otherwise."""
    assert isinstance(exc, HTTPException)
    if wants_html(request):
        return pages.render_error(request, exc.status_code, str(exc.detail), [])
    if exc.status_code >= 400 and exc.status_code not in (404, 405):  # the API's one error shape
        return JSONResponse({"error": str(exc.detail), "problems": []}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
    return await http_exception_handler(request, exc)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if wants_html(request):
        problems = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return pages.render_error(request, 400, "the request's parameters are not valid", problems)
    return await request_validation_exception_handler(request, exc)


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
    app.include_router(api.router)
    app.include_router(access_api.router)
    app.include_router(query_api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(TrustmeshError, trustmesh_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory `trustmesh serve` runs: the mesh named by $TRUSTMESH_MESH (else the usual lookup)."""
    return create_app(Workspace.open(), owns_workspace=True)
