"""Quality checks: every ODCS metric and operator on data with known counts, one scan, quarantine, masking."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from meshfactory import ITEMS_CSV, base_files, write_files
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.descriptors import Column, Contract
from trustmesh.engines.duckdb import DuckDBEngine, quote
from trustmesh.quality import compile_quality, run_quality
from trustmesh.quality.rules import parse_rule

GOLDEN = Path(__file__).parent / "golden"
SHOP = "domains/alpha/products/shop-dp"
runner = CliRunner()

# 10 rows with known counts: value has 2 NULLs, 1 empty string, 1 'N/A'; code has 3 values outside {a,b,c};
# dup has 3 duplicate rows beyond the first of each value; nric has 1 malformed value.
ROWS = [
    (1, "x", "a", 1, "S1234567D"), (2, None, "b", 1, "T1234567J"), (3, "", "c", 2, "F1234567N"),
    (4, "N/A", "d", 2, "G1234567X"), (5, None, "a", 3, "M1234567K"), (6, "y", "e", 4, "S1234567D"),
    (7, "z", "f", 4, "S0000001I"), (8, "w", "a", 5, "BAD"), (9, "v", "b", 5, "S1111111C"), (10, "u", "c", 6, "S2222222F"),
]


@pytest.fixture
def session() -> Any:
    s = DuckDBEngine().session()
    s.con.execute("CREATE TABLE t (id BIGINT, value VARCHAR, code VARCHAR, dup INTEGER, nric VARCHAR)")
    s.con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", ROWS)
    yield s
    s.close()


def contract(*extra: Column) -> Contract:
    cols = [Column(name="id", logical_type="integer", primary_key=True, primary_key_position=1, required=True),
            Column(name="value", logical_type="string"), Column(name="code", logical_type="string"),
            Column(name="dup", logical_type="integer"),
            Column(name="nric", logical_type="string", pii_type="nric", sensitivity="sensitive-high"), *extra]
    return Contract(id="d.p.t", name="t", version="1.0.0", status="active", columns=cols, file="t.odcs.yaml",
                    document={})


def rule(raw: dict[str, Any], column: str | None = None, index: int = 0) -> Any:
    parsed, problems = parse_rule(raw, source="contract", file="t.odcs.yaml", where="schema[t]", column=column,
                                  index=index)
    assert not problems, problems
    return parsed


def check(session: Any, raw: dict[str, Any], column: str | None = None) -> Any:
    report = run_quality(session, "t", contract(), [rule(raw, column)], column_types={}, quote=quote)
    return report.results[0]


METRIC_CASES = [
    # (rule, column, measured value in rows)
    ({"metric": "nullValues", "mustBe": 2}, "value", 2),
    ({"metric": "missingValues", "mustBe": 3}, "value", 3),  # default: NULL and ''
    ({"metric": "missingValues", "arguments": {"missingValues": [None, "", "N/A"]}, "mustBe": 4}, "value", 4),
    ({"metric": "invalidValues", "arguments": {"validValues": ["a", "b", "c"]}, "mustBe": 3}, "code", 3),
    ({"metric": "invalidValues", "arguments": {"pattern": "^[STFGM][0-9]{7}[A-Z]$"}, "mustBe": 1}, "nric", 1),
    ({"metric": "duplicateValues", "mustBe": 4}, "dup", 4),
    ({"metric": "duplicateValues", "arguments": {"properties": ["code", "dup"]}, "mustBe": 0}, None, 0),
    ({"metric": "rowCount", "mustBe": 10}, None, 10),
]


@pytest.mark.parametrize("raw, column, expected", METRIC_CASES)
def test_every_metric_measures_known_counts(session: Any, raw: dict[str, Any], column: str | None, expected: int) -> None:
    result = check(session, raw, column)
    assert result.value == expected
    assert result.passed


def test_percent_unit_is_share_of_all_rows(session: Any) -> None:
    result = check(session, {"metric": "nullValues", "unit": "percent", "mustBeLessThan": 25}, "value")
    assert result.value == 20.0 and result.passed
    assert not check(session, {"metric": "nullValues", "unit": "percent", "mustBeLessThan": 20}, "value").passed


OPERATOR_CASES = [  # the null count of `value` is 2
    ("mustBe", 2, True), ("mustBe", 3, False),
    ("mustNotBe", 3, True), ("mustNotBe", 2, False),
    ("mustBeGreaterThan", 1, True), ("mustBeGreaterThan", 2, False),
    ("mustBeGreaterOrEqualTo", 2, True), ("mustBeGreaterOrEqualTo", 3, False),
    ("mustBeLessThan", 3, True), ("mustBeLessThan", 2, False),
    ("mustBeLessOrEqualTo", 2, True), ("mustBeLessOrEqualTo", 1, False),
    ("mustBeBetween", [1, 2], True), ("mustBeBetween", [3, 9], False),
    ("mustNotBeBetween", [3, 9], True), ("mustNotBeBetween", [0, 2], False),
]


@pytest.mark.parametrize("operator, threshold, passes", OPERATOR_CASES)
def test_every_operator(session: Any, operator: str, threshold: Any, passes: bool) -> None:
    assert check(session, {"metric": "nullValues", operator: threshold}, "value").passed is passes


def test_sql_business_rule_reads_only_its_dataset(session: Any) -> None:
    result = check(session, {"type": "sql", "query": "SELECT count(*) FROM ${table} WHERE dup > 4", "mustBe": 3})
    assert result.value == 3 and result.passed
    for query, why in [
        ("DELETE FROM ${table}", "single SELECT"),
        ("SELECT count(*) FROM other_table", "reads 'other_table'"),
        ("SELECT count(*) FROM read_csv('/etc/passwd')", "reads"),
        ("SELECT 1; SELECT 2", "single SELECT"),
    ]:
        compiled = compile_quality([rule({"type": "sql", "query": query, "mustBe": 0})], "t", quote)
        assert compiled.sql_rules == []
        assert any(why in p.message for p in compiled.problems), (query, compiled.problems)


def test_one_scan_computes_every_metric_once(session: Any) -> None:
    rules = [rule(raw, col, i) for i, (raw, col, _) in enumerate(METRIC_CASES)]
    rules.append(rule({"metric": "nullValues", "mustBe": 2, "name": "again"}, "value"))  # the same metric again
    compiled = compile_quality(rules, "t", quote)
    assert compiled.scan_sql.count("SELECT") == 1
    assert compiled.scan_sql.count('count(*) - count("value")') == 1
    report = run_quality(session, "t", contract(), rules, column_types={}, quote=quote)
    assert all(r.passed for r in report.results)
    assert report.score == 100.0


def test_failing_samples_mask_personal_data(session: Any) -> None:
    result = check(session, {"metric": "invalidValues", "arguments": {"pattern": "^S.*$"}, "mustBe": 0}, "nric")
    assert not result.passed
    shown = [s["nric"] for s in result.samples]
    assert shown and all(v.startswith("*****") for v in shown)
    assert not any(real in str(result.samples) for _, _, _, _, real in ROWS if real != "BAD")
    assert "*****567N" in shown  # at most the last 3 digits and the letter of an NRIC


def test_compiled_sql_golden() -> None:
    rules = [rule(raw, col, i) for i, (raw, col, _) in enumerate(METRIC_CASES)]
    rules.append(rule({"type": "sql", "query": "SELECT count(*) FROM ${table} WHERE dup > 4", "mustBe": 3,
                       "name": "late-dups"}))
    text = compile_quality(rules, "cand__t", quote, dataset="t", address="d.p.t").show() + "\n"
    golden = GOLDEN / "quality_scan.sql"
    if os.environ.get("TRUSTMESH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_demo_flights_quality_sql_golden(tmp_path: Path) -> None:
    from trustmesh.demo import write_demo
    from trustmesh.service import Workspace

    write_demo(tmp_path / "demo")
    text = Workspace.open(tmp_path / "demo").compiled_quality("bts.flights-dp.flights").show() + "\n"
    golden = GOLDEN / "flights_quality.sql"
    if os.environ.get("TRUSTMESH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def _with_rule(files: dict[str, Any], raw: dict[str, Any], col: int | None = None) -> dict[str, Any]:
    obj = files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]
    target = obj if col is None else obj["properties"][col]
    target.setdefault("quality", []).append(raw)
    return files


def test_error_failure_quarantines_candidate_and_keeps_previous_version(make_mesh: Any) -> None:
    files = _with_rule(base_files(), {"name": "cheap", "metric": "invalidValues",
                                      "arguments": {"validValues": [0.5, 1.5, 2.0]}, "mustBe": 0}, col=2)
    ws = make_mesh(files)
    assert ws.build().ok
    write_files(ws.root, {f"{SHOP}/data/items.csv": ITEMS_CSV + "4,fig,9.0,2024-01-03\n"})
    result = ws.build()
    assert [r.status for r in result.products] == ["failed", "blocked"]
    assert "'cheap' failed: invalidValues is 1, expected = 0" in result.products[0].problems[0].message
    assert [v["version"] for v in ws.catalog.versions("alpha.shop-dp.items")] == [1]
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 3
    report = ws.catalog.quality("alpha.shop-dp.items")
    [held] = report["quarantine"]
    assert held["rows"] == 4 and Path(held["data_file"]).exists() and "cheap" in held["reason"]
    assert any(c["name"] == "cheap" and not c["passed"] and c["samples"] == [{"item_id": 4, "price": 9.0}]
               for c in held["checks"])
    out = runner.invoke(app, ["quality", "alpha.shop-dp.items", "--quarantine", "--mesh", str(ws.root)])
    assert out.exit_code == 0 and held["build_id"] in out.output


def test_warning_publishes_and_flags(make_mesh: Any) -> None:
    files = _with_rule(base_files(), {"name": "pricey", "metric": "invalidValues", "severity": "warning",
                                      "arguments": {"validValues": [0.5, 1.5]}, "mustBe": 0}, col=2)
    ws = make_mesh(files)
    assert ws.build().ok
    report = ws.catalog.quality("alpha.shop-dp.items")
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["pricey"]
    assert 0 < report["score"] < 100
    assert report["history"][0]["score"] == report["score"]
    hit = next(h for h in ws.catalog.search("items")["hits"] if h["address"] == "alpha.shop-dp.items")
    assert hit["quality_score"] == report["score"]
    out = runner.invoke(app, ["quality", "alpha.shop-dp.items", "--mesh", str(ws.root)])
    assert out.exit_code == 0 and "pricey" in out.output and "FAIL" in out.output  # a warning shows, exits 0
    out = runner.invoke(app, ["quality", "alpha.shop-dp.items", "--fail-on", "warning", "--mesh", str(ws.root)])
    assert out.exit_code == 1 and "pricey" in out.output
    out = runner.invoke(app, ["quality", "alpha.shop-dp.items", "--fail-on", "warnings", "--mesh", str(ws.root)])
    assert out.exit_code == 2 and "--fail-on 'warnings'" in out.output
    # check is the same gate: a warning-level policy finding passes, and fails with --fail-on warning
    (ws.root / "governance" / "policies").mkdir(parents=True, exist_ok=True)
    (ws.root / "governance" / "policies" / "terms.yaml").write_text(
        "policies:\n- id: gdo.revenue-term\n  title: Revenue names its glossary term\n  rationale: One meaning.\n"
        "  rule: glossary-terms\n  severity: warning\n  params: {terms: {price: '^revenue$'}}\n")
    out = runner.invoke(app, ["check", "--mesh", str(ws.root)])
    assert out.exit_code == 0 and "warning" in out.output and "passed" in out.output, out.output
    out = runner.invoke(app, ["check", "--fail-on", "warning", "--mesh", str(ws.root)])
    assert out.exit_code == 1, out.output


def test_sector_benchmark_applies_and_cannot_be_switched_off(make_mesh: Any) -> None:
    files = base_files()
    files["domains/beta/domain.yaml"]["qualityBenchmarks"] = [
        {"name": "names-are-short", "appliesTo": {"column": "name"}, "metric": "invalidValues",
         "arguments": {"pattern": "^.{1,4}$"}, "mustBe": 0, "severity": "error"}]
    ws = make_mesh(files)  # alpha and beta share the transport sector; beta is its Trusted Centre
    result = ws.build()
    assert result.products[0].status == "failed"
    assert "'names-are-short' failed: invalidValues is 1" in result.products[0].problems[0].message  # "apple"


def test_benchmarks_only_from_a_trusted_centre(make_mesh: Any) -> None:
    files = base_files()
    files["domains/alpha/domain.yaml"]["qualityBenchmarks"] = [
        {"name": "x", "metric": "rowCount", "mustBeGreaterThan": 0}]
    assert any("only a Trusted Centre" in p.message for p in make_mesh(files).validate())


def test_freshness_sla_marks_stale(make_mesh: Any) -> None:
    files = base_files()
    files[f"{SHOP}/contracts/items.odcs.yaml"]["slaProperties"] = [{"property": "frequency", "value": 1, "unit": "s"}]
    files[f"{SHOP}/contracts/cheap_items.odcs.yaml"]["slaProperties"] = [{"property": "frequency", "value": 1, "unit": "d"}]
    ws = make_mesh(files)
    assert ws.build().ok
    import time

    time.sleep(1.2)
    assert ws.catalog.show("alpha.shop-dp.items")["quality"]["freshness"]["stale"] is True
    assert ws.catalog.show("alpha.shop-dp.cheap_items")["quality"]["freshness"]["stale"] is False
    stale = {d["address"]: d["stale"] for d in ws.catalog.datasets()}
    assert stale["alpha.shop-dp.items"] and not stale["alpha.shop-dp.cheap_items"]


def test_zero_rows_is_refused_unless_the_contract_allows_it(make_mesh: Any) -> None:
    files = base_files()
    files[f"{SHOP}/sql/cheap_items.sql"] = "SELECT item_id, name FROM raw_items WHERE price < 0\n"
    ws = make_mesh(files)
    result = ws.build()
    assert result.products[0].status == "failed"
    assert "'the dataset has rows' failed: rowCount is 0" in result.products[0].problems[0].message
    files[f"{SHOP}/contracts/cheap_items.odcs.yaml"]["schema"][0]["quality"] = [
        {"metric": "rowCount", "mustBeGreaterOrEqualTo": 0}]
    assert make_mesh(files).build().ok


BAD_RULES = [
    ({"metric": "nullValues", "mustBe": "none"}, 1, "must be a number"),
    ({"metric": "nullValues", "mustBeBetween": [1]}, 1, "is too short"),  # the ODCS schema itself refuses it
    ({"metric": "nullValues", "mustBe": 0}, None, "applies to a column"),
    ({"metric": "invalidValues", "mustBe": 0}, 1, "needs `arguments.validValues`"),
    ({"metric": "duplicateValues", "arguments": {"properties": ["nope"]}, "mustBe": 0}, None, "column 'nope'"),
    ({"metric": "invalidValues", "arguments": {"pattern": "^(?=a)b$"}, "mustBe": 0}, 1, "cannot run quality rule"),
    ({"type": "sql", "query": "SELECT count(*) FROM alpha.\"shop-dp\".cheap_items", "mustBe": 0}, None,
     "reads only its own dataset"),
    ({"type": "sql", "query": "INSERT INTO x VALUES (1)", "mustBe": 0}, None, "single SELECT"),
]


@pytest.mark.parametrize("change, words, fix", [
    (lambda c: c["schema"][0]["properties"][2]["quality"].append(
        {"metric": "invalidValues", "validValues": [0.5, 1.5], "mustBe": 0}), "'validValues' was unexpected",
     "a metric's arguments go under `arguments:` — write `arguments: {validValues: ...}`"),
    (lambda c: c["schema"][0]["properties"][1].update({"descripton": "The name."}), "'descripton' was unexpected",
     "did you mean 'description'?"),
    (lambda c: c.update({"trustmeshOwner": "me"}), "'trustmeshOwner' was unexpected",
     "ODCS v3.1.0 does not allow this key; trustmesh fields go in `customProperties`"),
], ids=["argument-outside-arguments", "misspelt-key", "own-field"])
def test_a_key_odcs_does_not_allow_gets_the_fix_that_fits(make_mesh: Any, change: Any, words: str, fix: str) -> None:
    files = base_files()
    files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"][2].setdefault("quality", [])
    change(files[f"{SHOP}/contracts/items.odcs.yaml"])
    problems = [p for p in make_mesh(files).validate() if p.severity == "error"]
    assert [p.fix for p in problems if words in p.message] == [fix], [str(p) for p in problems]


@pytest.mark.parametrize("raw, col, words", BAD_RULES)
def test_bad_quality_rules_are_named(make_mesh: Any, raw: dict[str, Any], col: int | None, words: str) -> None:
    problems = make_mesh(_with_rule(base_files(), {"name": "bad-rule", **raw}, col=col)).validate()
    errors = [p for p in problems if p.severity == "error"]
    assert any(words in p.message for p in errors), [str(p) for p in errors]
    assert all(p.file.endswith("items.odcs.yaml") or "shop-dp" in p.file for p in errors)


def test_the_quality_rules_of_the_docs_run_as_written(make_mesh: Any) -> None:
    """docs/mesh-format.md's example column rules, on a column of the items: they validate, build and run."""
    import re

    import yaml

    docs = (Path(__file__).resolve().parents[1] / "docs" / "mesh-format.md").read_text(encoding="utf-8")
    section = docs[docs.index("## Quality rules"):docs.index("## Freshness")]
    example = next(yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)
                   if "arguments:" in b and "properties:" in b)
    rules = example["properties"][0]["quality"]
    assert {r["metric"] for r in rules} == {"invalidValues"}
    files = base_files()
    files[f"{SHOP}/data/items.csv"] = "item_id,name,price,sold_on\n1,AA,1.5,2024-01-01\n2,B6,2.0,2024-01-02\n"
    for rule in rules:
        _with_rule(files, rule, col=1)
    ws = make_mesh(files)
    assert not [str(p) for p in ws.validate() if p.severity == "error"]
    assert ws.build().ok
    checks = {c["name"]: c["passed"] for c in ws.catalog.quality("alpha.shop-dp.items")["checks"]}
    assert checks["known-carrier"] and checks["two-letter-code"]


