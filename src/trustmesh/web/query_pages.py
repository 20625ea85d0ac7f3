"""The Query page: SQL over the datasets the signed-in person may read, through the governed gateway.

The page lists what its reader may name (each column allowed or masked), runs the query as them — masked, row
filtered and audited exactly as `trustmesh query` and POST /api/v1/query do — and offers the result as CSV or
Parquet.
"""

from __future__ import annotations

import io
import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from trustmesh.access.model import Principal
from trustmesh.errors import TrustmeshError, UsageError
from trustmesh.service import Workspace
from trustmesh.web.auth import Viewer, WorkspaceDep, check_csrf
from trustmesh.web.render import render

router = APIRouter(include_in_schema=False)
PAGE_LIMIT = 1000  # rows a page shows; a download may take up to the gateway's own limit
DOWNLOAD_LIMIT = 100_000
FORMATS = {"csv": ("text/csv; charset=utf-8", "csv"), "parquet": ("application/vnd.apache.parquet", "parquet")}
_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")


def sql_name(address: str) -> str:
    """`health.activity-dp.participants` → `health."activity-dp".participants`, as a query names it."""
    return ".".join(part if _PLAIN.match(part) else f'"{part}"' for part in address.split("."))


def readable(ws: Workspace, me: Principal) -> list[dict[str, Any]]:
    """The published datasets the person may query, with each column's outcome (allow or mask)."""
    published = {d["address"]: d for d in ws.catalog.datasets()}
    out = []
    for decision in ws.access.readable(me.id):
        info = published.get(decision.dataset)
        if info is None:
            continue
        columns = [{"name": c, "outcome": o} for c, o in decision.columns.items() if o != "deny"]
        out.append({"address": decision.dataset, "sql_name": sql_name(decision.dataset), "columns": columns,
                    "description": info["description"], "rows": info["rows"], "decision": decision.outcome,
                    "reason": decision.reason})
    return out


def example(datasets: list[dict[str, Any]]) -> str:
    if not datasets:
        return ""
    first = datasets[0]
    names = ", ".join(c["name"] for c in first["columns"][:6]) or "*"
    return f"SELECT {names}\nFROM {first['sql_name']}\nLIMIT 20"


def result_view(result: Any) -> dict[str, Any]:
    """The rows and, per output column, how it was masked when its name is a masked column's."""
    info = result.info()
    by_name: dict[str, list[str]] = {}
    for key, how in info["masked"].items():
        by_name.setdefault(key.rsplit(".", 1)[1], []).append(how["how"])
    columns = [{**c, "masked": "; ".join(dict.fromkeys(by_name.get(c["name"], [])))} for c in info["columns"]]
    return {**info, "columns": columns, "records": result.table.to_pylist()}


def _page(request: Request, ws: Workspace, me: Principal, sql: str, limit: int, outcome: dict[str, Any] | None,
          message: str, status: int = 200) -> Response:
    datasets = readable(ws, me)
    context = {"title": "Query", "datasets": datasets, "sql": sql or example(datasets), "limit": limit,
               "outcome": outcome, "message": message, "json_url": "/query.json"}
    return render(request, "query.html", context, status_code=status)


@router.get("/query")
def query_page(request: Request, ws: WorkspaceDep, me: Viewer,
               sql: Annotated[str, Query(description="SQL to put in the editor.")] = "") -> Response:
    return _page(request, ws, me, sql, PAGE_LIMIT, None, "")


@router.get("/query.json")
def query_page_json(ws: WorkspaceDep, me: Viewer) -> JSONResponse:
    return JSONResponse({"datasets": readable(ws, me)})


def _limit(text: str, most: int) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= most:
        raise UsageError(f"row limit {text!r} — fix: a whole number from 1 to {most:,}")
    return int(text)


@router.post("/query")
async def run_query(request: Request, ws: WorkspaceDep, me: Viewer, csrf: Annotated[str, Form()] = "",
                    sql: Annotated[str, Form()] = "", limit: Annotated[str, Form()] = str(PAGE_LIMIT)) -> Response:
    """Run the editor's SQL as the signed-in person; a refusal is shown above the editor with its reason."""
    check_csrf(request, csrf)
    try:
        rows = _limit(limit, PAGE_LIMIT)
        result = await run_in_threadpool(ws.query, me.id, sql, limit=rows)
    except TrustmeshError as exc:
        status = exc.http_status if 400 <= exc.http_status < 500 else 400
        return _page(request, ws, me, sql, PAGE_LIMIT, None, str(exc), status)
    return _page(request, ws, me, sql, rows, result_view(result), "")


@router.post("/query/download")
async def download(request: Request, ws: WorkspaceDep, me: Viewer, csrf: Annotated[str, Form()] = "",
                   sql: Annotated[str, Form()] = "", format: Annotated[str, Form()] = "csv",
                   limit: Annotated[str, Form()] = str(DOWNLOAD_LIMIT)) -> Response:
    """The query's result as a file: run again as the person (and audited again), at most DOWNLOAD_LIMIT rows."""
    check_csrf(request, csrf)
    if format not in FORMATS:
        raise UsageError(f"format {format!r} — fix: one of {', '.join(FORMATS)}")
    result = await run_in_threadpool(ws.query, me.id, sql, limit=_limit(limit, DOWNLOAD_LIMIT))
    media, suffix = FORMATS[format]
    sink = io.BytesIO()
    if format == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(result.table, sink)
    else:
        import pyarrow.parquet as pq

        pq.write_table(result.table, sink)
    headers = {"Content-Disposition": f'attachment; filename="{result.query_id}.{suffix}"',
               "X-Trustmesh-Masked": ", ".join(result.masked) or "none"}
    return Response(sink.getvalue(), media_type=media, headers=headers)
