"""Python access to governed data: `trustmesh.connect(mesh_or_url)` → `.sql(...)` → Arrow, pandas or polars.

>>> con = trustmesh.connect("demo-mesh", as_="irfan")                       # doctest: +SKIP
>>> con.sql('SELECT nric FROM health."activity-dp".participants').df()       # doctest: +SKIP
>>> con = trustmesh.connect("http://127.0.0.1:8000", token="tmk_...")       # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh.client import Server
from trustmesh.errors import UsageError


@dataclass
class Result:
    """Rows as Arrow, and what the gateway did: masked and withheld columns, row filters, versions read."""

    table: Any
    info: dict[str, Any]

    def arrow(self) -> Any:
        return self.table

    def df(self) -> Any:
        """A pandas DataFrame (needs pandas)."""
        return self.table.to_pandas()

    def pl(self) -> Any:
        """A polars DataFrame (needs polars)."""
        import polars

        return polars.from_arrow(self.table)

    @property
    def masked(self) -> dict[str, Any]:
        return dict(self.info.get("masked", {}))

    def __repr__(self) -> str:
        return f"<trustmesh Result {self.table.num_rows} rows, masked {sorted(self.masked)}>"


class Connection:
    """Queries as one principal: on a local mesh folder (`as_`) or a server (`token`)."""

    def __init__(self, target: str | Path, *, as_: str | None = None, token: str | None = None) -> None:
        text = str(target)
        self._server: Server | None = None
        self._ws: Any = None
        if text.startswith(("http://", "https://")):
            self._server = Server(text, token)
            self.principal = ""
        else:
            from trustmesh.service import USER_ENV, Workspace

            principal = as_ or os.environ.get(USER_ENV)
            if not principal:
                raise UsageError(f"who is querying? — fix: trustmesh.connect(mesh, as_='PERSON') or set {USER_ENV}")
            self.principal = principal
            self._ws = Workspace.open(Path(text))

    def sql(self, query: str, *, limit: int | None = None) -> Result:
        if self._server is not None:
            import pyarrow.ipc as ipc

            body = self._server.call("POST", "/query", {"sql": query, "limit": limit, "format": "arrow"}, raw=True,
                                     binary=True)
            data, header = body
            table = ipc.open_stream(io.BytesIO(data)).read_all()
            return Result(table, json.loads(header or "{}"))
        result = self._ws.query(self.principal, query, limit=limit)
        return Result(result.table, result.info())

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(target: str | Path, *, as_: str | None = None, token: str | None = None) -> Connection:
    """Open a mesh folder (acting as `as_`, default $TRUSTMESH_USER) or a server URL (with `token`, default
    $TRUSTMESH_TOKEN) for governed queries."""
    return Connection(target, as_=as_, token=token)
