"""contract-versioned: a contract that breaks its published version raises its major version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import NoParams, Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext


def check(ctx: RuleContext, product: Product, params: NoParams) -> list[Violation]:
    if ctx.breaking is None:
        return []
    by_file = {o.contract.file: o.address for o in product.outputs if o.contract}
    return [Violation(p.message, by_file.get(p.file),
                      fix=p.fix or f"raise the major `version` of {p.file}, or make the change compatible")
            for p in ctx.breaking(product.address)]


RULE = Rule("contract-versioned", "A contract that breaks its published version (removed or retyped columns, "
            "tighter rules) raises its major version.", check)
