"""Who is calling: a bearer token on the API, a signed-in session cookie on the pages, and the CSRF check of forms.

Every route but health and the sign-in page needs one of them. The session cookie holds the API token (or OIDC
JWT) the person signed in with, HttpOnly and SameSite=Lax, so it is checked exactly like a bearer token on every
request: a revoked or expired token signs the browser out on its next page. Forms carry a CSRF value derived from
that token, which a page on another site cannot compute.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from trustmesh.access.model import Principal
from trustmesh.errors import Forbidden, TrustmeshError, Unauthenticated
from trustmesh.service import Workspace

SESSION_COOKIE = "trustmesh_session"
SESSION_DAYS = 1
bearer = HTTPBearer(auto_error=False, description="An API token from `trustmesh user token PERSON`, or an OIDC JWT.")


def get_workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


async def current_principal(request: Request,
                            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The caller, from `Authorization: Bearer …`; a missing, forged, expired or revoked token is a 401."""
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    principal: Principal = await run_in_threadpool(get_workspace(request).tokens.authenticate, header)
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
    return request.cookies.get(SESSION_COOKIE) or None


async def page_principal(request: Request) -> Principal:
    """The signed-in person of a page (or of its JSON twin, which also takes a bearer token).

    No cookie is a plain redirect to the sign-in page; a cookie that no longer works is refused (and audited, as
    any refused token) before the redirect, with the reason shown there.
    """
    header = request.headers.get("authorization")
    token = session_token(request)
    if not header and not token:
        raise SignInRequired(_here(request))
    try:
        principal: Principal = await run_in_threadpool(get_workspace(request).tokens.authenticate,
                                                       header or f"Bearer {token}")
    except Unauthenticated as exc:
        if header:
            raise
        raise SignInRequired(_here(request), f"your session ended: {exc}") from exc
    request.state.principal = principal
    return principal


Viewer = Annotated[Principal, Depends(page_principal)]


def _here(request: Request) -> str:
    url = request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


def csrf_value(token: str) -> str:
    """The value every form of a session carries: derived from its token, unknowable to another site."""
    return hmac.new(token.encode(), b"trustmesh-csrf", hashlib.sha256).hexdigest()[:32]


def check_csrf(request: Request, submitted: str | None) -> None:
    token = session_token(request)
    if token is None or not submitted or not hmac.compare_digest(csrf_value(token), submitted):
        raise Forbidden("the form's CSRF value does not match your session — fix: reload the page and submit again")


def safe_next(url: str | None) -> str:
    """Only a path on this site (no `//host`, no scheme) may be where sign-in returns to."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url
