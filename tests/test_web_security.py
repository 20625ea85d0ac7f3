"""Trust between domains on the web: failing-row samples stay with the dataset's domain, sessions live on the
server (signing out ends them, each has its own CSRF value, sign-in itself is CSRF-proof), and a flood of bad
tokens cannot flood the audit trail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from meshfactory import ITEMS_CSV, base_files, grant_product_inputs, write_files
from sqlalchemy import select

from trustmesh.access.sessions import session_hash
from trustmesh.access.tokens import REFUSALS_PER_MINUTE, REFUSALS_PER_SOURCE, RefusalLog
from trustmesh.metastore.schema import WebSessionRow
from trustmesh.service import Workspace
from trustmesh.web.app import create_app

SHOP = "domains/alpha/products/shop-dp"
ITEMS = "alpha.shop-dp.items"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def _rules(files: dict[str, Any]) -> dict[str, Any]:
    """items.price: a warning the served data fails (pear costs 2.0), an error only a later build fails."""
    price = files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"][2]
    price["quality"] = [
        {"name": "pricey", "metric": "invalidValues", "arguments": {"validValues": [0.5, 1.5]}, "mustBe": 0,
         "severity": "warning"},
        {"name": "known-prices", "metric": "invalidValues", "arguments": {"validValues": [0.5, 1.5, 2.0]},
         "mustBe": 0}]
    return files


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """alpha.shop-dp.items served with a failing warning (its samples: item 2), and a quarantined candidate that
    failed an error (its samples: item 4)."""
    root = write_files(tmp_path_factory.mktemp("security") / "mesh", _rules(base_files()))
    ws = Workspace.open(root)
    grant_product_inputs(ws)
    assert ws.build().ok
    write_files(root, {f"{SHOP}/data/items.csv": ITEMS_CSV + "4,fig,9.0,2024-01-03\n"})
    assert not ws.build().ok
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def tokens(mesh: Workspace) -> dict[str, str]:
    return {p: mesh.tokens.issue(p, p, name="security tests", days=1)[0]
            for p in ("alpha-steward", "alpha-dev", "beta-dev", "beta-owner", "gdo")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def samples_in(value: Any) -> list[Any]:
    """Every `samples` list anywhere in a JSON document, flattened."""
    if isinstance(value, dict):
        return [*value.get("samples", []), *(s for k, v in value.items() if k != "samples" for s in samples_in(v))]
    if isinstance(value, list):
        return [s for v in value for s in samples_in(v)]
    return []


# --- failing-row samples ------------------------------------------------------------------------------------------


def test_failing_rows_reach_only_the_datasets_own_domain(mesh: Workspace, tokens: dict[str, str]) -> None:
    with TestClient(create_app(mesh)) as c:
        for person in ("alpha-steward", "alpha-dev"):  # alpha's people, custodian or developer
            quality = c.get(f"/api/v1/datasets/{ITEMS}/quality", headers=bearer(tokens[person])).json()
            assert quality["samples_withheld"] is None
            pricey = next(ch for ch in quality["checks"] if ch["name"] == "pricey")
            assert pricey["samples"] == [{"item_id": 2, "price": 2.0}]
            [held] = quality["quarantine"]
            assert {"item_id": 4, "price": 9.0} in samples_in(held["checks"])

        # another domain's people, even holding a grant-free token, the governance admin: the checks, not the rows
        for person in ("beta-dev", "beta-owner", "gdo"):
            who = bearer(tokens[person])
            quality = c.get(f"/api/v1/datasets/{ITEMS}/quality", headers=who).json()
            pricey = next(ch for ch in quality["checks"] if ch["name"] == "pricey")
            assert (pricey["passed"], pricey["value"], pricey["samples"]) == (False, 1.0, [])
            assert quality["quarantine"][0]["rows"] == 4 and "known-prices" in quality["quarantine"][0]["reason"]
            assert samples_in(quality) == [], person
            assert "only to the people of alpha, the dataset's domain" in quality["samples_withheld"]
            for url in (f"/api/v1/datasets/{ITEMS}", "/api/v1/products/alpha.shop-dp", "/products/alpha.shop-dp.json"):
                shown = c.get(url, headers=who)
                assert shown.status_code == 200, (url, shown.text)
                assert samples_in(shown.json()) == [], (person, url)
            page = c.get("/products/alpha.shop-dp", headers=who).text
            assert "Failing rows of" not in page and 'data-testid="samples-withheld"' in page

        own = c.get("/products/alpha.shop-dp", headers=bearer(tokens["alpha-steward"])).text
        assert "Failing rows of “pricey”" in own and 'data-testid="samples-withheld"' not in own


def test_the_metastores_own_user_still_sees_the_samples(mesh: Workspace) -> None:
    """Locally (the CLI, Python holding the metastore) there is no other caller to keep the rows from."""
    local = mesh.catalog.quality(ITEMS)
    assert local["samples_withheld"] is None and {"item_id": 2, "price": 2.0} in samples_in(local["checks"])


# --- sessions -----------------------------------------------------------------------------------------------------


def browser(mesh: Workspace, address: str = "testclient") -> TestClient:
    return TestClient(create_app(mesh), follow_redirects=False, client=(address, 50000))


def sign_in(client: TestClient, token: str) -> Any:
    found = CSRF.search(client.get("/login").text)
    assert found, "the sign-in form carries a CSRF value"
    return client.post("/login", data={"token": token, "csrf": found.group(1)})


def page_csrf(client: TestClient) -> str:
    found = CSRF.search(client.get("/access").text)
    assert found, "a signed-in page carries the sign-out form"
    return found.group(1)


def test_the_cookie_holds_a_session_id_and_the_metastore_only_its_hash(mesh: Workspace, tokens: dict[str, str]) -> None:
    with browser(mesh) as c:
        signed_in = sign_in(c, tokens["alpha-dev"])
        assert signed_in.status_code == 303 and tokens["alpha-dev"] not in signed_in.headers["set-cookie"]
        session_id = c.cookies["trustmesh_session"]
        assert session_id.startswith("tms_") and session_id != tokens["alpha-dev"]
        with mesh.store.session() as s:
            row = s.scalars(select(WebSessionRow).where(WebSessionRow.hash == session_hash(session_id))).one()
            assert (row.principal, row.credential, row.ended_at) == ("alpha-dev", "api-token", None)
            assert session_id not in str([row.hash, row.token_hash])


def test_signing_out_ends_the_session_so_a_copied_cookie_is_refused(mesh: Workspace, tokens: dict[str, str]) -> None:
    with browser(mesh) as c, browser(mesh) as thief:
        assert sign_in(c, tokens["alpha-steward"]).status_code == 303
        copied = c.cookies["trustmesh_session"]
        thief.cookies.set("trustmesh_session", copied)
        assert thief.get("/access").status_code == 200  # a copy works while the session lives…
        out = c.post("/logout", data={"csrf": page_csrf(c)})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        for url in ("/access", "/products/alpha.shop-dp.json"):  # …and not after sign-out
            replayed = thief.get(url)
            assert replayed.status_code == 303 and replayed.headers["location"].endswith("&ended=1"), url
            thief.cookies.set("trustmesh_session", copied)
        refused = mesh.audit.log("gdo", type="auth.refused", limit=1)[0]
        assert refused["subject"] == "session" and "the session ended (signed out)" in refused["details"]["reason"]
        assert copied not in str(refused)


def test_sign_in_is_refused_without_its_forms_csrf_value(mesh: Workspace, tokens: dict[str, str]) -> None:
    """Login CSRF: another site's form cannot sign this browser in (as the attacker, say)."""
    with browser(mesh) as c, browser(mesh) as other:
        forged = c.post("/login", data={"token": tokens["beta-dev"]})
        assert forged.status_code == 403 and "this sign-in was not sent from this site" in forged.text
        assert "trustmesh_session" not in c.cookies
        value = CSRF.search(other.get("/login").text)
        assert value
        someone_elses = c.post("/login", data={"token": tokens["beta-dev"], "csrf": value.group(1)})
        assert someone_elses.status_code == 403 and "trustmesh_session" not in c.cookies  # no cookie of its own
        c.get("/login")
        wrong = c.post("/login", data={"token": tokens["beta-dev"], "csrf": "0" * 32})
        assert wrong.status_code == 403 and "trustmesh_session" not in c.cookies
        assert c.get("/access").status_code == 303  # still not signed in
        assert sign_in(c, tokens["beta-dev"]).status_code == 303 and c.get("/access").status_code == 200


