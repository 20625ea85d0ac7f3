"""Governed queries end to end: the demo's done-when (masked for one, clear for another, linkage without
identifiers), the CLI, the API and the SDK, row filters on grants and contracts, aggregate-only access, and
the validation of linkage purposes.

The demo mesh is written, seeded and built once for the module; the row-filter and validation tests use small
meshes from meshfactory.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from meshfactory import ITEMS_CSV, base_files, column, domain_yaml, person
from typer.testing import CliRunner

import trustmesh
from trustmesh.cli import app
from trustmesh.demo import write_demo
from trustmesh.demo.access import seed_access
from trustmesh.errors import UsageError
from trustmesh.privacy.identifiers import is_valid_nric
from trustmesh.query.guard import QueryRefused
from trustmesh.service import Workspace
from trustmesh.web.app import create_app

runner = CliRunner()

PARTICIPANTS = "health.activity-dp.participants"
DAILY = "health.activity-dp.daily_activity"
ACTIVITY_TOKENS = "health.activity-dp.activity_tokens"
TRIP_TOKENS = "commuter.trips-dp.trip_tokens"
COMMUTERS = "commuter.trips-dp.commuters"
RELEASE = "transport-tc.active-commuting-dp.active_commuting"
SAME_QUERY = "SELECT participant_id, nric FROM health.activity-dp.participants ORDER BY 1"
UNGRANTED = "SELECT * FROM bts.flights-dp.flights"
MASKED_NRIC = re.compile(r"\*{5}[0-9]{3}[A-Z]")
TOKEN = re.compile(r"[0-9a-f]{64}")
NRIC_IN_TEXT = re.compile(r"[STFGM][0-9]{7}[A-Z]", re.I)
AGGREGATE_ONLY = "is aggregate-only for you"
ENV = ("TRUSTMESH_USER", "TRUSTMESH_SERVER", "TRUSTMESH_TOKEN", "TRUSTMESH_MESH", "TRUSTMESH_METASTORE_URL")


@pytest.fixture(autouse=True)
def _no_session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def approve_all(ws: Workspace, req: dict[str, Any]) -> dict[str, Any]:
    while req["state"] == "pending":
        req = ws.access.approve(req["awaiting"][0], req["id"], note="purpose and columns reviewed")
    assert req["state"] == "approved", req
    return req


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("demo") / "mesh"
    write_demo(root)
    ws = Workspace.open(root)
    assert seed_access(ws)
    result = ws.build()
    assert result.ok, [r.to_dict() for r in result.products if r.status != "published"]
    # jiahui (transport-tc) reads the aggregate-only daily activity through the workflow: every column
    approve_all(ws, ws.access.request(
        "jiahui", DAILY, purpose="Daily activity statistics for the active-mobility study", purpose_category="research",
        days=30))
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def raw(demo: Workspace) -> dict[str, Any]:
    """What only the platform reads: the raw identifiers of both domains."""
    participants = demo.catalog.read(PARTICIPANTS)
    commuters = demo.catalog.read(COMMUTERS)
    return {"participants": dict(zip(participants.column("participant_id").to_pylist(),
                                     participants.column("nric").to_pylist(), strict=True)),
            "commuters": commuters.column("nric").to_pylist()}


def query_log(ws: Workspace) -> list[dict[str, Any]]:
    return ws.audit.log("priya", type="query.", limit=None)


def flat(text: str) -> str:
    """Terminal output with Rich's line wrapping undone."""
    return " ".join(text.split())


# -- 1. the demo's done-when -----------------------------------------------------------------------------


def test_the_same_query_is_masked_for_irfan_and_clear_for_huimin(demo: Workspace, raw: dict[str, Any]) -> None:
    before = {e["details"]["query"] for e in query_log(demo)}
    irfan = demo.query("irfan", SAME_QUERY)
    huimin = demo.query("huimin", SAME_QUERY)
    participants = raw["participants"]
    assert irfan.table.num_rows == huimin.table.num_rows == len(participants) == 3000
    assert not irfan.truncated and not huimin.truncated

    masked = irfan.table.to_pylist()
    assert [r["participant_id"] for r in masked] == sorted(participants)
    for row in masked:
        assert MASKED_NRIC.fullmatch(row["nric"]), row
        assert row["nric"] == "*****" + participants[row["participant_id"]][-4:]
    assert not set(participants.values()) & {r["nric"] for r in masked}
    assert irfan.masked[f"{PARTICIPANTS}.nric"]["strategy"] == "mask"

    clear = huimin.table.to_pylist()
    assert [r["participant_id"] for r in clear] == sorted(participants)
    for row in clear:
        assert is_valid_nric(row["nric"]), row
        assert row["nric"] == participants[row["participant_id"]]
    assert f"{PARTICIPANTS}.nric" not in huimin.masked

    log = {e["details"]["query"]: e for e in query_log(demo) if e["details"]["query"] not in before}
    assert set(log) == {irfan.query_id, huimin.query_id}
    assert (log[irfan.query_id]["type"], log[irfan.query_id]["actor"]) == ("query.run", "irfan")
    assert (log[huimin.query_id]["type"], log[huimin.query_id]["actor"]) == ("query.run", "huimin")
    assert log[irfan.query_id]["details"]["masked"] == {f"{PARTICIPANTS}.nric": "mask",
                                                        f"{PARTICIPANTS}.postal_code": "generalise"}
    assert log[huimin.query_id]["details"]["masked"] == {}


