"""The access workflow end to end: request → approve (one or two levels) → grant → expire or revoke.

Real workspaces on real metastores (SQLite, and PostgreSQL when it answers); time moves only through a
clock the tests hold, so expiry is exact and nothing sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from meshfactory import ITEMS_CSV, base_files, column, grant_product_inputs, write_files
from sqlalchemy import event, select
from typer.testing import CliRunner

from trustmesh.access.workflow import grant_state
from trustmesh.cli import app
from trustmesh.errors import Conflict, Forbidden, NotFound, UsageError
from trustmesh.metastore.schema import GrantRow
from trustmesh.service import Workspace

SHOP = "domains/alpha/products/shop-dp"
STATS = "domains/beta/products/stats-dp"
ITEMS = "alpha.shop-dp.items"
PURPOSE = "Quarterly sales report to the Ministry"
runner = CliRunner()


class Clock:
    """A clock the test moves: `clock()` is now; `clock.advance(days=31)` moves it on."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=500_000)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def personal_files() -> dict[str, Any]:
    """The base mesh, with alpha's items carrying an NRIC (restricted, sensitive-high) and an email
    (official-closed, sensitive-normal): both personal data."""
    files = base_files()
    files[f"{SHOP}/data/items.csv"] = "item_id,name,price,sold_on,nric,email\n" + "".join(
        f"{line},S000000{i}A,p{i}@example.com\n" for i, line in enumerate(ITEMS_CSV.splitlines()[1:], start=1))
    files[f"{SHOP}/sql/items.sql"] = "SELECT item_id, name, price, sold_on, nric, email FROM raw_items\n"
    props = files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"]
    props.append(column("nric", "string", classification="restricted", customProperties=[
        {"property": "piiType", "value": "nric"}, {"property": "sensitivity", "value": "sensitive-high"}]))
    props.append(column("email", "string", classification="official-closed", customProperties=[
        {"property": "piiType", "value": "email"}, {"property": "sensitivity", "value": "sensitive-normal"}]))
    return files