def test_every_session_has_its_own_csrf_value(mesh: Workspace, tokens: dict[str, str]) -> None:
    with browser(mesh) as first, browser(mesh) as second:
        sign_in(first, tokens["alpha-dev"])
        sign_in(second, tokens["alpha-dev"])  # the same person, the same token
        one, two = page_csrf(first), page_csrf(second)
        assert one != two
        assert second.post("/logout", data={"csrf": one}).status_code == 403  # one session's value fits no other
        assert second.get("/access").status_code == 200
        old_session = first.cookies["trustmesh_session"]
        sign_in(first, tokens["alpha-dev"])  # signing in again starts a new session and ends the old one
        assert page_csrf(first) != one
        with browser(mesh) as replay:
            replay.cookies.set("trustmesh_session", old_session)
            assert replay.get("/access").status_code == 303


def test_revoking_the_token_ends_its_sessions(mesh: Workspace) -> None:
    token, info = mesh.tokens.issue("alpha-owner", "alpha-owner", name="to revoke", days=1)
    with browser(mesh) as c:
        sign_in(c, token)
        assert c.get("/access").status_code == 200
        mesh.tokens.revoke("alpha-owner", info["id"])
        ended = c.get("/access")
        assert ended.status_code == 303 and ended.headers["location"].endswith("&ended=1")
    with mesh.store.session() as s:
        row = s.scalars(select(WebSessionRow).where(WebSessionRow.token_id == int(info["id"][4:]))).one()
        assert row.ended_at is not None and row.ended_reason == f"API token {info['id']} was revoked"