def test_the_linkage_release_is_published_in_groups_of_five_without_identifiers(
        demo: Workspace, raw: dict[str, Any]) -> None:
    assert demo.catalog.versions(RELEASE), "active_commuting was not published"
    release = demo.catalog.read(RELEASE)
    assert release.num_rows > 0
    assert all(people >= 5 for people in release.column("people").to_pylist())

    nrics = set(raw["participants"].values()) | set(raw["commuters"])
    assert len(nrics) > 4000 and all(is_valid_nric(n) for n in nrics)
    for address in (RELEASE, ACTIVITY_TOKENS, TRIP_TOKENS):
        _, files = demo.catalog.version_files(address)
        assert files
        for file in files:
            table = pq.read_table(file)
            assert "nric" not in table.column_names
            text = json.dumps(table.to_pylist(), default=str)
            found = {m.group(0).upper() for m in NRIC_IN_TEXT.finditer(text)}
            assert not found & nrics, f"{address} ({file}) holds raw identifiers: {sorted(found & nrics)[:3]}"

    key = demo.keys.key("linkage:active-commuting")

    def token(nric: str) -> str:
        return hmac.new(key, nric.encode(), hashlib.sha256).hexdigest()

    health = demo.catalog.read(ACTIVITY_TOKENS).column("person_token").to_pylist()
    commuter = demo.catalog.read(TRIP_TOKENS).column("person_token").to_pylist()
    assert all(t is not None and TOKEN.fullmatch(t) for t in health + commuter)
    assert set(health) == {token(n) for n in raw["participants"].values()}
    assert set(commuter) == {token(n) for n in raw["commuters"]}
    shared = sorted(set(raw["participants"].values()) & set(raw["commuters"]))
    assert shared, "the demo has no person in both domains"
    for nric in shared[:3]:  # the same person has the same token in both domains
        assert token(nric) in health and token(nric) in commuter
    assert len(set(health) & set(commuter)) == len(shared)


