"""The rules policies apply: plain functions, one module each, registered in `RULES`.

A rule checks one product and returns its violations. Its parameters are a pydantic model; `stricter`
says, per parameter, which way is stricter (`higher`, `lower`, `more` items, `fewer` items, `true`), so
a sector or domain policy can be checked to only tighten a global one. Users add their own rules with a
Python entry point in the group `trustmesh.rules` whose object is a `Rule`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trustmesh.governance.model import Violation

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext

RULE_MODULES = (
    "owners_named", "columns_described", "columns_classified", "naming_convention", "pii_masking",
    "gold_quality", "lineage_complete", "no_undeclared_pii", "inputs_granted", "open_data_k_anonymity",
    "contract_versioned", "glossary_terms",
)
ENTRY_POINT_GROUP = "trustmesh.rules"


class NoParams(BaseModel):
    model_config = {"extra": "forbid"}


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[RuleContext, Product, Any], list[Violation]]
    params: type[BaseModel] = NoParams
    stricter: dict[str, str] = field(default_factory=dict)  # param → higher | lower | more | fewer | true


def _load() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for name in RULE_MODULES:
        rule: Rule = import_module(f"{__name__}.{name}").RULE
        rules[rule.name] = rule
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        rule = ep.load()
        if isinstance(rule, Rule):
            rules.setdefault(rule.name, rule)
    return rules


_RULES: dict[str, Rule] | None = None


def rules() -> dict[str, Rule]:
    """Every rule by name: the shipped ones, then those of installed plugins."""
    global _RULES
    if _RULES is None:
        _RULES = _load()
    return _RULES


def looser(rule: Rule, lower: dict[str, Any], higher: dict[str, Any]) -> list[str]:
    """The parameters in which `lower` is less strict than `higher` (both already validated)."""
    out = []
    for name, direction in rule.stricter.items():
        a, b = lower.get(name), higher.get(name)
        if a is None or b is None:
            continue
        if (direction == "higher" and a < b) or (direction == "lower" and a > b):
            out.append(f"{name} {a!r} is looser than {b!r}")
        elif direction == "more" and not set(a) >= set(b):
            out.append(f"{name} leaves out {sorted(set(b) - set(a))}")
        elif direction == "fewer" and not set(a) <= set(b):
            out.append(f"{name} adds {sorted(set(a) - set(b))}")
        elif direction == "true" and b and not a:
            out.append(f"{name} is off where it is on")
    return out
