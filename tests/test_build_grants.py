"""A grant means the same to a product as to a person: a build reads exactly what the gateway would serve.

alpha publishes `people` (an NRIC, a region, a score); beta.reader-dp reads it under a grant. For a
row-filtered, a masked and an aggregate-only grant, the product publishes its input's rows untouched,
and the test compares them with what beta's developer, holding a grant with the same terms, gets from
the gateway for the same SQL.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from meshfactory import base_files, column, contract_yaml, file_input, product_input, product_yaml

from trustmesh.service import Workspace

PEOPLE = "domains/alpha/products/people-dp"
READER = "domains/beta/products/reader-dp"
PEOPLE_CSV = "person_id,nric,region,score\n" + "".join(
    f"{i},S{1000000 + i:07d}{'ABCDEFGHIJ'[i % 10]},{('north', 'south', 'east')[i % 3]},{i * 10}\n" for i in range(1, 31))


def mesh_files(sql: str, out_columns: list[dict[str, Any]], aggregate_only: bool = False,
               masking: str | None = None) -> dict[str, Any]:
    files = base_files()
    nric = column("nric", "string", classification="restricted",
                  customProperties=[{"property": "piiType", "value": "nric"},
                                    {"property": "sensitivity", "value": "sensitive-normal"}]
                  + ([{"property": "masking", "value": masking}] if masking else []))
    contract = contract_yaml("alpha", "people-dp", "people", [
        column("person_id", "integer", required=True, primaryKey=True, primaryKeyPosition=1),
        nric, column("region", "string"), column("score", "integer")])
    if aggregate_only:
        contract["schema"][0]["customProperties"] = [{"property": "aggregateOnly", "value": {"k": 5}}]
    files.update({
        f"{PEOPLE}/product.yaml": product_yaml("alpha", "people-dp", ["people"], [file_input("raw", "data/people.csv")]),
        f"{PEOPLE}/data/people.csv": PEOPLE_CSV,
        f"{PEOPLE}/sql/people.sql": "SELECT person_id, nric, region, CAST(score AS INTEGER) AS score FROM raw\n",
        f"{PEOPLE}/contracts/people.odcs.yaml": contract,
        f"{READER}/product.yaml": product_yaml("beta", "reader-dp", ["seen"], [product_input("alpha.people-dp.people")],
                                              kind="consumer-aligned"),
        f"{READER}/sql/seen.sql": sql,
        f"{READER}/contracts/seen.odcs.yaml": contract_yaml("beta", "reader-dp", "seen", out_columns),
    })
    return files


def grant(ws: Workspace, principal: str | None, **terms: Any) -> None:
    req = ws.access.request("beta-dev", "alpha.people-dp.people", purpose="Compare a product with a person",
                            purpose_category="product-input" if principal else "research", days=30,
                            for_product=principal, **terms)
    while req["state"] == "pending":
        req = ws.access.approve(req["awaiting"][0], req["id"], note="reviewed")
    assert req["state"] == "approved", req


def built_and_queried(make_mesh: Any, files: dict[str, Any], sql: str, **terms: Any) -> tuple[list[Any], list[Any]]:
    """(rows beta.reader-dp published, rows beta-dev reads through the gateway) under grants with `terms`."""
    ws = make_mesh(files, grants=False)
    assert ws.build("alpha").ok
    grant(ws, "beta.reader-dp", **terms)
    grant(ws, None, **terms)
    result = ws.build("beta.reader-dp")
    assert result.ok, result.to_dict()
    _, paths = ws.catalog.version_files("beta.reader-dp.seen")
    import duckdb

    published = sorted(duckdb.sql(f"SELECT * FROM read_parquet({paths!r})").fetchall(), key=repr)
    gateway = ws.gateway.run("beta-dev", sql.replace("FROM people", 'FROM alpha."people-dp".people'), limit=1000)
    return published, sorted([tuple(r.values()) for r in gateway.table.to_pylist()], key=repr)


ROWS_SQL = "SELECT person_id, nric, region, score FROM people\n"
ROWS_COLUMNS = [column("person_id", "integer"), column("nric", "string"), column("region", "string"),
                column("score", "integer")]


def test_a_row_filtered_grant_filters_the_products_input(make_mesh: Any) -> None:
    published, gateway = built_and_queried(make_mesh, mesh_files(ROWS_SQL, copy.deepcopy(ROWS_COLUMNS)), ROWS_SQL,
                                           rows="region = 'north'")
    assert published == gateway
    assert len(published) == 10 and {r[2] for r in published} == {"north"}


def test_a_masked_grant_masks_the_products_input(make_mesh: Any) -> None:
    published, gateway = built_and_queried(make_mesh, mesh_files(ROWS_SQL, copy.deepcopy(ROWS_COLUMNS)), ROWS_SQL)
    assert published == gateway
    assert len(published) == 30
    assert all(r[1].startswith("*****") and not r[1].startswith("S1") for r in published)


def test_an_unmasking_grant_limited_to_some_rows_masks_the_rest(make_mesh: Any) -> None:
    published, gateway = built_and_queried(make_mesh, mesh_files(ROWS_SQL, copy.deepcopy(ROWS_COLUMNS)), ROWS_SQL,
                                           unmask=["nric"], rows="region = 'north'")
    assert published == gateway
    assert {r[2] for r in published} == {"north"} and all(r[1].startswith("S1") for r in published)


AGG_SQL = "SELECT region, count(*) AS people, sum(score) AS total FROM people GROUP BY region\n"


def test_an_aggregate_only_dataset_releases_only_groups_of_k_to_a_product(make_mesh: Any) -> None:
    files = mesh_files(AGG_SQL, [column("region", "string"), column("people", "integer"), column("total", "integer")],
                       aggregate_only=True)
    published, gateway = built_and_queried(make_mesh, files, AGG_SQL, rows="person_id <= 13")
    assert published == gateway
    assert published == [("south", 5, 350)]  # north and east have 4 people each on the granted rows


def test_a_product_may_not_read_an_aggregate_only_dataset_row_by_row(make_mesh: Any) -> None:
    ws = make_mesh(mesh_files(ROWS_SQL, copy.deepcopy(ROWS_COLUMNS), aggregate_only=True), grants=False)
    assert ws.build("alpha").ok
    grant(ws, "beta.reader-dp")
    result = ws.build("beta.reader-dp")
    assert not result.ok
    problem = result.products[0].problems[0]
    assert "aggregate-only" in problem.message and problem.file.endswith("seen.sql")


@pytest.mark.parametrize("declared", ["suppress", "pseudonymise"])
def test_a_row_limited_unmask_falls_back_to_the_contracts_masking(make_mesh: Any, declared: str) -> None:
    """Outside the grant's rows a column is masked the way its contract says, not by its PII type's default."""
    ws = make_mesh(mesh_files(ROWS_SQL, copy.deepcopy(ROWS_COLUMNS), masking=declared), grants=False)
    assert ws.build("alpha").ok
    grant(ws, None, unmask=["nric"], rows="region = 'north'")
    grant(ws, None, rows="region = 'south'")
    table = ws.gateway.run("beta-dev", 'SELECT person_id, nric, region FROM alpha."people-dp".people', limit=100).table
    rows = table.to_pylist()
    south = [r["nric"] for r in rows if r["region"] == "south"]
    assert {r["region"] for r in rows} == {"north", "south"}
    assert all(r["nric"].startswith("S1") for r in rows if r["region"] == "north")
    if declared == "suppress":
        assert south and all(v is None for v in south)
    else:
        assert all(v is not None and len(v) >= 16 and "*" not in v and not v.startswith("S1") for v in south)
