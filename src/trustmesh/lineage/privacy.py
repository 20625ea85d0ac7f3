"""Privacy along lineage: a column derived directly from personal data is personal data too."""

from __future__ import annotations

from dataclasses import dataclass

from trustmesh.descriptors import Mesh, Product
from trustmesh.lineage.model import DIRECT, DatasetLineage


@dataclass(frozen=True)
class Finding:
    """Something a steward must look at; governance decides later what it blocks."""

    dataset: str
    kind: str  # "no-lineage" | "undeclared-pii"
    severity: str
    message: str
    column: str | None = None


def carries_personal_data(subtype: str, masking: bool) -> bool:
    """An identity or transformation passes values on; masking and aggregation do not."""
    return not masking and subtype in ("IDENTITY", "TRANSFORMATION")


def known_pii(mesh: Mesh, product: Product, lineages: list[DatasetLineage]) -> dict[tuple[str, str], str]:
    """PII of the inputs: from upstream contracts, and for external sources from what this product's own
    contracts declare about the columns they pass on (as they are, or transformed but not masked)."""
    pii: dict[tuple[str, str], str] = {}
    for port in product.inputs:
        upstream = mesh.datasets.get(port.source.address or "") if port.source.type == "product" else None
        if upstream and upstream.contract:
            for col in upstream.contract.columns:
                if col.pii_type:
                    pii[(upstream.address, col.name)] = col.pii_type
                    pii[(port.name, col.name)] = col.pii_type
    declared = {(o.address, c.name): c.pii_type for o in product.outputs if o.contract for c in o.contract.columns
                if c.pii_type}
    for lineage in lineages:
        for column in lineage.columns.values():
            kind = declared.get((lineage.address, column.column))
            if not kind:
                continue
            for ref, ts in column.inputs.items():
                if any(t.type == DIRECT and carries_personal_data(t.subtype, t.masking) for t in ts):
                    pii.setdefault((ref.dataset, ref.column), kind)
    return pii


def derived_pii(lineage: DatasetLineage, pii: dict[tuple[str, str], str]) -> dict[str, tuple[str, str]]:
    """Output column → (PII type, the input column it comes from) for every column carrying personal data."""
    out: dict[str, tuple[str, str]] = {}
    for column in lineage.columns.values():
        for ref, ts in sorted(column.inputs.items(), key=lambda kv: (kv[0].dataset, kv[0].column)):
            kind = pii.get((ref.dataset, ref.column))
            if kind and any(t.type == DIRECT and carries_personal_data(t.subtype, t.masking) for t in ts):
                out.setdefault(column.column, (kind, f"{ref.dataset}.{ref.column}"))
    return out


def lineage_findings(mesh: Mesh, product: Product, lineages: list[DatasetLineage]) -> list[Finding]:
    """No lineage, and personal data a contract does not declare."""
    findings = []
    pii = known_pii(mesh, product, lineages)
    for lineage in lineages:
        output = next(o for o in product.outputs if o.address == lineage.address)
        for gap in lineage.unresolved:
            findings.append(Finding(lineage.address, "no-lineage", "warning",
                                    f"{lineage.address} publishes incomplete lineage: {gap}"))
        declared = {c.name for c in output.contract.columns if c.pii_type} if output.contract else set()
        for column, (kind, source) in sorted(derived_pii(lineage, pii).items()):
            if column not in declared:
                findings.append(Finding(lineage.address, "undeclared-pii", "error",
                                        f"column {column!r} is derived from {source} ({kind}) but its contract declares "
                                        "no piiType: declare it (and classify it) or mask/aggregate it in the SQL",
                                        column))
    return findings
