"""pii-masking: every personal column names how it is masked for readers without an unmasking grant.

The strategy is the contract column's custom property `masking`: a strategy name, or `{strategy: ...,
bucket|bound|key: ...}`. With `allow_default`, a column that names none falls back to its PII type's
default (trustmesh.privacy.masking.DEFAULT_BY_PII_TYPE); an unknown strategy is always a violation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule
from trustmesh.privacy.masking import DEFAULT_BY_PII_TYPE, STRATEGIES

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow_default: bool = False


def declared_masking(document: dict[str, Any]) -> dict[str, Any]:
    """Column → its `masking` custom property, as the contract writes it."""
    schema = document.get("schema") or [{}]
    out: dict[str, Any] = {}
    for prop in (schema[0] if isinstance(schema[0], dict) else {}).get("properties") or []:
        if not isinstance(prop, dict):
            continue
        for item in prop.get("customProperties") or []:
            if isinstance(item, dict) and item.get("property") == "masking":
                out[str(prop.get("name"))] = item.get("value")
    return out


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    out = []
    for output in product.outputs:
        contract = output.contract
        if contract is None or not any(c.pii_type for c in contract.columns):
            continue
        declared = declared_masking(contract.document)
        for col in contract.columns:
            if not col.pii_type:
                continue
            default = DEFAULT_BY_PII_TYPE.get(col.pii_type, "suppress")
            add = (f"add `{{property: masking, value: <{'|'.join(STRATEGIES)}>}}` (e.g. {default}) to the "
                   f"customProperties of {col.name} in {contract.file}")
            if col.name not in declared:
                if not params.allow_default:
                    out.append(Violation(
                        f"personal column {col.name} ({col.pii_type}) of {output.address} declares no masking "
                        f"strategy (it would get the default, {default})", output.address, col.name, fix=add))
                continue
            value = declared[col.name]
            strategy = value.get("strategy") if isinstance(value, dict) else value
            if strategy not in STRATEGIES:
                out.append(Violation(
                    f"personal column {col.name} ({col.pii_type}) of {output.address} declares the masking "
                    f"{value!r}, which is not a known strategy", output.address, col.name,
                    fix=f"use one of {', '.join(STRATEGIES)}, as a name or `{{strategy: <name>, ...}}`, in the "
                        f"`masking` custom property of {col.name} in {contract.file}"))
    return out


RULE = Rule("pii-masking", "Every personal column (piiType) declares its masking strategy explicitly (custom "
            "property `masking`).", check, Params, {"allow_default": "lower"})
