"""OpenLineage events: START, COMPLETE and FAIL validate against the 2-0-2 spec and each facet's own schema, and
reach a JSONL file and an HTTP endpoint through openlineage-python."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import trustmesh.standards
from trustmesh.descriptors import Column, Contract, InputPort, OutputDataset, Product, SourceSpec
from trustmesh.errors import UsageError
from trustmesh.lineage.model import DIRECT, INDIRECT, ColumnLineage, ColumnRef, DatasetLineage, Transformation
from trustmesh.lineage.openlineage import (
    LineageEmitter,
    LineageInput,
    LineageNotSent,
    default_events_path,
    run_events,
)
from trustmesh.quality.rules import QualityRule
from trustmesh.quality.run import CheckResult, QualityReport

# The published copies of the spec when the shared standards folder is there, else the package's identical bundle.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "standards" / "openlineage"
SPEC = SHARED if SHARED.is_dir() else Path(trustmesh.standards.__file__).parent / "openlineage"
PRODUCER = "https://github.com/trustmesh/trustmesh/tree/0.1.0"
RUN_ID = "6f1c3e2a-8b4d-4c1e-9f0a-2d3b4c5d6e7f"
STARTED = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
FINISHED = datetime(2026, 5, 1, 17, 31, 5, tzinfo=timezone(timedelta(hours=8)))  # 09:31:05 UTC
OUT = "transport.delays-dp.delays"
FLIGHTS = "bts.flights-dp.flights"
# facet key → its schema file; job facets are checked against their dataset twins, which have the same shape.
FACET_SCHEMAS = {"schema": "SchemaDatasetFacet", "columnLineage": "ColumnLineageDatasetFacet",
                 "documentation": "DocumentationDatasetFacet", "ownership": "OwnershipDatasetFacet",
                 "version": "DatasetVersionDatasetFacet", "sql": "SQLJobFacet",
                 "dataQualityAssertions": "DataQualityAssertionsDatasetFacet"}


@cache
def spec_validator(file: str) -> Draft202012Validator:
    """A Draft 2020-12 validator for one spec file, every `$id` resolved from the local folder."""
    docs = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in SPEC.glob("*.json")}
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in docs.values())
    return Draft202012Validator(docs[file], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def event_errors(event: dict[str, Any]) -> list[str]:
    """Why an event is not valid OpenLineage: none, or each error within the RunEvent branch of the spec's oneOf."""
    spec = spec_validator("OpenLineage.json")
    if spec.is_valid(event):
        return []
    run_event = spec.evolve(schema={"$ref": f"{spec.schema['$id']}#/$defs/RunEvent"})
    return sorted(f"{list(e.absolute_path)}: {e.message}" for e in run_event.iter_errors(event)) or ["not a RunEvent"]


