"""The governance and audit pages and their JSON twins, over the demo mesh as `trustmesh demo` leaves it: the
Trusted Centre's policy update applied, so carriers.airlines-dp is unfit and health.activity-dp at risk."""

from __future__ import annotations

import html
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from markupsafe import escape
from meshfactory import governed_demo
from sqlalchemy import select, update

from trustmesh.metastore.schema import AuditRow
from trustmesh.service import Workspace
from trustmesh.web.app import create_app

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

CARRIERS, ACTIVITY = "carriers.airlines-dp", "health.activity-dp"
AUDITOR, ADMIN, CONSUMER = "priya", "gdo-admin", "irfan"
SCRIPT = '<script>alert("owned")</script>'
STATUSES = ("compliant", "at-risk", "unfit for consumption", "not evaluated")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """The demo mesh built and governed as the `demo` command does it."""
    ws = governed_demo(tmp_path_factory.mktemp("demo") / "mesh")
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def client(demo: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(demo)) as c:
        yield c


@pytest.fixture(scope="module")
def tokens(demo: Workspace) -> dict[str, str]:
    return {person: demo.tokens.issue(person, person, name="tests", days=1)[0] for person in (AUDITOR, ADMIN, CONSUMER)}


def get(client: TestClient, tokens: dict[str, str], person: str, url: str, **params: Any) -> Any:
    # httpx replaces a URL's query with `params` even when they are empty
    return client.get(url, params=params or None, headers={"Authorization": f"Bearer {tokens[person]}"},
                      follow_redirects=False)


# --- reading the HTML ---------------------------------------------------------------------------------------------


def section(page: str, ident: str) -> str:
    found = re.search(rf'<section[^>]*aria-labelledby="{re.escape(ident)}".*?</section>', page, re.S)
    assert found, f"no section {ident}"
    return found.group(0)


def text(fragment: str) -> str:
    """The words of some HTML as a reader gets them (a tag separates words, not a word from its comma)."""
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())
    return re.sub(r" ([,.;:)])", r"\1", words)