@pytest.fixture
def open_mesh(tmp_path: Path) -> Iterator[Callable[..., Workspace]]:
    """open_mesh(files, clock=..., metastore_url=..., grants=True) → a Workspace on a fresh mesh folder."""
    opened: list[Workspace] = []

    def make(files: dict[str, Any] | None = None, *, clock: Clock | None = None, metastore_url: str | None = None,
             grants: bool = True) -> Workspace:
        root = write_files(tmp_path / f"mesh{len(opened)}", files if files is not None else base_files())
        ws = Workspace.open(root, metastore_url=metastore_url, clock=clock or Clock())
        opened.append(ws)
        if grants:
            grant_product_inputs(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


def ask(ws: Workspace, actor: str = "beta-dev", address: str = ITEMS, **kw: Any) -> dict[str, Any]:
    terms: dict[str, Any] = {"purpose": PURPOSE, "purpose_category": "statistics", "days": 30} | kw
    return ws.access.request(actor, address, **terms)


def everything(ws: Workspace) -> dict[str, Any]:
    return ws.access.overview("gdo", "all")


def refusals(ws: Workspace) -> list[dict[str, Any]]:
    return ws.audit.log("gdo", type="access.refused", limit=None)


def refused(ws: Workspace, error: type[Exception], match: str, action: Callable[..., Any], *args: Any,
            **kw: Any) -> dict[str, Any]:
    """Run an action that must be refused with `error`; return the one `access.refused` entry it left."""
    before = len(refusals(ws))
    with pytest.raises(error, match=match) as info:
        action(*args, **kw)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert len(str(info.value)) > 20, f"unclear message: {info.value}"
    after = refusals(ws)
    assert len(after) == before + 1, f"no access.refused entry for: {info.value}"
    assert after[0]["details"]["reason"] == str(info.value) and after[0]["details"]["action"]
    return after[0]


def grants_of(ws: Workspace, principal: str) -> list[dict[str, Any]]:
    return [g for g in everything(ws)["grants"] if g["principal"] == principal]


# -- 1. the journey ---------------------------------------------------------------------------------------


def test_two_level_journey_grant_expiry_and_revocation(open_mesh: Callable[..., Workspace]) -> None:
    clock = Clock()
    ws = open_mesh(personal_files(), clock=clock)
    assert ws.directory().datasets[ITEMS].personal_columns == ["nric", "email"]
    assert ws.access.explain("beta-dev", ITEMS).outcome == "deny"

    req = ask(ws, unmask=["nric", "email"], purpose_category="research")
    assert (req["state"], req["levels"], req["awaiting"], req["grant"]) == ("pending", 2, ["alpha-steward"], None)
    assert req["created_at"] == clock.now.isoformat()
    assert req["expires_at"] == (clock.now + timedelta(days=30)).isoformat()  # the mesh's requestDays
    rid = req["id"]
    assert [r["id"] for r in ws.access.overview("alpha-steward", "inbox")["requests"]] == [rid]
    assert ws.access.overview("alpha-owner", "inbox")["requests"] == []  # level 2 waits for level 1

    clock.advance(hours=1)
    step = ws.access.approve("alpha-steward", rid, note="purpose fits")
    assert (step["state"], step["awaiting"], step["grant"]) == ("pending", ["alpha-owner"], None)
    assert [(a["level"], a["approver"], a["decision"]) for a in step["approvals"]] == [(1, "alpha-steward", "approve")]
    assert [r["id"] for r in ws.access.overview("alpha-owner", "inbox")["requests"]] == [rid]
    assert ws.access.overview("alpha-steward", "inbox")["requests"] == []
    before = ws.access.explain("beta-dev", ITEMS)
    assert before.outcome == "deny" and not before.allowed
    assert set(before.columns.values()) == {"deny"}
    assert "no active grant" in before.reason

    clock.advance(hours=1)
    done = ws.access.approve("alpha-owner", rid)
    assert done["state"] == "approved" and done["awaiting"] == [] and done["grant"]
    assert done["decided_at"] == clock.now.isoformat()
    gid = done["grant"]
    [grant] = grants_of(ws, "beta-dev")
    assert grant["id"] == gid and grant["state"] == "active"
    assert grant["approvers"] == ["alpha-steward", "alpha-owner"] and grant["unmask"] == ["nric", "email"]
    assert grant["expires_at"] == (clock.now + timedelta(days=30)).isoformat()
    assert ws.access.show("beta-dev", rid)["grant"] == gid

    allowed = ws.access.explain("beta-dev", ITEMS)
    assert allowed.outcome == "allow" and gid in allowed.policies
    assert allowed.columns == {c: "allow" for c in ("item_id", "name", "price", "sold_on", "nric", "email")}
    nric = ws.access.explain("beta-dev", ITEMS, "nric")
    assert nric.outcome == "allow" and f"{gid}:unmask" in nric.policies
    assert ws.access.explain("beta-dev", ITEMS, "price").policies == [gid]

    # one level, no unmasking: the personal column in the grant reads masked; columns outside it are absent
    small = ask(ws, "beta-owner", columns=["item_id", "name", "email"], days=90)
    assert (small["levels"], small["awaiting"]) == (1, ["alpha-steward", "alpha-owner"])
    small = ws.access.approve("alpha-steward", small["id"])
    assert small["state"] == "approved"
    masked = ws.access.explain("beta-owner", ITEMS)
    assert masked.outcome == "mask" and "email masked" in masked.reason
    assert masked.columns == {"item_id": "allow", "name": "allow", "price": "deny", "sold_on": "deny",
                              "nric": "deny", "email": "mask"}
    email = ws.access.explain("beta-owner", ITEMS, "email")
    assert email.outcome == "mask" and small["grant"] in email.policies
    # masked reading of a sensitive-high column still takes two levels
    assert ask(ws, "beta-steward", columns=["item_id", "nric"])["levels"] == 2

    # the grant ends on its own at its expiry, whether or not anyone records it
    clock.advance(days=30, seconds=1)
    assert ws.access.explain("beta-dev", ITEMS).outcome == "deny"
    assert ws.access.explain("beta-dev", ITEMS, "nric").outcome == "deny"
    with ws.store.session() as session:
        row = session.scalars(select(GrantRow).where(GrantRow.principal == "beta-dev")).one()
        assert row.state == "active" and grant_state(row, clock()) == "expired"
    assert ws.audit.log("gdo", type="grant.expired") == []
    assert ws.access.sweep() == {"requests": 1, "grants": 1}  # beta-steward's pending request expired too
    [expired] = ws.audit.log("gdo", type="grant.expired")
    assert (expired["actor"], expired["subject"], expired["details"]["grant"]) == ("trustmesh", ITEMS, gid)
    assert expired["at"].startswith(clock.now.strftime("%Y-%m-%dT%H:%M:%S"))
    assert ws.access.sweep() == {"requests": 0, "grants": 0}  # recorded once
    assert grants_of(ws, "beta-dev")[0]["state"] == "expired"
    assert ws.access.explain("beta-owner", ITEMS).outcome == "mask"  # its 90 days are not up
    assert ws.access.explain("beta.stats-dp", ITEMS).outcome == "allow"  # the product's input grant lasts a year

    # a new grant, then revoked by the data owner
    again = ask(ws, unmask=["nric"])
    ws.access.approve("alpha-steward", again["id"])
    again = ws.access.approve("alpha-owner", again["id"])
    assert again["state"] == "approved" and again["grant"] != gid
    assert ws.access.explain("beta-dev", ITEMS, "nric").outcome == "allow"
    assert ws.access.explain("beta-dev", ITEMS, "email").outcome == "mask"
    revoked = ws.access.revoke("alpha-owner", again["grant"], "study finished early")
    assert (revoked["state"], revoked["revoked_by"], revoked["revoke_reason"]) == (
        "revoked", "alpha-owner", "study finished early")
    assert ws.access.explain("beta-dev", ITEMS).outcome == "deny"
    states = {g["id"]: g["state"] for g in grants_of(ws, "beta-dev")}
    assert states == {gid: "expired", again["grant"]: "revoked"}
    mine = ws.access.overview("beta-dev", "mine")
    product_grant = grants_of(ws, "beta.stats-dp")[0]
    assert {g["id"] for g in mine["grants"]} == {gid, again["grant"], product_grant["id"]}  # and their products'
    assert {rid, again["id"], product_grant["request"]} <= {r["id"] for r in mine["requests"]}
    assert all(r["principal"] in ("beta-dev", "beta.stats-dp") for r in mine["requests"])

    types = [e["type"] for e in reversed(ws.audit.log("gdo", subject=ITEMS, limit=None))]
    assert types.count("grant.created") == 4  # the product's, beta-dev's two, beta-owner's
    assert types.count("grant.revoked") == 1 and types.count("access.request-expired") == 1
    assert ws.audit.log("gdo", type="access.refused") == []
    assert ws.audit.verify()["ok"] is True


def test_a_grant_lasts_until_its_expiry_instant(open_mesh: Callable[..., Workspace]) -> None:
    clock = Clock()
    ws = open_mesh(base_files(), clock=clock, grants=False)
    req = ws.access.approve("alpha-steward", ask(ws)["id"])
    [grant] = grants_of(ws, "beta-dev")
    expires = datetime.fromisoformat(grant["expires_at"])
    assert expires.microsecond == 500_000
    clock.now = expires - timedelta(microseconds=1)
    assert grants_of(ws, "beta-dev")[0]["state"] == "active"
    decision = ws.access.explain("beta-dev", ITEMS)
    assert decision.outcome == "allow", f"{req['grant']} is still active, yet: {decision.reason}"
    clock.now = expires
    assert ws.access.explain("beta-dev", ITEMS).outcome == "deny"


# -- 2. every bad input -----------------------------------------------------------------------------------


@pytest.fixture
def mesh(open_mesh: Callable[..., Workspace]) -> Workspace:
    return open_mesh(personal_files(), clock=Clock())


def test_bad_requests_are_refused_and_recorded(mesh: Workspace) -> None:
    ws = mesh
    count = len(everything(ws)["requests"])

    def nothing_filed() -> None:
        assert len(everything(ws)["requests"]) == count

    entry = refused(ws, NotFound, r"no dataset alpha\.shop-dp\.nope in this mesh — fix", ask, ws,
                    address="alpha.shop-dp.nope")
    assert (entry["actor"], entry["subject"], entry["details"]["action"]) == ("beta-dev", "alpha.shop-dp.nope",
                                                                              "request")
    refused(ws, NotFound, r"no principal 'mallory' in this mesh — fix", ask, ws, "mallory")
    refused(ws, UsageError, r"alpha\.shop-dp\.items has no column bogus — fix: one of item_id, name", ask, ws,
            columns=["item_id", "bogus"])
    refused(ws, UsageError, r"has no column ghost", ask, ws, unmask=["ghost"])
    refused(ws, UsageError, r"--columns is empty", ask, ws, columns=[" ", ""])
    refused(ws, UsageError, r"price is not personal data, so it is never masked — fix: drop it", ask, ws,
            unmask=["price"])
    refused(ws, UsageError, r"--unmask nric is not among the requested --columns", ask, ws,
            columns=["item_id"], unmask=["nric"])
    for days in (0, -1, 100000, True):
        entry = refused(ws, UsageError, r"--days .*: a grant lasts from 1 to 365 days", ask, ws, days=days)
        assert entry["details"]["days"] == days
    for purpose in ("", "   ", "for work"):
        refused(ws, UsageError, r"--purpose must say what the data is for, in at least 10 characters", ask, ws,
                purpose=purpose)
    refused(ws, UsageError, r"--purpose-category 'fun' is not one of this mesh's categories — fix: one of "
            r"policy-analysis", ask, ws, purpose_category="fun")
    refused(ws, Forbidden, r"alpha-dev is not in the beta domain, so cannot ask on behalf of beta\.stats-dp", ask,
            ws, "alpha-dev", for_product="beta.stats-dp")
    refused(ws, UsageError, r"'alpha-owner' is not a product address — fix: use <domain>\.<product>", ask, ws,
            for_product="alpha-owner")
    refused(ws, NotFound, r"no principal 'beta\.nope-dp' in this mesh", ask, ws, for_product="beta.nope-dp")
    refused(ws, UsageError, r"alpha-dev already reads alpha\.shop-dp\.items as part of the alpha domain", ask, ws,
            "alpha-dev")
    refused(ws, Forbidden, r"beta\.stats-dp is a product; a person asks on its behalf", ask, ws, "beta.stats-dp")
    nothing_filed()

    first = ask(ws)
    refused(ws, Conflict, rf"{first['id']} for beta-dev on alpha\.shop-dp\.items is still pending", ask, ws)
    assert len(everything(ws)["requests"]) == count + 1


def test_bad_decisions_are_refused_and_recorded(mesh: Workspace) -> None:
    ws = mesh
    req = ask(ws, unmask=["nric"])
    rid = req["id"]
    grants = len(everything(ws)["grants"])

    def unchanged(approvals: int = 0) -> None:
        shown = ws.access.show("gdo", rid)
        assert shown["state"] == "pending" and shown["grant"] is None
        assert len(shown["approvals"]) == approvals
        assert len(everything(ws)["grants"]) == grants

    entry = refused(ws, Forbidden, rf"beta-dev asked for {rid}; nobody decides their own request",
                    ws.access.approve, "beta-dev", rid)
    assert (entry["actor"], entry["subject"], entry["details"]["action"]) == ("beta-dev", rid, "approve")
    refused(ws, Forbidden, rf"beta-steward may not decide {rid} at level 1 of 2: that takes a data domain steward "
            r"of the alpha domain \(alpha-steward\)", ws.access.approve, "beta-steward", rid)
    refused(ws, Forbidden, rf"alpha-owner may not decide {rid} at level 1 of 2", ws.access.approve, "alpha-owner", rid)
    refused(ws, Forbidden, r"alpha-dev may not decide", ws.access.reject, "alpha-dev", rid, "not for you")
    refused(ws, NotFound, r"no principal 'mallory'", ws.access.approve, "mallory", rid)
    refused(ws, NotFound, r"no request req-999", ws.access.approve, "alpha-steward", "req-999")
    refused(ws, UsageError, r"a rejection needs --reason", ws.access.reject, "alpha-steward", rid, "  ")
    refused(ws, Forbidden, rf"{rid} was filed by beta-dev; only they can withdraw it", ws.access.withdraw,
            "alpha-steward", rid)
    refused(ws, Forbidden, r"only they can withdraw it", ws.access.withdraw, "beta-owner", rid)
    unchanged()

    ws.access.approve("alpha-steward", rid)
    refused(ws, Forbidden, rf"alpha-steward already approved {rid} at level 1; level 2 needs a different person",
            ws.access.approve, "alpha-steward", rid)
    refused(ws, Forbidden, r"already approved", ws.access.reject, "alpha-steward", rid, "changed my mind")
    refused(ws, Forbidden, rf"beta-owner may not decide {rid} at level 2 of 2: that takes a data owner of the alpha",
            ws.access.approve, "beta-owner", rid)
    unchanged(approvals=1)

    done = ws.access.approve("alpha-owner", rid)
    assert done["state"] == "approved"
    grants += 1
    for who in ("alpha-owner", "alpha-steward"):
        refused(ws, Conflict, rf"{rid} is approved; only a pending request can be decided", ws.access.approve, who, rid)
    refused(ws, Conflict, rf"{rid} is approved; only a pending request can be decided", ws.access.reject,
            "alpha-owner", rid, "too late")
    refused(ws, Conflict, rf"{rid} is approved; only a pending request can be withdrawn", ws.access.withdraw,
            "beta-dev", rid)
    assert ws.access.show("beta-dev", rid)["state"] == "approved"
    assert len(everything(ws)["grants"]) == grants

    # rejected
    rejected = ask(ws, "beta-owner")
    rejected = ws.access.reject("alpha-steward", rejected["id"], "ask for the aggregate instead")
    assert (rejected["state"], rejected["reason"]) == ("rejected", "ask for the aggregate instead")
    refused(ws, Conflict, rf"{rejected['id']} is rejected; only a pending request can be decided", ws.access.approve,
            "alpha-steward", rejected["id"])
    refused(ws, Conflict, r"is rejected", ws.access.reject, "alpha-owner", rejected["id"], "again")

    # withdrawn
    withdrawn = ws.access.withdraw("beta-steward", ask(ws, "beta-steward")["id"])
    assert withdrawn["state"] == "withdrawn"
    refused(ws, Conflict, rf"{withdrawn['id']} is withdrawn; only a pending request can be decided",
            ws.access.approve, "alpha-steward", withdrawn["id"])
    refused(ws, Conflict, r"is withdrawn; only a pending request can be withdrawn", ws.access.withdraw,
            "beta-steward", withdrawn["id"])

    # expired: still pending after the mesh's 30 days
    late = ask(ws, "beta-owner")
    assert isinstance(ws.clock, Clock)
    ws.clock.advance(days=30)
    refused(ws, Conflict, rf"{late['id']} is expired; only a pending request can be decided", ws.access.approve,
            "alpha-steward", late["id"])
    assert ws.access.show("beta-owner", late["id"])["state"] == "expired"
    [entry] = ws.audit.log("gdo", type="access.request-expired")
    assert entry["details"]["request"] == late["id"]

    assert len(everything(ws)["grants"]) == grants
    assert {r["state"] for r in everything(ws)["requests"]} == {"approved", "rejected", "withdrawn", "expired"}
    assert ws.audit.verify()["ok"] is True


def test_bad_revocations_are_refused_and_recorded(mesh: Workspace) -> None:
    ws = mesh
    [product_grant] = grants_of(ws, "beta.stats-dp")
    gid = product_grant["id"]
    refused(ws, Forbidden, rf"beta-steward may not revoke {gid}: that takes an owner or steward of the alpha domain",
            ws.access.revoke, "beta-steward", gid, "no reason of mine")
    refused(ws, Forbidden, r"may not revoke", ws.access.revoke, "beta-dev", gid, "not mine either")
    refused(ws, UsageError, r"a revocation needs --reason", ws.access.revoke, "alpha-owner", gid, "")
    refused(ws, NotFound, r"no principal 'mallory'", ws.access.revoke, "mallory", gid, "because")
    refused(ws, NotFound, r"no grant grant-999", ws.access.revoke, "alpha-owner", "grant-999", "because")
    assert grants_of(ws, "beta.stats-dp")[0]["state"] == "active"
    assert ws.access.explain("beta.stats-dp", ITEMS).allowed

    revoked = ws.access.revoke("gdo", gid, "input port retired")
    assert revoked["state"] == "revoked"
    refused(ws, Conflict, rf"{gid} is already revoked", ws.access.revoke, "alpha-owner", gid, "twice")
    assert not ws.access.explain("beta.stats-dp", ITEMS).allowed
    with pytest.raises(UsageError, match=r"'grant-x' is not a grant id — fix: give it as grant-7"):
        ws.access.revoke("alpha-owner", "grant-x", "bad id")


def test_listing_everything_takes_an_admin_and_is_recorded_when_refused(mesh: Workspace) -> None:
    ws = mesh
    assert everything(ws)["requests"]  # the admin may
    for who in ("beta-dev", "alpha-owner"):
        refused(ws, Forbidden, rf"{who} may not list every request: that takes a governance admin or an auditor",
                ws.access.overview, who, "all")


def test_a_withdrawal_that_loses_the_race_to_an_approval_changes_nothing(open_mesh: Callable[..., Workspace]) -> None:
    """The withdrawal reads the request pending; an approver commits before its UPDATE runs."""
    ws = open_mesh(base_files(), grants=False)
    rid = ask(ws)["id"]
    raced: list[dict[str, Any]] = []

    def approve_first(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if not raced and statement.lstrip().upper().startswith("UPDATE TM_ACCESS_REQUESTS") \
                and "withdrawn" in str(parameters):
            raced.append(ws.access.approve("alpha-steward", rid))

    event.listen(ws.store.engine, "before_cursor_execute", approve_first)
    try:
        with pytest.raises(Conflict, match=rf"{rid} was decided at the same moment; it was not withdrawn"):
            ws.access.withdraw("beta-dev", rid)
    finally:
        event.remove(ws.store.engine, "before_cursor_execute", approve_first)
    assert raced and raced[0]["state"] == "approved"
    assert ws.access.show("beta-dev", rid)["state"] == "approved"
    assert ws.audit.log("gdo", type="access.withdrawn") == []


# -- 3. concurrency ---------------------------------------------------------------------------------------


def test_twenty_approvers_at_once_make_exactly_one_grant(open_mesh: Callable[..., Workspace],
                                                         metastore_url: str) -> None:
    ws = open_mesh(base_files(), metastore_url=metastore_url, grants=False)
    req = ask(ws)
    assert req["levels"] == 1
    barrier = threading.Barrier(20)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def approve(who: str) -> None:
        barrier.wait()
        try:
            outcome = ws.access.approve(who, req["id"], note=f"by {who}")
        except BaseException as exc:  # every failure is collected and judged below
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=approve, args=(who,)) for who in ["alpha-steward", "alpha-owner"] * 10]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    assert len(results) == 1, errors
    assert results[0]["state"] == "approved" and results[0]["grant"]
    assert len(errors) == 19
    assert all(type(e) in (Conflict, Forbidden) for e in errors), [f"{type(e).__name__}: {e}" for e in errors]
    assert all(req["id"] in str(e) for e in errors)
    requests = everything(ws)["requests"]
    assert [(r["id"], r["state"]) for r in requests] == [(req["id"], "approved")]
    assert len(requests[0]["approvals"]) == 1
    assert [g["id"] for g in everything(ws)["grants"]] == [results[0]["grant"]]
    assert len(ws.audit.log("gdo", type="grant.created", limit=None)) == 1
    assert len(ws.audit.log("gdo", type="access.approved", limit=None)) == 1
    assert len(refusals(ws)) == 19
    assert ws.audit.verify()["ok"] is True


