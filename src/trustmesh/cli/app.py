"""Command definitions. Each parses its input, calls the service, and renders the result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from trustmesh.cli.access import access_app, audit_app, user_app
from trustmesh.cli.common import FailOnOpt, JsonOpt, MeshOpt, fail_on_option, typer_app
from trustmesh.cli.contract import contract_app
from trustmesh.cli.governance import check, policy_app, report_app
from trustmesh.cli.privacy import privacy_app, scan
from trustmesh.cli.query import run_query
from trustmesh.cli.render import BuildProgress, console, error_console, print_json, print_problems, table
from trustmesh.errors import InvalidMesh, UsageError, fails
from trustmesh.service import MESH_ENV, Workspace

app = typer_app(
    "Publish, discover, request and query governed data products — a data mesh on your laptop.\n\n"
    "Start with `trustmesh demo` for a built example mesh, or `trustmesh init my-mesh`.",
    name="trustmesh",
)
new_app = typer_app("Scaffold a domain or a product that validates and builds as written.")
catalog_app = typer_app("Browse the catalog: datasets, their schema, owners and versions.")
app.add_typer(new_app, name="new")
app.add_typer(catalog_app, name="catalog")
app.add_typer(contract_app, name="contract")
app.add_typer(access_app, name="access")
app.command("check")(check)
app.add_typer(policy_app, name="policy")
app.add_typer(report_app, name="report")
app.command("query")(run_query)
app.add_typer(audit_app, name="audit")
app.add_typer(user_app, name="user")
app.command("scan")(scan)
app.add_typer(privacy_app, name="privacy")


def _workspace(mesh: Path | None) -> Workspace:
    return Workspace.open(mesh)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new mesh (created if missing).")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Mesh name (default: the folder's name).")] = None,
    json: JsonOpt = False,
) -> None:
    """Create a new mesh repo skeleton.

    Example: `trustmesh init my-mesh && cd my-mesh`
    """
    from trustmesh.scaffold import init_mesh

    path = init_mesh(directory, name)
    if json:
        print_json({"created": str(path)})
    else:
        console.print(f"created {path}\nnext: [bold]trustmesh new domain NAME --kind ssot --sector SECTOR[/]")


@new_app.command("domain")
def new_domain(
    name: Annotated[str, typer.Argument(help="Domain name, e.g. bts.")],
    kind: Annotated[str, typer.Option(help="ssot (an agency) or trusted-centre (a sector's aggregator).")] = "ssot",
    sector: Annotated[str, typer.Option(help="Sector, e.g. transport.")] = "general",
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Scaffold domains/NAME/domain.yaml with people in every role.

    Example: `trustmesh new domain bts --kind ssot --sector transport`
    """
    from trustmesh.scaffold import new_domain as scaffold

    path = scaffold(_workspace(mesh).root, name, kind, sector)
    print_json({"created": str(path)}) if json else console.print(
        f"created {path}\nnext: edit the people, then [bold]trustmesh new product {name}/NAME[/]")


