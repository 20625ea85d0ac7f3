"""inputs-granted: every input port reading another domain's dataset is covered by an active grant."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import NoParams, Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext


def check(ctx: RuleContext, product: Product, params: NoParams) -> list[Violation]:
    out = []
    principal = ctx.directory.principals.get(product.address)
    for port in product.inputs:
        address = port.source.address
        if port.source.type != "product" or not address:
            continue
        dataset = ctx.directory.datasets.get(address)
        if dataset is None or dataset.domain == product.domain:
            continue  # an unknown dataset is the validator's problem; its own domain's data needs no grant
        fix = (f"`trustmesh access request {address} --for {product.address} --purpose 'Input {port.name} of "
               f"{product.address}' --purpose-category product-input --days 365 --as <a person of "
               f"{product.domain}>`, then have {dataset.domain}'s steward approve it")
        if principal is None:
            out.append(Violation(f"input {port.name} of {product.address} reads {address}, but the product is not "
                                 "a principal of the mesh", address, fix=fix))
            continue
        # The dataset-level read decides (explain's `allowed` is the same); one Cedar evaluation, not 1 + 2 per column.
        decision = ctx.authorizer().decide(principal, dataset, ctx.now)
        if not decision.allowed:
            out.append(Violation(
                f"input {port.name} of {product.address} reads {address} of domain {dataset.domain}, which it may "
                f"not: {decision.reason}", address, fix=fix))
    return out


RULE = Rule("inputs-granted", "Every input port reading another domain's dataset is covered by an active grant.",
            check)
