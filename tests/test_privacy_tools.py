"""Privacy tools: `trustmesh scan` finds personal data a contract does not declare; `trustmesh privacy kanon`
measures k-anonymity and suggests the generalisation that reaches k.

k-anonymity is checked against classes counted by hand; the scan runs on a small mesh whose items carry
NRICs, e-mails, phones, postal codes, names and birth dates (all declared but the e-mails), and on the
demo mesh's real products.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import duckdb
import pytest
from meshfactory import base_files, column
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.demo import write_demo
from trustmesh.demo.access import seed_access
from trustmesh.errors import UsageError
from trustmesh.privacy.identifiers import nric_check_letter
from trustmesh.privacy.kanon import k_anonymity, ladder, suggest_generalisation
from trustmesh.privacy.scan import (
    BARE_POSTAL_THRESHOLD,
    is_person_name,
    names_a_person,
    scan_relation,
    scan_values,
)
from trustmesh.service import Workspace

runner = CliRunner()
SHOP = "domains/alpha/products/shop-dp"
ITEMS = "alpha.shop-dp.items"


# -- k-anonymity on data counted by hand -----------------------------------------------------------------

PEOPLE = [  # (age, postal_code, gender)
    (34, "018956", "F"),
    (35, "018957", "F"),
    (34, "018956", "F"),
    (52, "520123", "M"),
    (52, "520123", "M"),
    (52, "520123", "M"),
    (61, "529999", "M"),
]
# Counted by hand over (age, postal_code, gender): two singletons, a pair and a triple.
PEOPLE_CLASSES = [
    ({"age": 35, "postal_code": "018957", "gender": "F"}, 1),
    ({"age": 61, "postal_code": "529999", "gender": "M"}, 1),
    ({"age": 34, "postal_code": "018956", "gender": "F"}, 2),
    ({"age": 52, "postal_code": "520123", "gender": "M"}, 3),
]
# Four people, ages in four 5-year buckets, two postal sectors: no two alike until both are generalised.
RESIDENTS = [(31, "018901"), (33, "018902"), (36, "018903"), (38, "018904"),
             (52, "520001"), (54, "520002"), (57, "520003"), (59, "520004")]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute("CREATE TABLE people (age INTEGER, postal_code VARCHAR, gender VARCHAR)")
    c.executemany("INSERT INTO people VALUES (?, ?, ?)", PEOPLE)
    c.execute("CREATE TABLE residents (age INTEGER, postal_code VARCHAR)")
    c.executemany("INSERT INTO residents VALUES (?, ?)", RESIDENTS)
    yield c
    c.close()


def test_k_anonymity_matches_the_classes_counted_by_hand(con: duckdb.DuckDBPyConnection) -> None:
    report = k_anonymity(con, "SELECT * FROM people", ["age", "postal_code", "gender"], 2)
    assert report["k"] == 1 and not report["satisfied"]
    assert report["rows"] == 7 and report["classes"] == 4
    assert report["classes_below_k"] == 2 and report["rows_below_k"] == 2
    assert [(c["values"], c["size"]) for c in report["smallest_classes"]] == PEOPLE_CLASSES
    # over gender alone: F three times, M four times
    gender = k_anonymity(con, "SELECT * FROM people", ["gender"], 3)
    assert (gender["k"], gender["classes"], gender["satisfied"]) == (3, 2, True)
    assert [(c["values"]["gender"], c["size"]) for c in gender["smallest_classes"]] == [("F", 3), ("M", 4)]


def test_k_anonymity_refuses_unknown_or_missing_quasi_identifiers(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(UsageError, match=r"no column.*zip"):
        k_anonymity(con, "SELECT * FROM people", ["age", "zip"], 2)
    with pytest.raises(UsageError, match="no quasi-identifiers"):
        k_anonymity(con, "SELECT * FROM people", [], 2)
    with pytest.raises(UsageError, match="k 0"):
        k_anonymity(con, "SELECT * FROM people", ["age"], 0)


def test_generalisation_ladders_by_type() -> None:
    assert [r.label for r in ladder("INTEGER")] == ["buckets of 5", "buckets of 10", "buckets of 20", "buckets of 50",
                                                    "suppressed (the column dropped)"]
    assert [r.label for r in ladder("DATE")][:2] == ["year", "decade (e.g. 1980 for 1980-1989)"]
    assert [r.label for r in ladder("VARCHAR", 6)] == ["first 2 characters", "first character",
                                                       "suppressed (the column dropped)"]
    assert [r.label for r in ladder("VARCHAR", 1)] == ["suppressed (the column dropped)"]  # F/M: prefixes change nothing


def test_suggestion_reaches_k_with_the_steps_worked_out_by_hand(con: duckdb.DuckDBPyConnection) -> None:
    # Generalising either column alone leaves everyone unique; 5-year age buckets and 2-digit postal sectors
    # together make four pairs; a fourth of the same decade needs 10-year buckets.
    two = suggest_generalisation(con, "SELECT * FROM residents", ["age", "postal_code"], 2)
    assert two["reached"] and two["k_before"] == 1 and two["k"] == 2 and two["rows_suppressed"] == 0
    assert [(s["column"], s["generalisation"]) for s in two["steps"]] == [
        ("age", "buckets of 5"), ("postal_code", "first 2 characters")]
    four = suggest_generalisation(con, "SELECT * FROM residents", ["age", "postal_code"], 4)
    assert [(s["column"], s["generalisation"], s["k"]) for s in four["steps"]] == [
        ("age", "buckets of 5", 1), ("postal_code", "first 2 characters", 2), ("age", "buckets of 10", 4)]
    assert four["k"] == 4 and four["classes"] == 2
    # the suggested SQL, applied, is k-anonymous
    select = ", ".join(g["sql"] for g in four["generalisation"].values())
    applied = k_anonymity(con, f"SELECT {select} FROM residents", ["age", "postal_code"], 4)
    assert applied["satisfied"] and applied["k"] == 4


def test_suggestion_on_the_people(con: duckdb.DuckDBPyConnection) -> None:
    result = suggest_generalisation(con, "SELECT * FROM people", ["age", "postal_code", "gender"], 2)
    assert result["reached"] and result["k"] >= 2
    select = ", ".join(g["sql"] for g in result["generalisation"].values())
    assert k_anonymity(con, f"SELECT {select} FROM people", ["age", "postal_code", "gender"], 2)["satisfied"]
    # gender (one letter) has no prefix rung, and no column is suppressed while another rung is left
    assert all("suppressed" not in s["generalisation"] for s in result["steps"])
    # with 2 of 7 rows allowed to go, the two singletons are suppressed instead of generalising anything
    budget = suggest_generalisation(con, "SELECT * FROM people", ["age", "postal_code", "gender"], 2,
                                    max_suppression=2 / 7)
    assert budget["reached"] and budget["steps"] == [] and budget["rows_suppressed"] == 2 and budget["k"] == 2
    # fewer rows than k: nothing reaches it
    assert not suggest_generalisation(con, "SELECT * FROM people", ["gender"], 8)["reached"]


# -- detectors ------------------------------------------------------------------------------------------


def nric(prefix: str, digits: str) -> str:
    return prefix + digits + nric_check_letter(prefix, digits)


def test_detectors_on_values() -> None:
    ids = [nric("S", f"{1234560 + i}") for i in range(9)] + [nric("T", "0123456")]
    assert scan_values("id_no", "VARCHAR", ids).pii_type == "nric"
    assert scan_values("id_no", "VARCHAR", ids).detected
    wrong = [i[:-1] + ("A" if i[-1] != "A" else "B") for i in ids]  # same shape, wrong check letters
    assert not scan_values("id_no", "VARCHAR", wrong).detected
    assert scan_values("contact", "VARCHAR", ["+65 9123 4567", "61234567", "+6581234567"]).pii_type == "phone"
    assert scan_values("mail", "VARCHAR", ["a.b@gov.sg", "x@example.com"]).pii_type == "email"
    postal = scan_values("postal_code", "VARCHAR", ["018956", "520123", "829999"])
    assert postal.pii_type == "postal-code" and postal.rate == 1.0 and postal.threshold == 0.8
    assert scan_values("home_zip", "BIGINT", [18956, 520123]).pii_type == "postal-code"  # leading zero lost
    # six-digit numbers without a postal name are not postal codes; as text, only at a high rate and not a key
    assert not scan_values("flight_id", "BIGINT", [123456, 234567, 345678]).detected
    bare = scan_values("loc", "VARCHAR", ["018956", "520123", "829999"])
    assert bare.detected and bare.threshold == BARE_POSTAL_THRESHOLD
    assert not scan_values("loc", "VARCHAR", ["018956", "520123", "829999"], key=True).detected
    assert not scan_values("loc", "VARCHAR", ["018956", "520123", "999999", "000001"]).detected  # not sectors
    today = date(2025, 6, 1)
    dob = scan_values("date_of_birth", "DATE", [date(1950, 1, 1), date(2001, 7, 9)], today=today)
    assert dob.pii_type == "date-of-birth" and dob.detected
    assert not scan_values("birth_date", "DATE", [date(1850, 1, 1), date(2030, 1, 1)], today=today).detected
    assert not scan_values("sold_on", "DATE", [date(1990, 1, 1)], today=today).detected  # no birth in the name
    assert scan_values("full_name", "VARCHAR", ["Tan Wei Ming", "Ravi s/o Kumar", "Nur Aisyah binte Rahman"]).detected
    assert not scan_values("name", "VARCHAR", ["apple", "pear", "plum"]).detected
    assert not scan_values("name", "VARCHAR", ["Delta Air Lines Inc.", "Endeavor Air Inc.", "JetBlue Airways"]).detected


def test_person_name_heuristics() -> None:
    assert is_person_name("Lim Bee Yi") and is_person_name("Revathi d/o Menon")
    assert not is_person_name("Madonna") and not is_person_name("A B C D E")
    assert not is_person_name("JFK LGA") and not is_person_name("Changi Airport")
    assert names_a_person("full_name") and names_a_person("name") and names_a_person("firstName")
    assert not names_a_person("carrier_name") and not names_a_person("username") and not names_a_person("filename")


def test_scan_finds_nothing_in_ordinary_columns() -> None:
    c = duckdb.connect()
    c.execute("CREATE TABLE items AS SELECT range AS item_id, range * 1.5 AS price, DATE '2024-01-01' + "
              "CAST(range AS INTEGER) AS sold_on, 'item ' || range AS name FROM range(100000, 101000)")
    report = scan_relation(c, "SELECT * FROM items", keys={"item_id"})
    assert report.sampled == 1000 and report.detected == [] and report.undeclared == []
    assert {col.status for col in report.columns} == {"clean"}


# -- scan and kanon on a small mesh ---------------------------------------------------------------------

BUYERS = [  # name, nric digits, email, phone, postal code, birth date
    ("Tan Wei Ming", "S", "1234567", "tan.wm@example.com", "+65 9123 4567", "018956", "1980-03-04"),
    ("Nur Aisyah binte Rahman", "T", "0312345", "aisyah@example.sg", "+65 8234 5678", "520123", "2003-11-30"),
    ("Ravi s/o Kumar", "S", "7654321", "ravi.k@example.com", "+65 6345 6789", "310045", "1976-08-15"),
    ("Mary Tan", "F", "2345678", "mary@example.org", "+65 9456 7890", "018957", "1990-01-01"),
    ("Lim Bee Yi", "G", "3456789", "lim.by@example.com", "+65 8567 8901", "529999", "1965-12-24"),
    ("Ahmad Ismail", "S", "8765432", "ahmad@example.gov.sg", "+65 9678 9012", "760321", "1958-05-05"),
]


def pii(pii_type: str, sensitivity: str = "sensitive-normal") -> list[dict[str, Any]]:
    return [{"property": "piiType", "value": pii_type}, {"property": "sensitivity", "value": sensitivity}]


def scan_files_() -> dict[str, Any]:
    """The base mesh, alpha's items with the buyer's NRIC, phone, postal code, name and birth date (all
    declared as personal data) and e-mail (NOT declared); alpha also has an analyst who is no custodian."""
    files = base_files()
    files["domains/alpha/domain.yaml"]["people"].append(
        {"id": "alpha-analyst", "name": "Alpha Analyst", "email": "analyst@example.gov.sg", "roles": ["developer"]})
    lines = [f"{i},item{i},{0.5 * i},2024-01-0{1 + i % 3},{nric(p, d)},{mail},{phone},{postal},{name},{born}"
             for i, (name, p, d, mail, phone, postal, born) in enumerate(BUYERS, start=1)]
    files[f"{SHOP}/data/items.csv"] = ("item_id,name,price,sold_on,buyer_nric,buyer_email,buyer_phone,postal_code,"
                                       "buyer_name,buyer_birth_date\n" + "\n".join(lines) + "\n")
    files[f"{SHOP}/sql/items.sql"] = (
        "SELECT item_id, name, price, sold_on, buyer_nric, buyer_email, buyer_phone,\n"
        "    lpad(CAST(postal_code AS VARCHAR), 6, '0') AS postal_code, buyer_name,\n"
        "    CAST(buyer_birth_date AS DATE) AS buyer_birth_date\nFROM raw_items\n")
    props = files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"]
    props += [
        column("buyer_nric", "string", classification="restricted", customProperties=pii("nric", "sensitive-high")),
        column("buyer_email", "string", physicalType="VARCHAR"),  # personal data, not declared
        column("buyer_phone", "string", classification="restricted", customProperties=pii("phone")),
        column("postal_code", "string", physicalType="VARCHAR", classification="restricted",
               customProperties=pii("postal-code")),
        column("buyer_name", "string", classification="restricted", customProperties=pii("name")),
        column("buyer_birth_date", "date", physicalType="DATE", classification="restricted",
               customProperties=pii("date-of-birth")),
    ]
    return files


@pytest.fixture
def shop(make_mesh: Any) -> Workspace:
    ws: Workspace = make_mesh(scan_files_())
    result = ws.build()
    assert result.ok, [r.to_dict() for r in result.products if r.status != "published"]
    return ws


def cli(ws: Workspace, *args: str) -> Any:
    return runner.invoke(app, [*args, "--mesh", str(ws.root)], env={"COLUMNS": "160"})


def test_scan_finds_each_type_and_flags_only_the_undeclared_one(shop: Workspace) -> None:
    result = cli(shop, "scan", ITEMS, "--as", "alpha-steward", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == ITEMS and report["version"] == 1 and report["sampled"] == len(BUYERS)
    assert report["detected"] == {"buyer_nric": "nric", "buyer_email": "email", "buyer_phone": "phone",
                                  "postal_code": "postal-code", "buyer_name": "name",
                                  "buyer_birth_date": "date-of-birth"}
    assert report["undeclared"] == ["buyer_email"] and report["ok"] is False
    by_column = {c["column"]: c for c in report["columns"]}
    assert by_column["buyer_email"]["status"] == "undeclared" and by_column["buyer_email"]["declared"] is None
    assert (by_column["buyer_nric"]["status"], by_column["buyer_nric"]["rate"], by_column["buyer_nric"]["threshold"]) \
        == ("declared", 1.0, 0.8)
    for ordinary in ("item_id", "name", "price", "sold_on"):
        assert by_column[ordinary]["status"] == "clean" and by_column[ordinary]["detected"] is None, ordinary
    assert report["recorded"] is None and shop.catalog.findings(ITEMS) == []
    # the table says the same, for people
    table = cli(shop, "scan", ITEMS, "--as", "alpha-steward")
    assert table.exit_code == 1 and "UNDECLARED" in table.stdout and "buyer_email (email)" in table.stdout


def test_scan_record_adds_one_finding_per_undeclared_column(shop: Workspace) -> None:
    for _ in range(2):  # a second scan replaces the first's findings
        result = cli(shop, "scan", ITEMS, "--record", "--as", "gdo", "--json")
        assert result.exit_code == 1 and json.loads(result.stdout)["recorded"] == 1
    findings = shop.catalog.findings(ITEMS)
    assert [(f["kind"], f["severity"], f["column"], f["version"], f["build_id"]) for f in findings] == [
        ("undeclared-pii", "error", "buyer_email", 1, "scan")]
    assert "piiType: email" in findings[0]["message"]
    refused = cli(shop, "scan", ITEMS, "--record", "--version", "2", "--as", "gdo")
    assert refused.exit_code == 2 and "served version" in refused.output


def test_scan_of_a_clean_dataset_exits_0(shop: Workspace) -> None:
    result = cli(shop, "scan", "alpha.shop-dp.cheap_items", "--as", "alpha-dev", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["detected"] == {} and report["undeclared"] == [] and report["ok"] is True
    stats = cli(shop, "privacy", "scan", "beta.stats-dp.daily_sales", "--sample", "2", "--as", "beta-owner", "--json")
    assert stats.exit_code == 0 and json.loads(stats.stdout)["sampled"] == 2


def test_scan_is_for_custodians_and_governance_admins(shop: Workspace) -> None:
    for outsider in ("beta-steward", "alpha-analyst"):  # another domain's steward; alpha's developer only
        result = cli(shop, "scan", ITEMS, "--as", outsider)
        assert result.exit_code == 1
        assert f"{outsider} may not scan {ITEMS}" in result.output and "alpha-steward" in result.output
    assert cli(shop, "scan", ITEMS).exit_code == 2  # who is acting?
    assert cli(shop, "scan", "alpha.shop-dp.nothing", "--as", "gdo").exit_code == 1  # no such dataset
    assert cli(shop, "scan", ITEMS, "--sample", "0", "--as", "gdo").exit_code == 2


def test_kanon_cli_on_a_dataset_and_on_a_governed_query(shop: Workspace) -> None:
    # sold_on is day 1 + i % 3 of item i = 1..6: days 2, 3, 1, 2, 3, 1, so three classes of two
    result = cli(shop, "privacy", "kanon", ITEMS, "--quasi", "sold_on", "--k", "2", "--as", "alpha-steward", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["k"], report["classes"], report["satisfied"]) == (2, 3, True)
    assert report["source"] == {"dataset": ITEMS, "version": 1}
    unique = cli(shop, "privacy", "kanon", ITEMS, "--quasi", "postal_code,sold_on", "--k", "3", "--as", "alpha-steward",
                 "--json")
    assert unique.exit_code == 1
    worse = json.loads(unique.stdout)
    assert worse["k"] == 1 and worse["rows_below_k"] == 6 and worse["suggestion"]["reached"]
    assert worse["suggestion"]["k"] >= 3
    shown = cli(shop, "privacy", "kanon", ITEMS, "--quasi", "postal_code,sold_on", "--k", "3", "--as", "gdo")
    assert shown.exit_code == 1 and "to reach k = 3" in shown.stdout and "smallest classes" in shown.stdout
    # the dataset itself is for custodians; a governed query of it is anyone's who may run it
    refused = cli(shop, "privacy", "kanon", ITEMS, "--quasi", "sold_on", "--as", "alpha-analyst")
    assert refused.exit_code == 1 and "--sql" in refused.output
    own = cli(shop, "privacy", "kanon", "--sql", 'SELECT price, sold_on FROM alpha."shop-dp".items',
              "--quasi", "sold_on", "--k", "2", "--as", "alpha-analyst", "--json")
    assert own.exit_code == 0, own.output
    assert json.loads(own.stdout)["source"]["datasets"] == {ITEMS: 1}
    assert cli(shop, "privacy", "kanon", "--quasi", "sold_on", "--as", "gdo").exit_code == 2  # neither
    assert cli(shop, "privacy", "kanon", ITEMS, "--quasi", "colour", "--as", "gdo").exit_code == 2


# -- the demo mesh --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("privacy-demo") / "mesh"
    write_demo(root)
    ws = Workspace.open(root)
    seed_access(ws)
    result = ws.build()
    assert result.ok, [r.to_dict() for r in result.products if r.status != "published"]
    yield ws
    ws.close()


def demo_scan(ws: Workspace, address: str, person: str) -> dict[str, Any]:
    result = runner.invoke(app, ["scan", address, "--as", person, "--json", "--mesh", str(ws.root)])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize(("address", "steward"), [("health.activity-dp.participants", "nurul"),
                                                  ("commuter.trips-dp.commuters", "amirah")])
def test_demo_scan_finds_the_declared_personal_data(demo: Workspace, address: str, steward: str) -> None:
    report = demo_scan(demo, address, steward)
    assert report["undeclared"] == []
    statuses = {c["column"]: (c["detected"], c["status"]) for c in report["columns"]}
    for col, pii_type in [("nric", "nric"), ("phone", "phone"), ("postal_code", "postal-code"),
                          ("date_of_birth", "date-of-birth"), ("full_name", "name")]:
        assert statuses[col] == (pii_type, "declared"), col


def test_demo_scan_finds_nothing_undeclared_in_flights(demo: Workspace) -> None:
    report = demo_scan(demo, "bts.flights-dp.flights", "grace")
    assert report["sampled"] == 10_000 and report["undeclared"] == [] and report["detected"] == {}
    # the same sample every time
    assert demo_scan(demo, "bts.flights-dp.flights", "grace")["columns"] == report["columns"]


def test_demo_kanon_of_a_governed_query_reaches_k(demo: Workspace) -> None:
    sql = ("SELECT date_diff('year', date_of_birth, DATE '2025-01-01') AS age, postal_code, gender "
           'FROM health."activity-dp".participants')
    result = runner.invoke(app, ["privacy", "kanon", "--sql", sql, "--quasi", "age,postal_code,gender", "--k", "5",
                                 "--as", "nurul", "--json", "--mesh", str(demo.root)])
    assert result.exit_code == 1, result.output  # exact age, postal code and gender single out almost everyone
    report = json.loads(result.stdout)
    assert report["k"] == 1 and report["rows"] == 3000
    suggestion = report["suggestion"]
    assert suggestion["reached"] and suggestion["k"] >= 5 and suggestion["rows_suppressed"] == 0
    generalised = suggestion["generalisation"]
    assert generalised["postal_code"]["generalisation"] in ("first 2 characters", "first character")
