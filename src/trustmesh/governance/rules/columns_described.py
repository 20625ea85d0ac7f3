"""columns-described: every column of every output contract says what it holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_length: int = Field(10, ge=0, le=10_000)


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    out = []
    for output in product.outputs:
        contract = output.contract
        if contract is None:
            continue
        for col in contract.columns:
            have = len(col.description.strip())
            if have < params.min_length:
                what = "no description" if not have else f"a description of {have} character(s)"
                out.append(Violation(
                    f"column {col.name} of {output.address} has {what}; at least {params.min_length} needed",
                    output.address, col.name,
                    fix=f"write `description:` for {col.name} in {contract.file}: what it means, its unit, where "
                        f"it comes from (at least {params.min_length} characters)"))
    return out


RULE = Rule("columns-described", "Every column of every output contract has a description of at least min_length "
            "characters.", check, Params, {"min_length": "higher"})
