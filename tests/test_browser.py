"""The web UI in a real browser (Debian's chromium, driven by playwright) against a real server on the demo mesh.

The journey: a consumer finds a dataset and requests access; its domain's steward approves level 1 and its data
owner level 2 in their inboxes; the consumer queries it and sees NRIC masked; an auditor sees every step in the
audit trail and a verified chain. Each page is saved as a screenshot under `.artifacts/screenshots/`.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meshfactory import free_port, governed_demo

from trustmesh.service import Workspace

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = Path(__file__).resolve().parents[1] / ".artifacts" / "screenshots"
PARTICIPANTS = "health.activity-dp.participants"
MASKED_NRIC = re.compile(r"^\*{5}\d{3}[A-Z]$")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; .ci/run installs it)"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, dict[str, str]]]:
    """The demo mesh as `trustmesh demo` leaves it (built, access seeded, the Trusted Centre's policy update), and
    a sign-in token for everyone the journey needs."""
    from trustmesh.demo.access import demo_tokens

    ws = governed_demo(tmp_path_factory.mktemp("browser") / "demo-mesh")
    tokens = demo_tokens(ws)
    for person in ("nurul", "sharon"):  # health's steward and data owner
        tokens[person] = ws.tokens.issue(person, person, name="browser tests", days=1)[0]
    yield ws, tokens
    ws.close()


@pytest.fixture(scope="module")
def server(demo: tuple[Workspace, dict[str, str]]) -> Iterator[str]:
    """A real uvicorn server over the demo mesh on a free loopback port, stopped after the module."""
    import uvicorn

    from trustmesh.web.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(demo[0]), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def sign_in(page: Any, base: str, token: str, then: str = "/") -> None:
    page.goto(f"{base}{then}")
    assert "/login" in page.url
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: url == f"{base}{then}")


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))


def flash(page: Any) -> str:
    text: str = page.locator(".flash").inner_text()
    return text


def test_journey_request_approve_query_audit(page: Any, server: str, demo: tuple[Workspace, dict[str, str]]) -> None:
    ws, tokens = demo

    # 1. the consumer signs in, searches, and opens the product page
    page.goto(server)
    shot(page, "login")
    sign_in(page, server, tokens["jiahui"])
    assert page.get_by_test_id("whoami").inner_text() == ws.directory().principals["jiahui"].name
    page.get_by_label(re.compile("^Search datasets")).fill("participants")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=participants"))
    shot(page, "search")
    page.get_by_role("link", name=PARTICIPANTS).first.click()
    page.wait_for_url(re.compile(r"/products/health\.activity-dp#dataset-participants$"))
    assert page.get_by_role("heading", name=re.compile("^Lineage")).first.is_visible()
    assert page.locator("svg.lineage-graph").count() >= 1
    shot(page, "product-dataset")
    page.goto(f"{server}/products/health.activity-dp")
    shot(page, "product")

    # 2. request access: three columns, NRIC among them but not unmasked
    page.locator("#request-participants summary").click()
    form = page.locator("#request-participants form")
    for box in form.locator('input[name="columns"]').all():
        if box.get_attribute("value") not in ("participant_id", "nric", "gender"):
            box.uncheck()
    form.get_by_label(re.compile(r"^Purpose \(")).fill("Linking programme participants to commuting patterns for the "
                                                    "active-mobility study")
    form.get_by_label("Purpose category").select_option("research")
    form.get_by_label(re.compile("^Duration")).fill("30")
    shot(page, "request-form")
    form.get_by_role("button", name="Send request").click()
    page.wait_for_url(re.compile(r"/access\?done=requested"))
    sent = re.search(r"Request (req-\d+) sent", flash(page))
    assert sent, flash(page)
    request_id = sent.group(1)
    card = page.locator(f"#{request_id}")
    assert "pending" in card.inner_text() and "Level 1 of 2" in card.inner_text()
    shot(page, "my-access-pending")
    sign_out(page)

    # 3. the health steward approves level 1; the data owner level 2
    for person, done in (("nurul", "You approved"), ("sharon", "the grant is active now")):
        sign_in(page, server, tokens[person], "/inbox")
        card = page.locator(f"#{request_id}")
        assert card.is_visible(), page.content()
        assert "jiahui" in card.inner_text()
        shot(page, f"inbox-{person}")
        card.get_by_label(re.compile("^Note")).fill(f"reviewed by {person}")
        card.get_by_role("button", name=re.compile("^Approve level")).click()
        page.wait_for_url(re.compile(r"/inbox\?done="))
        assert done in flash(page) and request_id in flash(page)
        sign_out(page)

    # 4. the consumer sees the grant and queries: NRIC masked
    sign_in(page, server, tokens["jiahui"], "/access")
    assert "active" in page.get_by_test_id("grants").inner_text()
    page.get_by_role("link", name="Query", exact=True).click()
    page.wait_for_url(re.compile(r"/query$"))
    page.get_by_label("Query", exact=True).fill('SELECT participant_id, nric, gender FROM health."activity-dp".'
                                                "participants ORDER BY participant_id")
    page.get_by_role("button", name="Run query").click()
    page.wait_for_selector('[data-testid="result"]')
    result = page.get_by_test_id("result")
    headers = [h.inner_text() for h in result.locator("thead th").all()]
    assert "masked" in headers[1] and "masked" not in headers[0]
    nrics = [c.inner_text() for c in result.locator("tbody tr td:nth-child(2)").all()]
    assert nrics and all(MASKED_NRIC.match(n) for n in nrics), nrics[:5]
    shot(page, "query")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    csv = Path(download.value.path()).read_text()
    assert csv.splitlines()[0] == '"participant_id","nric","gender"' and all(
        MASKED_NRIC.match(line.split(",")[1].strip('"')) for line in csv.splitlines()[1:])
    sign_out(page)

    # 5. the auditor sees those events and a verified chain
    sign_in(page, server, tokens["priya"], "/audit")
    text = page.locator("main").inner_text()
    assert re.search(r"verified", text, re.I), text[:500]
    page.get_by_label("Subject").fill(PARTICIPANTS)
    page.get_by_label("Since").fill("1h")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"subject=health\.activity-dp\.participants"))
    rows = [r.inner_text() for r in page.locator("main table").first.locator("tbody tr").all()]
    seen = {(kind, who) for kind, who in (("access.requested", "jiahui"), ("access.approved", "nurul"),
                                          ("access.approved", "sharon"), ("grant.created", "sharon"),
                                          ("query.run", "jiahui")) if any(kind in r and who in r for r in rows)}
    assert len(seen) == 5, rows[:20]
    shot(page, "audit")
    page.goto(f"{server}/governance")
    shot(page, "governance")
    assert ws.audit.verify()["ok"]


def test_every_form_field_has_a_label_and_the_skip_link_comes_first(page: Any, server: str,
                                                                   demo: tuple[Workspace, dict[str, str]]) -> None:
    _, tokens = demo
    sign_in(page, server, tokens["alvin"], "/inbox")
    for url in ("/", "/products/health.activity-dp", "/inbox", "/access", "/query", "/governance", "/login"):
        page.goto(f"{server}{url}")
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map(e => e.outerHTML)""")
        assert unlabelled == [], (url, unlabelled)
        assert page.locator("h1").count() == 1, url
    page.goto(f"{server}/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def test_a_consumer_cannot_reach_what_they_were_not_granted(page: Any, server: str,
                                                            demo: tuple[Workspace, dict[str, str]]) -> None:
    _, tokens = demo
    sign_in(page, server, tokens["irfan"], "/query")
    page.get_by_label("Query", exact=True).fill('SELECT * FROM commuter."trips-dp".commuters')
    page.get_by_role("button", name="Run query").click()
    alert = page.get_by_role("alert")
    assert "Refused" in alert.inner_text() and "commuter.trips-dp.commuters" in alert.inner_text()
    assert page.get_by_test_id("result").count() == 0
    page.goto(f"{server}/audit")
    assert "Forbidden" in page.locator("h1").inner_text() or "may not" in page.locator("main").inner_text()


def test_screenshots_for_the_readme(request: pytest.FixtureRequest) -> None:
    """With TRUSTMESH_README_SCREENSHOTS=1 (`make screenshots`), copy the journey's pages to docs/screenshots."""
    import os

    if not os.environ.get("TRUSTMESH_README_SCREENSHOTS"):
        pytest.skip("set TRUSTMESH_README_SCREENSHOTS=1 to refresh docs/screenshots")
    target = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("search", "product", "inbox-nurul", "query"):
        source = SHOTS / f"{name}.png"
        assert source.exists(), f"{source} is missing: run the journey test first"
        shutil.copy(source, target / f"{name}.png")
