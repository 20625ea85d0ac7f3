"""POST /api/v1/query: governed SQL over HTTP, as JSON rows or an Arrow IPC stream."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from trustmesh.web.access_api import AUTH_ERRORS
from trustmesh.web.api import problem
from trustmesh.web.auth import Caller, WorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["query"], responses={
    **AUTH_ERRORS, 403: problem("The query was refused: the reason names what, and the fix"),
    408: problem("The query ran past its time limit and was stopped"),
    413: problem("The query needed more memory than one query may use, or its result more bytes than the result "
                 "cap (64 MiB by default), and was stopped"),
    429: problem("The caller already runs as many queries as one principal may at once, or the server as many as "
                 "it may: send it again when one has finished")})
ARROW_STREAM = "application/vnd.apache.arrow.stream"


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(description="One read query in DuckDB SQL; name datasets as domain.\"product\".dataset, a past "
                                 "version as `... AT (VERSION => N)`.",
                     examples=['SELECT gender, count(*) FROM health."activity-dp".participants GROUP BY 1'])
    limit: int | None = Field(None, description="At most this many rows (default 10,000); the result is also capped "
                                                "in bytes (64 MiB by default).")
    format: Literal["json", "arrow"] = Field("json", description="json: rows as objects; arrow: an Arrow IPC "
                                                                 "stream, with the query's details in the "
                                                                 "X-Trustmesh-Query header.")


class Masked(BaseModel):
    strategy: str
    how: str


class QueryColumn(BaseModel):
    name: str
    type: str


class QueryResponse(BaseModel):
    query_id: str
    principal: str
    columns: list[QueryColumn]
    rows: list[dict[str, Any]]
    datasets: dict[str, int] = Field(description="Each dataset read, and the version.")
    masked: dict[str, Masked] = Field(description="`address.column` → how it was masked before the query saw it.")
    withheld: list[str] = Field(description="Columns not granted: absent from the query's view of the data.")
    row_filters: dict[str, str]
    truncated: bool = Field(description="More rows matched than the limit.")
    warnings: list[str] = Field([], description="E.g. a product read is unfit for consumption.")
    duration_s: float


@router.post("/query", response_model=QueryResponse,
             responses={200: {"content": {ARROW_STREAM: {}}, "description": "JSON, or an Arrow IPC stream."}})
def query(body: QueryRequest, caller: Caller, ws: WorkspaceDep) -> Response:
    """Run a governed read query as the caller: only granted columns, masked where the grant says, audited."""
    result = ws.query(caller.id, body.sql, limit=body.limit)
    info = result.info()
    if body.format == "arrow":
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, result.table.schema) as writer:
            writer.write_table(result.table)
        header = json.dumps({k: v for k, v in info.items() if k != "columns"}, ensure_ascii=True, default=str)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM, headers={"X-Trustmesh-Query": header})
    return JSONResponse(jsonable_encoder({**info, "rows": result.table.to_pylist()}))
