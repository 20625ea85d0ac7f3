"""`trustmesh scan` and `trustmesh privacy …`: find undeclared personal data, measure k-anonymity.

Both read a dataset's published files directly (not through the query gateway), so on a dataset they are
for its domain's custodians (data owner, data domain steward, data product owner) and governance admins.
`trustmesh privacy kanon --sql` measures a governed query's own result instead, for anyone.
"""

from __future__ import annotations

from typing import Annotated, Any

import duckdb
import typer

from trustmesh.access.model import CUSTODIAN_ROLES, PERSON, Principal
from trustmesh.cli.access import AsOpt, _actor
from trustmesh.cli.common import JsonOpt, MeshOpt, typer_app
from trustmesh.cli.render import console, print_json, table
from trustmesh.errors import Forbidden, UsageError
from trustmesh.metastore import audit
from trustmesh.privacy.kanon import DEFAULT_K, SMALLEST, k_anonymity, suggest_generalisation
from trustmesh.privacy.scan import DEFAULT_SAMPLE, ColumnScan, parquet_relation, record_findings, scan_files
from trustmesh.service import Workspace

privacy_app = typer_app(
    "Find personal data a contract does not declare, and measure how re-identifiable a dataset is.\n\n"
    "Examples: `trustmesh scan health.activity-dp.participants --as nurul`, "
    "`trustmesh privacy kanon health.activity-dp.participants --quasi gender,postal_code --k 5 --as nurul`"
)

VersionOpt = Annotated[int | None, typer.Option("--version", help="This published version (default: the one served).",
                                                min=1, show_default=False)]


def custodian(ws: Workspace, actor: str, address: str, domain: str, what: str) -> Principal:
    """The acting person, when they are a custodian of the dataset's domain or a governance admin."""
    who = ws.access.principal(actor)
    if who.kind == PERSON and (domain in who.custodian_of() or who.has_role("governance-admin")):
        return who
    owners = ws.catalog.owners(domain)
    names = sorted({p["id"] for role in CUSTODIAN_ROLES for p in owners.get(role, [])})
    raise Forbidden(
        f"{actor} may not {what} {address}: it reads the published data directly, so only the {domain} domain's "
        f"custodians ({', '.join(CUSTODIAN_ROLES)}) and governance admins may — fix: ask "
        f"{', '.join(names) or 'a governance admin'} to run it"
        + (", or measure your own governed query with `trustmesh privacy kanon --sql 'SELECT ...'`"
           if what == "measure the k-anonymity of" else ""))


def _declarations(ws: Workspace, address: str, info: dict[str, Any]) -> tuple[dict[str, str | None], set[str], str | None]:
    """piiType per column, the key columns, and the contract file: from the repo's contract (what the query
    gateway masks by), else from the catalog when the dataset has left the repo."""
    output = ws.mesh.datasets.get(address)
    if output is not None and output.contract is not None:
        cols = output.contract.columns
        return ({c.name: c.pii_type for c in cols}, {c.name for c in cols if c.primary_key or c.unique},
                output.contract.file)
    cols_info = info["columns"]
    return ({c["name"]: c["pii_type"] for c in cols_info},
            {c["name"] for c in cols_info if c["primary_key"] or c["unique"]}, None)


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0%}" if float(value * 100).is_integer() else f"{value:.1%}"


def _rate(c: ColumnScan, sampled: int) -> str:
    if c.rate is None:
        return ""
    return _percent(c.rate) + (f" of {c.non_null:,}" if c.non_null != sampled else "")  # of the non-null values


