"""Signing in and out of the web UI: a token in, a server-side session out (its random id in an HttpOnly cookie).

The sign-in form is guarded against login CSRF (another site signing the browser in as someone else): it carries a
value derived from a random cookie the sign-in page set, and a post without the pair is refused. Signing out ends
the session in the metastore, so the cookie is worthless afterwards, even if it was copied.

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

from trustmesh.access.tokens import Credential
from trustmesh.descriptors.models import Oidc
from trustmesh.errors import Forbidden, Unauthenticated
from trustmesh.web.auth import (
    LOGIN_COOKIE,
    LOGIN_COOKIE_SECONDS,
    SESSION_COOKIE,
    WorkspaceDep,
    check_csrf,
    check_login_csrf,
    client_address,
    csrf_value,
    get_sessions,
    login_secret,
    safe_next,
    session_token,
)
from trustmesh.web.render import render

router = APIRouter(include_in_schema=False)
FLOW_COOKIE = "trustmesh_oidc"
FLOW_SECONDS = 600
CALLBACK = "/login/oidc/callback"


def _login_page(request: Request, ws: WorkspaceDep, next_url: str, message: str, status: int = 200) -> Response:
    """The sign-in form, with its CSRF value, and the cookie that value is derived from (kept if the browser has
    one, so two open sign-in pages both work)."""
    oidc = ws.config.platform.oidc
    secret = login_secret(request)
    page = render(request, "login.html", {"title": "Sign in", "next": safe_next(next_url), "message": message,
                                          "login_csrf": csrf_value(secret), "oidc": oidc.issuer if oidc else None,
                                          "oidc_flow": bool(oidc and oidc.browser_sign_in)}, status_code=status)
    page.set_cookie(LOGIN_COOKIE, secret, max_age=LOGIN_COOKIE_SECONDS, httponly=True, samesite="lax",
                    secure=request.url.scheme == "https", path="/login")
    return page


@router.get("/login")
def login_page(request: Request, ws: WorkspaceDep, next: Annotated[str, Query()] = "/",
               ended: Annotated[int, Query()] = 0) -> Response:
    message = ("Your session ended (you signed out, it expired, or its token expired or was revoked): sign in again."
               if ended else "")
    return _login_page(request, ws, next, message)


@router.post("/login")
async def login(request: Request, ws: WorkspaceDep, token: Annotated[str, Form()] = "",
                next: Annotated[str, Form()] = "/", csrf: Annotated[str, Form()] = "") -> Response:
    try:
        check_login_csrf(request, csrf)
    except Forbidden as exc:
        return _login_page(request, ws, next, f"Not signed in: {exc}", status=403)
    try:
        credential = await run_in_threadpool(ws.tokens.identify, f"Bearer {token.strip()}",
                                             source=client_address(request))
    except Unauthenticated as exc:
        return _login_page(request, ws, next, f"That token was refused: {exc}", status=401)
    return await _signed_in(request, credential, next)


async def _signed_in(request: Request, credential: Credential, next_url: str) -> Response:
    """A new session (and the end of the one this browser had, if any), then back where the person was going."""
    sessions = get_sessions(request)
    previous = session_token(request)
    if previous:
        await run_in_threadpool(sessions.end, previous, "signed in again")
    session_id, expires = await run_in_threadpool(sessions.start, credential)
    seconds = max(1, int((expires - sessions.tokens.clock()).total_seconds()))
    response = RedirectResponse(safe_next(next_url), status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=seconds, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    response.delete_cookie(FLOW_COOKIE, path="/login")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
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
        credential = await run_in_threadpool(ws.tokens.identify, f"Bearer {id_token}", source=client_address(request))
        if _claims(id_token).get("nonce") != flow.get("nonce"):
            raise Unauthenticated("the ID token's nonce is not this sign-in's — fix: sign in again")
    except Unauthenticated as exc:
        page = _login_page(request, ws, next_url, f"OIDC sign-in failed: {exc}", status=401)
        page.delete_cookie(FLOW_COOKIE, path="/login")
        return page
    return await _signed_in(request, credential, next_url)


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
    """End the session in the metastore (the cookie, even a copy of it, is refused from now on), then drop it."""
    check_csrf(request, csrf)
    session_id = session_token(request)
    assert session_id is not None  # check_csrf refuses a form without a session
    await run_in_threadpool(get_sessions(request).end, session_id, "signed out")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
