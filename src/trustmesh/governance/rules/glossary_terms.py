"""glossary-terms: columns that name a business concept are linked to its glossary term.

`terms` maps a glossary term to a regular expression searched in column names (anchor it to match whole
names): every column it matches must carry `glossaryTerm: <term>`, and the term must be defined for the
product's domain (in mesh.yaml, its sector's Trusted Centres or its own domain.yaml).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, field_validator

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext

CACHE = "glossary-terms"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terms: dict[str, str] = {}

    @field_validator("terms")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for term, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"the pattern of {term} is not a regular expression: {exc}") from exc
        return value


def _defined(ctx: RuleContext, domain: str) -> set[str]:
    key = f"{CACHE}|{domain}"
    terms: set[str] | None = ctx.cache.get(key)
    if terms is None:
        terms = ctx.cache[key] = set(ctx.mesh.glossary_terms(domain))
    return terms


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    if not params.terms:
        return []
    out = []
    defined = _defined(ctx, product.domain)
    for term in params.terms:
        if term not in defined:
            out.append(Violation(
                f"glossary term {term!r} is not defined for domain {product.domain}",
                fix=f"define `{{term: {term}, definition: ...}}` under `governance.glossary` in mesh.yaml, or under "
                    f"`glossary` in domains/{product.domain}/domain.yaml"))
    for output in product.outputs:
        contract = output.contract
        if contract is None:
            continue
        for col in contract.columns:
            for term, pattern in params.terms.items():
                if col.glossary_term == term or not re.search(pattern, col.name):
                    continue
                now = f"is linked to {col.glossary_term!r}" if col.glossary_term else "carries no glossary term"
                out.append(Violation(
                    f"column {col.name} of {output.address} {now}; columns matching {pattern} mean {term!r}",
                    output.address, col.name,
                    fix=f"add `{{property: glossaryTerm, value: {term}}}` to the customProperties of {col.name} in "
                        f"{contract.file}"))
    return out


RULE = Rule("glossary-terms", "Columns whose names match a term's pattern carry that glossary term, and the term "
            "is defined for the domain.", check, Params, {"terms": "more"})