# --- refused tokens and the audit trail ---------------------------------------------------------------------------


def refusals(ws: Workspace) -> list[dict[str, Any]]:
    return ws.audit.log("gdo", type="auth.refused", limit=None)


def test_a_thousand_bad_tokens_write_a_bounded_number_of_entries(make_mesh: Any, tmp_path: Path) -> None:
    now = [datetime(2026, 12, 10, 9, 0, 5, tzinfo=UTC)]
    ws = Workspace.open(make_mesh(grants=False).root, clock=lambda: now[0])
    try:
        before = len(refusals(ws))
        with browser(ws, "203.0.113.7") as c:
            for i in range(1000):
                kind = i % 3
                if kind == 0:
                    response = c.get("/api/v1/me", headers=bearer(f"tmk_{i:043d}"))
                elif kind == 1:
                    response = c.get("/api/v1/datasets", headers=bearer("garbage"))
                else:
                    c.cookies.set("trustmesh_session", f"tms_forged{i}")
                    response = c.get("/access")
                assert response.status_code in (401, 303), response.text
            written = refusals(ws)[: len(refusals(ws)) - before]
            assert len(written) == REFUSALS_PER_SOURCE
            assert {e["details"]["source"] for e in written} == {"203.0.113.7"}
            now[0] += timedelta(minutes=1)  # a new minute: the next refusal is written, with the count left out
            c.cookies.clear()
            assert c.get("/api/v1/me", headers=bearer("garbage")).status_code == 401
            newest = refusals(ws)[0]
            assert newest["details"]["not_recorded"] == 1000 - REFUSALS_PER_SOURCE
        assert ws.audit.verify()["ok"] is True
    finally:
        ws.close()


def test_many_sources_together_are_bounded_too() -> None:
    log = RefusalLog()
    at = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    admitted = [log.admit(f"198.51.100.{i % 250}", at + timedelta(seconds=i % 60)) for i in range(5000)]
    assert sum(a is not None for a in admitted) == REFUSALS_PER_MINUTE
    assert log.admit("192.0.2.1", at + timedelta(minutes=1)) == 5000 - REFUSALS_PER_MINUTE
    assert log.admit("192.0.2.1", at + timedelta(minutes=1)) == 0


def test_a_request_body_past_the_limit_is_refused_before_it_is_parsed(mesh: Workspace, tokens: dict[str, str]) -> None:
    from trustmesh.web.app import MAX_BODY_BYTES

    token = next(iter(tokens.values()))
    padding = "-- " + "x" * MAX_BODY_BYTES + "\n"
    with TestClient(create_app(mesh)) as c:
        declared = c.post("/api/v1/query", json={"sql": padding + "SELECT 1"}, headers=bearer(token))
        assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"
        assert "larger than 2 MiB" in declared.json()["detail"]

        def chunks() -> Any:  # no Content-Length: counted as it streams in
            yield b'{"sql": "'
            for _ in range(3):
                yield b"x" * (MAX_BODY_BYTES // 2)
            yield b'"}'

        streamed = c.post("/api/v1/query", content=chunks(), headers={**bearer(token),
                                                                      "content-type": "application/json"})
        assert streamed.status_code == 413
        small = c.post("/api/v1/query", json={"sql": "SELECT 1 AS one"}, headers=bearer(token))
        assert small.status_code != 413
