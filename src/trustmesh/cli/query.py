"""`trustmesh query "SQL"`: governed queries from the terminal, locally (`--as`) or on a server."""

from __future__ import annotations

import io
import json as jsonlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trustmesh.cli.access import AsOpt, ServerOpt, _actor
from trustmesh.cli.common import MeshOpt
from trustmesh.cli.render import console, table
from trustmesh.client import SERVER_ENV, Server
from trustmesh.errors import UsageError
from trustmesh.service import Workspace

FORMATS = ("table", "csv", "json", "parquet", "arrow")


def run_query(
    sql: Annotated[str, typer.Argument(help="One read query in DuckDB SQL. Name datasets as "
                                            "domain.\"product\".dataset (or unquoted where it parses: "
                                            "bts.flights-dp.flights); a past version as `AT (VERSION => N)`.")],
    format: Annotated[str, typer.Option("--format", help="table, csv, json, parquet or arrow (Arrow IPC stream).")]
    = "table",
    limit: Annotated[int | None, typer.Option(help="At most this many rows (default 10,000). A result is also "
                                                   "capped in bytes (64 MiB by default).")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the result to this file (needed for parquet and arrow "
                                                     "on a terminal).")] = None,
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None,
) -> None:
    """Query the datasets you may read: ungranted columns are absent, personal data masked as your grant says.

    Every query is audited. The footer says which columns were masked and how. A query that runs too long
    (30 s), needs too much memory, or returns too many bytes is stopped with a message saying what to change;
    one person runs at most 4 queries at once on a server.

    Examples: `trustmesh query 'SELECT gender, count(*) FROM health."activity-dp".participants GROUP BY 1' --as irfan`,
    `trustmesh query 'SELECT * FROM bts.flights-dp.flights' --limit 100 --format csv --as grace`
    """
    if format not in FORMATS:
        raise UsageError(f"--format {format!r} — fix: one of {', '.join(FORMATS)}")
    if format in ("parquet", "arrow") and output is None and sys.stdout.isatty():
        raise UsageError(f"--format {format} writes binary data — fix: add --output FILE, or pipe it")
    data, info = _execute(sql, limit, as_, server, mesh)
    if format == "table":
        console.print(table(None, [f.name for f in data.schema],
                            [list(r.values()) for r in data.to_pylist()]))
        _footer(info)
        return
    payload = _encode(data, info, format)
    if output is None:
        if isinstance(payload, bytes):
            sys.stdout.buffer.write(payload)
        else:
            sys.stdout.write(payload)
        sys.stdout.flush()
    else:
        tmp = output.with_name(output.name + ".partial")
        tmp.write_bytes(payload if isinstance(payload, bytes) else payload.encode())
        tmp.replace(output)
        console.print(f"wrote {data.num_rows:,} rows to {output}", markup=False)
    _footer(info, to_stderr=True)


def _execute(sql: str, limit: int | None, as_: str | None, server: str | None, mesh: Path | None) -> tuple[Any, dict[str, Any]]:
    server = server or os.environ.get(SERVER_ENV)
    if server:
        if as_:
            raise UsageError("--as is for the local mesh; on a server you act as your token's owner — fix: drop --as")
        import pyarrow.ipc as ipc

        data, header = Server(server).call("POST", "/query", {"sql": sql, "limit": limit, "format": "arrow"},
                                           binary=True)
        return ipc.open_stream(io.BytesIO(data)).read_all(), jsonlib.loads(header or "{}")
    result = Workspace.open(mesh).query(_actor(as_), sql, limit=limit)
    return result.table, result.info()


def _encode(data: Any, info: dict[str, Any], format: str) -> bytes | str:
    import pyarrow as pa

    if format == "json":
        return jsonlib.dumps({**info, "rows": data.to_pylist()}, indent=2, default=str) + "\n"
    sink = pa.BufferOutputStream()
    if format == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(data, sink)
        return bytes(sink.getvalue().to_pybytes()).decode()
    if format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(data, sink)
    else:
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
    return bytes(sink.getvalue().to_pybytes())


def _footer(info: dict[str, Any], to_stderr: bool = False) -> None:
    from trustmesh.cli.render import error_console

    out = error_console if to_stderr else console
    rows = info.get("rows", 0)
    parts = [f"{rows:,} row{'s' if rows != 1 else ''}" + (" (truncated at the limit)" if info.get("truncated") else "")]
    parts.append("read " + ", ".join(f"{a} v{v}" for a, v in info.get("datasets", {}).items()) if info.get("datasets")
                 else "read no dataset")
    for column, how in info.get("masked", {}).items():
        parts.append(f"masked {column}: {how['how'] if isinstance(how, dict) else how}")
    if info.get("withheld"):
        parts.append("not granted: " + ", ".join(info["withheld"]))
    for address, condition in info.get("row_filters", {}).items():
        parts.append(f"rows of {address} filtered: {condition}")
    for warning in info.get("warnings", []):
        parts.append(f"WARNING: {warning}")
    out.print("\n".join(["[dim]" + p.replace("[", "\\[") + "[/]" for p in parts]), highlight=False)