@new_app.command("product")
def new_product(
    target: Annotated[str, typer.Argument(help="DOMAIN/PRODUCT, e.g. bts/flights-dp.")],
    dataset: Annotated[str | None, typer.Option(help="Name of its first output dataset.")] = None,
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Scaffold a product (ODPS descriptor, ODCS contract, SQL, example data) that builds as is.

    Example: `trustmesh new product bts/flights-dp`
    """
    from trustmesh.scaffold import new_product as scaffold

    domain, sep, name = target.replace(".", "/").partition("/")
    if not sep or not name:
        raise UsageError(f"{target!r} is not DOMAIN/PRODUCT — fix: e.g. `trustmesh new product bts/flights-dp`")
    path = scaffold(_workspace(mesh).root, domain, name, dataset)
    print_json({"created": str(path)}) if json else console.print(
        f"created {path.parent}\nnext: edit its SQL and contract, then [bold]trustmesh validate[/] and [bold]trustmesh build[/]")


@app.command()
def validate(mesh: MeshOpt = None, json: JsonOpt = False) -> None:
    """Check every descriptor, contract, reference and SQL file; report all problems at once.

    Checks ODPS v1.0.0 and ODCS v3.1.0 schemas, unique addresses, references, cycles, that the SQL
    parses and that its output columns match the contract. Exit 1 when any error is found.

    Example: `trustmesh validate --json`
    """
    ws = _workspace(mesh)
    problems = ws.validate()
    errors = [p for p in problems if p.severity == "error"]
    if json:
        print_json({"ok": not errors, "problems": [p.to_dict() for p in problems]})
    else:
        print_problems(problems)
        if errors:
            console.print(f"[red]{len(errors)} error(s)[/] in {ws.root}")
        else:
            mesh_ = ws.mesh
            console.print(f"[green]valid[/]: {len(mesh_.domains)} domains, {len(mesh_.products)} products, "
                          f"{len(mesh_.datasets)} datasets")
    if errors:
        raise typer.Exit(1)


@app.command()
def build(
    selector: Annotated[str | None, typer.Argument(
        help="What to build: a domain, DOMAIN.PRODUCT, or a dataset address; prefix + for upstream, "
             "suffix + for downstream. Default: everything.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild even products whose inputs, SQL and contract are unchanged.")] = False,
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Land inputs as bronze, run the SQL on DuckDB, check against the contracts, publish new versions.

    A product is published whole or not at all; a failing product keeps its previous version served.
    Unchanged products are skipped.

    Examples: `trustmesh build`, `trustmesh build transport-tc`, `trustmesh build +transport-tc.punctuality-dp`
    """
    ws = _workspace(mesh)
    try:
        with BuildProgress(enabled=not json and error_console.is_terminal) as progress:
            result = ws.build(selector, full=full, progress=progress)
    except InvalidMesh as exc:
        if json:
            print_json({"ok": False, "problems": [p.to_dict() for p in exc.problems]})
        else:
            print_problems(exc.problems)
            console.print("[red]nothing was built[/]: fix the problems above (see `trustmesh validate`)")
        raise typer.Exit(1) from exc
    if json:
        print_json(result.to_dict())
    else:
        rows = [[r.address, r.status, f"{r.rows:,}" if r.status == "published" else "",
                 f"{r.duration_s:.2f}s", ", ".join(f"{a.rsplit('.', 1)[1]} v{v}" for a, v in r.versions.items())
                 or r.message] for r in result.products]
        console.print(table(f"build {result.build_id}", ["product", "status", "rows", "duration", "version"], rows))
        for r in result.products:
            if r.problems:
                console.print(f"[red]{r.address}[/]: {r.message}")
                print_problems(r.problems)
        for warning in result.warnings:
            console.print(f"[yellow]warning[/]: {escape(warning)}")
    if not result.ok:
        raise typer.Exit(1)


@catalog_app.command("list")
def catalog_list(
    domain: Annotated[str | None, typer.Option(help="Only this domain's datasets.")] = None,
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """List published datasets with classification, version and rows.

    Example: `trustmesh catalog list --domain bts`
    """
    items = _workspace(mesh).catalog.datasets(domain)
    if json:
        print_json(items)
        return
    console.print(table(None, ["address", "version", "rows", "quality", "fresh", "classification", "pii"],
                        [[d["address"], d["version"], f"{d['rows']:,}" if d["rows"] is not None else "",
                          d["quality_score"], "STALE" if d["stale"] else "yes", d["classification"],
                          "yes" if d["has_pii"] else ""] for d in items]))


@catalog_app.command("show")
def catalog_show(
    address: Annotated[str, typer.Argument(help="Dataset address, e.g. bts.flights-dp.flights.")],
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show a dataset: description, owners by role, schema with classification, current version.

    Example: `trustmesh catalog show bts.flights-dp.flights`
    """
    info = _workspace(mesh).catalog.show(address)
    if json:
        print_json(info)
        return
    console.print(f"[bold]{info['address']}[/]  ({info['product_kind']}, {info['tier']}, "
                  f"classification {info['classification']}, sensitivity {info['sensitivity']})")
    governed = info.get("governance")
    if governed and governed["status"] != "compliant":
        colour = "red" if governed["status"].startswith("unfit") else "yellow"
        console.print(f"[{colour}]{governed['status'].upper()}[/]"
                      + (f" (deadline {governed['deadline'][:10]})" if governed["deadline"] else "") + ": "
                      + escape("; ".join(governed["reasons"])), highlight=False)
    console.print(info["description"])
    for role, people in info["owners"].items():
        if people:
            console.print(f"  {role}: " + ", ".join(f"{p['name']} <{p['email']}>" for p in people))
    console.print(table("schema", ["column", "type", "required", "key", "classification", "sensitivity", "pii", "description"],
                        [[c["name"], c["physical_type"] or c["logical_type"], "yes" if c["required"] else "",
                          "pk" if c["primary_key"] else "", c["classification"], c["sensitivity"], c["pii_type"],
                          c["description"]] for c in info["columns"]]))
    v = info["current_version"]
    console.print(f"version {v['version']}: {v['rows']:,} rows, published {v['published_at']}" if v else "not yet published")
    quality, fresh = info["quality"], info["quality"]["freshness"]
    console.print(f"quality score {quality['score'] if quality['score'] is not None else '—'}"
                  f" ({quality['summary'].get('passed', 0)}/{quality['summary'].get('checks', 0)} checks passed); "
                  + (f"freshness {fresh['sla']}: {'[red]STALE[/]' if fresh['stale'] else 'fresh'}" if fresh["sla"]
                     else "no freshness SLA") + f" — details: trustmesh quality {info['address']}")


@catalog_app.command("versions")
def catalog_versions(
    address: Annotated[str, typer.Argument(help="Dataset address.")],
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """List every published version of a dataset (newest first); each stays readable.

    Example: `trustmesh catalog versions bts.flights-dp.flights`
    """
    items = _workspace(mesh).catalog.versions(address)
    if json:
        print_json(items)
        return
    console.print(table(None, ["version", "published", "rows", "contract", "snapshot", "build"],
                        [[v["version"], v["published_at"], f"{v['rows']:,}", v["contract_version"], v["snapshot_id"],
                          v["build_id"]] for v in items]))


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="Words to find in names, descriptions, columns, tags and glossary terms.")],
    domain: Annotated[str | None, typer.Option(help="Only this domain.")] = None,
    classification: Annotated[str | None, typer.Option(help="Only this classification, e.g. restricted.")] = None,
    pii: Annotated[bool | None, typer.Option("--pii/--no-pii", help="Only datasets/columns with (or without) personal data.",
                                              show_default=False)] = None,
    sector: Annotated[str | None, typer.Option(help="Only this sector.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many hits.")] = 20,
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Full-text search over the catalog, ranked, with facets.

    Examples: `trustmesh search "flight delay"`, `trustmesh search nric --pii`
    """
    result = _workspace(mesh).catalog.search(text, limit=limit, domain=domain, classification=classification,
                                             has_pii=pii, sector=sector)
    if json:
        print_json(result)
        return
    console.print(table(f"{result['total']} hit(s) for {text!r}", ["kind", "address", "domain", "classification", "pii"],
                        [[h["kind"], h["address"], h["domain"], h["classification"], "yes" if h["has_pii"] else ""]
                         for h in result["hits"]]))


@app.command()
def quality(
    address: Annotated[str, typer.Argument(help="Dataset address, e.g. bts.flights-dp.flights.")],
    show_sql: Annotated[bool, typer.Option("--show-sql", help="Print the SQL the build runs for these checks.")] = False,
    quarantine: Annotated[bool, typer.Option("--quarantine", help="List candidates held back by failed checks.")] = False,
    fail_on: FailOnOpt = "error",
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Quality of a dataset: every check of the served version, its score, freshness and history.

    Checks come from the contract (ODCS `quality`), its schema (required, primary key, unique) and the
    sector's Trusted Centre benchmarks; they run in one scan before every publish. Exit 1 when the
    served version failed an error-level check or is stale; a failed warning-level check is shown but
    exits 0 unless `--fail-on warning`.

    Examples: `trustmesh quality bts.flights-dp.flights`, `trustmesh quality bts.flights-dp.flights --show-sql`
    """
    fail_on = fail_on_option(fail_on)
    ws = _workspace(mesh)
    if show_sql:
        compiled = ws.compiled_quality(address)
        print_json({"sql": compiled.show()}) if json else console.print(compiled.show(), markup=False)
        return
    report = ws.catalog.quality(address)
    if json:
        print_json(report if not quarantine else {"address": report["address"], "quarantine": report["quarantine"]})
    elif quarantine:
        rows = [[q["build_id"], q["created_at"], f"{q['rows']:,}", q["reason"], q["data_file"]] for q in report["quarantine"]]
        console.print(table(f"quarantined candidates of {report['address']}", ["build", "when", "rows", "reason", "file"], rows))
    else:
        fresh = report["freshness"]
        console.print(f"[bold]{report['address']}[/] v{report['version']}: quality score "
                      f"[bold]{report['score'] if report['score'] is not None else '—'}[/]; "
                      + (f"freshness {fresh['sla']}: {'[red]stale[/]' if fresh['stale'] else 'fresh'}"
                         if fresh["sla"] else "no freshness SLA"))
        console.print(table("checks", ["column", "check", "expected", "value", "result", "severity", "source"],
                            [[c["column"] or "(dataset)", c["name"], c["expected"], _number(c["value"]),
                              "pass" if c["passed"] else "FAIL", c["severity"], c["source"]] for c in report["checks"]]))
        for c in report["checks"]:
            if c["samples"]:
                console.print(f"failing rows of {c['rule']} (personal data masked): {c['samples']}", markup=False)
    failed = any(not c["passed"] and fails(c["severity"], fail_on) for c in report["checks"]) \
        or report["freshness"]["stale"]
    if failed and not quarantine:
        raise typer.Exit(1)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


@app.command()
def lineage(
    target: Annotated[str, typer.Argument(help="A dataset address, or ADDRESS.COLUMN.")],
    down: Annotated[bool, typer.Option("--down", help="Follow what is derived from it (default: where it comes from).")] = False,
    up: Annotated[bool, typer.Option("--up", help="Follow where it comes from (the default).")] = False,
    depth: Annotated[int | None, typer.Option(help="At most this many steps (default: all).", min=1)] = None,
    format: Annotated[str, typer.Option("--format", help="text, json, dot (Graphviz) or mermaid.")] = "text",
    mesh: MeshOpt = None,
) -> None:
    """Column-level lineage across products and domains, from the served versions.

    Each edge says how a column is used: DIRECT (identity, transformation, aggregation) or INDIRECT
    (join, filter, group by, sort, window, conditional), and whether it was masked.

    Examples: `trustmesh lineage transport-tc.delay-weather-dp.delay_by_weather_route`,
    `trustmesh lineage bts.flights-dp.flights.dep_delay --down --format mermaid`
    """
    from trustmesh.catalog.lineage import render

    if up and down:
        raise UsageError("--up and --down together — fix: pick one direction")
    if format not in ("text", "json", "dot", "mermaid"):
        raise UsageError(f"--format {format!r} — fix: text, json, dot or mermaid")
    result = _workspace(mesh).catalog.lineage(target, direction="down" if down else "up", depth=depth)
    if format == "json":
        print_json(result)
    elif not result["edges"]:
        console.print(f"no lineage {'downstream' if down else 'upstream'} of {target}", markup=False)
    else:
        console.print(render(result["edges"], format), markup=False, highlight=False, soft_wrap=True)


@app.command()
def impact(
    target: Annotated[str, typer.Argument(help="ADDRESS.COLUMN, e.g. bts.flights-dp.flights.dep_delay.")],
    change: Annotated[str, typer.Option(help="The change you plan: drop, rename or retype.")] = "drop",
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Who a change to a column would hurt: its own dataset and every downstream dataset and column, their
    products, domains and owners, the consumers holding active grants on them (grant, columns, expiry) and the
    people who queried them in the last 30 days.

    Example: `trustmesh impact bts.flights-dp.flights.dep_delay --change retype`
    """
    result = _workspace(mesh).catalog.impact(target, change=change)
    if json:
        print_json(result)
        return
    downstream = len(result["datasets"]) - 1
    console.print(f"{change} {result['source']} affects its own dataset and {downstream} downstream dataset(s) in "
                  f"{', '.join(result['products'])} ({', '.join(result['domains'])})", markup=False)
    rows = [[d["dataset"] + "." + c["column"], ", ".join(c["via"]), c["effect"],
             "; ".join(f"{r}: {', '.join(n)}" for r, n in d["owners"].items() if n)]
            for d in result["datasets"] for c in d["columns"]]
    console.print(table(None, ["column", "via", "effect", "owners"], rows))
    users = [[d["dataset"], g["principal"], g["kind"], g["grant"], ", ".join(g["columns"]) if g["columns"] else "all",
              g["expires_at"][:10]] for d in result["datasets"] for g in d["consumers"]]
    if users:
        console.print(table("consumers (active grants)", ["dataset", "principal", "kind", "grant", "columns",
                                                          "expires"], users))
    recent = [[d["dataset"], q["principal"], str(q["queries"]), q["last_at"][:16].replace("T", " ")]
              for d in result["datasets"] for q in d["queried_by"]]
    if recent:
        console.print(table("queried in the last 30 days", ["dataset", "person", "queries", "last"], recent))
    if not users and not recent:
        console.print("no active grants, and nobody queried these datasets in the last 30 days", markup=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes; more than one wants a PostgreSQL metastore.")] = 1,
    mesh: MeshOpt = None,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /docs) and the web UI for this mesh.

    With `--workers N` the server runs N processes on one port, all on the same metastore. Use
    PostgreSQL for that (set TRUSTMESH_METASTORE_URL or platform.metastore): on SQLite every
    writer waits for the one before it. docs/deployment.md shows a whole deployment.

    Example: `TRUSTMESH_METASTORE_URL=postgresql+psycopg://trustmesh@db/trustmesh trustmesh serve --workers 4`
    """
    ws = _workspace(mesh)
    _serve(ws, host, port, workers)


def _serve(ws: Workspace, host: str, port: int, workers: int) -> None:
    import uvicorn

    ws.store  # noqa: B018 - fail fast (and migrate once, here) before any worker starts
    os.environ[MESH_ENV] = str(ws.root)
    os.environ[ws.config.platform.metastore_env] = ws.store.url  # every worker opens the metastore opened here
    if workers > 1 and ws.store.dialect == "sqlite":
        error_console.print(f"note: {workers} workers share a SQLite metastore, so their writes queue one behind "
                            "another — fix: use PostgreSQL for several workers (docs/deployment.md)")
    console.print(f"serving {ws.root} at [bold]http://{host}:{port}[/]  (API docs: http://{host}:{port}/docs)")
    uvicorn.run("trustmesh.web.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Folder for the demo mesh.")] = Path("demo-mesh"),
    serve_: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve it when built.")] = True,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    json: JsonOpt = False,
) -> None:
    """Write the demo mesh (real NYC flights 2013, synthetic people) to DIR, build it, and serve it.

    Re-running on an existing demo folder rebuilds only what changed.

    Example: `trustmesh demo demo-mesh --port 8000`
    """
    from trustmesh.demo import write_demo
    from trustmesh.demo.access import seed_access

    if not (directory / "mesh.yaml").exists():
        if directory.exists() and any(directory.iterdir()):
            raise UsageError(f"{directory} exists and is not empty — fix: pick a new folder or remove it")
        write_demo(directory)
    ws = Workspace.open(directory)
    seed_access(ws)
    with BuildProgress(enabled=not json and error_console.is_terminal) as progress:
        result = ws.build(progress=progress)
    if json:
        print_json(result.to_dict())
    else:
        console.print(table(f"demo mesh in {ws.root}", ["product", "status", "rows", "duration"],
                            [[r.address, r.status, f"{r.rows:,}", f"{r.duration_s:.2f}s"] for r in result.products]))
    if not result.ok:
        raise typer.Exit(1)
    from trustmesh.demo import policy_update

    if policy_update(ws.root):  # the Trusted Centre tightens its sector's rules after the first release
        current = ws.mesh
        statuses, _ = ws.governance.evaluate(current)
        report = ws.governance.record(current, statuses, "apply", "ravi", ws.governance.policies(current)[0])
        if not json:
            for change in report["changes"]:
                console.print(f"policy {change['policy']}: {len(change['newly_failing'])} product(s) newly "
                              f"non-compliant ({', '.join(change['newly_failing'])}), {len(change['fixed'])} fixed",
                              markup=False)
            s = report["summary"]
            console.print(f"governance: {s['compliant']} compliant, {s['at-risk']} at-risk, "
                          f"{s['unfit for consumption']} unfit for consumption (`trustmesh policy status`)",
                          markup=False)
    from trustmesh.demo.access import SIGN_IN, TOKENS_FILE, demo_tokens

    tokens = demo_tokens(ws)
    if not json:
        console.print(f"sign in at http://127.0.0.1:{port}/login with one of these tokens (kept in "
                      f".trustmesh/{TOKENS_FILE}):", markup=False)
        for person, what in SIGN_IN:
            console.print(f"  {person:<10} {tokens[person]}  {what}", markup=False, highlight=False, soft_wrap=True)
    if serve_:
        _serve(ws, "127.0.0.1", port, 1)
