"""`trustmesh contract …`: diff a contract against what is served, export a published version, import an ODCS file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from trustmesh.cli.common import JsonOpt, MeshOpt, typer_app
from trustmesh.cli.render import console, print_json, table
from trustmesh.contracts import ContractComparison, compare_contracts, repo_contract
from trustmesh.contracts.importer import import_contract
from trustmesh.descriptors.addresses import normalise_address
from trustmesh.errors import UsageError
from trustmesh.service import Workspace
from trustmesh.yamlfile import dump_yaml, load_yaml

contract_app = typer_app(
    "Data contracts over their life: what a change breaks, export for outside tools, import an ODCS file.")


@contract_app.command("diff")
def diff(
    address: Annotated[str, typer.Argument(help="Dataset address, e.g. bts.flights-dp.flights.")],
    against: Annotated[str | None, typer.Option(
        "--against", metavar="VERSION|FILE",
        help="Compare the repo's contract with a published version's (a number) or an ODCS file. "
             "Default: the contract registered for the served version.", show_default=False)] = None,
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show what changed in a dataset's contract and whether it breaks consumers; exit 1 when it does.

    Breaking: a column removed, a type narrowed, a column newly required, the primary key changed, an allowed
    value removed, a classification tightened, the dataset renamed. Everything else is compatible.

    Example: `trustmesh contract diff bts.flights-dp.flights --against 3`
    """
    ws = Workspace.open(mesh)
    address = normalise_address(address)
    if against is None or against.strip().isdigit():
        result = ws.contract_diff(address, int(against) if against is not None else None)
    else:
        result = compare_contracts(repo_contract(ws.root, address), *_from_file(address, against))
    if json:
        print_json(result.to_dict())
    else:
        _render_diff(result)
    if result.diff.breaking:
        raise typer.Exit(1)


def _from_file(address: str, against: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An ODCS file to compare with, and a label saying where it came from."""
    path = Path(against)
    if not path.is_file():
        raise UsageError(f"--against {against!r} is neither a version number nor a file — fix: pass a published "
                         f"version (see `trustmesh catalog versions {address}`) or the path of an ODCS contract")
    doc, problem = load_yaml(path, str(path))
    if problem is not None or doc is None:
        raise UsageError(f"cannot read {path}: {problem}")
    return doc.data, {"source": "file", "file": str(path), "contract_version": str(doc.data.get("version", ""))}


def _describe(label: dict[str, Any]) -> str:
    if label["source"] == "catalog":
        return f"catalog version {label['version']} (contract {label['contract_version']})"
    return f"{label['file']} (contract {label['contract_version'] or '?'})"


def _render_diff(comparison: ContractComparison) -> None:
    result = comparison.diff
    console.print(f"[bold]{escape(comparison.address)}[/]: {escape(_describe(comparison.old))} → "
                  f"{escape(_describe(comparison.new))}")
    if not result.changes:
        console.print("[green]no changes[/]")
        return
    rows = [[c.path, c.kind, c.what, c.reason] for c in sorted(result.changes, key=lambda c: c.kind != "breaking")]
    console.print(table(None, ["path", "kind", "change", "why"], rows))
    breaking = sum(c.kind == "breaking" for c in result.changes)
    summary = f"{breaking} breaking, {len(result.changes) - breaking} compatible"
    console.print(f"[red]{summary}[/]" if breaking else f"[green]{summary}[/]")
    if comparison.fix:
        console.print(f"[red]a breaking change needs a major version bump[/]: the contract version went "
                      f"{escape(result.old_version)} → {escape(result.new_version)} — fix: {escape(comparison.fix)}")


@contract_app.command("export")
def export(
    address: Annotated[str, typer.Argument(help="Dataset address, e.g. bts.flights-dp.flights.")],
    version: Annotated[int | None, typer.Option("--version", help="Published version (default: the served one).",
                                                show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the YAML here (default: stdout).",
                                                show_default=False)] = None,
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Export a published version's contract as standalone ODCS v3.1.0, with a server pointing at its Parquet files.

    Outside tools can test the data against it, e.g. `datacontract test flights.odcs.yaml`.

    Example: `trustmesh contract export bts.flights-dp.flights --output flights.odcs.yaml`
    """
    if version is not None and version < 1:
        raise UsageError(f"--version {version} is not a version — fix: versions start at 1")
    exported = Workspace.open(mesh).export_contract(address, version)
    doc, files = exported.document, exported.data_files
    if output is None:
        print_json(doc) if json else sys.stdout.write(dump_yaml(doc))
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(dump_yaml(doc), encoding="utf-8")
    if json:
        print_json({"address": exported.address, "version": exported.version,
                    "contract_version": exported.contract_version, "output": str(output), "data_files": files})
    else:
        console.print(f"wrote {escape(str(output))}: {exported.address} version {exported.version} "
                      f"(contract {escape(exported.contract_version)}), {len(files)} Parquet file(s)\n"
                      f"next: [bold]datacontract test {escape(str(output))}[/]")


@contract_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="An ODCS v3.1.0 contract (YAML).")],
    domain: Annotated[str | None, typer.Option(help="Domain to import into (default: the contract's `domain`).",
                                               show_default=False)] = None,
    product: Annotated[str | None, typer.Option(help="Product name (default: the contract's `dataProduct`).",
                                                show_default=False)] = None,
    mesh: MeshOpt = None,
    json: JsonOpt = False,
) -> None:
    """Create a product skeleton from an existing ODCS contract: one output dataset per schema object.

    Writes product.yaml, a contract, a SQL file and a header-only CSV per dataset; what had to change to fit
    the mesh (names, classification levels, types) is noted at the top of each contract.

    Example: `trustmesh contract import orders.odcs.yaml --domain sales`
    """
    ws = Workspace.open(mesh)
    path = import_contract(ws.root, file, domain=domain, product=product)
    folder = path.parent
    datasets = sorted(p.name.removesuffix(".odcs.yaml") for p in (folder / "contracts").glob("*.odcs.yaml"))
    address = f"{folder.parent.parent.name}.{folder.name}"
    if json:
        print_json({"created": str(path), "product": address, "datasets": [f"{address}.{d}" for d in datasets]})
        return
    console.print(table(f"imported {escape(str(file))} as {address}", ["dataset", "contract"],
                        [[f"{address}.{d}", f"contracts/{d}.odcs.yaml"] for d in datasets]))
    console.print(f"created {escape(str(folder))} (each dataset also has sql/DATASET.sql and a header-only "
                  "data/DATASET.csv)\nnext: read the notes at the top of each contract, put real data in data/ (or "
                  "point the input ports at the source), then [bold]trustmesh validate[/] and [bold]trustmesh build[/]")
