"""The audit trail: a hash chain that names the first entry tampered with, written with the change it records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from meshfactory import ITEMS, ITEMS_CSV, ask_for_items, audit_rows, person, tamper, write_files
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.errors import Conflict, Forbidden, NotFound
from trustmesh.metastore import audit
from trustmesh.metastore.schema import AccessDecisionRow, AccessRequestRow, AuditHeadRow, AuditRow, GrantRow
from trustmesh.service import Workspace

runner = CliRunner()
SHOP = "domains/alpha/products/shop-dp"
AUDITOR = "audie"
ENTRIES = AuditRow.__table__  # Core statements on it bypass `audit.append`, as a tamperer would
HEAD = AuditHeadRow.__table__

# The chain `journey` leaves on a fresh mesh (make_mesh's product-input grant is entries 1-3).
JOURNEY_TYPES = ["access.requested", "access.approved", "grant.created",  # beta.stats-dp's input grant
                 "access.requested", "access.approved", "grant.created",  # beta-dev asks, alpha-steward approves
                 "token.created", "grant.revoked", "access.refused"]


@pytest.fixture
def mesh_files(files: dict[str, Any]) -> dict[str, Any]:
    files["mesh.yaml"]["people"].append(person(AUDITOR, "auditor"))
    return files


def journey(ws: Workspace) -> None:
    """Request → approve → token → revoke → a refused second approval: entries 4 to 9."""
    req = ask_for_items(ws)
    approved = ws.access.approve("alpha-steward", req["id"], note="fits the purpose")
    assert approved["grant"]
    ws.tokens.issue("alpha-dev", "alpha-dev", name="laptop", days=30)
    ws.access.revoke("alpha-steward", approved["grant"], reason="dashboard retired")
    with pytest.raises(Conflict, match="only a pending request can be decided"):
        ws.access.approve("alpha-owner", req["id"])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def chain(request: pytest.FixtureRequest, make_mesh: Any, mesh_files: dict[str, Any]) -> Workspace:
    """A mesh whose audit chain holds the nine entries of JOURNEY_TYPES, on SQLite and on PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    ws: Workspace = make_mesh(mesh_files, metastore_url=url)
    journey(ws)
    assert [e["type"] for e in ws.audit.log(AUDITOR, limit=None)][::-1] == JOURNEY_TYPES
    assert ws.audit.verify()["ok"]
    return ws


def bad(ws: Workspace, first_bad: int | None, *words: str, expect_head: str | None = None) -> dict[str, Any]:
    result = ws.audit.verify(expect_head)
    assert result["ok"] is False, result
    assert result["first_bad"] == first_bad, result
    for word in words:
        assert word in result["problem"], result
    return result


