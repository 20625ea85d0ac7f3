"""The compliance report: figures from the stored statuses, filters, the trend, and both renderings."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from meshfactory import base_files, domain_yaml

from trustmesh.errors import UsageError
from trustmesh.governance.report import compliance_report, render_html, render_markdown
from trustmesh.service import Workspace

SHOP, STATS = "alpha.shop-dp", "beta.stats-dp"


def governed_files() -> dict[str, Any]:
    """alpha.shop-dp fails a binding policy (unfit); beta.stats-dp one in its grace period (at-risk); gamma is
    a domain of another sector without products."""
    files = copy.deepcopy(base_files())
    effective = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    files["governance/policies/standards.yaml"] = {"policies": [
        {"id": "gdo.owners-named", "title": "Owners are named", "rule": "owners-named", "severity": "error"},
        {"id": "gdo.columns-described", "title": "Columns are <described>", "rule": "columns-described",
         "severity": "error", "params": {"min_length": 13}, "scope": {"domains": ["alpha"]}},
        {"id": "gdo.gold-quality", "title": "Gold promises quality", "rule": "gold-quality", "severity": "error",
         "scope": {"domains": ["beta"]}, "effective": effective, "graceDays": 30},
    ]}
    files["domains/gamma/domain.yaml"] = domain_yaml("gamma", sector="health")
    return files


def apply(ws: Workspace, products: list[str] | None = None) -> None:
    statuses, problems = ws.governance.evaluate(ws.mesh, products)
    assert not [p for p in problems if p.severity == "error"], problems
    policies, _ = ws.governance.policies(ws.mesh)
    ws.governance.record(ws.mesh, statuses, "apply", "gdo", policies)


def test_report_from_stored_statuses(make_mesh: Any) -> None:
    ws = make_mesh(governed_files())
    empty = compliance_report(ws.mesh, ws.governance)
    assert empty["totals"]["not evaluated"] == 2 and empty["evaluated"] == 0 and empty["trend"] == []
    assert "No product has a stored status yet" in render_markdown(empty)

    apply(ws, [SHOP])  # the first run sees one product only
    apply(ws)
    data = compliance_report(ws.mesh, ws.governance)
    assert data["products"] == 2 and data["evaluated"] == 2
    assert data["totals"] == {"compliant": 0, "at-risk": 1, "unfit for consumption": 1, "not evaluated": 0}
    assert [u["product"] for u in data["unfit"]] == [SHOP]
    assert any("gdo.columns-described" in r for r in data["unfit"][0]["reasons"])
    (risk,) = data["at_risk"]
    assert risk["product"] == STATS and risk["deadline"] and risk["days_left"] in (28, 29)
    by_domain = {d["domain"]: d for d in data["by_domain"]}
    assert by_domain["gamma"]["products"] == 0 and by_domain["gamma"]["share_compliant"] is None
    assert by_domain["alpha"]["counts"]["unfit for consumption"] == 1 and by_domain["alpha"]["share_compliant"] == 0
    by_policy = {p["policy"]: p for p in data["by_policy"]}
    assert by_policy["gdo.owners-named"]["failing"] == 0 and by_policy["gdo.owners-named"]["in_scope"] == 2
    assert by_policy["gdo.owners-named"]["share_compliant"] == 1
    described = by_policy["gdo.columns-described"]
    assert (described["failing"], described["in_scope"], described["binding"]) == (1, 1, 1)
    assert described["findings"] >= 2 and described["level"] == "global" and described["severity"] == "error"
    assert by_policy["gdo.gold-quality"]["binding"] == 0 and by_policy["gdo.gold-quality"]["deadline"]
    assert data["by_policy"][0]["failing"] == 1  # most failed first
    assert data["worst_offenders"][0]["product"] == SHOP  # more errors
    assert [(r["products"], r["counts"]["unfit for consumption"], r["counts"]["at-risk"]) for r in data["trend"]] \
        == [(1, 1, 0), (2, 1, 1)]


def test_filters(make_mesh: Any) -> None:
    ws = make_mesh(governed_files())
    apply(ws)
    alpha = compliance_report(ws.mesh, ws.governance, domain="alpha")
    assert alpha["products"] == 1 and [d["domain"] for d in alpha["by_domain"]] == ["alpha"]
    assert [r["products"] for r in alpha["trend"]] == [1] and alpha["at_risk"] == []
    assert {p["policy"] for p in alpha["by_policy"]} == {"gdo.owners-named", "gdo.columns-described"}
    transport = compliance_report(ws.mesh, ws.governance, sector="transport")
    assert transport["products"] == 2 and {d["domain"] for d in transport["by_domain"]} == {"alpha", "beta"}
    health = compliance_report(ws.mesh, ws.governance, sector="health")
    assert health["products"] == 0 and health["trend"] == [] and health["by_policy"] == []
    render_markdown(health), render_html(health)
    for bad in ({"domain": "nowhere"}, {"sector": "nowhere"}, {"sector": "health", "domain": "alpha"}):
        with pytest.raises(UsageError):
            compliance_report(ws.mesh, ws.governance, **bad)


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_renderings(make_mesh: Any) -> None:
    ws = make_mesh(governed_files())
    apply(ws)
    data = compliance_report(ws.mesh, ws.governance)
    md = render_markdown(data)
    assert md.startswith("# Compliance report: test-mesh")
    assert "| domain | sector | kind | products | compliant | at-risk | unfit for consumption |" in md
    assert "Columns are &lt;described>" in md and "## At risk (1)" in md and SHOP in md

    page = render_html(data)
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert "Columns are &lt;described&gt;" in page and "<described>" not in page
    parser = Page()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert tags.count("table") == tags.count("caption") >= 5
    assert all(a.get("scope") in ("col", "row") for t, a in parser.tags if t == "th")
    assert ("html", {"lang": "en"}) in parser.tags
    assert any(SHOP in t for t in parser.text)
