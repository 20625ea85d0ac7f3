"""Conditional GETs: a strong ETag over each JSON body, and 304 Not Modified when the client holds it already.

A router made with `route_class=ETagRoute` gets this on every GET route: the body is rendered as usual, hashed,
and sent with `ETag` and `Cache-Control: private, no-cache` (a cache may keep it, but must ask again; the
catalog sits behind a bearer token, so no shared cache may). A request whose `If-None-Match` names the tag
(or is `*`) gets 304 with no body. The tag is over the exact bytes, so it changes whenever the answer does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute

CACHE_CONTROL = "private, no-cache"
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: `If-None-Match` names the current ETag; no body."}}
ETAG_HEADER: dict[str, Any] = {
    "ETag": {"description": "A strong tag of this exact body; send it back as `If-None-Match`.",
             "schema": {"type": "string"}}}


def if_none_match(
    if_none_match: Annotated[str | None, Header(
        description="ETags from an earlier answer (`\"…\"`, comma-separated, or `*`): a match is 304, no body.")] = None,
) -> str | None:
    """Declares the header in the OpenAPI document; `ETagRoute` reads it from the request itself."""
    return if_none_match


def etag(body: bytes) -> str:
    """A strong entity tag of a body: 32 hex digits of its SHA-256, quoted."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(header: str, tag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or any listed tag equal to `tag` by weak comparison (`W/` ignored)."""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


def conditional(request: Request, response: Response) -> Response:
    """Tag a successful JSON answer; 304 when the request already holds the tag."""
    if response.status_code != 200 or not (response.media_type or "").endswith("json"):
        return response
    tag = etag(bytes(response.body))
    held = request.headers.get("if-none-match")
    if held is not None and matches(held, tag):
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": CACHE_CONTROL})
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


class ETagRoute(APIRoute):
    """A route whose GET answers carry an ETag and honour If-None-Match (see the module docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if "GET" in {m.upper() for m in kwargs.get("methods") or ()}:
            responses = dict(kwargs.get("responses") or {})
            ok = dict(responses.get(200, {}))
            ok["headers"] = {**ok.get("headers", {}), **ETAG_HEADER}
            kwargs["responses"] = {**responses, 200: ok, **NOT_MODIFIED}
            dependencies = list(kwargs.get("dependencies") or [])
            if not any(d.dependency is if_none_match for d in dependencies):  # a route included twice keeps one
                kwargs["dependencies"] = [*dependencies, Depends(if_none_match)]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if "GET" not in (self.methods or ()):
            return handler

        async def tagged(request: Request) -> Response:
            return conditional(request, await handler(request))

        return tagged