def all_facets(event: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, key, facet) for every facet of an event."""
    for key, facet in event["run"].get("facets", {}).items():
        yield "run", key, facet
    for key, facet in event["job"].get("facets", {}).items():
        yield "job", key, facet
    for side in ("inputs", "outputs"):
        for dataset in event.get(side, []):
            for slot in ("facets", "inputFacets", "outputFacets"):
                for key, facet in dataset.get(slot, {}).items():
                    yield f"{side}[{dataset['name']}].{slot}", key, facet


def rule(name: str, metric: str, operator: str, threshold: float, **kw: Any) -> QualityRule:
    return QualityRule(id=f"{OUT}:{name}", name=name, source="contract", metric=metric, operator=operator,
                       threshold=(threshold,), **kw)


@pytest.fixture
def product(tmp_path: Path) -> Product:
    contract = Contract(
        id=OUT, name="delays", version="1.0.0", status="active", file="contracts/delays.odcs.yaml",
        description={"purpose": "Average departure delay by carrier."},
        columns=[Column(name="carrier", logical_type="string", physical_type="VARCHAR", description="IATA code",
                        primary_key=True, primary_key_position=1),
                 Column(name="avg_delay", logical_type="number", description="Minutes"),
                 Column(name="reporter", logical_type="string", physical_type="VARCHAR", pii_type="nric")],
        document={"team": {"name": "Delays", "members": [{"username": "lakshmi", "role": "data-domain-steward"}]}})
    dataset = OutputDataset(address=OUT, domain="transport", product="delays-dp", name="delays", version="1.0.0",
                            sql_file="sql/delays.sql", contract=contract)
    ports = [InputPort(name="raw", version="1.0.0", contract_id="raw", source=SourceSpec(type="file", path="data/raw.csv")),
             InputPort(name="flights", version="1.0.0", contract_id=FLIGHTS,
                       source=SourceSpec(type="product", address=FLIGHTS))]
    return Product(address="transport.delays-dp", domain="transport", name="delays-dp", kind="aggregated",
                   status="active", description={"purpose": "Punctuality of carriers from New York."},
                   team=[{"username": "adrian", "role": "data-product-owner"}, {"username": "nadia", "role": "developer"}],
                   inputs=ports, outputs=[dataset], folder=tmp_path / "delays-dp", file="product.yaml", document={})


def lineage() -> DatasetLineage:
    carrier, delay, reporter = ColumnLineage("carrier"), ColumnLineage("avg_delay"), ColumnLineage("reporter")
    carrier.add(ColumnRef("flights", "carrier"), Transformation(DIRECT, "IDENTITY"))
    delay.add(ColumnRef(FLIGHTS, "dep_delay"), Transformation(DIRECT, "AGGREGATION"))
    delay.add(ColumnRef("flights", "carrier"), Transformation(INDIRECT, "GROUP_BY"))
    reporter.add(ColumnRef("raw", "nric"), Transformation(DIRECT, "TRANSFORMATION", masking=True))
    reporter.add(ColumnRef("raw", "nric"), Transformation(INDIRECT, "FILTER"))
    return DatasetLineage(OUT, {c.column: c for c in (carrier, delay, reporter)})


def report() -> QualityReport:
    required = rule("carrier is required", "nullValues", "mustBe", 0, column="carrier")
    enough = rule("enough rows", "rowCount", "mustBeGreaterThan", 10, severity="warning")
    no_negative = rule("no negative delays", "sql", "mustBe", 0, query="SELECT count(*) FROM delays WHERE avg_delay < -60",
                       description="Early departures are never an hour early")
    return QualityReport(rows=3, results=[CheckResult(required, 0.0, True), CheckResult(enough, 3.0, False),
                                          CheckResult(no_negative, 1.0, False, samples=[{"reporter": "*****567D"}])])


def inputs(product: Product) -> list[LineageInput]:
    raw = LineageInput.for_port("nyc", product, product.inputs[0], columns={"nric": "VARCHAR", "flight": "BIGINT"})
    flights = LineageInput.for_port("nyc", product, product.inputs[1], version="4",
                                    columns=[Column(name="carrier", logical_type="string"),
                                             Column(name="dep_delay", logical_type="number")])
    return [raw, flights]


def event(product: Product, status: Any, **overrides: Any) -> dict[str, Any]:
    done = status != "START"
    args: dict[str, Any] = {
        "mesh_name": "nyc", "product": product, "run_id": RUN_ID, "started_at": STARTED,
        "finished_at": FINISHED if done else None, "status": status, "inputs": inputs(product),
        "outputs": [(product.outputs[0], lineage(), report() if done else None, 7 if status == "COMPLETE" else None)],
        "sql_by_dataset": {OUT: "SELECT carrier, avg(dep_delay) AS avg_delay FROM flights GROUP BY carrier;\n"},
        "error": "Binder Error: column dep_delayy not found" if status == "FAIL" else None, "producer": PRODUCER,
        "dialect": "duckdb"}
    result: dict[str, Any] = run_events(**(args | overrides))
    return result


@pytest.mark.parametrize("status", ["START", "COMPLETE", "FAIL"])
def test_every_event_validates_against_the_spec_and_each_facet_against_its_own_schema(product: Product,
                                                                                      status: str) -> None:
    ev = event(product, status)
    assert event_errors(ev) == []
    assert ev["eventType"] == status and ev["producer"] == PRODUCER
    assert ev["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    seen = set()
    for where, key, facet in all_facets(ev):
        seen.add(key)
        assert facet["_producer"] == PRODUCER, where
        if key == "errorMessage":  # its schema is not among the bundled files; the spec checked it as a RunFacet
            assert facet["_schemaURL"].endswith("/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet")
            continue
        name = FACET_SCHEMAS[key]
        schema_id = spec_validator(f"{name}.json").schema["$id"]
        expected = f"{schema_id}#/$defs/{name}"
        if where == "job" and key in ("documentation", "ownership"):
            expected = expected.replace("DatasetFacet", "JobFacet")
        assert facet["_schemaURL"] == expected, where
        errors = [e.message for e in spec_validator(f"{name}.json").iter_errors({key: facet})]
        assert errors == [], f"{where}.{key}: {errors}"
    expected_keys = {"sql", "documentation", "ownership", "schema", "columnLineage", "version"}
    expected_keys |= {"COMPLETE": {"dataQualityAssertions"}, "FAIL": {"dataQualityAssertions", "errorMessage"}}.get(
        status, set())
    assert seen == expected_keys


def test_a_broken_event_is_caught_by_the_validation(product: Product) -> None:
    ev = event(product, "COMPLETE")
    del ev["outputs"][0]["facets"]["schema"]["_schemaURL"]
    ev["run"]["runId"] = "not-a-uuid"
    errors = event_errors(ev)
    assert [e.split(": ")[0] for e in errors] == ["['outputs', 0, 'facets']", "['run', 'runId']"]
    assert errors[1].endswith("'not-a-uuid' is not a 'uuid'")


def test_names_times_and_job_facets(product: Product) -> None:
    ev = event(product, "COMPLETE")
    assert ev["eventTime"] == "2026-05-01T09:31:05.000Z"
    assert event(product, "START")["eventTime"] == "2026-05-01T09:30:00.000Z"
    assert ev["run"] == {"runId": RUN_ID}
    job = ev["job"]
    assert (job["namespace"], job["name"]) == ("trustmesh://nyc", "transport.delays-dp")
    assert job["facets"]["sql"]["query"] == "SELECT carrier, avg(dep_delay) AS avg_delay FROM flights GROUP BY carrier"
    assert job["facets"]["sql"]["dialect"] == "duckdb"
    assert job["facets"]["documentation"]["description"] == "Punctuality of carriers from New York."
    assert job["facets"]["ownership"]["owners"] == [{"name": "adrian", "type": "data-product-owner"},
                                                    {"name": "nadia", "type": "developer"}]
    raw, flights = ev["inputs"]
    assert (raw["namespace"], raw["name"]) == ("file", str((product.folder / "data/raw.csv").resolve()))
    assert Path(raw["name"]).is_absolute()
    assert [f["name"] for f in raw["facets"]["schema"]["fields"]] == ["nric", "flight"]
    assert raw["facets"]["schema"]["fields"][1] == {"name": "flight", "type": "BIGINT", "ordinal_position": 2}
    assert (flights["namespace"], flights["name"]) == ("trustmesh://nyc", FLIGHTS)
    assert flights["facets"]["version"]["datasetVersion"] == "4"


def test_output_facets_carry_contract_lineage_version_and_quality(product: Product) -> None:
    out = event(product, "COMPLETE")["outputs"][0]
    assert (out["namespace"], out["name"]) == ("trustmesh://nyc", OUT)
    facets = out["facets"]
    assert facets["schema"]["fields"] == [
        {"name": "carrier", "type": "VARCHAR", "description": "IATA code", "ordinal_position": 1},
        {"name": "avg_delay", "type": "number", "description": "Minutes", "ordinal_position": 2},
        {"name": "reporter", "type": "VARCHAR", "ordinal_position": 3}]
    assert facets["documentation"]["description"] == "Average departure delay by carrier."
    assert facets["ownership"]["owners"] == [{"name": "lakshmi", "type": "data-domain-steward"}]  # the contract's team
    assert facets["version"]["datasetVersion"] == "7"
    raw_path = str((product.folder / "data/raw.csv").resolve())
    lineage_fields = facets["columnLineage"]["fields"]
    assert lineage_fields["carrier"] == {"inputFields": [{"namespace": "trustmesh://nyc", "name": FLIGHTS, "field": "carrier",
                                                          "transformations": [{"type": "DIRECT", "subtype": "IDENTITY",
                                                                               "masking": False}]}]}
    # a port name and the address it serves name the same dataset
    assert [(f["name"], f["field"]) for f in lineage_fields["avg_delay"]["inputFields"]] == [
        (FLIGHTS, "dep_delay"), (FLIGHTS, "carrier")]
    assert lineage_fields["reporter"]["inputFields"] == [{
        "namespace": "file", "name": raw_path, "field": "nric",
        "transformations": [{"type": "DIRECT", "subtype": "TRANSFORMATION", "masking": True},
                            {"type": "INDIRECT", "subtype": "FILTER", "masking": False}]}]
    assertions = out["outputFacets"]["dataQualityAssertions"]["assertions"]
    assert "inputFacets" not in out
    assert [(a["name"], a["success"]) for a in assertions] == [
        ("carrier is required", True), ("enough rows", False), ("no negative delays", False)]
    assert assertions[0] == {"assertion": "nullValues", "success": True, "column": "carrier", "severity": "error",
                             "name": "carrier is required", "expected": "= 0", "actual": "0",
                             "params": {"rule": f"{OUT}:carrier is required", "source": "contract", "unit": "rows",
                                        "operator": "mustBe", "threshold": [0.0]}}
    assert assertions[1]["severity"] == "warn" and assertions[1]["actual"] == "3" and "column" not in assertions[1]
    assert assertions[2]["content"].startswith("SELECT count(*)") and assertions[2]["contentType"] == "sql"
    assert "567D" not in json.dumps(assertions)  # failing samples stay in trustmesh


def test_references_can_be_mapped_explicitly_and_unknown_ones_are_mesh_addresses(product: Product) -> None:
    ev = event(product, "START", datasets={"raw": ("s3://landing", "raw/flights.csv")}, inputs=[])
    fields = ev["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert fields["reporter"]["inputFields"][0]["namespace"] == "s3://landing"
    assert {(f["namespace"], f["name"]) for f in fields["carrier"]["inputFields"]} == {("trustmesh://nyc", "flights")}
    assert event_errors(ev) == []


def test_several_outputs_share_one_sql_facet(product: Product) -> None:
    second = product.outputs[0].model_copy(update={"address": "transport.delays-dp.worst", "name": "worst",
                                                   "contract": None})
    ev = event(product, "COMPLETE", outputs=[(product.outputs[0], None, None, 1), (second, None, None, None)],
               sql_by_dataset={OUT: "SELECT 1;", "worst": "SELECT 2"})
    assert ev["job"]["facets"]["sql"]["query"] == f"-- {OUT}\nSELECT 1;\n-- transport.delays-dp.worst\nSELECT 2"
    assert "schema" not in ev["outputs"][1].get("facets", {})
    assert event_errors(ev) == []


def test_fail_carries_the_error_and_a_finished_event_needs_its_end_time(product: Product) -> None:
    ev = event(product, "FAIL")
    assert ev["run"]["facets"]["errorMessage"]["message"] == "Binder Error: column dep_delayy not found"
    assert ev["run"]["facets"]["errorMessage"]["programmingLanguage"] == "python"
    with pytest.raises(UsageError, match="finished_at"):
        event(product, "COMPLETE", finished_at=None)


def test_input_naming_follows_the_openlineage_conventions(product: Product, monkeypatch: pytest.MonkeyPatch) -> None:
    glob_port = InputPort(name="logs", version="1", contract_id="logs",
                          source=SourceSpec(type="file", path="data/2026-*/part-*.parquet"))
    assert LineageInput.for_port("nyc", product, glob_port).name == str((product.folder / "data").resolve())
    db_port = InputPort(name="routes", version="1", contract_id="routes",
                        source=SourceSpec(type="database", url_env="ROUTES_URL", table="public.routes"))
    monkeypatch.setenv("ROUTES_URL", "postgresql+psycopg://etl:s3cret@db.example:6543/transit")
    routes = LineageInput.for_port("nyc", product, db_port)
    assert (routes.namespace, routes.name, routes.refs) == ("postgres://db.example:6543", "transit.public.routes", ("routes",))
    monkeypatch.setenv("ROUTES_URL", "postgresql://db.example/transit")
    assert LineageInput.for_port("nyc", product, db_port).namespace == "postgres://db.example:5432"
    monkeypatch.delenv("ROUTES_URL")
    assert LineageInput.for_port("nyc", product, db_port).name == "public.routes"


def test_file_emitter_appends_one_valid_event_per_line(product: Product, tmp_path: Path) -> None:
    path = default_events_path(tmp_path / ".trustmesh" / "warehouse")
    assert path == tmp_path / ".trustmesh" / "openlineage" / "events.jsonl"
    events = [event(product, s) for s in ("START", "COMPLETE")]
    emitter = LineageEmitter(path)
    for ev in events:
        emitter.emit(ev)
    emitter.close()
    LineageEmitter(path).emit(event(product, "FAIL"))  # a second emitter appends, never truncates
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    assert parsed[:2] == events
    for ev in parsed:
        assert event_errors(ev) == []
    assert [e["eventType"] for e in parsed] == ["START", "COMPLETE", "FAIL"]


def test_emitter_needs_exactly_one_target(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        LineageEmitter()
    with pytest.raises(UsageError):
        LineageEmitter(tmp_path / "e.jsonl", url="http://127.0.0.1:1")


@pytest.fixture
def lineage_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    """A local HTTP server on 127.0.0.1 that records what is posted and answers with the next queued status."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    received: list[dict[str, Any]] = []
    statuses: list[int] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received, statuses
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_emitter_posts_each_event(product: Product, lineage_server: Any) -> None:
    url, received, _ = lineage_server
    emitter = LineageEmitter(url=url, api_key="k3y")
    events = [event(product, "START"), event(product, "COMPLETE")]
    for ev in events:
        emitter.emit(ev)
    emitter.close()
    assert [r["path"] for r in received] == ["/api/v1/lineage", "/api/v1/lineage"]
    assert [r["body"] for r in received] == events
    assert received[0]["headers"]["Content-Type"] == "application/json"
    assert received[0]["headers"]["Authorization"] == "Bearer k3y"


def test_http_emitter_reports_a_refusal(product: Product, lineage_server: Any) -> None:
    url, received, statuses = lineage_server
    statuses.append(400)
    with pytest.raises(LineageNotSent, match=r"not sent to http://127\.0\.0\.1:\d+: 400 Client Error"):
        LineageEmitter(url=url, endpoint="custom/lineage").emit(event(product, "START"))
    assert received[0]["path"] == "/custom/lineage"
