"""open-data-k-anonymity: open data about people must not single anyone out.

A dataset whose columns are all at the mesh's lowest classification level (official-open; unlabelled
columns count as that level, as access control treats them) and that has personal columns (piiType) must
be k-anonymous over those columns as quasi-identifiers. k is measured on the served version's Parquet
files with DuckDB, once per (dataset, snapshot): the result is kept in the run's cache. A dataset not
served yet, or a run without data files, is skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import OutputDataset, Product
    from trustmesh.governance.context import RuleContext

CACHE = "open-data-k-anonymity"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=1, le=1_000_000)


def measure(files: list[str], quasi: list[str]) -> dict[str, Any]:
    """The smallest class over `quasi` in the Parquet `files` (k None: no rows), or the error that prevented it."""
    import duckdb

    from trustmesh.engines.duckdb import literal
    from trustmesh.errors import UsageError
    from trustmesh.privacy.kanon import k_anonymity

    con = duckdb.connect()
    try:
        report = k_anonymity(con, f"SELECT * FROM read_parquet({literal(list(files))})", quasi, 1, smallest=0)
        return {"k": report["k"], "rows": report["rows"], "classes": report["classes"]}
    except (UsageError, duckdb.Error) as exc:
        return {"error": str(exc)}
    finally:
        con.close()


def _open_with_people(ctx: RuleContext, output: OutputDataset) -> list[str]:
    """The personal columns of an open dataset; [] when it is not open or has none."""
    contract = output.contract
    if contract is None:
        return []
    lowest = ctx.mesh.config.governance.classification.levels[0]
    if any(c.classification not in (None, lowest) for c in contract.columns):
        return []
    return [c.name for c in contract.columns if c.pii_type]


def _measured(ctx: RuleContext, address: str, quasi: list[str]) -> dict[str, Any] | None:
    """k of the served version, from the run's cache when this snapshot was measured already; None: no files."""
    assert ctx.files is not None
    snapshot = (ctx.served.get(address) or {}).get("snapshot_id")
    key = f"{CACHE}|{address}|{snapshot}|{','.join(quasi)}"
    if snapshot is not None and key in ctx.cache:
        return ctx.cache[key]  # type: ignore[no-any-return]
    files = ctx.files(address)
    if not files:
        return None
    if snapshot is None:  # state filled without versions: the files are what identifies the data
        key = f"{CACHE}|{address}|{','.join(files)}|{','.join(quasi)}"
    result = ctx.cache.get(key)
    if result is None:
        result = ctx.cache[key] = measure(files, quasi)
    return result


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    if ctx.files is None:
        return []
    out = []
    for output in product.outputs:
        quasi = _open_with_people(ctx, output)
        if not quasi:
            continue
        result = _measured(ctx, output.address, quasi)
        if result is None:
            continue
        columns = ",".join(quasi)
        lowest = ctx.mesh.config.governance.classification.levels[0]
        if "error" in result:
            file = output.contract.file if output.contract else "its contract"
            out.append(Violation(
                f"k-anonymity of open dataset {output.address} over {columns} could not be measured: "
                f"{result['error']}", output.address,
                fix=f"make the served data match the columns of {file}, then rebuild"))
        elif result["k"] is not None and result["k"] < params.k:
            out.append(Violation(
                f"open dataset {output.address} is only {result['k']}-anonymous over its personal columns "
                f"{columns} ({result['rows']} rows in {result['classes']} classes); k {params.k} needed",
                output.address,
                fix=f"generalise or drop personal columns in {output.sql_file} (see `trustmesh privacy kanon "
                    f"{output.address} --quasi {columns} --k {params.k}` for the generalisation that reaches it), "
                    f"or classify the dataset above {lowest} so it is no longer open"))
    return out


RULE = Rule("open-data-k-anonymity", "Open datasets (every column at the lowest classification) with personal "
            "columns are k-anonymous over them, measured on the served data.", check, Params, {"k": "higher"})
