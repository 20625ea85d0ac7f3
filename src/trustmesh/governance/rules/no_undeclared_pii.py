"""no-undeclared-pii: no served dataset carries personal data its contract does not declare.

Findings of kind `undeclared-pii` come from the build (personal data propagated along lineage) and from
`trustmesh scan --record` (values that look personal); the rule reports those of the served versions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import NoParams, Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext

KIND = "undeclared-pii"


def check(ctx: RuleContext, product: Product, params: NoParams) -> list[Violation]:
    out = []
    for output in product.outputs:
        file = output.contract.file if output.contract else "its contract"
        for finding in ctx.findings.get(output.address, ()):
            if finding.get("kind") != KIND:
                continue
            column = finding.get("column")
            what = f"column {column}" if column else "the column"
            out.append(Violation(
                str(finding.get("message") or f"{output.address} carries undeclared personal data"),
                output.address, column,
                fix=f"declare `piiType` (with its classification and sensitivity) for {what} in {file}, or mask "
                    f"or aggregate it in {output.sql_file}; then rebuild"))
    return out


RULE = Rule("no-undeclared-pii", "No served dataset of the product carries personal data its contract does not "
            "declare (undeclared-pii findings).", check)
