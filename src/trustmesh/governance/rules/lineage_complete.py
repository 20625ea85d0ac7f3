"""lineage-complete: every column of every served dataset can be traced to its inputs.

The build records a `no-lineage` finding on the version it publishes when it cannot trace a column; the
rule reports those of the served versions. A dataset never published has no findings, so no violation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import NoParams, Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext

KIND = "no-lineage"


def check(ctx: RuleContext, product: Product, params: NoParams) -> list[Violation]:
    out = []
    for output in product.outputs:
        for finding in ctx.findings.get(output.address, ()):
            if finding.get("kind") != KIND:
                continue
            out.append(Violation(
                str(finding.get("message") or f"{output.address} publishes incomplete lineage"), output.address,
                finding.get("column"),
                fix=f"make every column of {output.sql_file} traceable: name the columns instead of SELECT *, give "
                    "each input a schema (an upstream contract, or a typed file/table), then rebuild; see "
                    f"`trustmesh lineage {output.address}`"))
    return out


RULE = Rule("lineage-complete", "No served dataset of the product has incomplete column lineage (no-lineage "
            "findings).", check)
