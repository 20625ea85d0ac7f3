"""Signing in and out of the web UI: a token in, an HttpOnly session cookie out.

Where `platform.oidc` names the issuer's endpoints and a client id, the sign-in page also offers the OIDC
authorization-code flow: off to the issuer with a fresh `state` and `nonce` (kept in a short-lived HttpOnly
cookie), back with a code that the server exchanges for an ID token, which is verified like any bearer JWT
(issuer, audience, expiry, signature by the issuer's key set) and must carry the same nonce.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from trustmesh.descriptors.models import Oidc
from trustmesh.errors import Unauthenticated
from trustmesh.web.auth import SESSION_COOKIE, SESSION_DAYS, WorkspaceDep, check_csrf, safe_next
from trustmesh.web.render import render

router = APIRouter(include_in_schema=False)
FLOW_COOKIE = "trustmesh_oidc"
FLOW_SECONDS = 600
CALLBACK = "/login/oidc/callback"


def _login_page(request: Request, ws: WorkspaceDep, next_url: str, message: str, status: int = 200) -> Response:
    oidc = ws.config.platform.oidc
    return render(request, "login.html", {"title": "Sign in", "next": safe_next(next_url), "message": message,
                                          "oidc": oidc.issuer if oidc else None,
                                          "oidc_flow": bool(oidc and oidc.browser_sign_in)}, status_code=status)


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
    return _signed_in(request, token, next)


def _signed_in(request: Request, token: str, next_url: str) -> Response:
    response = RedirectResponse(safe_next(next_url), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_DAYS * 86400, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    response.delete_cookie(FLOW_COOKIE, path="/login")
    return response


def _flow_settings(ws: WorkspaceDep) -> Oidc:
    oidc = ws.config.platform.oidc
    if oidc is None or not oidc.browser_sign_in:
        raise Unauthenticated("this mesh has no OIDC sign-in — fix: sign in with an API token, or set "
                              "platform.oidc authorizationEndpoint, tokenEndpoint and clientId in mesh.yaml")
    return oidc


@router.get("/login/oidc")
def oidc_start(request: Request, ws: WorkspaceDep, next: Annotated[str, Query()] = "/") -> Response:
    """Off to the issuer, remembering (in a cookie only this site reads) the state, the nonce and where to return."""
    oidc = _flow_settings(ws)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    params = {"response_type": "code", "client_id": oidc.client_id, "redirect_uri": _callback(request),
              "scope": "openid email profile", "state": state, "nonce": nonce}
    response = RedirectResponse(f"{oidc.authorization_endpoint}?{urllib.parse.urlencode(params)}", status_code=303)
    response.set_cookie(FLOW_COOKIE, json.dumps({"state": state, "nonce": nonce, "next": safe_next(next)}),
                        max_age=FLOW_SECONDS, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        path="/login")
    return response


@router.get(CALLBACK)
async def oidc_callback(request: Request, ws: WorkspaceDep, code: Annotated[str, Query()] = "",
                        state: Annotated[str, Query()] = "", error: Annotated[str, Query()] = "") -> Response:
    """Back from the issuer: the state must be ours, the code becomes an ID token, the token must verify and carry
    our nonce; anything else is the sign-in page again with the reason."""
    oidc = _flow_settings(ws)
    try:
        flow = json.loads(request.cookies.get(FLOW_COOKIE) or "{}")
    except json.JSONDecodeError:
        flow = {}
    next_url = flow.get("next", "/") if isinstance(flow, dict) else "/"
    try:
        if error:
            raise Unauthenticated(f"the issuer refused the sign-in: {error}")
        if not isinstance(flow, dict) or not flow.get("state") or not secrets.compare_digest(str(flow["state"]),
                                                                                             state):
            raise Unauthenticated("the sign-in's state does not match this browser's (expired, or not started "
                                  "here) — fix: sign in again")
        if not code:
            raise Unauthenticated("the issuer sent no code — fix: sign in again")
        id_token = await run_in_threadpool(_exchange, oidc, code, _callback(request))
        await run_in_threadpool(ws.tokens.authenticate, f"Bearer {id_token}")
        if _claims(id_token).get("nonce") != flow.get("nonce"):
            raise Unauthenticated("the ID token's nonce is not this sign-in's — fix: sign in again")
    except Unauthenticated as exc:
        page = _login_page(request, ws, next_url, f"OIDC sign-in failed: {exc}", status=401)
        page.delete_cookie(FLOW_COOKIE, path="/login")
        return page
    return _signed_in(request, id_token, next_url)


def _callback(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


def _exchange(oidc: Oidc, code: str, redirect_uri: str) -> str:
    """The authorization code for the issuer's ID token (client secret from its environment variable, if any)."""
    assert oidc.token_endpoint is not None and oidc.client_id is not None
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": oidc.client_id}
    secret = os.environ.get(oidc.client_secret_env or "") if oidc.client_secret_env else None
    if secret:
        form["client_secret"] = secret
    request = urllib.request.Request(oidc.token_endpoint, data=urllib.parse.urlencode(form).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            body: Any = json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        raise Unauthenticated(f"the issuer's token endpoint refused the code (HTTP {exc.code})") from exc
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise Unauthenticated(f"the issuer's token endpoint {oidc.token_endpoint} did not answer: {exc}") from exc
    token = body.get("id_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or token.count(".") != 2:
        raise Unauthenticated("the issuer's token endpoint returned no ID token")
    return token


def _claims(token: str) -> dict[str, Any]:
    """The claims of a token `Tokens.authenticate` has just verified."""
    import jwt

    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
