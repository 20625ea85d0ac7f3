"""Run a dataset's compiled checks on the engine and judge them: values, verdicts, masked failing samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trustmesh.descriptors import Contract
from trustmesh.engines import EngineSession, QueryFailed
from trustmesh.quality.compile import ROWS, Quote, compile_quality, failure_predicate
from trustmesh.quality.rules import QualityRule, _num
from trustmesh.sqlguard import QUALITY_RULE, QueryRefused

SAMPLES = 5


@dataclass
class CheckResult:
    rule: QualityRule
    value: float | None
    passed: bool
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        """`'name is required' failed: nullValues is 1 row, expected = 0`."""
        if self.error:
            return f"{self.rule.name!r} could not run: {self.error}"
        unit = "%" if self.rule.unit == "percent" and self.rule.metric != "rowCount" else ""
        value = "none" if self.value is None else f"{_num(self.value)}{unit}"
        verdict = "passed" if self.passed else "failed"
        return f"{self.rule.name!r} {verdict}: {self.rule.metric} is {value}, expected {self.rule.expectation()}"

    def to_dict(self) -> dict[str, Any]:
        r = self.rule
        return {"rule": r.id, "name": r.name, "source": r.source, "column": r.column, "metric": r.metric,
                "dimension": r.dimension, "severity": r.severity, "operator": r.operator,
                "threshold": list(r.threshold), "unit": r.unit, "expected": r.expectation(), "value": self.value,
                "passed": self.passed, "samples": self.samples, "error": self.error}


@dataclass
class QualityReport:
    rows: int
    results: list[CheckResult]

    @property
    def score(self) -> float:
        """Share of weighted checks passed, 0 to 100."""
        total = sum(r.rule.weight for r in self.results)
        return round(100.0 * sum(r.rule.weight for r in self.results if r.passed) / total, 1) if total else 100.0

    def failed(self, severity: str) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and r.rule.severity == severity]

    def summary(self) -> dict[str, Any]:
        return {"score": self.score, "checks": len(self.results), "passed": sum(r.passed for r in self.results),
                "failed_errors": len(self.failed("error")), "failed_warnings": len(self.failed("warning")),
                "rows": self.rows}


def mask(column: str, pii_type: str | None, q: Quote) -> str:
    """A column for display in failing samples: personal data masked (NRIC keeps its last 3 digits + letter)."""
    if not pii_type:
        return q(column)
    if pii_type == "nric":
        return f"CASE WHEN {q(column)} IS NULL THEN NULL ELSE '*****' || right(CAST({q(column)} AS VARCHAR), 4) END AS {q(column)}"
    return f"CASE WHEN {q(column)} IS NULL THEN NULL ELSE '***' END AS {q(column)}"


def run_quality(session: EngineSession, relation: str, contract: Contract, rules: list[QualityRule], *,
                column_types: dict[str, str], quote: Quote) -> QualityReport:
    """One scan for every metric, one query per business rule, then samples of what failed."""
    compiled = compile_quality(rules, relation, quote, dataset=contract.name, address=contract.id)
    row = session.query(compiled.scan_sql)[0]
    measured = dict(zip(compiled.columns, row, strict=True))
    rows = int(measured[ROWS])
    results = []
    for rule in rules:
        if rule.id in compiled.aliases:
            count = float(measured[compiled.aliases[rule.id]] or 0)
            value = count if rule.unit == "rows" or rule.metric == "rowCount" else (
                round(100.0 * count / rows, 4) if rows else 0.0)
            results.append(CheckResult(rule, value, rule.passes(value)))
    for rule, sql in compiled.sql_rules:
        try:
            session.check_read(sql, {relation}, QUALITY_RULE)  # the engine's own reading agrees: this dataset only
            got = session.query(sql)
            answer = float(got[0][0]) if got and got[0] and got[0][0] is not None else None
            results.append(CheckResult(rule, answer, rule.passes(answer)))
        except QueryRefused as exc:
            results.append(CheckResult(rule, None, False, error=f"the rule's query is refused: {exc}"))
        except (QueryFailed, TypeError, ValueError) as exc:
            results.append(CheckResult(rule, None, False, error=f"the rule's query failed: {exc}"))
    for rule in compiled.type_rules:
        zoned = "WITH TIME ZONE" in column_types.get(rule.column or "", "").upper()
        results.append(CheckResult(rule, 0.0 if zoned else 1.0, rule.passes(0.0 if zoned else 1.0)))
    for result in results:
        if not result.passed and result.error is None:
            result.samples = _samples(session, relation, contract, result.rule, quote)
    return QualityReport(rows, results)


def _samples(session: EngineSession, relation: str, contract: Contract, rule: QualityRule, q: Quote) -> list[dict[str, Any]]:
    """A few failing rows, keys and the checked column only, personal data masked."""
    keys = contract.primary_key
    checked = list(rule.arguments.get("properties") or ([rule.column] if rule.column else []))
    shown = list(dict.fromkeys(keys + checked))
    if not shown:
        return []
    pii = {c.name: c.pii_type for c in contract.columns}
    select = ", ".join(mask(c, pii.get(c), q) for c in shown)
    if rule.metric == "duplicateValues" and checked:
        group = ", ".join(q(c) for c in checked)
        where = f"({group}) IN (SELECT ({group}) FROM {q(relation)} GROUP BY {group} HAVING count(*) > 1)"
    else:
        where = failure_predicate(rule, q) or ""
    if not where:
        return []
    try:
        rows = session.query(f"SELECT {select} FROM {q(relation)} WHERE {where} LIMIT {SAMPLES}")
    except QueryFailed:
        return []
    return [{c: (v if isinstance(v, int | float | str | bool) or v is None else str(v)) for c, v in zip(shown, r, strict=True)}
            for r in rows]
