"""columns-classified: every column carries its IM8 classification, and personal data is marked sensitive."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_sensitivity_for_pii: bool = True


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    scheme = ctx.mesh.config.governance.classification
    lowest = {"non-sensitive", scheme.sensitivities[0]}
    higher = [s for s in scheme.sensitivities if s not in lowest] or ["sensitive-normal"]
    out = []
    for output in product.outputs:
        contract = output.contract
        if contract is None:
            continue
        for col in contract.columns:
            if col.classification is None:
                out.append(Violation(
                    f"column {col.name} of {output.address} has no classification", output.address, col.name,
                    fix=f"add `classification: <{'|'.join(scheme.levels)}>` to {col.name} in {contract.file}"))
            if params.require_sensitivity_for_pii and col.pii_type and col.sensitivity in lowest:
                out.append(Violation(
                    f"column {col.name} of {output.address} holds personal data ({col.pii_type}) but is "
                    f"{col.sensitivity}", output.address, col.name,
                    fix=f"add `{{property: sensitivity, value: <{'|'.join(higher)}>}}` to the customProperties of "
                        f"{col.name} in {contract.file}"))
    return out


RULE = Rule("columns-classified", "Every column has a classification (IM8 level); a personal column (piiType) has a "
            "sensitivity above non-sensitive.", check, Params, {"require_sensitivity_for_pii": "true"})
