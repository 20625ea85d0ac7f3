"""The shipped governance rules, each on a product that passes it and one that fails it.

Contexts are built from meshfactory repos loaded with `load_mesh`, the platform's state (findings, served
versions, files, breaking changes) filled in by hand; the rules that need grants and data
(inputs-granted, open-data-k-anonymity) run on a real build instead.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from meshfactory import (
    base_files,
    column,
    contract_yaml,
    domain_yaml,
    grant_product_inputs,
    person,
    write_files,
)
from pydantic import ValidationError

from trustmesh.access.model import Directory
from trustmesh.descriptors import load_mesh
from trustmesh.errors import Problem
from trustmesh.governance.context import RuleContext, load_state
from trustmesh.governance.model import Violation
from trustmesh.governance.rules import RULE_MODULES, looser, rules
from trustmesh.service import Workspace

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
SHOP = "domains/alpha/products/shop-dp"
STATS = "domains/beta/products/stats-dp"
ITEMS = "alpha.shop-dp.items"
CHEAP = "alpha.shop-dp.cheap_items"
DAILY = "beta.stats-dp.daily_sales"
ITEMS_CONTRACT = f"{SHOP}/contracts/items.odcs.yaml"
DAILY_CONTRACT = f"{STATS}/contracts/daily_sales.odcs.yaml"


def context(root: Path, files: dict[str, Any] | None = None, *, strict: bool = True, **state: Any) -> RuleContext:
    write_files(root, files if files is not None else base_files())
    mesh, _ = load_mesh(root, strict=strict)
    return RuleContext(mesh, Directory.from_mesh(mesh), NOW, **state)


def check(ctx: RuleContext, rule: str, product: str, /, **params: Any) -> list[Violation]:
    r = rules()[rule]
    return r.check(ctx, ctx.mesh.products[product], r.params.model_validate(params))


def where(violations: list[Violation]) -> list[tuple[str | None, str | None]]:
    return sorted(((v.dataset, v.column) for v in violations), key=lambda t: (t[0] or "", t[1] or ""))


def items_contract(*columns: dict[str, Any], **extra: Any) -> dict[str, Any]:
    doc = contract_yaml("alpha", "shop-dp", "items", list(columns))
    doc.update(extra)
    return doc


ITEM_ID = column("item_id", "integer", required=True, primaryKey=True, primaryKeyPosition=1)


def pii(name: str, kind: str, *, sensitivity: str | None = "sensitive-normal", masking: Any = None,
        **extra: Any) -> dict[str, Any]:
    props = [{"property": "piiType", "value": kind}]
    if sensitivity:
        props.append({"property": "sensitivity", "value": sensitivity})
    if masking is not None:
        props.append({"property": "masking", "value": masking})
    return column(name, "string", customProperties=props, **extra)


# -- the registry and the stricter relation ----------------------------------------------------------------

def test_every_shipped_rule_is_registered_under_its_module_name() -> None:
    names = {m.replace("_", "-") for m in RULE_MODULES}
    assert len(names) == 12
    assert names <= set(rules())
    for name in names:
        rule = rules()[name]
        assert rule.description
        assert set(rule.stricter) <= set(rule.params.model_fields)
        rule.params.model_validate({})  # every parameter has a default
        with pytest.raises(ValidationError):
            rule.params.model_validate({"no_such_param": 1})


def dumped(rule: str, **params: Any) -> dict[str, Any]:
    """Parameters as the policy loader keeps them: validated, then dumped."""
    return rules()[rule].params.model_validate(params).model_dump()


@pytest.mark.parametrize(("rule", "loose", "strict", "param"), [
    ("owners-named", {"roles": ["data-owner"]}, {}, "roles"),
    ("columns-described", {"min_length": 5}, {"min_length": 10}, "min_length"),
    ("columns-classified", {"require_sensitivity_for_pii": False}, {}, "require_sensitivity_for_pii"),
    ("pii-masking", {"allow_default": True}, {"allow_default": False}, "allow_default"),
    ("gold-quality", {"min_rules": 1}, {"min_rules": 2}, "min_rules"),
    ("gold-quality", {"require_freshness": False}, {}, "require_freshness"),
    ("gold-quality", {"tiers": ["gold"]}, {"tiers": ["silver", "gold"]}, "tiers"),
    ("open-data-k-anonymity", {"k": 3}, {"k": 5}, "k"),
    ("glossary-terms", {"terms": {}}, {"terms": {"price": "^price$"}}, "terms"),
])
def test_looser_finds_each_parameter_loosened_and_accepts_it_tightened(
        rule: str, loose: dict[str, Any], strict: dict[str, Any], param: str) -> None:
    r = rules()[rule]
    assert param in r.stricter
    found = looser(r, dumped(rule, **loose), dumped(rule, **strict))
    assert len(found) == 1 and found[0].startswith(param)
    assert looser(r, dumped(rule, **strict), dumped(rule, **loose)) == []
    assert looser(r, dumped(rule, **strict), dumped(rule, **strict)) == []


def test_looser_on_the_remaining_stricter_parameters() -> None:
    assert looser(rules()["owners-named"], dumped("owners-named", roles=["data-owner", "data-domain-steward",
                                                                        "data-product-owner", "developer"]),
                  dumped("owners-named")) == []
    glossary = rules()["glossary-terms"]
    assert looser(glossary, dumped("glossary-terms", terms={"price": "^price$", "cost": "cost"}),
                  dumped("glossary-terms", terms={"price": "^p"})) == []  # keys compared, not patterns
    assert rules()["naming-convention"].stricter == {}  # regular expressions are not ordered


# -- owners-named ----------------------------------------------------------------------------------------

def test_owners_named(tmp_path: Path) -> None:
    ctx = context(tmp_path / "ok")
    assert check(ctx, "owners-named", "alpha.shop-dp") == []

    files = base_files()
    files[f"{SHOP}/product.yaml"]["team"]["members"][0]["role"] = "developer"
    domain = domain_yaml("alpha")
    domain["people"] = [person("alpha-owner", "data-owner"), person("alpha-dev", "developer", "data-product-owner")]
    files["domains/alpha/domain.yaml"] = domain  # no steward: the loader complains too, so load leniently
    ctx = context(tmp_path / "bad", files, strict=False)
    found = check(ctx, "owners-named", "alpha.shop-dp")
    assert [v.message for v in found] == ["domain alpha names no data-domain-steward",
                                          "the team of alpha.shop-dp names no data-product-owner"]
    assert "domains/alpha/domain.yaml" in found[0].fix and f"{SHOP}/product.yaml" in found[1].fix
    assert check(ctx, "owners-named", "alpha.shop-dp", roles=["data-owner"]) == []
    assert check(ctx, "owners-named", "beta.stats-dp") == []


# -- columns-described -----------------------------------------------------------------------------------

def test_columns_described(tmp_path: Path) -> None:
    files = base_files()
    files[f"{SHOP}/contracts/cheap_items.odcs.yaml"]["schema"][0]["properties"][0]["description"] = ""
    ctx = context(tmp_path / "mesh", files)
    assert check(ctx, "columns-described", "beta.stats-dp") == []
    found = check(ctx, "columns-described", "alpha.shop-dp")  # "The name." is 9 characters
    assert where(found) == [(CHEAP, "item_id"), (CHEAP, "name"), (ITEMS, "name")]
    empty = next(v for v in found if v.column == "item_id")
    assert "no description" in empty.message and "cheap_items.odcs.yaml" in empty.fix
    assert where(check(ctx, "columns-described", "alpha.shop-dp", min_length=5)) == [(CHEAP, "item_id")]
    assert len(check(ctx, "columns-described", "beta.stats-dp", min_length=40)) == 3


# -- columns-classified ----------------------------------------------------------------------------------

def test_columns_classified(tmp_path: Path) -> None:
    assert check(context(tmp_path / "ok"), "columns-classified", "alpha.shop-dp") == []

    unlabelled = column("name", "string")
    del unlabelled["classification"]
    files = base_files()
    files[ITEMS_CONTRACT] = items_contract(ITEM_ID, unlabelled, pii("email", "email", sensitivity=None),
                                           pii("phone", "phone", sensitivity="sensitive-high"))
    ctx = context(tmp_path / "bad", files)
    found = check(ctx, "columns-classified", "alpha.shop-dp")
    assert where(found) == [(ITEMS, "email"), (ITEMS, "name")]
    assert any("classification: <official-open|" in v.fix for v in found)
    assert any("non-sensitive" in v.message and "sensitivity" in v.fix for v in found)
    assert where(check(ctx, "columns-classified", "alpha.shop-dp", require_sensitivity_for_pii=False)) == [
        (ITEMS, "name")]


# -- naming-convention -----------------------------------------------------------------------------------

def test_naming_convention(tmp_path: Path) -> None:
    ctx = context(tmp_path / "mesh")
    assert check(ctx, "naming-convention", "alpha.shop-dp") == []
    assert check(ctx, "naming-convention", "beta.stats-dp") == []

    found = check(ctx, "naming-convention", "alpha.shop-dp", product="^stats-", dataset="^[a-z]+$", column="^[a-z]+$")
    assert where(found) == [(None, None), (CHEAP, None), (CHEAP, "item_id"), (ITEMS, "item_id"), (ITEMS, "sold_on")]
    product = next(v for v in found if v.dataset is None)
    assert "'shop-dp'" in product.message and "domains/alpha/products/shop-dp" in product.fix
    assert all(v.fix for v in found)
    with pytest.raises(ValidationError):
        rules()["naming-convention"].params.model_validate({"column": "([a-z"})


# -- pii-masking -----------------------------------------------------------------------------------------

def test_pii_masking(tmp_path: Path) -> None:
    files = base_files()
    files[ITEMS_CONTRACT] = items_contract(ITEM_ID, pii("email", "email", masking="mask"),
                                           pii("postal_code", "postal-code", masking={"strategy": "generalise"}))
    ctx = context(tmp_path / "ok", files)
    assert check(ctx, "pii-masking", "alpha.shop-dp") == []

    files[ITEMS_CONTRACT] = items_contract(ITEM_ID, pii("email", "email"), pii("phone", "phone", masking="scramble"),
                                           pii("nric", "nric", masking={"strategy": "pseudonymise", "key": "k1"}))
    ctx = context(tmp_path / "bad", files)
    found = check(ctx, "pii-masking", "alpha.shop-dp")
    assert where(found) == [(ITEMS, "email"), (ITEMS, "phone")]
    assert "default, mask" in found[0].message and "property: masking" in found[0].fix
    assert "'scramble'" in found[1].message and "suppress, mask" in found[1].fix
    # the default is allowed, an unknown strategy never is
    assert where(check(ctx, "pii-masking", "alpha.shop-dp", allow_default=True)) == [(ITEMS, "phone")]


# -- gold-quality ----------------------------------------------------------------------------------------

def test_gold_quality(tmp_path: Path) -> None:
    files = base_files()
    daily = files[DAILY_CONTRACT]
    daily["schema"][0]["quality"] = [{"metric": "rowCount", "mustBeGreaterThan": 0}]
    daily["schema"][0]["properties"][0]["quality"] = [{"metric": "nullValues", "mustBe": 0}]
    daily["slaProperties"] = [{"property": "frequency", "value": 1, "unit": "d"}]
    ctx = context(tmp_path / "gold", files)
    assert check(ctx, "gold-quality", "beta.stats-dp") == []

    found = check(ctx, "gold-quality", "alpha.shop-dp")
    assert where(found) == [(CHEAP, None), (CHEAP, None), (ITEMS, None), (ITEMS, None)]
    assert any("declares 0 quality rule(s)" in v.message and "add 2 more" in v.fix for v in found)
    assert any("freshness" in v.message and "slaProperties" in v.fix for v in found)
    assert len(check(ctx, "gold-quality", "beta.stats-dp", min_rules=3)) == 1
    assert check(ctx, "gold-quality", "alpha.shop-dp", min_rules=0, require_freshness=False) == []

    files[f"{SHOP}/product.yaml"]["customProperties"].append({"property": "tier", "value": "silver"})
    ctx = context(tmp_path / "silver", files)
    assert ctx.mesh.products["alpha.shop-dp"].tier == "silver"
    assert check(ctx, "gold-quality", "alpha.shop-dp") == []  # only gold products, by default
    assert len(check(ctx, "gold-quality", "alpha.shop-dp", tiers=["bronze", "silver", "gold"])) == 4
    with pytest.raises(ValidationError):
        rules()["gold-quality"].params.model_validate({"tiers": []})


# -- lineage-complete and no-undeclared-pii: findings of the served versions -----------------------------------

FINDINGS = {ITEMS: [
    {"kind": "no-lineage", "column": None, "severity": "warning",
     "message": f"{ITEMS} publishes incomplete lineage: SELECT * over an input whose columns are unknown"},
    {"kind": "undeclared-pii", "column": "name", "severity": "error",
     "message": "column name looks like name (dictionary): 3 of 3 sampled values match"},
]}


def test_lineage_complete(tmp_path: Path) -> None:
    ctx = context(tmp_path / "served", findings=copy.deepcopy(FINDINGS))
    assert check(ctx, "lineage-complete", "beta.stats-dp") == []
    [found] = check(ctx, "lineage-complete", "alpha.shop-dp")
    assert found.dataset == ITEMS and "SELECT * over an input" in found.message
    assert "sql/items.sql" in found.fix
    assert check(context(tmp_path / "none"), "lineage-complete", "alpha.shop-dp") == []  # never published


def test_no_undeclared_pii(tmp_path: Path) -> None:
    ctx = context(tmp_path / "served", findings=copy.deepcopy(FINDINGS))
    assert check(ctx, "no-undeclared-pii", "beta.stats-dp") == []
    [found] = check(ctx, "no-undeclared-pii", "alpha.shop-dp")
    assert (found.dataset, found.column) == (ITEMS, "name")
    assert "piiType" in found.fix and "items.odcs.yaml" in found.fix
    assert check(context(tmp_path / "none"), "no-undeclared-pii", "alpha.shop-dp") == []


# -- contract-versioned ----------------------------------------------------------------------------------

def test_contract_versioned(tmp_path: Path) -> None:
    breaking = Problem(ITEMS_CONTRACT, f"breaking change to published {ITEMS} without a major version bump "
                       "(1.0.0 → 1.1.0): column removed (schema[items].properties[sold_on])", "version",
                       fix="raise `version` to 2.0.0 so consumers know")

    def changes(product: str) -> list[Problem]:
        return [breaking] if product == "alpha.shop-dp" else []

    ctx = context(tmp_path / "mesh", breaking=changes)
    assert check(ctx, "contract-versioned", "beta.stats-dp") == []
    [found] = check(ctx, "contract-versioned", "alpha.shop-dp")
    assert (found.dataset, found.message, found.fix) == (ITEMS, breaking.message, breaking.fix)
    ctx.breaking = None  # no metastore to compare with
    assert check(ctx, "contract-versioned", "alpha.shop-dp") == []


# -- glossary-terms --------------------------------------------------------------------------------------

def test_glossary_terms(tmp_path: Path) -> None:
    ctx = context(tmp_path / "mesh")
    assert check(ctx, "glossary-terms", "alpha.shop-dp") == []
    assert check(ctx, "glossary-terms", "alpha.shop-dp", terms={"price": "^price$"}) == []
    assert check(ctx, "glossary-terms", "alpha.shop-dp", terms={"alpha-term": "^sold_"}) == [
        Violation(f"column sold_on of {ITEMS} carries no glossary term; columns matching ^sold_ mean 'alpha-term'",
                  ITEMS, "sold_on", f"add `{{property: glossaryTerm, value: alpha-term}}` to the customProperties of "
                                    f"sold_on in {ITEMS_CONTRACT}")]

    found = check(ctx, "glossary-terms", "beta.stats-dp", terms={"price": "^(price|revenue)$"})
    assert where(found) == [(DAILY, "revenue")]
    found = check(ctx, "glossary-terms", "alpha.shop-dp", terms={"cost": "^price$"})
    assert where(found) == [(None, None), (ITEMS, "price")]
    assert any("'cost' is not defined for domain alpha" in v.message and "mesh.yaml" in v.fix for v in found)
    assert any("is linked to 'price'" in v.message for v in found)
    # a Trusted Centre's terms are visible to the domains of its sector
    assert where(check(ctx, "glossary-terms", "alpha.shop-dp", terms={"beta-term": "^nothing$"})) == []


# -- inputs-granted and open-data-k-anonymity: on a real build ------------------------------------------------

@pytest.fixture
def workspaces(tmp_path: Path) -> Iterator[list[Workspace]]:
    opened: list[Workspace] = []
    yield opened
    for ws in opened:
        ws.close()


def built(root: Path, files: dict[str, Any], opened: list[Workspace], *, grants: bool = True) -> Workspace:
    ws = Workspace.open(write_files(root, files))
    opened.append(ws)
    if grants:
        grant_product_inputs(ws)
    result = ws.build()
    assert result.ok, result
    return ws


def live_context(ws: Workspace) -> RuleContext:
    mesh = ws.mesh
    ctx = RuleContext(mesh, Directory.from_mesh(mesh), ws.access.clock(), grants=ws.access.active_grants())
    with ws.store.session() as session:
        load_state(session, ctx)
    ctx.files = lambda a: ws.catalog.version_files(a)[1]
    return ctx


def test_inputs_granted(tmp_path: Path, workspaces: list[Workspace]) -> None:
    ws = Workspace.open(write_files(tmp_path / "mesh", base_files()))
    workspaces.append(ws)
    ctx = live_context(ws)
    assert check(ctx, "inputs-granted", "alpha.shop-dp") == []  # a file input needs no grant
    [found] = check(ctx, "inputs-granted", "beta.stats-dp")
    assert found.dataset == ITEMS and "beta.stats-dp holds no active grant or role that covers" in found.message
    assert found.fix.startswith(f"`trustmesh access request {ITEMS} --for beta.stats-dp ")

    stats, items = ctx.directory.principals["beta.stats-dp"], ctx.directory.datasets[ITEMS]
    assert not ctx.authorizer().explain(stats, items, ctx.now).allowed  # what the rule's one evaluation says

    grant_product_inputs(ws)
    assert ws.build().ok
    ctx = live_context(ws)
    assert ctx.grants and set(ctx.served) == {ITEMS, CHEAP, DAILY}
    assert check(ctx, "inputs-granted", "beta.stats-dp") == []
    assert ctx.authorizer().explain(stats, items, ctx.now).allowed


PEOPLE_CSV = ("item_id,name,postal_code\n1,apple,018956\n2,pear,018956\n3,plum,520123\n4,fig,018956\n"
              "5,kiwi,018956\n6,lime,018956\n")


def open_data_files(classification: str = "official-open") -> dict[str, Any]:
    files = base_files()
    files[f"{SHOP}/data/items.csv"] = PEOPLE_CSV
    files[f"{SHOP}/sql/items.sql"] = "SELECT item_id, name, postal_code FROM raw_items\n"
    files[f"{SHOP}/sql/cheap_items.sql"] = "SELECT item_id, name FROM raw_items WHERE item_id < 3\n"
    files[ITEMS_CONTRACT] = items_contract(
        ITEM_ID, column("name", "string", description="The name of the item sold."),
        pii("postal_code", "postal-code", masking="generalise", physicalType="VARCHAR", classification=classification))
    files[f"{STATS}/sql/daily_sales.sql"] = ('SELECT postal_code AS sold_on, count(*) AS items, 0.0 AS revenue\n'
                                             'FROM alpha."shop-dp".items GROUP BY 1\n')
    files[DAILY_CONTRACT]["schema"][0]["properties"][0]["logicalType"] = "string"
    return files


def test_open_data_k_anonymity(tmp_path: Path, workspaces: list[Workspace]) -> None:
    ws = built(tmp_path / "open", open_data_files(), workspaces)
    ctx = live_context(ws)
    # postal codes: 018956 five times, 520123 once
    [found] = check(ctx, "open-data-k-anonymity", "alpha.shop-dp")
    assert (found.dataset, found.column) == (ITEMS, None)
    assert "only 1-anonymous over its personal columns postal_code (6 rows in 2 classes); k 5 needed" in found.message
    assert f"trustmesh privacy kanon {ITEMS} --quasi postal_code --k 5" in found.fix
    assert check(ctx, "open-data-k-anonymity", "alpha.shop-dp", k=1) == []
    assert check(ctx, "open-data-k-anonymity", "beta.stats-dp") == []  # no personal columns
    snapshot = ctx.served[ITEMS]["snapshot_id"]
    assert [k for k in ctx.cache if ITEMS in k] == [f"open-data-k-anonymity|{ITEMS}|{snapshot}|postal_code"]

    ctx.files = lambda a: pytest.fail("measured twice")  # the cache answers, per (dataset, snapshot)
    assert len(check(ctx, "open-data-k-anonymity", "alpha.shop-dp", k=2)) == 1
    ctx.cache.clear()
    ctx.files = lambda a: None  # not served
    assert check(ctx, "open-data-k-anonymity", "alpha.shop-dp") == []
    ctx.files = None
    assert check(ctx, "open-data-k-anonymity", "alpha.shop-dp") == []

    closed = built(tmp_path / "closed", open_data_files("official-closed"), workspaces)
    assert check(live_context(closed), "open-data-k-anonymity", "alpha.shop-dp") == []  # not open data
