"""Talking to a trustmesh server: the same operations as the local service, over /api/v1 with a bearer token."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from trustmesh.errors import Conflict, Forbidden, NotFound, TrustmeshError, Unauthenticated, UsageError

SERVER_ENV = "TRUSTMESH_SERVER"
TOKEN_ENV = "TRUSTMESH_TOKEN"
_BY_STATUS: dict[int, type[TrustmeshError]] = {400: UsageError, 401: Unauthenticated, 403: Forbidden, 404: NotFound,
                                               409: Conflict, 422: UsageError}


class ServerUnavailable(TrustmeshError, ConnectionError):
    http_status = 503


class Server:
    """A trustmesh server at `url`, called with `token` (default: $TRUSTMESH_TOKEN)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--server {url!r} is not an http(s) URL — fix: e.g. --server http://127.0.0.1:8000")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None, raw: bool = False, binary: bool = False) -> Any:
        """JSON in and out; `raw` returns the text, `binary` (bytes, the X-Trustmesh-Query header) instead."""
        if not self.token:
            raise Unauthenticated(f"no token for {self.url} — fix: export {TOKEN_ENV}=<token from "
                                  "`trustmesh user token PERSON`>")
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{self.url}/api/v1{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if binary:
                    return response.read(), response.headers.get("X-Trustmesh-Query")
                payload = response.read().decode()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                detail = json.loads(text)
                message = detail.get("error") or detail.get("detail") or text
            except json.JSONDecodeError:
                message = text or exc.reason
            raise _BY_STATUS.get(exc.code, TrustmeshError)(f"{message} (server {self.url}, HTTP {exc.code})") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServerUnavailable(f"cannot reach the trustmesh server at {self.url}: {exc} — fix: check --server / "
                                    f"${SERVER_ENV} and that `trustmesh serve` is running") from exc
        return payload if raw else json.loads(payload)


class RemoteAccess:
    """The access workflow of a server, with the same methods and results as the local `AccessService`."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def request(self, address: str, **kw: Any) -> dict[str, Any]:
        return dict(self.server.call("POST", "/access/requests", {"dataset": address, **kw}))

    def overview(self, view: str, state: str | None = None) -> dict[str, Any]:
        return dict(self.server.call("GET", "/access/requests", query={"view": view, "state": state}))

    def show(self, request: str) -> dict[str, Any]:
        return dict(self.server.call("GET", f"/access/requests/{urllib.parse.quote(request)}"))

    def approve(self, request: str, note: str = "") -> dict[str, Any]:
        return dict(self.server.call("POST", f"/access/requests/{urllib.parse.quote(request)}/approve", {"note": note}))

    def reject(self, request: str, reason: str) -> dict[str, Any]:
        return dict(self.server.call("POST", f"/access/requests/{urllib.parse.quote(request)}/reject", {"reason": reason}))

    def withdraw(self, request: str) -> dict[str, Any]:
        return dict(self.server.call("POST", f"/access/requests/{urllib.parse.quote(request)}/withdraw", {}))

    def revoke(self, grant: str, reason: str) -> dict[str, Any]:
        return dict(self.server.call("POST", f"/access/grants/{urllib.parse.quote(grant)}/revoke", {"reason": reason}))

    def explain(self, principal: str, address: str, column: str | None = None) -> dict[str, Any]:
        return dict(self.server.call("GET", "/access/explain",
                                     query={"principal": principal, "dataset": address, "column": column}))

    def audit_log(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self.server.call("GET", "/audit", query=filters))

    def audit_verify(self, expect_head: str | None = None) -> dict[str, Any]:
        return dict(self.server.call("GET", "/audit/verify", query={"expect_head": expect_head}))

    def audit_export(self) -> Iterator[str]:
        yield from str(self.server.call("GET", "/audit/export", raw=True)).splitlines()