def rows(fragment: str) -> list[list[str]]:
    """The body rows of the tables in the fragment, each as its cells' text."""
    bodies = "".join(re.findall(r"<tbody>(.*?)</tbody>", fragment, re.S))
    return [[text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", bodies, re.S)]


class Outline(HTMLParser):
    """Headings, table headers, form fields and labels: what the accessibility checks look at."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[int] = []
        self.th_scopes: list[str | None] = []
        self.fields: list[str | None] = []
        self.labels: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        elif tag == "th":
            self.th_scopes.append(a.get("scope"))
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.fields.append(a.get("id"))
        elif tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))


def assert_accessible(page: str) -> None:
    outline = Outline()
    outline.feed(page)
    assert outline.headings.count(1) == 1 and outline.headings[0] == 1
    assert all(b - a <= 1 for a, b in zip(outline.headings, outline.headings[1:], strict=False)), outline.headings
    assert outline.th_scopes and all(s in ("col", "row") for s in outline.th_scopes)
    assert outline.fields and all(f in outline.labels for f in outline.fields), (outline.fields, outline.labels)


# --- governance ---------------------------------------------------------------------------------------------------


def test_governance_names_the_unfit_and_at_risk_products_with_their_findings(
        client: TestClient, tokens: dict[str, str], demo: Workspace) -> None:
    page = get(client, tokens, CONSUMER, "/governance")
    assert page.status_code == 200
    stored = demo.governance.statuses()
    unfit = section(page.text, "unfit")
    assert f'href="/products/{CARRIERS}"' in unfit and ACTIVITY not in unfit
    (finding,) = stored[CARRIERS]["findings"]
    assert finding["policy"] == "transport.carrier-codes"
    for value in (finding["policy"], finding["message"], finding["fix"], "binding now"):
        assert value in text(unfit)
    risk = section(page.text, "at-risk")
    assert f'href="/products/{ACTIVITY}"' in risk and CARRIERS not in risk
    deadline = stored[ACTIVITY]["deadline"][:10]
    assert f"Unfit from {deadline}" in text(risk)
    found = stored[ACTIVITY]["findings"]
    assert len(rows(risk)) == len(found) and any(not f["binding"] for f in found)
    for f in found:
        assert f["message"] in text(risk)
    assert f"in grace until {deadline}" in text(risk)
    assert_accessible(page.text)


def test_sector_and_domain_counts_match_the_service(client: TestClient, tokens: dict[str, str],
                                                    demo: Workspace) -> None:
    """Counted here from the stored statuses and the mesh's domains, not from the report the page uses."""
    mesh, stored = demo.mesh, demo.governance.statuses()
    by_sector: dict[str, Counter[str]] = {}
    by_domain: dict[str, Counter[str]] = {name: Counter() for name in mesh.domains}
    for address, product in mesh.products.items():
        status = stored[address]["status"] if address in stored else "not evaluated"
        by_sector.setdefault(mesh.domains[product.domain].sector, Counter())[status] += 1
        by_domain[product.domain][status] += 1
    assert by_sector["transport"]["unfit for consumption"] == 1 and by_sector["health"]["at-risk"] == 1
    page = get(client, tokens, CONSUMER, "/governance").text
    sectors = {r[0]: r for r in rows(section(page, "by-sector"))}
    assert set(sectors) == set(by_sector)
    for name, counts in by_sector.items():
        assert sectors[name][2:7] == [str(sum(counts.values())), *(str(counts[s]) for s in STATUSES)]
    domains = {r[0]: r for r in rows(section(page, "by-domain"))}
    assert set(domains) == set(mesh.domains)
    for name, counts in by_domain.items():
        assert domains[name][3:8] == [str(sum(counts.values())), *(str(counts[s]) for s in STATUSES)]
    summary = text(page[page.index('data-testid="summary"'):].split("</p>", 1)[0])
    assert "10 products, 10 evaluated: 8 compliant, 1 at-risk, 1 unfit for consumption (80% compliant)" in summary


def test_governance_filters(client: TestClient, tokens: dict[str, str]) -> None:
    health = get(client, tokens, CONSUMER, "/governance", sector="health").text
    assert [r[0] for r in rows(section(health, "by-domain"))] == ["health"]
    assert [r[0] for r in rows(section(health, "by-sector"))] == ["health"]
    assert "No product is unfit for consumption." in section(health, "unfit")
    assert ACTIVITY in section(health, "at-risk") and "<h1>Governance: sector health</h1>" in health
    assert '<option value="health" selected>' in health

    carriers = get(client, tokens, CONSUMER, "/governance", domain="carriers")
    assert carriers.status_code == 200 and "<h1>Governance: domain carriers</h1>" in carriers.text
    assert [r[0] for r in rows(section(carriers.text, "by-domain"))] == ["carriers"]
    assert CARRIERS in section(carriers.text, "unfit") and "No product is at risk." in carriers.text
    changes = rows(section(carriers.text, "history").split('id="changes"', 1)[1])
    assert [(r[0], r[3], r[4]) for r in changes] == [(CARRIERS, "compliant", "unfit for consumption")]

    empty = get(client, tokens, CONSUMER, "/governance", sector="", domain="")  # the form's "all"
    assert empty.status_code == 200 and "<h1>Governance</h1>" in empty.text

    for bad, words in (({"sector": "nowhere"}, "no sector 'nowhere' in the mesh"),
                       ({"sector": "health", "domain": "carriers"}, "domain carriers is in the transport sector")):
        refused = get(client, tokens, CONSUMER, "/governance", **bad)
        assert refused.status_code == 400 and words in html.unescape(refused.text)
        assert "<h1>Bad Request</h1>" in refused.text
        twin = get(client, tokens, CONSUMER, "/governance.json", **bad)
        assert twin.status_code == 400 and words in twin.json()["detail"]


def test_the_governance_twin_is_what_the_page_shows(client: TestClient, tokens: dict[str, str]) -> None:
    for params in ({}, {"sector": "transport"}, {"domain": "health"}):
        data = get(client, tokens, CONSUMER, "/governance.json", **params).json()
        page = get(client, tokens, CONSUMER, "/governance", **params).text
        assert data["filters"] == {"sector": params.get("sector"), "domain": params.get("domain")}
        assert [r[0] for r in rows(section(page, "by-domain"))] == [d["domain"] for d in data["by_domain"]]
        for d, row in zip(data["by_domain"], rows(section(page, "by-domain")), strict=True):
            assert row[3:8] == [str(d["products"]), *(str(d["counts"][s]) for s in STATUSES)]
        for s, row in zip(data["by_sector"], rows(section(page, "by-sector")), strict=True):
            assert row[0] == s["sector"] and row[2] == str(s["products"])
        assert len(rows(section(page, "unfit"))) == sum(len(u["findings"]) for u in data["unfit"])
        for line in (*data["unfit"], *data["at_risk"]):
            assert f'href="/products/{line["product"]}"' in page
        policies = rows(section(page, "policies"))
        assert [r[0].split()[0] for r in policies] == [p["id"] for p in data["policies"]]
        for p, row in zip(data["policies"], policies, strict=True):
            assert row[4] == p["scope_text"] and row[7:] == ["—" if p["in_scope"] is None else str(p["in_scope"]),
                                                             "—" if p["failing"] is None else str(p["failing"])]
        assert f'href="/governance.json{"?" if params else ""}' in page
    whole = get(client, tokens, CONSUMER, "/governance.json").json()
    levels = {p["id"]: (p["level"], p["owner"]) for p in whole["policies"]}
    assert levels["transport.carrier-codes"] == ("sector", "transport-tc") and levels["gdo.pii-masking"][0] == "global"
    assert levels["health.gold-quality"] == ("domain", "health")
    masking = next(p for p in whole["policies"] if p["id"] == "gdo.pii-masking")
    assert masking["scope_text"] == "sectors=health" and masking["effective"] and masking["grace_days"] == 60
    assert [(r["trigger"], r["counts"]["unfit for consumption"]) for r in whole["trend"]] == [("build", 0),
                                                                                            ("apply", 1)]


# --- audit --------------------------------------------------------------------------------------------------------


def seqs(page: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr id="entry-(\d+)"', page)]


def test_the_auditor_sees_entries_newest_first_and_a_verified_chain(client: TestClient, tokens: dict[str, str],
                                                                    demo: Workspace) -> None:
    page = get(client, tokens, AUDITOR, "/audit")
    assert page.status_code == 200
    chain = demo.audit.verify()
    assert chain["ok"]
    banner = text(section(page.text, "chain-heading"))
    assert "Verified:" in banner and f"all {chain['entries']} entries are intact" in banner
    assert chain["head"] in banner
    logged = demo.audit.log(AUDITOR, limit=100)
    assert seqs(page.text) == [e["seq"] for e in logged] == sorted(seqs(page.text), reverse=True)
    newest = rows(section(page.text, "entries-heading"))[0]
    assert newest[:5] == [str(logged[0]["seq"]), logged[0]["at"][:19].replace("T", " "), logged[0]["type"],
                          logged[0]["actor"], logged[0]["subject"]]
    twin = get(client, tokens, AUDITOR, "/audit.json").json()
    assert twin["chain"] == chain and [e["seq"] for e in twin["entries"]] == seqs(page.text)
    assert twin["entries"] == logged[:len(twin["entries"])]
    assert_accessible(page.text)
    assert get(client, tokens, ADMIN, "/audit").status_code == 200  # governance admins read it too


def test_audit_filters_narrow_the_entries(client: TestClient, tokens: dict[str, str], demo: Workspace) -> None:
    every = demo.audit.log(AUDITOR, limit=None)
    for params, keep in (({"type": "access."}, lambda e: e["type"].startswith("access.")),
                         ({"type": "governance.evaluated"}, lambda e: e["type"] == "governance.evaluated"),
                         ({"actor": "ravi"}, lambda e: e["actor"] == "ravi"),
                         ({"subject": CARRIERS}, lambda e: e["subject"].startswith(CARRIERS)),
                         ({"actor": "ravi", "type": "policy."}, lambda e: e["actor"] == "ravi"
                          and e["type"] == "policy.changed")):
        expected = [e["seq"] for e in every if keep(e)]
        assert expected and len(expected) < len(every), params
        page = get(client, tokens, AUDITOR, "/audit", **params).text
        assert seqs(page) == expected[:100], params
        assert [e["seq"] for e in get(client, tokens, AUDITOR, "/audit.json", **params).json()["entries"]] \
            == expected[:100]
        for name, value in params.items():
            assert f'name="{name}" type="text"' in page and f'value="{value}"' in page
    assert len(seqs(get(client, tokens, AUDITOR, "/audit", since="1d").text)) == min(len(every), 100)
    future = get(client, tokens, AUDITOR, "/audit", since="2999-01-01").text
    assert seqs(future) == [] and "No entry matches these filters." in future


def test_audit_pages_by_sequence(client: TestClient, tokens: dict[str, str], demo: Workspace) -> None:
    every = [e["seq"] for e in demo.audit.log(AUDITOR, limit=None)]
    assert len(every) > 40
    seen: list[int] = []
    url, pages = "/audit?limit=20", 0
    while url:
        page = get(client, tokens, AUDITOR, url).text
        shown = seqs(page)
        assert len(shown) == 20 or len(seen) + len(shown) == len(every)
        assert not set(shown) & set(seen), "a page repeats entries"  # and so the walk ends
        seen += shown
        pages += 1
        older = re.search(r'<a href="([^"]+)" rel="next">Older entries</a>', page)
        url = html.unescape(older.group(1)) if older else ""
        if older:
            assert f"before={shown[-1]}" in url and "limit=20" in url
            assert 'href="/audit?limit=20">Newest entries' in page or pages == 1
    assert seen == every and pages == -(-len(every) // 20)
    second = get(client, tokens, AUDITOR, "/audit.json", limit=20, before=every[19]).json()
    assert [e["seq"] for e in second["entries"]] == every[20:40] and second["older_before"] == every[39]
    last = get(client, tokens, AUDITOR, "/audit.json", limit=20, before=every[-1] + 1).json()
    assert [e["seq"] for e in last["entries"]] == every[-1:] and last["older_before"] is None


def test_a_consumer_may_not_read_the_audit_trail(client: TestClient, tokens: dict[str, str]) -> None:
    page = get(client, tokens, CONSUMER, "/audit")
    assert page.status_code == 403 and "<h1>Forbidden</h1>" in page.text
    assert "irfan may not read the audit trail: that takes an auditor or a governance admin" in page.text
    assert 'id="entry-' not in page.text and "Chain verification" not in page.text
    twin = get(client, tokens, CONSUMER, "/audit.json")
    assert twin.status_code == 403 and "entries" not in twin.json()
    assert 'href="/audit"' not in get(client, tokens, CONSUMER, "/governance").text  # nor linked in the nav


def test_a_tampered_chain_names_its_first_bad_entry(client: TestClient, tokens: dict[str, str],
                                                   demo: Workspace) -> None:
    entries = AuditRow.__table__
    with demo.store.engine.connect() as c:
        original = c.execute(select(entries.c.details).where(entries.c.seq == 5)).scalar_one()
    with demo.store.engine.begin() as c:  # as a tamperer would: straight SQL, no audit.append
        c.execute(update(entries).where(entries.c.seq == 5).values(details={**original, "note": "rewritten"}))
    try:
        chain = demo.audit.verify()
        assert chain["ok"] is False and chain["first_bad"] == 5
        page = get(client, tokens, AUDITOR, "/audit").text
        banner = text(section(page, "chain-heading"))
        assert "Not verified: the chain is broken at entry 5." in banner and chain["problem"] in banner
        assert "First bad entry 5" in banner and 'href="/audit?before=6#entry-5"' in page
        bad = get(client, tokens, AUDITOR, "/audit", before=6).text
        assert seqs(bad) == [5, 4, 3, 2, 1] and '<tr id="entry-5" class="audit-bad">' in bad
        assert get(client, tokens, AUDITOR, "/audit.json").json()["chain"] == chain
    finally:
        with demo.store.engine.begin() as c:
            c.execute(update(entries).where(entries.c.seq == 5).values(details=original))
    assert demo.audit.verify()["ok"] is True


@pytest.mark.parametrize(("params", "words"), [
    ({"since": "soon"}, "since 'soon' is not a time — fix: 7d, 12h, 30m or an ISO date"),
    ({"before": "abc"}, "query.before"),
    ({"before": "0"}, "query.before"),
    ({"limit": "0"}, "query.limit"),
    ({"limit": "100000"}, "query.limit"),
])
def test_bad_audit_filters_are_a_clear_400(client: TestClient, tokens: dict[str, str], params: dict[str, str],
                                           words: str) -> None:
    page = get(client, tokens, AUDITOR, "/audit", **params)
    assert page.status_code == 400 and "<h1>Bad Request</h1>" in page.text and words in html.unescape(page.text)
    twin = get(client, tokens, AUDITOR, "/audit.json", **params)
    assert twin.status_code in (400, 422) and twin.headers["content-type"] == "application/problem+json"


# --- signing in and hostile text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/governance", "/audit?type=access.", "/governance.json"])
def test_pages_without_sign_in_go_to_the_sign_in_page(client: TestClient, url: str) -> None:
    response = client.get(url, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/login?next={quote(url, safe='')}"


def test_hostile_text_is_escaped(client: TestClient, tokens: dict[str, str], demo: Workspace) -> None:
    """An actor and a token name are text the pages repeat: as text, never as markup."""
    demo.tokens.issue(AUDITOR, AUDITOR, name=SCRIPT, days=1)
    current = demo.mesh
    statuses, _ = demo.governance.evaluate(current)
    demo.governance.record(current, statuses, "check", SCRIPT, demo.governance.policies(current)[0])
    escaped = str(escape(SCRIPT))
    audit = get(client, tokens, AUDITOR, "/audit", actor=SCRIPT)
    assert audit.status_code == 200 and "<script" not in audit.text
    assert len(seqs(audit.text)) == 1  # the governance.evaluated entry, by that actor
    assert f'value="{escaped}"' in audit.text and f"<td>{escaped}</td>" in audit.text
    token = get(client, tokens, AUDITOR, "/audit", type="token.created").text
    assert "<script" not in token and f"name: {escaped}" in token
    governance = get(client, tokens, CONSUMER, "/governance").text
    assert "<script" not in governance and f"<td>{escaped}</td>" in governance  # the run's actor
    refused = get(client, tokens, CONSUMER, "/governance", sector=SCRIPT)
    assert refused.status_code == 400 and "<script" not in refused.text and escaped in refused.text
