"""gold-quality: a gold product promises quality — enough ODCS quality rules per dataset, and a freshness SLA.

Quality rules are the contract's own `quality` entries, on the dataset and on its columns (the schema's
implicit checks and the sector's benchmarks do not count). A freshness SLA is an `slaProperties` entry
`frequency` or `latency` with a number and a known unit. `tiers` picks the products the rule applies to
(default gold; all three: every product the policy's scope selects); more tiers is stricter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule
from trustmesh.quality.freshness import freshness_window

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_rules: int = Field(2, ge=0, le=1000)
    require_freshness: bool = True
    tiers: list[Literal["bronze", "silver", "gold"]] = Field(["gold"], min_length=1)


def quality_rules(document: dict[str, Any]) -> int:
    """How many `quality` entries the contract declares, on its dataset and its columns."""
    schema = document.get("schema") or [{}]
    obj = schema[0] if isinstance(schema[0], dict) else {}
    count = len(obj.get("quality") or [])
    for prop in obj.get("properties") or []:
        if isinstance(prop, dict):
            count += len(prop.get("quality") or [])
    return count


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    if product.tier not in params.tiers:
        return []
    out = []
    for output in product.outputs:
        contract = output.contract
        if contract is None:
            continue
        have = quality_rules(contract.document)
        if have < params.min_rules:
            out.append(Violation(
                f"{output.address} ({product.tier}) declares {have} quality rule(s); at least {params.min_rules} "
                "needed", output.address,
                fix=f"add {params.min_rules - have} more `quality:` rule(s) in {contract.file}, e.g. "
                    "`- {metric: rowCount, mustBeGreaterThan: 0}` on the dataset or `- {metric: nullValues, "
                    "mustBe: 0}` on a key column"))
        if params.require_freshness and freshness_window(contract.sla) is None:
            out.append(Violation(
                f"{output.address} ({product.tier}) promises no freshness (slaProperties frequency or latency)",
                output.address,
                fix=f"add `slaProperties: [{{property: frequency, value: 1, unit: d}}]` (how often it is "
                    f"refreshed) to {contract.file}"))
    return out


RULE = Rule("gold-quality", "Datasets of gold products declare at least min_rules ODCS quality rules and a "
            "freshness SLA.", check, Params,
            {"min_rules": "higher", "require_freshness": "true", "tiers": "more"})