def forged(prev: str, seq: int, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """An entry a forger with the source code could write: correctly hashed and linked to `prev`."""
    entry = {"seq": seq, "at": at or datetime(2026, 1, 5, 9, 30, tzinfo=UTC), "type": "grant.created",
             "actor": "alpha-owner", "subject": ITEMS, "details": {"grant": "grant-99", "principal": "mallory"},
             **fields}
    hashed = audit.entry_hash(prev, entry["seq"], entry["at"], entry["type"], entry["actor"], entry["subject"],
                              entry["details"])
    return {**entry, "prev_hash": prev, "hash": hashed}


# -- a chain in use verifies -------------------------------------------------------------------------------


def test_build_and_access_journey_leave_a_verified_chain(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    assert ws.build().ok
    journey(ws)
    result = ws.audit.verify()
    logged = ws.audit.log(AUDITOR, limit=None)
    assert result["ok"] is True and result["first_bad"] is None and result["problem"] == ""
    assert result["entries"] == len(logged) == 12
    assert result["head"] == logged[0]["hash"]  # newest first
    types = [e["type"] for e in reversed(logged)]
    assert types.count("product.published") == 2 and types.count("build.finished") == 1
    assert types[-6:] == JOURNEY_TYPES[-6:]
    oldest_first = list(reversed(logged))
    assert [e["seq"] for e in oldest_first] == list(range(1, 13))
    assert oldest_first[0]["prev_hash"] == audit.GENESIS
    for before, entry in pairwise(oldest_first):
        assert entry["prev_hash"] == before["hash"]
    published = next(e for e in logged if e["type"] == "product.published" and e["subject"] == "alpha.shop-dp")
    assert published["details"]["versions"] == {ITEMS: 1, "alpha.shop-dp.cheap_items": 1}
    refused = logged[0]
    assert (refused["type"], refused["actor"], refused["subject"]) == ("access.refused", "alpha-owner", "req-2")
    assert "only a pending request" in refused["details"]["reason"]


def test_log_filters_and_readers(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    journey(ws)
    assert [e["type"] for e in ws.audit.log(AUDITOR, type="grant.")] == ["grant.revoked", "grant.created",
                                                                        "grant.created"]
    assert {e["actor"] for e in ws.audit.log("gdo", by="alpha-steward")} == {"alpha-steward"}
    assert {e["subject"] for e in ws.audit.log(AUDITOR, subject="alpha")} == {ITEMS}
    assert len(ws.audit.log(AUDITOR, limit=2)) == 2
    assert ws.audit.log(AUDITOR, since=datetime.now(UTC) + timedelta(days=1)) == []
    with pytest.raises(Forbidden, match="auditor or a governance admin"):
        ws.audit.log("alpha-owner")
    with pytest.raises(NotFound, match="no principal"):
        ws.audit.log("nobody")
    lines = list(ws.audit.export("gdo"))
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 10))


# -- tampering: each kind is named, with the first bad entry --------------------------------------------------


MODIFIED = [("details", {"grant": "grant-1", "principal": "mallory"}), ("actor", "x"), ("type", "grant.revoked"),
            ("at", datetime(2020, 1, 1, tzinfo=UTC)), ("subject", "beta.stats-dp.daily_sales")]


@pytest.mark.parametrize(("chain", "field", "value"), [
    *(("sqlite", f, v) for f, v in MODIFIED),
    *(pytest.param("postgres", f, v, marks=pytest.mark.postgres) for f, v in MODIFIED if f in ("details", "at")),
], indirect=["chain"])
def test_modified_entry_is_named(chain: Workspace, field: str, value: Any) -> None:
    tamper(chain, update(ENTRIES).where(ENTRIES.c.seq == 3).values({field: value}))
    actor = "x" if field == "actor" else "alpha-steward"
    kind = "grant.revoked" if field == "type" else "grant.created"
    bad(chain, 3, f"entry 3 ({kind} by {actor}) was modified after it was written")


def test_modified_details_key_order_is_not_tampering(chain: Workspace) -> None:
    """The hash covers the canonical JSON: the same details stored in another key order still verify."""
    details = audit_rows(chain)[3]["details"]
    tamper(chain, update(ENTRIES).where(ENTRIES.c.seq == 4).values(details=dict(reversed(details.items()))))
    assert chain.audit.verify()["ok"] is True


def test_deleted_middle_entry_is_named(chain: Workspace) -> None:
    tamper(chain, delete(ENTRIES).where(ENTRIES.c.seq == 5))
    bad(chain, 5, "entry 5 is missing (the next one is 6): entries were deleted")


def test_deleted_first_entries_are_named(chain: Workspace) -> None:
    tamper(chain, delete(ENTRIES).where(ENTRIES.c.seq <= 2))
    bad(chain, 1, "entry 1 is missing (the next one is 3): entries were deleted")


def test_deleted_last_entry_disagrees_with_the_head(chain: Workspace) -> None:
    tamper(chain, delete(ENTRIES).where(ENTRIES.c.seq == 9))
    result = bad(chain, 9, "the chain ends at entry 8 but its head records entry 9")
    assert result["entries"] == 8


def test_deleted_last_entries_and_head_moved_back_are_caught_by_the_signed_checkpoints(chain: Workspace) -> None:
    """Cutting the tail and moving the head back leaves a consistent chain; the checkpoint of entry 9, signed
    outside the metastore, still vouches for it."""
    eighth = audit_rows(chain)[7]
    tamper(chain, delete(ENTRIES).where(ENTRIES.c.seq == 9), update(HEAD).values(seq=8, hash=eighth["hash"]))
    result = bad(chain, 9, "the chain ends at entry 8, but line", "vouches for entry 9", "entries after 8 were deleted",
                 "--accept")
    assert result["entries"] == 8 and result["anchored"] == 8


def test_without_checkpoints_a_cut_tail_needs_the_recorded_head(chain: Workspace) -> None:
    """The chain alone cannot tell a cut tail from a shorter history: only a head recorded earlier can."""
    recorded = chain.audit.verify()["head"]
    eighth = audit_rows(chain)[7]
    tamper(chain, delete(ENTRIES).where(ENTRIES.c.seq == 9), update(HEAD).values(seq=8, hash=eighth["hash"]))
    with chain.store.session() as session:
        assert audit.verify(session).ok is True
        result = audit.verify(session, recorded)
    assert result.ok is False and result.first_bad is None and "rewritten" in result.problem


def test_forged_entry_inserted_in_the_middle_renumbering_the_rest(chain: Workspace) -> None:
    fourth = audit_rows(chain)[3]
    tamper(chain,
           update(ENTRIES).where(ENTRIES.c.seq >= 5).values(seq=-ENTRIES.c.seq),  # two steps: seq is the key
           update(ENTRIES).where(ENTRIES.c.seq < 0).values(seq=-ENTRIES.c.seq + 1),
           update(HEAD).values(seq=10),
           insert(ENTRIES).values(forged(fourth["hash"], 5, at=fourth["at"])))
    # Entry 5 links to 4 and hashes right; the old entry 5, now 6, no longer links to what precedes it.
    result = bad(chain, 6, "entry 6 does not link to entry 5")
    assert result["entries"] == 5


def test_forged_entry_inserted_in_the_middle_with_a_bad_hash(chain: Workspace) -> None:
    fourth = audit_rows(chain)[3]
    entry = {**forged(fourth["hash"], 5), "hash": "f" * 64}
    tamper(chain,
           update(ENTRIES).where(ENTRIES.c.seq >= 5).values(seq=-ENTRIES.c.seq),
           update(ENTRIES).where(ENTRIES.c.seq < 0).values(seq=-ENTRIES.c.seq + 1),
           insert(ENTRIES).values(entry))
    bad(chain, 5, "entry 5 (grant.created by alpha-owner) was modified")


def test_forged_entry_appended_with_a_new_seq(chain: Workspace) -> None:
    ninth = audit_rows(chain)[8]
    tamper(chain, insert(ENTRIES).values(forged(ninth["hash"], 10)))
    result = bad(chain, 10, "the chain ends at entry 10 but its head records entry 9")
    assert result["entries"] == 10


def test_forged_entry_with_a_seq_before_the_first(chain: Workspace) -> None:
    """An entry numbered 0 (or below) is listed by `log` and `export` like any other, so verify must see it."""
    tamper(chain, insert(ENTRIES).values(forged(audit.GENESIS, 0)))
    listed = [e["seq"] for e in chain.audit.log(AUDITOR, limit=None)]
    assert 0 in listed  # the auditor is shown the forged grant...
    bad(chain, 0, "entry 0")  # ...so verify must reject it (it walks only seq > 0 and says ok)


def test_reordered_entries_are_named(chain: Workspace) -> None:
    tamper(chain,
           update(ENTRIES).where(ENTRIES.c.seq == 4).values(seq=-4),
           update(ENTRIES).where(ENTRIES.c.seq == 5).values(seq=4),
           update(ENTRIES).where(ENTRIES.c.seq == -4).values(seq=5))
    bad(chain, 4, "entry 4 does not link to entry 3", "reordered")


@pytest.mark.parametrize(("chain", "values", "first_bad", "says"), [
    ("sqlite", {"hash": "a" * 64}, 9, "the chain ends at entry 9 but its head records entry 9"),
    pytest.param("postgres", {"hash": "a" * 64}, 9, "the chain ends at entry 9 but its head records entry 9",
                 marks=pytest.mark.postgres),
    ("sqlite", {"seq": 12}, 10, "the chain ends at entry 9 but its head records entry 12"),
    ("sqlite", {"seq": 5}, 9, "the chain ends at entry 9 but its head records entry 5"),
], indirect=["chain"])
def test_edited_head_is_detected(chain: Workspace, values: dict[str, Any], first_bad: int, says: str) -> None:
    tamper(chain, update(HEAD).where(HEAD.c.id == 1).values(**values))
    bad(chain, first_bad, says, "the head was edited")


def test_deleted_head_is_detected(chain: Workspace) -> None:
    tamper(chain, delete(HEAD))
    bad(chain, 10, "its head records entry (none)")


def rewrite(ws: Workspace, seq: int, **changes: Any) -> str:
    """Change entry `seq` and re-hash it and every later entry, head included, as a tamperer with the code would."""
    entries = audit_rows(ws)
    entries[seq - 1].update(changes)
    prev, statements = audit.GENESIS, []
    for e in entries:
        digest = audit.entry_hash(prev, e["seq"], e["at"], e["type"], e["actor"], e["subject"], e["details"])
        statements.append(update(ENTRIES).where(ENTRIES.c.seq == e["seq"])
                          .values(actor=e["actor"], details=e["details"], prev_hash=prev, hash=digest))
        prev = digest
    statements.append(update(HEAD).where(HEAD.c.id == 1).values(hash=prev))
    tamper(ws, *statements)
    return prev


def test_consistent_rewrite_is_caught_by_the_signed_checkpoints(chain: Workspace) -> None:
    recorded = chain.audit.verify()["head"]
    head = rewrite(chain, 3, actor="beta-owner")  # who approved the grant, rewritten
    with chain.store.session() as session:
        assert audit.verify(session).ok is True  # internally consistent...
        by_head = audit.verify(session, recorded)  # ...so without checkpoints only a recorded head catches it
    assert by_head.ok is False and "rewritten since that head was recorded" in by_head.problem
    assert by_head.entries == 9 and by_head.head == head
    # Entries 1-3 were written in two commits (the request; the approval and its grant): 1 and 3 are signed.
    result = bad(chain, 3, "entry 3 is not the entry signed", "rewritten at or before it and re-hashed")
    assert result["anchored"] == 1 and result["entries"] == 9


def test_recorded_head_still_verifies_after_new_entries(chain: Workspace) -> None:
    """`expect_head` is a head recorded earlier ("printed by the last verify"): entries appended since, through
    the workflow, are not a rewrite."""
    recorded = chain.audit.verify()
    assert chain.audit.verify(recorded["head"])["ok"] is True
    ask_for_items(chain)  # one more, legitimate, entry
    result = chain.audit.verify(recorded["head"])
    assert result["ok"] is True, result
    assert result["entries"] == recorded["entries"] + 1


def test_clock_outside_utc_still_verifies(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    """Timestamps are stored in UTC; an entry written with a Singapore clock must hash the same instant."""
    ws = make_mesh(mesh_files)
    sg = Workspace.open(ws.root, clock=lambda: datetime.now(ZoneInfo("Asia/Singapore")))
    try:
        sg.tokens.issue("alpha-dev", "alpha-dev", days=5)
        ask_for_items(sg)
        result = sg.audit.verify()
        assert result["ok"] is True, result
    finally:
        sg.close()


# -- an entry and its change commit together -----------------------------------------------------------------


def _build_in_subprocess(root: Path, fault: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TRUSTMESH_FAULT", None)
    if fault:
        env["TRUSTMESH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "trustmesh", "build", "--mesh", str(root)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_killed_publish_leaves_no_entry_and_a_sound_chain(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    assert ws.build().ok
    before = ws.audit.verify()
    ws.close()
    write_files(ws.root, {f"{SHOP}/data/items.csv": ITEMS_CSV + "4,fig,3.0,2024-01-03\n"})
    killed = _build_in_subprocess(ws.root, "publish.before-commit")
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    after = Workspace.open(ws.root)
    try:
        result = after.audit.verify()
        assert result == before  # not one entry more: the publish and its entry died together
        assert [v["version"] for v in after.catalog.versions(ITEMS)] == [1]
        published = after.audit.log(AUDITOR, type="product.published", limit=None)
        assert [e["details"]["versions"].get(ITEMS) for e in published if e["subject"] == "alpha.shop-dp"] == [1]
        assert len(after.audit.log(AUDITOR, type="build.finished")) == 1
        # The chain goes on from the last committed entry.
        assert after.build().ok
        resumed = after.audit.verify()
        assert resumed["ok"] is True and resumed["entries"] == before["entries"] + 3
        newest = after.audit.log(AUDITOR, type="product.published", subject="alpha.shop-dp", limit=1)[0]
        assert newest["details"]["versions"][ITEMS] == 2 and newest["seq"] == before["entries"] + 1
    finally:
        after.close()


def test_failed_entry_rolls_back_the_change(make_mesh: Any, mesh_files: dict[str, Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A grant whose audit entry cannot be written is not made, nor is the approval before it."""
    ws = make_mesh(mesh_files)
    req = ask_for_items(ws)
    before = ws.audit.verify()
    real: Callable[..., Any] = audit.append

    def failing(session: Any, type: str, *args: Any, **kwargs: Any) -> Any:
        if type == "grant.created":
            raise RuntimeError("disk full")
        return real(session, type, *args, **kwargs)

    monkeypatch.setattr(audit, "append", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        ws.access.approve("alpha-steward", req["id"])
    monkeypatch.undo()
    assert ws.audit.verify() == before
    with ws.store.session() as s:
        row = s.get(AccessRequestRow, int(req["id"].removeprefix("req-")))
        assert row is not None and row.state == "pending" and row.grant_id is None
        assert s.scalars(select(AccessDecisionRow).where(AccessDecisionRow.request_id == row.id)).all() == []
        assert len(s.scalars(select(GrantRow)).all()) == 1  # only make_mesh's product-input grant
        assert s.scalar(select(AuditRow.seq).order_by(AuditRow.seq.desc()).limit(1)) == before["entries"]
    assert ws.access.approve("alpha-steward", req["id"])["state"] == "approved"
    assert ws.audit.verify()["ok"] is True


# -- the CLI ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI acts only as the tests say: no user, server or metastore from the environment."""
    for name in ("TRUSTMESH_USER", "TRUSTMESH_SERVER", "TRUSTMESH_TOKEN", "TRUSTMESH_MESH", "TRUSTMESH_METASTORE_URL"):
        monkeypatch.delenv(name, raising=False)


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_cli_verify(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    journey(ws)
    root = str(ws.root)
    ok = cli("audit", "verify", "--mesh", root)
    assert ok.exit_code == 0, ok.output
    assert "verified" in ok.stdout and "9 entries" in ok.stdout
    as_json = cli("audit", "verify", "--mesh", root, "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["entries"] == 9
    head = json.loads(as_json.stdout)["head"]
    assert cli("audit", "verify", "--mesh", root, "--expect-head", head).exit_code == 0

    tamper(ws, update(ENTRIES).where(ENTRIES.c.seq == 3).values(actor="x"))
    broken = cli("audit", "verify", "--mesh", root)
    assert broken.exit_code == 1, broken.output
    assert "TAMPERED" in broken.stdout and "entry 3" in broken.stdout
    broken_json = cli("audit", "verify", "--mesh", root, "--json")
    assert broken_json.exit_code == 1
    assert json.loads(broken_json.stdout)["first_bad"] == 3


def test_cli_log_export_and_since(make_mesh: Any, mesh_files: dict[str, Any], tmp_path: Path) -> None:
    ws = make_mesh(mesh_files)
    journey(ws)
    root = str(ws.root)
    logged = cli("audit", "log", "--as", AUDITOR, "--json", "--type", "access.", "--mesh", root)
    assert logged.exit_code == 0, logged.output
    types = [e["type"] for e in json.loads(logged.stdout)]
    assert types == ["access.refused", "access.approved", "access.requested", "access.approved",
                     "access.requested"]
    by = json.loads(cli("audit", "log", "--as", "gdo", "--json", "--actor", "beta-dev", "--mesh", root).stdout)
    assert [e["type"] for e in by] == ["access.requested"]
    table = cli("audit", "log", "--as", AUDITOR, "--mesh", root)
    assert table.exit_code == 0 and "seq" in table.stdout and "subject" in table.stdout

    refused = cli("audit", "log", "--as", "alpha-dev", "--mesh", root)
    assert refused.exit_code == 1
    assert "auditor" in refused.output and "alpha-dev may not read the audit trail" in refused.output
    nobody = cli("audit", "log", "--mesh", root)
    assert nobody.exit_code == 2 and "--as" in nobody.output

    recent = cli("audit", "log", "--as", AUDITOR, "--json", "--since", "7d", "--mesh", root)
    assert recent.exit_code == 0 and len(json.loads(recent.stdout)) == 9
    later = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    future = cli("audit", "log", "--as", AUDITOR, "--json", "--since", later, "--mesh", root)
    assert future.exit_code == 0 and json.loads(future.stdout) == []
    garbage = cli("audit", "log", "--as", AUDITOR, "--since", "garbage", "--mesh", root)
    assert garbage.exit_code == 2 and "--since 'garbage'" in garbage.output

    out = tmp_path / "audit.jsonl"
    exported = cli("audit", "export", "--format", "jsonl", "--output", str(out), "--as", AUDITOR, "--mesh", root)
    assert exported.exit_code == 0, exported.output
    assert "wrote 9 entries" in exported.stdout
    lines = out.read_text().splitlines()
    assert len(lines) == 9
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == list(range(1, 10))
    assert all(len(e["hash"]) == 64 and len(e["prev_hash"]) == 64 for e in entries)
    assert entries[0]["prev_hash"] == audit.GENESIS and entries[-1]["hash"] == ws.audit.verify()["head"]
    for e in entries:  # an archive can re-verify every entry on its own
        at = datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
        assert e["hash"] == audit.entry_hash(e["prev_hash"], e["seq"], at, e["type"], e["actor"], e["subject"],
                                             e["details"])
    assert not out.with_name(out.name + ".partial").exists()
    to_stdout = cli("audit", "export", "--as", AUDITOR, "--mesh", root)
    assert to_stdout.exit_code == 0 and to_stdout.stdout.splitlines() == lines
    assert cli("audit", "export", "--format", "csv", "--as", AUDITOR, "--mesh", root).exit_code == 2


def test_cli_export_refused_leaves_no_file(make_mesh: Any, mesh_files: dict[str, Any], tmp_path: Path) -> None:
    ws = make_mesh(mesh_files)
    out = tmp_path / "audit.jsonl"
    refused = cli("audit", "export", "--output", str(out), "--as", "alpha-dev", "--mesh", str(ws.root))
    assert refused.exit_code == 1 and "auditor" in refused.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit")) == []