# -- 4. builds --------------------------------------------------------------------------------------------


def product(result: Any, address: str) -> Any:
    return next(p for p in result.products if p.address == address)


def test_a_product_reading_another_domain_builds_only_with_a_grant(open_mesh: Callable[..., Workspace]) -> None:
    ws = open_mesh(base_files(), grants=False)
    first = ws.build()
    assert product(first, "alpha.shop-dp").status == "published"
    stats = product(first, "beta.stats-dp")
    assert stats.status == "failed"
    assert stats.message == f"no grant to read {ITEMS} of the alpha domain"
    [problem] = stats.problems
    assert f"beta.stats-dp reads {ITEMS} of another domain without an active grant" in problem.message
    assert f"trustmesh access request {ITEMS} --for beta.stats-dp" in problem.fix
    assert ws.catalog.read(ITEMS).num_rows == 3

    [gid] = grant_product_inputs(ws)
    second = ws.build()
    assert product(second, "beta.stats-dp").status == "published", product(second, "beta.stats-dp").message
    assert ws.catalog.read("beta.stats-dp.daily_sales").num_rows == 2

    # revoking the grant stops the next build; the version served stays served
    ws.access.revoke("alpha-steward", gid, "input port under review")
    third = ws.build()
    assert product(third, "alpha.shop-dp").status == "skipped"
    assert product(third, "beta.stats-dp").status == "failed"
    assert product(third, "beta.stats-dp").message == f"no grant to read {ITEMS} of the alpha domain"
    assert ws.catalog.read("beta.stats-dp.daily_sales").num_rows == 2

    # a grant without a column the SQL reads: the build names the withheld column
    req = ask(ws, "beta-dev", for_product="beta.stats-dp", columns=["item_id", "sold_on"],
              purpose_category="product-input")
    assert ws.access.approve("alpha-owner", req["id"])["state"] == "approved"
    fourth = ws.build()
    stats = product(fourth, "beta.stats-dp")
    assert stats.status == "failed"
    assert stats.message == f"daily_sales reads {ITEMS}.price, which is not covered by the grant"
    assert "--columns ...,price" in stats.problems[0].fix
    assert ws.catalog.read("beta.stats-dp.daily_sales").num_rows == 2


