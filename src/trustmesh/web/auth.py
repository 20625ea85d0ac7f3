"""Who is calling: a bearer token on the API, a signed-in session cookie on the pages, and the CSRF checks of forms.

Every route but health and the sign-in page needs one of them. The session cookie (HttpOnly, SameSite=Lax) holds a
random session id; the metastore keeps its hash with the person and the token it was started from, and checks both
on every request, so signing out, or revoking or expiring the token, ends the session at once (`access.sessions`).
Forms carry a CSRF value derived from the session id, so it differs for every session and another site cannot
compute it; the sign-in form, before any session, carries one derived from a random value in its own cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from trustmesh.access.model import Principal
from trustmesh.access.sessions import Sessions
from trustmesh.errors import Forbidden, TrustmeshError, Unauthenticated
from trustmesh.service import Workspace

SESSION_COOKIE = "trustmesh_session"
LOGIN_COOKIE = "trustmesh_login"  # the sign-in form's CSRF secret, before there is a session
LOGIN_COOKIE_SECONDS = 3600
bearer = HTTPBearer(auto_error=False, description="An API token from `trustmesh user token PERSON`, or an OIDC JWT.")


def get_workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


def get_sessions(request: Request) -> Sessions:
    return Sessions(get_workspace(request).tokens)


def client_address(request: Request) -> str | None:
    """Where a request came from, as the audit trail records refused credentials."""
    return request.client.host if request.client else None


async def current_principal(request: Request,
                            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The caller, from `Authorization: Bearer …`; a missing, forged, expired or revoked token is a 401."""
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    principal: Principal = await run_in_threadpool(get_workspace(request).tokens.authenticate, header,
                                                   source=client_address(request))
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(current_principal)]


class SignInRequired(TrustmeshError, PermissionError):
    """A page was asked for without a valid session: the app answers with the sign-in page, then comes back."""

    http_status = 303

    def __init__(self, next_url: str, message: str = "") -> None:
        super().__init__(message or "sign in to see this page")
        self.next_url = next_url

    @property
    def location(self) -> str:
        return f"/login?next={quote(self.next_url, safe='')}"


def session_token(request: Request) -> str | None:
    """The session id the browser holds, if any."""
    return request.cookies.get(SESSION_COOKIE) or None


async def page_principal(request: Request) -> Principal:
    """The signed-in person of a page (or of its JSON twin, which also takes a bearer token).

    No cookie is a plain redirect to the sign-in page; a session that has ended is refused (and audited, as any
    refused credential) before the redirect, with the reason shown there.
    """
    header = request.headers.get("authorization")
    session_id = session_token(request)
    if not header and not session_id:
        raise SignInRequired(_here(request))
    source = client_address(request)
    if header:
        principal: Principal = await run_in_threadpool(get_workspace(request).tokens.authenticate, header,
                                                       source=source)
    else:
        assert session_id is not None
        try:
            principal = await run_in_threadpool(get_sessions(request).authenticate, session_id, source=source)
        except Unauthenticated as exc:
            raise SignInRequired(_here(request), f"your session ended: {exc}") from exc
    request.state.principal = principal
    return principal


Viewer = Annotated[Principal, Depends(page_principal)]


def _here(request: Request) -> str:
    url = request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


def csrf_value(secret: str) -> str:
    """The value a form carries: derived from its session id (or, on the sign-in form, its cookie's random value),
    so it changes with every session and a page on another site cannot know it."""
    return hmac.new(secret.encode(), b"trustmesh-csrf", hashlib.sha256).hexdigest()[:32]


def check_csrf(request: Request, submitted: str | None) -> None:
    session_id = session_token(request)
    if session_id is None or not submitted or not hmac.compare_digest(csrf_value(session_id), submitted):
        raise Forbidden("the form's CSRF value does not match your session — fix: reload the page and submit again")


def login_secret(request: Request) -> str:
    """The sign-in form's cookie value: the browser's own if it has one, else a new random one."""
    held = request.cookies.get(LOGIN_COOKIE) or ""
    return held if 32 <= len(held) <= 64 and held.isascii() else secrets.token_urlsafe(32)


def check_login_csrf(request: Request, submitted: str | None) -> None:
    """Double submit: the form's value must be derived from the cookie the sign-in page set, which a page on
    another site can neither read nor send along with its own form (SameSite=Lax)."""
    held = request.cookies.get(LOGIN_COOKIE)
    if not held or not submitted or not hmac.compare_digest(csrf_value(held), submitted):
        raise Forbidden("this sign-in was not sent from this site's sign-in page (or the page is over an hour old) "
                        "— fix: reload the sign-in page and sign in again")


def safe_next(url: str | None) -> str:
    """Only a path on this site (no `//host`, no scheme) may be where sign-in returns to."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url
