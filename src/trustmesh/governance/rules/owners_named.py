"""owners-named: someone answers for the product — its domain names a data owner and a data domain steward,
and the product's team names a data product owner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext

Role = Literal["data-owner", "data-domain-steward", "data-product-owner", "developer"]
# Roles a domain declares for all its products (domain.yaml `people`); the others, each product's team.
DOMAIN_LEVEL = ("data-owner", "data-domain-steward")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] = ["data-owner", "data-domain-steward", "data-product-owner"]


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    out = []
    domain = ctx.mesh.domains.get(product.domain)
    domain_file = f"domains/{product.domain}/domain.yaml"
    team_roles = {str(m.get("role")) for m in product.team if isinstance(m, dict)}
    for role in dict.fromkeys(params.roles):
        if role in DOMAIN_LEVEL:
            if domain is None or not domain.people_in_role(role):
                out.append(Violation(
                    f"domain {product.domain} names no {role}",
                    fix=f"give a person `roles: [{role}]` under `people:` in {domain_file}"))
        elif role not in team_roles:
            out.append(Violation(
                f"the team of {product.address} names no {role}",
                fix=f"add `- {{username: <a person of {product.domain}>, role: {role}}}` under `team.members` "
                    f"in {product.file}"))
    return out


RULE = Rule("owners-named", "The domain names a data owner and a data domain steward; the product's team names a "
            "data product owner.", check, Params, {"roles": "more"})
