"""`trustmesh scan` and `trustmesh privacy …`: find undeclared personal data, measure k-anonymity.

Both read a dataset's published files directly (not through the query gateway), so on a dataset they are
for its domain's custodians (data owner, data domain steward, data product owner) and governance admins.
`trustmesh privacy kanon --sql` measures a governed query's own result instead, for anyone.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from trustmesh.cli.access import AsOpt, _actor
from trustmesh.cli.common import JsonOpt, MeshOpt, typer_app
from trustmesh.cli.render import console, print_json, table
from trustmesh.privacy.kanon import DEFAULT_K, SMALLEST
from trustmesh.privacy.scan import DEFAULT_SAMPLE, ColumnScan
from trustmesh.service import Workspace

privacy_app = typer_app(
    "Find personal data a contract does not declare, and measure how re-identifiable a dataset is.\n\n"
    "Examples: `trustmesh scan health.activity-dp.participants --as nurul`, "
    "`trustmesh privacy kanon health.activity-dp.participants --quasi gender,postal_code --k 5 --as nurul`"
)

VersionOpt = Annotated[int | None, typer.Option("--version", help="This published version (default: the one served).",
                                                min=1, show_default=False)]


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
    result = Workspace.open(mesh).privacy.scan(_actor(as_), address, sample=sample, version=version, record=record)
    report, undeclared, recorded = result.report, result.report.undeclared, result.recorded
    address, number, contract_file = result.dataset, result.version, result.contract
    if json:
        print_json(result.to_dict())
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
    anyone, on their own governed result. The work is bounded like a query's (30 s, its memory, at most 12
    quasi-identifiers and 10 million rows); past that it stops, saying what to reduce — fewer
    quasi-identifiers, or a sample (`--sql "SELECT ... FROM ... USING SAMPLE 100000"`).

    Examples: `trustmesh privacy kanon health.activity-dp.participants --quasi gender,postal_code --as nurul`,
    `trustmesh privacy kanon --sql "SELECT date_diff('year', date_of_birth, current_date) AS age, postal_code,
    gender FROM health.activity-dp.participants" --quasi age,postal_code,gender --k 5 --as nurul`,
    `trustmesh privacy kanon transport-tc.active-commuting-dp.active_commuting --quasi
    journeys_band,main_mode,activity_band --weight people --as ravi`
    """
    columns = [q.strip() for q in quasi.split(",") if q.strip()]
    result = Workspace.open(mesh).privacy.kanon(_actor(as_), columns, dataset=address, sql=sql, k=k, version=version,
                                                max_suppression=max_suppression, smallest=smallest, weight=weight)
    if json:
        print_json(result.to_dict())
    else:
        _print_kanon(result.label, result.source, result.report, result.suggestion)
    if not result.report["satisfied"]:
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
