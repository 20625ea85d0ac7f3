"""Signing in and out of the web UI: a token in, an HttpOnly session cookie out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from trustmesh.errors import Unauthenticated
from trustmesh.web.auth import SESSION_COOKIE, SESSION_DAYS, WorkspaceDep, check_csrf, safe_next
from trustmesh.web.render import render

router = APIRouter(include_in_schema=False)


def _login_page(request: Request, ws: WorkspaceDep, next_url: str, message: str, status: int = 200) -> Response:
    oidc = ws.config.platform.oidc
    return render(request, "login.html", {"title": "Sign in", "next": safe_next(next_url), "message": message,
                                          "oidc": oidc.issuer if oidc else None}, status_code=status)


@router.get("/login")
def login_page(request: Request, ws: WorkspaceDep, next: Annotated[str, Query()] = "/",
               ended: Annotated[int, Query()] = 0) -> Response:
    message = "Your session ended (its token expired or was revoked): sign in again." if ended else ""
    return _login_page(request, ws, next, message)


@router.post("/login")
async def login(request: Request, ws: WorkspaceDep, token: Annotated[str, Form()] = "",
                next: Annotated[str, Form()] = "/") -> Response:
    token = token.strip()
    try:
        await run_in_threadpool(ws.tokens.authenticate, f"Bearer {token}")
    except Unauthenticated as exc:
        return _login_page(request, ws, next, f"That token was refused: {exc}", status=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_DAYS * 86400, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