def scan(
    address: Annotated[str, typer.Argument(help="The dataset, e.g. health.activity-dp.participants.")],
    sample: Annotated[int, typer.Option(help="Rows to sample (a reproducible reservoir sample; all rows when fewer).",
                                        min=1)] = DEFAULT_SAMPLE,
    version: VersionOpt = None,
    record: Annotated[bool, typer.Option("--record", help="Store each undeclared detection as an `undeclared-pii` "
                                                          "finding on the served version (replacing the last scan's).")]
    = False,
    as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Find personal data in a dataset's columns and compare with its contract; exit 1 when any is undeclared.

    Detects NRIC/FIN (check letter validated), e-mail, Singapore phone numbers, postal codes, dates of birth
    and person names in a sample of the published data. Per column: what was detected, the match rate over
    the sampled non-null values against the detector's threshold, and whether the contract declares a
    piiType for it. Undeclared personal data is served unmasked to every reader: declare it, then rebuild.
    For the domain's custodians and governance admins.

    Example: `trustmesh scan health.activity-dp.participants --sample 5000 --record --as nurul`
    """
    ws = Workspace.open(mesh)
    actor = _actor(as_)
    info = ws.catalog.show(address)
    address = info["address"]
    custodian(ws, actor, address, info["domain"], "scan")
    if record and version is not None and version != info["version"]:
        raise UsageError(f"--record stores findings on the served version of {address} (v{info['version']}), not "
                         f"v{version} — fix: drop --version, or drop --record to only look at v{version}")
    number, files = ws.catalog.version_files(address, version)
    declared, keys, contract_file = _declarations(ws, address, info)
    report = scan_files(files, declared=declared, keys=keys, sample=sample)
    recorded = None
    undeclared = report.undeclared
    with ws.store.session() as session:  # the findings and the record of who looked: one transaction
        if record:
            recorded = len(record_findings(session, address, number, report, contract_file=contract_file,
                                           now=ws.clock()))
        audit.append(session, "privacy.scan", actor, address, {
            "version": number, "sampled": report.sampled, "undeclared": [c.column for c in undeclared],
            "recorded": recorded}, at=ws.clock())
    if json:
        print_json({"dataset": address, "version": number, "served_version": info["version"],
                    "contract": contract_file, **report.to_dict(), "recorded": recorded, "ok": not undeclared})
    else:
        shown = [c for c in report.columns if c.declared or (c.rate or 0) >= 0.1]
        console.print(table(
            f"PII scan of {address} v{number}: {report.sampled:,} rows sampled",
            ["column", "detected", "rate", "needs", "declared", "status"],
            [[c.column, c.pii_type if c.detected else (f"({c.pii_type}?)" if c.pii_type else ""),
              _rate(c, report.sampled), f">= {_percent(c.threshold)}" if c.threshold is not None and c.pii_type else "",
              c.declared or "", c.status.upper() if c.status == "undeclared" else c.status] for c in shown]))
        others = len(report.columns) - len(shown)
        if others:
            console.print(f"{others} other column(s): nothing found", markup=False)
        if undeclared:
            console.print(f"[red]{len(undeclared)} undeclared personal-data column(s)[/]: "
                          + ", ".join(f"{c.column} ({c.pii_type})" for c in undeclared), highlight=False)
            console.print(f"  fix: declare piiType (and classification, sensitivity) in "
                          f"{contract_file or 'the contract'}, then rebuild", markup=False)
        else:
            console.print("[green]no undeclared personal data[/] in the sample")
        if recorded is not None:
            console.print(f"recorded {recorded} finding(s) on {address} v{number} "
                          "(on the product page and at /api/v1/findings)", markup=False)
    if undeclared:
        raise typer.Exit(1)


privacy_app.command("scan")(scan)


@privacy_app.command("kanon")
def kanon(
    quasi: Annotated[str, typer.Option(help="The quasi-identifiers, comma-separated: columns an attacker could "
                                            "know, e.g. age,postal_code,gender.")],
    address: Annotated[str | None, typer.Argument(help="The dataset (or --sql instead).", show_default=False)] = None,
    k: Annotated[int, typer.Option("--k", help="The k to reach: every combination of quasi-identifier values "
                                               "shared by at least k rows.", min=1)] = DEFAULT_K,
    sql: Annotated[str | None, typer.Option("--sql", help="Measure the result of this governed query (run as you, "
                                                          "masked as your grants say) instead of a dataset.",
                                            show_default=False)] = None,
    version: VersionOpt = None,
    max_suppression: Annotated[float, typer.Option(help="Share of rows the suggestion may suppress instead of "
                                                        "generalising further, e.g. 0.01 for 1%.")] = 0.0,
    smallest: Annotated[int, typer.Option(help="Show this many of the smallest classes.", min=0)] = SMALLEST,
    weight: Annotated[str | None, typer.Option(help="For an aggregate release: the column counting the people each "
                                                    "row stands for (e.g. people); a class's size is their sum.")]
    = None,
    as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """k-anonymity over quasi-identifiers: k (the smallest class), the classes and rows below k, the smallest
    classes, and the generalisation that would reach k; exit 1 when k is not reached.

    The suggestion climbs, per column, numbers in buckets of 5/10/20/50, dates to year then decade, strings
    (postal codes) to their first 2 then 1 characters, and last suppresses the column — greedily, until
    every class has k rows. On a dataset, for the domain's custodians and governance admins; with --sql, for
    anyone, on their own governed result.

    Examples: `trustmesh privacy kanon health.activity-dp.participants --quasi gender,postal_code --as nurul`,
    `trustmesh privacy kanon --sql "SELECT date_diff('year', date_of_birth, current_date) AS age, postal_code,
    gender FROM health.activity-dp.participants" --quasi age,postal_code,gender --k 5 --as nurul`,
    `trustmesh privacy kanon transport-tc.active-commuting-dp.active_commuting --quasi
    journeys_band,main_mode,activity_band --weight people --as ravi`
    """
    if (address is None) == (sql is None):
        raise UsageError("name a dataset or give --sql — fix: e.g. `trustmesh privacy kanon ADDRESS --quasi ...` "
                         "or `trustmesh privacy kanon --sql 'SELECT ...' --quasi ...`")
    if sql is not None and version is not None:
        raise UsageError("--version is for a dataset — fix: with --sql, name a past version in the SQL: "
                         "`FROM dataset AT (VERSION => N)`")
    columns = [q.strip() for q in quasi.split(",") if q.strip()]
    ws = Workspace.open(mesh)
    actor = _actor(as_)
    con = duckdb.connect(":memory:")
    try:
        source: dict[str, Any]
        if address is not None:
            info = ws.catalog.show(address)
            address = info["address"]
            custodian(ws, actor, address, info["domain"], "measure the k-anonymity of")
            number, files = ws.catalog.version_files(address, version)
            relation = parquet_relation(files)
            source = {"dataset": address, "version": number}
            with ws.store.session() as session:
                audit.append(session, "privacy.kanon", actor, address, {"version": number, "quasi": columns, "k": k},
                             at=ws.clock())
            label = f"{address} v{number}"
        else:
            assert sql is not None
            result = ws.query(actor, sql, limit=ws.gateway.limits.max_rows)
            con.register("__tm_result", result.table)
            relation = "SELECT * FROM __tm_result"
            source = {"sql": sql, "query_id": result.query_id, "datasets": result.datasets,
                      "masked": list(result.masked), "truncated": result.truncated}
            label = f"query {result.query_id}"
        report = k_anonymity(con, relation, columns, k, smallest=smallest, weight=weight)
        suggestion = ({} if weight else
                      suggest_generalisation(con, relation, columns, k, max_suppression=max_suppression))
    finally:
        con.close()
    if json:
        print_json({"source": source, **report, "suggestion": suggestion})
    else:
        _print_kanon(label, source, report, suggestion)
    if not report["satisfied"]:
        raise typer.Exit(1)


def _print_kanon(label: str, source: dict[str, Any], report: dict[str, Any], suggestion: dict[str, Any]) -> None:
    target, quasi = report["k_target"], report["quasi"]
    colour = "green" if report["satisfied"] else "red"
    console.print(f"{label}: [{colour}]k = {report['k'] if report['k'] is not None else '—'}[/] over "
                  f"{', '.join(quasi)} (target {target}): {report['rows']:,} rows in {report['classes']:,} classes; "
                  f"{report['classes_below_k']:,} classes ({report['rows_below_k']:,} rows) below {target}",
                  highlight=False)
    if source.get("truncated"):
        console.print("[yellow]warning[/]: the query result was cut at the row limit; k is of the rows returned")
    if source.get("masked"):
        console.print(f"masked by the gateway: {', '.join(source['masked'])}", markup=False)
    if report["smallest_classes"]:
        console.print(table("smallest classes", [*quasi, "rows"],
                            [[*c["values"].values(), c["size"]] for c in report["smallest_classes"]]))
    if report["satisfied"] or not suggestion:
        return
    if not suggestion["reached"]:
        console.print(f"no generalisation reaches k = {target}: there are only {suggestion['rows']:,} rows",
                      markup=False)
        return
    console.print(table(f"to reach k = {target}", ["step", "column", "generalisation", "k", "classes", "rows below k"],
                        [[i, s["column"], s["generalisation"], s["k"], s["classes"], s["rows_below_k"]]
                         for i, s in enumerate(suggestion["steps"], 1)]))
    console.print(f"result: k = {suggestion['k']}, {suggestion['rows_suppressed']:,} row(s) suppressed; as SQL: "
                  + ", ".join(g["sql"] for g in suggestion["generalisation"].values()), markup=False)