# -- 5. CLI -----------------------------------------------------------------------------------------------


def test_the_workflow_through_the_cli(open_mesh: Callable[..., Workspace], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUSTMESH_USER", raising=False)
    monkeypatch.delenv("TRUSTMESH_SERVER", raising=False)
    monkeypatch.delenv("TRUSTMESH_TOKEN", raising=False)
    ws = open_mesh(base_files(), grants=False)
    mesh = ["--mesh", str(ws.root)]

    def run(*args: str) -> Any:
        return runner.invoke(app, ["access", *args, *mesh])

    def ok(*args: str) -> Any:
        result = run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    req = ok("request", ITEMS, "--purpose", PURPOSE, "--purpose-category", "statistics", "--days", "30",
             "--columns", "item_id,price,sold_on", "--as", "beta-dev")
    assert (req["state"], req["requester"], req["columns"], req["levels"]) == (
        "pending", "beta-dev", ["item_id", "price", "sold_on"], 1)
    rid = req["id"]
    inbox = ok("list", "--inbox", "--as", "alpha-steward")
    assert inbox["view"] == "inbox" and [r["id"] for r in inbox["requests"]] == [rid]
    assert ok("list", "--inbox", "--as", "beta-steward")["requests"] == []
    assert ok("explain", "beta-dev", ITEMS)["decision"] == "deny"

    approved = ok("approve", rid, "--note", "fits", "--as", "alpha-steward")
    assert approved["state"] == "approved" and approved["grant"]
    explained = ok("explain", "beta-dev", ITEMS)
    assert explained["decision"] == "allow" and approved["grant"] in explained["policies"]
    assert explained["columns"] == {"item_id": "allow", "name": "deny", "price": "allow", "sold_on": "allow"}
    mine = ok("list", "--mine", "--as", "beta-dev")
    assert [r["id"] for r in mine["requests"]] == [rid]
    assert [(g["id"], g["state"]) for g in mine["grants"]] == [(approved["grant"], "active")]

    # refusals: the message, and exit 1 (2 for bad usage)
    again = run("approve", rid, "--as", "alpha-owner")
    assert again.exit_code == 1 and f"{rid} is approved" in again.output
    bad_days = run("request", ITEMS, "--purpose", PURPOSE, "--purpose-category", "statistics", "--days", "0",
                   "--as", "beta-owner")
    assert bad_days.exit_code == 2 and "--days 0" in bad_days.output
    forbidden = run("list", "--all", "--as", "beta-dev")
    assert forbidden.exit_code == 1 and "may not list every request" in forbidden.output

    nobody = run("list", "--inbox", "--json")
    assert nobody.exit_code == 2
    assert "--as PERSON" in nobody.output and "TRUSTMESH_USER" in nobody.output
    anonymous = run("request", ITEMS, "--purpose", PURPOSE, "--purpose-category", "statistics", "--days", "30")
    assert anonymous.exit_code == 2 and "--as" in anonymous.output
    assert len(ok("list", "--all", "--as", "gdo")["requests"]) == 1


# -- 6. the mesh's own global policies -----------------------------------------------------------------------


NO_CLEAR_NRIC = '''
@id("gdo:no-clear-nric-outside-alpha")
@description("Nobody outside alpha sees an NRIC in the clear, whatever their grants.")
forbid (principal, action == Trustmesh::Action::"readUnmasked", resource is Trustmesh::Column)
when { resource.piiType == "nric" && !(principal.roles.contains("alpha/data-owner")) };
'''


def test_a_mesh_forbid_binds_every_grant_and_is_named(open_mesh: Callable[..., Workspace]) -> None:
    files = personal_files()
    files["governance/no-clear-nric.cedar"] = NO_CLEAR_NRIC
    ws = open_mesh(files, grants=False)
    assert not [p for p in ws.validate() if p.severity == "error"]
    # The request to unmask NRIC is refused up front: no grant could give it.
    with pytest.raises(Forbidden, match="gdo:no-clear-nric-outside-alpha"):
        ask(ws, unmask=["nric"], columns=["item_id", "nric"])
    req = ask(ws, unmask=["email"], columns=["item_id", "nric", "email"])
    while req["state"] == "pending":
        req = ws.access.approve(req["awaiting"][0], req["id"])
    decision = ws.access.explain("beta-dev", ITEMS).to_dict()
    assert decision["columns"] == {"item_id": "allow", "name": "deny", "price": "deny", "sold_on": "deny",
                                   "nric": "mask", "email": "allow"}
    nric = ws.access.explain("beta-dev", ITEMS, "nric").to_dict()
    assert nric["decision"] == "mask" and "gdo:no-clear-nric-outside-alpha" in nric["policies"]
    # alpha's own steward is a custodian, but the mesh rule binds them too; the data owner is exempt.
    assert ws.access.explain("alpha-steward", ITEMS, "nric").outcome == "mask"
    assert ws.access.explain("alpha-owner", ITEMS, "nric").outcome == "allow"


def test_a_policy_file_that_does_not_parse_is_a_validation_error(open_mesh: Callable[..., Workspace]) -> None:
    files = base_files()
    files["governance/broken.cedar"] = "forbid (principal, action, resource) when { nonsense ;"
    ws = open_mesh(files, grants=False)
    problems = [p for p in ws.validate() if p.severity == "error"]
    assert [p.file for p in problems] == ["governance/broken.cedar"]
    assert "not a valid Cedar policy set" in problems[0].message


def test_a_domain_cedar_forbid_binds_only_its_own_data_and_permits_are_refused(
        open_mesh: Callable[..., Workspace]) -> None:
    files = personal_files()
    files["domains/beta/domain.yaml"]["sector"] = "health"  # beta, a Trusted Centre, governs the health sector
    files["domains/alpha/policies/no-email.cedar"] = '''
@id("alpha:no-clear-email")
@description("alpha shows emails in the clear to nobody.")
forbid (principal, action == Trustmesh::Action::"readUnmasked", resource is Trustmesh::Column)
when { resource.piiType == "email" };
'''
    files["domains/beta/policies/no-email.cedar"] = files["domains/alpha/policies/no-email.cedar"].replace(
        "alpha:", "beta:")
    ws = open_mesh(files, grants=False)
    assert not [p for p in ws.validate() if p.severity == "error"]
    # alpha's custodian is bound by alpha's own forbid on alpha's data
    assert ws.access.explain("alpha-owner", ITEMS, "email").outcome == "mask"
    decision = ws.access.explain("alpha-owner", ITEMS, "email").to_dict()
    assert "alpha:no-clear-email" in decision["policies"]
    # beta's rule is confined to its sector's data: it does not reach alpha (transport)
    assert "beta:no-clear-email" not in decision["policies"]
    assert ws.access.explain("alpha-owner", ITEMS, "nric").outcome == "allow"
    # a lower level may only forbid
    (ws.root / "domains/beta/policies/open.cedar").write_text(
        '@id("beta:open")\npermit (principal, action, resource);\n')
    problems = [p for p in ws.validate() if p.severity == "error"]
    assert [p.file for p in problems] == ["domains/beta/policies/open.cedar"]
    assert "may only forbid" in problems[0].message