def test_unknown_metric_and_sla_unit(make_mesh: Any) -> None:
    files = _with_rule(base_files(), {"metric": "emptyValues", "mustBe": 0}, col=1)
    assert any("emptyValues" in p.message for p in make_mesh(files).validate())
    files = base_files()
    files[f"{SHOP}/contracts/items.odcs.yaml"]["slaProperties"] = [{"property": "latency", "value": 4, "unit": "fortnight"}]
    problems = make_mesh(files).validate()
    assert any("unit 'fortnight'" in p.message and p.path == "slaProperties[latency]" for p in problems)


def test_demo_quality_rules_are_real(tmp_path: Path) -> None:
    """The demo carries a sector benchmark, a business SQL rule and freshness SLAs; the catalog shows scores."""
    from trustmesh.demo import write_demo
    from trustmesh.service import Workspace

    write_demo(tmp_path / "d")
    ws = Workspace.open(tmp_path / "d")
    assert ws.mesh.domains["transport-tc"].quality_benchmarks
    flights = ws.compiled_quality("bts.flights-dp.flights")
    assert [r.name for r, _ in flights.sql_rules] == ["plausible-speed"]
    assert any(rule_id.startswith("benchmark:transport-tc/") for rule_id in flights.aliases)
    assert {r.name for r in flights.type_rules} == {"timestamps-are-utc"}
    assert all(o.contract and o.contract.sla for o in ws.mesh.datasets.values())




def _thresholds(operator: str, value: float) -> tuple[Any, Any]:
    """A threshold each operator passes with `value`, and one it fails with."""
    return {
        "mustBe": (value, value + 1), "mustNotBe": (value + 1, value),
        "mustBeGreaterThan": (value - 1, value), "mustBeGreaterOrEqualTo": (value, value + 1),
        "mustBeLessThan": (value + 1, value), "mustBeLessOrEqualTo": (value, value - 1),
        "mustBeBetween": ([value - 1, value + 1], [value + 1, value + 2]),
        "mustNotBeBetween": ([value + 1, value + 2], [value - 1, value + 1]),
    }[operator]


@pytest.mark.parametrize("operator", [op for op, _, _ in OPERATOR_CASES][::2])
@pytest.mark.parametrize("case", range(len(METRIC_CASES)))
def test_every_metric_with_every_operator(session: Any, case: int, operator: str) -> None:
    raw, column, expected = METRIC_CASES[case]
    base = {k: v for k, v in raw.items() if not k.startswith("must")}
    passing, failing = _thresholds(operator, expected)
    assert check(session, {**base, operator: passing}, column).passed
    result = check(session, {**base, operator: failing}, column)
    assert not result.passed and result.value == expected