def test_the_release_is_k_anonymous_by_the_privacy_tool(demo: Workspace) -> None:
    result = runner.invoke(app, ["privacy", "kanon", RELEASE, "--quasi", "journeys_band,main_mode,activity_band",
                                 "--weight", "people", "--as", "ravi", "--json", "--mesh", str(demo.root)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["k"] >= 5 and report["satisfied"] and report["classes_below_k"] == 0
    assert report["source"]["dataset"] == RELEASE


def test_every_query_run_or_refused_is_audited(demo: Workspace) -> None:
    before = len(query_log(demo))
    ran = [demo.query("irfan", "SELECT gender, count(*) AS n FROM health.activity-dp.participants GROUP BY 1"),
           demo.query("huimin", SAME_QUERY, limit=5)]
    with pytest.raises(QueryRefused) as refused:
        demo.query("irfan", UNGRANTED)
    log = query_log(demo)
    assert len(log) == before + 3
    new = log[:3]  # newest first
    assert new[0]["type"] == "query.refused" and new[0]["actor"] == "irfan"
    assert new[0]["details"]["reason"] == str(refused.value)
    assert [(e["type"], e["actor"], e["details"]["query"]) for e in reversed(new[1:])] == [
        ("query.run", r.principal, r.query_id) for r in ran]
    assert new[1]["details"]["truncated"] is True and new[1]["details"]["rows"] == 5


# -- 2. the CLI ------------------------------------------------------------------------------------------


def cli(demo: Workspace, *args: str) -> Any:
    return runner.invoke(app, ["query", *args, "--mesh", str(demo.root)])


def test_cli_table_with_a_footer_naming_masked_columns(demo: Workspace, raw: dict[str, Any]) -> None:
    result = cli(demo, SAME_QUERY, "--limit", "4", "--as", "irfan")
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert "participant_id" in out and "nric" in out
    for pid in sorted(raw["participants"])[:4]:
        nric = raw["participants"][pid]
        assert f"{pid} │ *****{nric[-4:]}" in out and nric not in out
    assert "4 rows (truncated at the limit)" in out
    assert f"read {PARTICIPANTS} v1" in out
    assert f"masked {PARTICIPANTS}.nric: character masking" in out
    assert f"masked {PARTICIPANTS}.postal_code: generalised" in out
    assert f"not granted: {PARTICIPANTS}.full_name" in out


def read_back(path: Path, format: str) -> pa.Table:
    if format == "csv":
        return pacsv.read_csv(path)
    if format == "json":
        return pa.Table.from_pylist(json.loads(path.read_text())["rows"])
    if format == "parquet":
        return pq.read_table(path)
    with ipc.open_stream(pa.OSFile(str(path))) as reader:
        return reader.read_all()


@pytest.mark.parametrize("format", ["csv", "json", "parquet", "arrow"])
def test_cli_writes_each_format_to_a_file(demo: Workspace, raw: dict[str, Any], tmp_path: Path, format: str) -> None:
    output = tmp_path / f"result.{format}"
    result = cli(demo, SAME_QUERY, "--format", format, "--limit", "50", "--output", str(output), "--as", "irfan")
    assert result.exit_code == 0, result.output
    assert "wrote 50 rows" in flat(result.stdout)
    footer = flat(result.stderr)
    assert f"masked {PARTICIPANTS}.nric" in footer and "truncated at the limit" in footer
    assert not list(tmp_path.glob("*.partial"))
    table = read_back(output, format)
    rows = table.to_pylist()
    assert table.column_names == ["participant_id", "nric"] and len(rows) == 50
    expected = sorted(raw["participants"])[:50]
    assert [r["participant_id"] for r in rows] == expected
    for row in rows:
        assert MASKED_NRIC.fullmatch(row["nric"]), row
        assert row["nric"] == "*****" + raw["participants"][row["participant_id"]][-4:]
    if format == "json":
        info = json.loads(output.read_text())
        assert info["truncated"] is True and info["principal"] == "irfan"
        assert info["masked"][f"{PARTICIPANTS}.nric"]["strategy"] == "mask"


def test_cli_csv_to_stdout_and_the_limit(demo: Workspace) -> None:
    result = cli(demo, SAME_QUERY, "--format", "csv", "--limit", "3", "--as", "huimin")
    assert result.exit_code == 0, result.output
    table = pacsv.read_csv(io.BytesIO(result.stdout.encode()))
    assert table.num_rows == 3 and all(is_valid_nric(n) for n in table.column("nric").to_pylist())
    assert "3 rows (truncated at the limit)" in flat(result.stderr)
    whole = cli(demo, SAME_QUERY, "--format", "json", "--limit", "5000", "--as", "huimin")
    assert whole.exit_code == 0, whole.output
    info = json.loads(whole.stdout)
    assert info["truncated"] is False and len(info["rows"]) == 3000
    assert "truncated" not in flat(whole.stderr)


def test_cli_refusals_and_usage(demo: Workspace) -> None:
    refused = cli(demo, UNGRANTED, "--as", "irfan")
    assert refused.exit_code == 1, refused.output
    assert "holds no active grant" in flat(refused.output) and "bts.flights-dp.flights" in refused.output
    nobody = cli(demo, SAME_QUERY)
    assert nobody.exit_code == 2, nobody.output
    assert "--as PERSON" in flat(nobody.output) and "TRUSTMESH_USER" in nobody.output
    bad_format = cli(demo, SAME_QUERY, "--format", "xml", "--as", "irfan")
    assert bad_format.exit_code == 2 and "--format 'xml'" in bad_format.output
    bad_limit = cli(demo, SAME_QUERY, "--limit", "0", "--as", "irfan")
    assert bad_limit.exit_code == 1 and "--limit 0" in bad_limit.output
    not_a_read = cli(demo, "DROP VIEW x", "--as", "irfan")
    assert not_a_read.exit_code == 1 and "only read queries" in flat(not_a_read.output)


def test_hyphenated_names_need_no_quotes(demo: Workspace) -> None:
    """Addresses are written as everywhere else: `transport-tc.punctuality-dp.x`, quoted or not, part or whole."""
    counts = set()
    for table in ("transport-tc.punctuality-dp.monthly_carrier_punctuality",
                  '"transport-tc".punctuality-dp.monthly_carrier_punctuality',
                  'transport-tc."punctuality-dp".monthly_carrier_punctuality'):
        result = cli(demo, f"SELECT count(*) AS n, 10 - 3 AS seven FROM {table}", "--format", "json", "--as", "ravi")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["rows"]
        assert rows[0]["seven"] == 7
        counts.add(rows[0]["n"])
    assert len(counts) == 1 and counts.pop() > 0
    typo = cli(demo, "SELECT * FROM transport-tc.punctuallity-dp.monthly_carrier_punctuality", "--as", "ravi")
    assert typo.exit_code == 1, typo.output
    assert "must be quoted" in flat(typo.output) and "catalog list" in flat(typo.output)


# -- 3. the API ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(demo: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(demo)) as c:
        yield c


@pytest.fixture(scope="module")
def irfan_token(demo: Workspace) -> dict[str, str]:
    token, _ = demo.tokens.issue("irfan", "irfan", name="tests", days=30)
    return {"Authorization": f"Bearer {token}"}


def test_api_query_as_json(client: TestClient, irfan_token: dict[str, str], raw: dict[str, Any]) -> None:
    response = client.post("/api/v1/query", json={"sql": SAME_QUERY, "limit": 10}, headers=irfan_token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["principal"] == "irfan" and body["datasets"] == {PARTICIPANTS: 1}
    assert body["truncated"] is True
    assert [c["name"] for c in body["columns"]] == ["participant_id", "nric"]
    assert [r["participant_id"] for r in body["rows"]] == sorted(raw["participants"])[:10]
    assert all(MASKED_NRIC.fullmatch(r["nric"]) for r in body["rows"])
    assert body["masked"][f"{PARTICIPANTS}.nric"] == {"strategy": "mask",
                                                      "how": "character masking: last 3 digits and check letter"}
    assert set(body["withheld"]) == {f"{PARTICIPANTS}.{c}" for c in ("full_name", "date_of_birth", "phone")}
    assert body["row_filters"] == {}


def test_api_query_as_arrow(client: TestClient, irfan_token: dict[str, str]) -> None:
    response = client.post("/api/v1/query", json={"sql": SAME_QUERY, "limit": 7, "format": "arrow"},
                           headers=irfan_token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.apache.arrow.stream")
    table = ipc.open_stream(io.BytesIO(response.content)).read_all()
    assert table.column_names == ["participant_id", "nric"] and table.num_rows == 7
    assert all(MASKED_NRIC.fullmatch(n) for n in table.column("nric").to_pylist())
    header = json.loads(response.headers["x-trustmesh-query"])
    assert header["principal"] == "irfan" and header["rows"] == 7 and header["truncated"] is True
    assert header["datasets"] == {PARTICIPANTS: 1}
    assert header["masked"][f"{PARTICIPANTS}.nric"]["strategy"] == "mask"


def test_api_refusals(client: TestClient, irfan_token: dict[str, str]) -> None:
    anonymous = client.post("/api/v1/query", json={"sql": SAME_QUERY})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in anonymous.json()["error"]
    wrong = client.post("/api/v1/query", json={"sql": SAME_QUERY}, headers={"Authorization": "Bearer tmk_nope"})
    assert wrong.status_code == 401
    refused = client.post("/api/v1/query", json={"sql": UNGRANTED}, headers=irfan_token)
    assert refused.status_code == 403, refused.text
    assert "holds no active grant" in refused.json()["error"]
    extra = client.post("/api/v1/query", json={"sql": SAME_QUERY, "as": "huimin"}, headers=irfan_token)
    assert extra.status_code == 422, extra.text
    bad_format = client.post("/api/v1/query", json={"sql": SAME_QUERY, "format": "csv"}, headers=irfan_token)
    assert bad_format.status_code == 422, bad_format.text
    no_sql = client.post("/api/v1/query", json={"limit": 3}, headers=irfan_token)
    assert no_sql.status_code == 422, no_sql.text


# -- 4. the SDK ------------------------------------------------------------------------------------------


def test_sdk_connect_and_sql(demo: Workspace, raw: dict[str, Any]) -> None:
    with trustmesh.connect(demo.root, as_="irfan") as con:
        result = con.sql(SAME_QUERY, limit=20)
        table = result.arrow()
        assert isinstance(table, pa.Table) and table.num_rows == 20
        frame = result.df()
        assert list(frame.columns) == ["participant_id", "nric"] and len(frame) == 20
        assert all(MASKED_NRIC.fullmatch(n) for n in frame["nric"])
        assert list(frame["participant_id"]) == sorted(raw["participants"])[:20]
        assert result.masked[f"{PARTICIPANTS}.nric"]["strategy"] == "mask"
        assert result.info["truncated"] is True and result.info["principal"] == "irfan"
        with pytest.raises(QueryRefused, match="holds no active grant"):
            con.sql(UNGRANTED)
    with trustmesh.connect(str(demo.root), as_="huimin") as con:
        clear = con.sql(SAME_QUERY, limit=5).df()
        assert all(is_valid_nric(n) for n in clear["nric"])


def test_sdk_needs_a_principal(demo: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="who is querying"):
        trustmesh.connect(demo.root)
    monkeypatch.setenv("TRUSTMESH_USER", "irfan")
    with trustmesh.connect(demo.root) as con:
        assert con.principal == "irfan"
        assert con.sql("SELECT count(*) AS n FROM health.activity-dp.participants").arrow().to_pylist() == [
            {"n": 3000}]


# -- 5. row filters --------------------------------------------------------------------------------------

ITEMS = "alpha.shop-dp.items"
Q_ITEMS = 'SELECT * FROM alpha."shop-dp".items ORDER BY item_id'
PURPOSE = "Quarterly sales report to the Ministry"


def grant(ws: Workspace, who: str, **kw: Any) -> dict[str, Any]:
    return approve_all(ws, ws.access.request(who, ITEMS, purpose=PURPOSE, purpose_category="statistics", days=30,
                                             **kw))


@pytest.fixture
def shop(make_mesh: Any) -> Workspace:
    ws: Workspace = make_mesh(base_files())
    assert ws.build().ok
    return ws


def test_a_grant_with_rows_shows_only_those_rows(shop: Workspace) -> None:
    granted = grant(shop, "beta-dev", rows="price < 1.8")
    assert granted["rows"] == "price < 1.8"
    result = shop.query("beta-dev", Q_ITEMS)
    assert [(r["item_id"], r["name"], r["price"]) for r in result.table.to_pylist()] == [
        (1, "apple", 1.5), (3, "plum", 0.5)]
    assert result.row_filters == {ITEMS: "(price < 1.8)"}
    assert shop.query("beta-dev", f"SELECT count(*) AS n, sum(price) AS total FROM {ITEMS}").table.to_pylist() == [
        {"n": 2, "total": 2.0}]
    # the pear is not there, whatever the consumer's own WHERE says
    assert shop.query("beta-dev", f"SELECT * FROM {ITEMS} WHERE name = 'pear' OR price >= 1.8").table.num_rows == 0
    # the domain's own people are not filtered
    assert shop.query("alpha-steward", Q_ITEMS).table.num_rows == 3


def test_each_column_only_on_the_rows_of_a_grant_that_covers_it(shop: Workspace) -> None:
    grant(shop, "beta-dev", columns=["item_id", "price"], rows="price < 1.8")
    grant(shop, "beta-dev", columns=["item_id", "name"], rows="price >= 1.8")
    result = shop.query("beta-dev", Q_ITEMS)
    assert result.table.column_names == ["item_id", "name", "price"]
    assert result.table.to_pylist() == [
        {"item_id": 1, "name": None, "price": 1.5},
        {"item_id": 2, "name": "pear", "price": None},
        {"item_id": 3, "name": None, "price": 0.5},
    ]
    assert result.withheld == [f"{ITEMS}.sold_on"]
    # filtering or aggregating on a column sees only its visible values
    assert shop.query("beta-dev", f"SELECT item_id FROM {ITEMS} WHERE name IS NOT NULL").table.to_pylist() == [
        {"item_id": 2}]
    assert shop.query("beta-dev", f"SELECT max(price) AS p FROM {ITEMS}").table.to_pylist() == [{"p": 1.5}]
    assert shop.query("beta-dev", f"SELECT price FROM {ITEMS} WHERE name = 'pear'").table.to_pylist() == [
        {"price": None}]
    assert shop.query("beta-dev", f"SELECT count(*) AS n FROM {ITEMS} WHERE name IN ('apple', 'plum')"
                      ).table.to_pylist() == [{"n": 0}]


NRICS = ["S1234567D", "T1234567J", "F1234567N"]


def nric_files() -> dict[str, Any]:
    """Items carry their buyer's NRIC (personal: masked unless a grant unmasks it)."""
    files = base_files()
    shop = "domains/alpha/products/shop-dp"
    lines = ITEMS_CSV.splitlines()
    files[f"{shop}/data/items.csv"] = lines[0] + ",nric\n" + "".join(
        f"{line},{nric}\n" for line, nric in zip(lines[1:], NRICS, strict=True))
    files[f"{shop}/sql/items.sql"] = "SELECT item_id, name, price, sold_on, nric FROM raw_items\n"
    files[f"{shop}/contracts/items.odcs.yaml"]["schema"][0]["properties"].append(column(
        "nric", "string", classification="official-closed", customProperties=[
            {"property": "piiType", "value": "nric"}, {"property": "sensitivity", "value": "sensitive-normal"}]))
    return files


@pytest.fixture
def nric_shop(make_mesh: Any) -> Workspace:
    ws: Workspace = make_mesh(nric_files())
    assert ws.build().ok
    grant(ws, "beta-dev", columns=["item_id", "price", "nric"], unmask=["nric"], rows="price < 1.8")
    grant(ws, "beta-dev", columns=["item_id", "nric"], rows="price >= 1.8")
    return ws


def test_a_personal_column_is_clear_only_on_the_rows_of_a_grant_that_unmasks_it(nric_shop: Workspace) -> None:
    result = nric_shop.query("beta-dev", Q_ITEMS)
    assert result.table.to_pylist() == [
        {"item_id": 1, "price": 1.5, "nric": "S1234567D"},
        {"item_id": 2, "price": None, "nric": "*****567J"},
        {"item_id": 3, "price": 0.5, "nric": "F1234567N"},
    ]
    # the masked rows' NRIC cannot be matched against its raw value
    assert nric_shop.query("beta-dev", f"SELECT item_id FROM {ITEMS} WHERE nric = 'T1234567J'").table.num_rows == 0
    assert nric_shop.query("beta-dev", f"SELECT count(*) AS n FROM {ITEMS} WHERE nric LIKE 'T%'").table.to_pylist() == [
        {"n": 0}]


def test_a_column_masked_on_some_rows_is_reported_as_masked(nric_shop: Workspace) -> None:
    """docs/query.md: the result lists each masked column and how. On item 2 the NRIC is masked (beta-dev's grant
    on those rows does not unmask it), so the result must say so."""
    result = nric_shop.query("beta-dev", Q_ITEMS)
    assert "*****567J" in result.table.column("nric").to_pylist()
    assert f"{ITEMS}.nric" in result.masked, f"nric is masked on some rows but the result says {result.masked}"


@pytest.mark.parametrize(("rows", "match"), [
    ("abs(price) < 1", "ABS is not allowed"),
    ("price < (SELECT max(price) FROM items)", "is not allowed"),
    ("nope = 1", "nope, which is not a column"),
    ("items.price < 1", "not a column"),
    ("price < 1; DROP TABLE items", "is not a condition"),
    ("price < 1.8 UNION SELECT 1", "is not a condition"),
    ("", "--rows is empty"),
    ("   ", "--rows is empty"),
])
def test_bad_rows_are_refused(shop: Workspace, rows: str, match: str) -> None:
    with pytest.raises(UsageError, match=re.escape(match)):
        shop.access.request("beta-dev", ITEMS, purpose=PURPOSE, purpose_category="statistics", days=30, rows=rows)
    assert [r for r in shop.access.overview("gdo", "all")["requests"] if r["requester"] == "beta-dev"] == []


def agency_files() -> dict[str, Any]:
    """Items carry the agency each row belongs to; the contract shows outsiders only their own agency's rows."""
    files = base_files()
    shop = "domains/alpha/products/shop-dp"
    agencies = ["beta", "gamma", "gamma"]
    lines = ITEMS_CSV.splitlines()
    files[f"{shop}/data/items.csv"] = lines[0] + ",region\n" + "".join(
        f"{line},{agency}\n" for line, agency in zip(lines[1:], agencies, strict=True))
    files[f"{shop}/sql/items.sql"] = "SELECT item_id, name, price, sold_on, region FROM raw_items\n"
    schema = files[f"{shop}/contracts/items.odcs.yaml"]["schema"][0]
    schema["properties"].append(column("region", "string"))
    schema["customProperties"] = [{"property": "rowFilter", "value": "region = {agency}"}]
    liaison = person("beta-liaison", "developer")
    files["mesh.yaml"]["access"] = {"agencies": {"beta-liaison": "gamma"}}
    files["domains/beta/domain.yaml"]["people"] += [liaison]
    return files


def test_a_contract_row_filter_binds_the_readers_agency(make_mesh: Any) -> None:
    ws: Workspace = make_mesh(agency_files())
    assert ws.build().ok
    grant(ws, "beta-dev")
    grant(ws, "beta-liaison")
    assert ws.directory().principals["beta-liaison"].domain == "gamma"

    def ids(who: str) -> list[tuple[int, str]]:
        return [(r["item_id"], r["region"]) for r in ws.query(who, Q_ITEMS).table.to_pylist()]

    assert ids("beta-dev") == [(1, "beta")]
    assert ids("beta-liaison") == [(2, "gamma"), (3, "gamma")]
    assert ids("alpha-steward") == [(1, "beta"), (2, "gamma"), (3, "gamma")]  # inside the domain: every row
    assert ws.query("beta-liaison", Q_ITEMS).row_filters == {ITEMS: "(region = 'gamma')"}
    assert ws.query("beta-liaison", f"SELECT count(*) AS n FROM {ITEMS} WHERE region = 'beta'").table.to_pylist() == [
        {"n": 0}]


# -- 6. aggregate-only -----------------------------------------------------------------------------------


def refused_as_aggregate_only(ws: Workspace, who: str, sql: str) -> str:
    with pytest.raises(QueryRefused) as info:
        ws.query(who, sql)
    assert AGGREGATE_ONLY in str(info.value), str(info.value)
    return str(info.value)


def test_aggregate_only_groups_come_from_at_least_k_people(demo: Workspace) -> None:
    result = demo.query("jiahui", f"SELECT activity_date, count(*) AS n, sum(steps) AS steps FROM {DAILY} "
                                  "GROUP BY activity_date ORDER BY 1")
    got = {r["activity_date"]: (r["n"], int(r["steps"])) for r in result.table.to_pylist()}
    assert got
    platform = demo.catalog.read(DAILY)
    con = duckdb.connect()
    try:
        con.register("daily", platform)
        truth = {d: (n, int(s), people) for d, n, s, people in con.execute(
            "SELECT activity_date, count(*), sum(steps), count(DISTINCT participant_id) FROM daily GROUP BY 1"
        ).fetchall()}
    finally:
        con.close()
    for day, (n, steps) in got.items():
        assert truth[day][2] >= 5, f"{day}: a group of {truth[day][2]} people was released"
        assert (n, steps) == truth[day][:2]
    assert set(got) == {d for d, t in truth.items() if t[2] >= 5}
    assert len(got) < len(truth), "the demo should have days with fewer than 5 people"


def test_aggregate_only_per_person_groups_are_not_released(demo: Workspace) -> None:
    for sql in (f"SELECT participant_id, sum(steps) AS steps FROM {DAILY} GROUP BY participant_id",
                f"SELECT nric, count(*) AS n FROM {DAILY} GROUP BY nric",
                f"SELECT participant_id, activity_date, count(*) AS n FROM {DAILY} GROUP BY 1, 2",
                f"SELECT sum(steps) AS s FROM {DAILY} WHERE participant_id = 'P000001'"):
        try:  # refused outright (the person column is off limits), or released with nothing in it
            assert demo.query("jiahui", sql).table.num_rows == 0, sql
        except QueryRefused as exc:
            assert "aggregate-only" in str(exc), sql


@pytest.mark.parametrize("sql", [
    f"SELECT * FROM {DAILY}",
    f"SELECT participant_id, steps FROM {DAILY}",
    f"SELECT steps FROM {DAILY} WHERE steps > 10000",
    f"SELECT count(*) AS n FROM (SELECT * FROM {DAILY})",
    f"SELECT activity_date, count(*) FROM {DAILY} WHERE steps > (SELECT avg(steps) FROM {DAILY}) GROUP BY 1",
    f"WITH d AS (SELECT * FROM {DAILY}) SELECT activity_date, count(*) FROM d GROUP BY 1",
    f"SELECT a.activity_date, count(*) FROM {DAILY} a JOIN {DAILY} b USING (participant_id) GROUP BY 1",
    f"SELECT activity_date, sum(count(*)) OVER () AS total FROM {DAILY} GROUP BY 1",
    f"SELECT activity_date, row_number() OVER (ORDER BY activity_date) FROM {DAILY} GROUP BY 1",
    f"SELECT DISTINCT activity_date FROM {DAILY}",
    f"SELECT DISTINCT participant_id, activity_date FROM {DAILY}",
    f"SELECT activity_date, count(*) FROM {DAILY} GROUP BY ALL",
    f"SELECT activity_date, count(*) FROM {DAILY} GROUP BY 1 UNION ALL SELECT activity_date, 1 FROM {DAILY} GROUP BY 1",
], ids=["star", "raw-columns", "raw-column-where", "subquery-from", "subquery-where", "cte", "join", "window",
        "row-number", "distinct", "distinct-rows", "group-by-all", "union"])
def test_aggregate_only_refuses_what_is_not_one_grouped_aggregate(demo: Workspace, sql: str) -> None:
    before = len(query_log(demo))
    refused_as_aggregate_only(demo, "jiahui", sql)
    log = query_log(demo)
    assert len(log) == before + 1 and log[0]["type"] == "query.refused" and log[0]["actor"] == "jiahui"


def test_aggregate_only_does_not_bind_the_owning_domain(demo: Workspace) -> None:
    per_person = demo.query("nurul", f"SELECT participant_id, count(*) AS days FROM {DAILY} GROUP BY 1")
    assert per_person.table.num_rows == 3000
    rows = demo.query("nurul", f"SELECT * FROM {DAILY} LIMIT 5")
    assert rows.table.num_rows == 5 and all(is_valid_nric(n) for n in rows.table.column("nric").to_pylist())


def test_aggregate_only_releases_no_persons_identifier_inside_an_aggregate(demo: Workspace) -> None:
    """An aggregate that carries each row's value — list(), array_agg(), string_agg() — hands back the per-person
    records that aggregate-only access withholds: every participant id of a group, in the same order as their
    steps. Such a query must be refused, or release no identifier."""
    ids = set(demo.catalog.read(DAILY).column("participant_id").to_pylist())
    leaked: dict[str, int] = {}
    for name, sql in (
            ("list", f"SELECT activity_date, list(participant_id) AS who, list(steps) AS steps FROM {DAILY} "
                     "GROUP BY activity_date"),
            ("string_agg", f"SELECT activity_date, string_agg(participant_id, ',') AS who FROM {DAILY} "
                           "GROUP BY activity_date")):
        try:
            result = demo.query("jiahui", sql)
        except QueryRefused as exc:
            assert AGGREGATE_ONLY in str(exc)
            continue
        text = json.dumps(result.table.to_pylist(), default=str)
        found = {i for i in re.findall(r"P[0-9]{6}", text) if i in ids}
        if found:
            leaked[name] = len(found)
    assert not leaked, f"aggregate-only {DAILY} released participant ids through {leaked} (ids per query)"


# -- 7. linkage validation ------------------------------------------------------------------------------

STATS_SQL = "domains/beta/products/stats-dp/sql/daily_sales.sql"
TOKENISED = ("SELECT sold_on, count(DISTINCT person_token({purpose}, name)) AS items, sum(price) AS revenue\n"
             "FROM alpha.\"shop-dp\".items GROUP BY sold_on\n")


def linkage_files(domains: list[str], purpose: str | None = "'study'", gamma: bool = True) -> dict[str, Any]:
    files = base_files()
    files["mesh.yaml"]["linkage"] = [{"name": "study", "description": "A registered linkage for tests.",
                                      "domains": domains}]
    if gamma:
        files["domains/gamma/domain.yaml"] = domain_yaml("gamma")
    if purpose is not None:
        files[STATS_SQL] = TOKENISED.format(purpose=purpose)
    return files


def errors(ws: Workspace) -> list[str]:
    return [str(p) for p in ws.validate() if p.severity == "error"]


def test_a_member_domain_may_tokenise(make_mesh: Any) -> None:
    assert errors(make_mesh(linkage_files(["alpha", "beta"]), grants=False)) == []


def test_a_product_outside_the_purposes_domains_may_not_tokenise(make_mesh: Any) -> None:
    problems = errors(make_mesh(linkage_files(["alpha", "gamma"]), grants=False))
    assert len(problems) == 1, problems
    assert problems[0].startswith(STATS_SQL)
    assert "beta is not a domain of the linkage purpose 'study'" in problems[0]


@pytest.mark.parametrize(("purpose", "match"), [
    ("'nope'", "person_token names 'nope', which is not a linkage purpose"),
    ("name", "person_token takes a linkage purpose as a quoted name"),
    ("'study' || ''", "person_token takes a linkage purpose as a quoted name"),
])
def test_a_bad_purpose_is_a_validation_problem(make_mesh: Any, purpose: str, match: str) -> None:
    problems = errors(make_mesh(linkage_files(["alpha", "beta"], purpose), grants=False))
    assert any(p.startswith(STATS_SQL) and match in p for p in problems), problems


def test_a_purpose_naming_an_unknown_domain_is_a_validation_problem(make_mesh: Any) -> None:
    problems = errors(make_mesh(linkage_files(["alpha", "delta"], purpose=None, gamma=False), grants=False))
    assert any(p.startswith("mesh.yaml") and "linkage purpose 'study' names domain 'delta', which does not exist" in p
               for p in problems), problems


@pytest.mark.parametrize("sql", [
    f"SELECT activity_date, max(CASE WHEN participant_id = 'P000430' THEN steps END) AS s FROM {DAILY} GROUP BY 1",
    f"SELECT activity_date, sum(steps * CAST(participant_id = 'P000430' AS INTEGER)) AS s FROM {DAILY} GROUP BY 1",
    f"SELECT activity_date, any_value(steps) AS s FROM {DAILY} GROUP BY 1",
    f"SELECT activity_date, arg_max(steps, steps) AS s FROM {DAILY} GROUP BY 1",
    f"SELECT activity_date, string_agg(CAST(steps AS VARCHAR), ',') AS s FROM {DAILY} GROUP BY 1",
    f"SELECT activity_date, sum(steps) AS s FROM {DAILY} WHERE participant_id <> 'P000430' GROUP BY 1",
    f"SELECT activity_date, count(DISTINCT participant_id) AS n FROM {DAILY} GROUP BY 1",
])
def test_aggregate_only_refuses_aggregates_that_single_out_a_person(demo: Workspace, sql: str) -> None:
    with pytest.raises(QueryRefused, match="aggregate-only"):
        demo.query("jiahui", sql)
