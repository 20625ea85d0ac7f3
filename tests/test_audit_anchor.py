"""Signed checkpoints of the audit chain: tampering by someone who holds the whole metastore is found.

The tamperer here writes to the metastore with plain SQL (as `tests/test_audit.py` does) and knows the code,
so every entry they write is hashed and linked correctly; what they lack is the checkpoint key, and the
checkpoint log lives outside the metastore.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from meshfactory import ITEMS, METASTORE_TIER, ask_for_items, audit_rows, person, tamper
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.errors import Conflict, Forbidden, UsageError
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.anchor import KEY_FILE_ENV, LOG_ENV, AuditAnchorError, Coverage
from trustmesh.metastore.schema import AccessRequestRow, AuditHeadRow, AuditRow
from trustmesh.service import Workspace

runner = CliRunner()
AUDITOR = "audie"
ENTRIES = AuditRow.__table__
HEAD = AuditHeadRow.__table__


@pytest.fixture(autouse=True)
def _no_session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys, logs, users and servers only as each test says."""
    for name in ("TRUSTMESH_USER", "TRUSTMESH_SERVER", "TRUSTMESH_TOKEN", "TRUSTMESH_MESH", "TRUSTMESH_METASTORE_URL",
                 KEY_FILE_ENV, LOG_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mesh_files(files: dict[str, Any]) -> dict[str, Any]:
    files["mesh.yaml"]["people"].append(person(AUDITOR, "auditor"))
    return files


def one_more(ws: Workspace) -> None:
    """One entry in one commit."""
    ws.tokens.issue("alpha-dev", "alpha-dev", name="one more", days=1)


def changes(ws: Workspace) -> None:
    """A request and its approval (two entries in one commit), a token, a revocation: entries 4 to 8."""
    req = ask_for_items(ws)
    grant = ws.access.approve("alpha-steward", req["id"])["grant"]
    ws.tokens.issue("alpha-dev", "alpha-dev", name="laptop", days=30)
    ws.access.revoke("alpha-steward", grant, reason="dashboard retired")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def chain(request: pytest.FixtureRequest, make_mesh: Any, mesh_files: dict[str, Any]) -> Workspace:
    """Eight entries (make_mesh's product-input grant is 1-3), each commit signed, on SQLite and PostgreSQL."""
    if METASTORE_TIER == "postgresql":
        pytest.skip("runs on SQLite and on PostgreSQL in the first pass already")
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    ws: Workspace = make_mesh(mesh_files, metastore_url=url)
    changes(ws)
    return ws


def lines(ws: Workspace) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ws.audit_anchor.log_path.read_text().splitlines()]


def write_lines(ws: Workspace, raw: list[str]) -> None:
    ws.audit_anchor.log_path.write_text("".join(line + "\n" for line in raw))


def bad(ws: Workspace, first_bad: int | None, *words: str) -> dict[str, Any]:
    result = ws.audit.verify()
    assert result["ok"] is False, result
    assert result["first_bad"] == first_bad, result
    for word in words:
        assert word in result["problem"], result
    return result


def forged(prev: str, seq: int, **fields: Any) -> dict[str, Any]:
    """An entry hashed and linked as the code would: only a signed checkpoint can tell it from a real one."""
    entry = {"seq": seq, "at": datetime(2026, 1, 5, 9, 30, tzinfo=UTC), "type": "grant.revoked",
             "actor": "alpha-owner", "subject": ITEMS, "details": {"grant": "grant-1"}, **fields}
    digest = audit.entry_hash(prev, entry["seq"], entry["at"], entry["type"], entry["actor"], entry["subject"],
                              entry["details"])
    return {**entry, "prev_hash": prev, "hash": digest}


def rehash(ws: Workspace, entries: list[dict[str, Any]]) -> None:
    """Replace the whole chain with `entries`, each re-hashed and linked, and move the head to the last."""
    prev, fixed = audit.GENESIS, []
    for e in entries:
        fixed.append(forged(prev, e["seq"], at=e["at"], type=e["type"], actor=e["actor"], subject=e["subject"],
                            details=e["details"]))
        prev = fixed[-1]["hash"]
    tamper(ws, delete(ENTRIES), insert(ENTRIES).values(fixed), update(HEAD).values(seq=len(fixed), hash=prev))


def quick_verify(ws: Workspace) -> audit.Verification:
    """Verify without waiting for the line of an entry committed just before (none is on its way here)."""
    with ws.store.session() as session:
        return audit.verify(session, anchor=ws.audit_anchor, wait=0)


# -- a chain in use is signed and verifies --------------------------------------------------------------------


def test_every_commit_signs_the_entries_it_appended(chain: Workspace) -> None:
    result = chain.audit.verify()
    assert result["ok"] is True, result
    assert result["entries"] == 8 and result["anchored"] == 8 and result["notes"] == []
    signed = lines(chain)
    assert result["checkpoints"] == len(signed)
    # One line per commit: the request, then its approval and grant together, then each later change.
    assert [(s["first"], s["seq"]) for s in signed] == [(1, 1), (2, 3), (4, 4), (5, 6), (7, 7), (8, 8)]
    hashes = {r["seq"]: r["hash"] for r in audit_rows(chain)}
    assert all(s["hash"] == hashes[s["seq"]] and s["kind"] == "checkpoint" for s in signed)
    assert signed[0]["prev"] == "0" * 64
    key = chain.audit_anchor.key_path
    assert key == chain.root / ".trustmesh" / "audit-key.pem" and oct(key.stat().st_mode & 0o777) == "0o600"
    assert chain.audit_anchor.log_path == chain.root / ".trustmesh" / "audit-checkpoints.jsonl"


def test_cut_tail_is_found(chain: Workspace) -> None:
    """Delete the last three entries and move the head back: the chain alone is consistent again."""
    fifth = audit_rows(chain)[4]
    tamper(chain, delete(ENTRIES).where(ENTRIES.c.seq > 5), update(HEAD).values(seq=5, hash=fifth["hash"]))
    with chain.store.session() as session:
        assert audit.verify(session).ok is True  # what verify said before checkpoints
    result = bad(chain, 6, "the chain ends at entry 5, but line 6 of the checkpoint log", "vouches for entry 8",
                 "entries after 5 were deleted and the head moved back", "restore the metastore from a backup")
    assert result["entries"] == 5 and result["anchored"] == 4


def test_whole_chain_rewritten_is_found(chain: Workspace) -> None:
    """Every entry rewritten (who approved, who asked) and re-hashed from the first on."""
    entries = audit_rows(chain)
    for e in entries:
        e["actor"] = "gdo" if e["actor"] == "alpha-steward" else e["actor"]
    rehash(chain, entries)
    with chain.store.session() as session:
        assert audit.verify(session).ok is True
    result = bad(chain, 3, "entry 3 is not the entry signed", "line 2 of the checkpoint log",
                 "rewritten at or before it and re-hashed")
    assert result["anchored"] == 1  # entry 1 (a request by beta-dev) was not changed


def test_chain_replaced_by_a_shorter_forgery_is_found(chain: Workspace) -> None:
    """All entries deleted and two made up in their place, the head moved to the second."""
    first = forged(audit.GENESIS, 1)
    tamper(chain, delete(ENTRIES), insert(ENTRIES).values([first, forged(first["hash"], 2)]),
           update(HEAD).values(seq=2, hash=forged(first["hash"], 2)["hash"]))
    bad(chain, 1, "entry 1 is not the entry signed")


def test_entry_added_straight_to_the_metastore_is_found(chain: Workspace) -> None:
    """A made-up entry appended with SQL and correctly linked; a later real change links to it in turn, so
    its checkpoint vouches for the made-up entry's hash, but not for it having been written by trustmesh."""
    eighth = audit_rows(chain)[7]
    made_up = forged(eighth["hash"], 9)
    tamper(chain, insert(ENTRIES).values(made_up), update(HEAD).values(seq=9, hash=made_up["hash"]))
    one_more(chain)  # entry 10, signed
    result = bad(chain, 9, "entry 9 is vouched for by no signed checkpoint", "added straight to the metastore",
                 "--accept")
    assert result["anchored"] == 10 and result["entries"] == 10


def test_entry_added_at_the_end_is_found(chain: Workspace) -> None:
    eighth = audit_rows(chain)[7]
    made_up = forged(eighth["hash"], 9)
    tamper(chain, insert(ENTRIES).values(made_up), update(HEAD).values(seq=9, hash=made_up["hash"]))
    result = quick_verify(chain)
    assert result.ok is False and result.first_bad == 9 and "no signed checkpoint" in result.problem


def test_entry_committed_just_before_verify_is_waited_for(chain: Workspace) -> None:
    """A writer signs after it commits: verify waits briefly for the line of an entry it finds unsigned."""
    unanchored = Metastore.open(chain.store.url, migrate=False)  # commits without signing, as if signing were late
    try:
        with unanchored.session() as session:
            row = audit.append(session, "token.revoked", "alpha-dev", "alpha-dev", {"token": "tok-9"})
        late = threading.Timer(0.3, chain.audit_anchor.record, (row.seq, row.seq, row.hash))
        late.start()
        try:
            assert chain.audit.verify()["ok"] is True
        finally:
            late.join()
    finally:
        unanchored.dispose()


# -- the checkpoint log itself ---------------------------------------------------------------------------------


def _attacker_line(after: str | None, claimed_key: str | None = None, **fields: Any) -> str:
    """A well-formed line following the line `after`, signed with the attacker's own key (its id, or one claimed)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    payload = {"v": 1, "kind": "checkpoint", "first": 1, "seq": 1, "hash": "0" * 64, "at": "2026-01-05T09:30:00.000000Z",
               "prev": hashlib.sha256(after.encode()).hexdigest() if after is not None else "0" * 64,
               "key": claimed_key or hashlib.sha256(public).hexdigest()[:16], **fields}
    signature = base64.b64encode(key.sign(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()))
    return json.dumps({**payload, "sig": signature.decode()}, sort_keys=True, separators=(",", ":"))


def _forge_last(raw: list[str], ws: Workspace, *, claim: bool) -> list[str]:
    """The last line replaced by one claiming entries 5 to 8 had another hash."""
    ours = json.loads(raw[-1])["key"]
    return [*raw[:-1], _attacker_line(raw[-2], ours if claim else None, first=5, seq=8, hash="b" * 64)]


LOG_EDITS = {
    "hash edited": (lambda raw, ws: [*raw[:-1], raw[-1].replace(lines(ws)[-1]["hash"], "a" * 64)],
                    "line 6 has a signature that does not match its content"),
    "line deleted in the middle": (lambda raw, ws: [*raw[:2], *raw[3:]], "line 3 does not follow the line before it"),
    "first line deleted": (lambda raw, ws: raw[1:], "line 1 does not follow the start of the log"),
    "lines swapped": (lambda raw, ws: [raw[1], raw[0], *raw[2:]], "line 1 does not follow the start of the log"),
    "garbage": (lambda raw, ws: [*raw, "{not json"], "line 7 is not a signed checkpoint"),
    "signed with another key": (lambda raw, ws: _forge_last(raw, ws, claim=False), "line 6 was signed with another key"),
    "another key claiming ours": (lambda raw, ws: _forge_last(raw, ws, claim=True),
                                  "line 6 has a signature that does not match its content"),
}


@pytest.mark.parametrize("edit", sorted(LOG_EDITS))
def test_edited_checkpoint_log_is_found(make_mesh: Any, mesh_files: dict[str, Any], edit: str) -> None:
    ws = make_mesh(mesh_files)
    changes(ws)
    change, says = LOG_EDITS[edit]
    write_lines(ws, change(ws.audit_anchor.log_path.read_text().splitlines(), ws))
    result = bad(ws, None, "the checkpoint log cannot vouch for the chain", says, "put back the log")
    assert result["entries"] == 8


def test_forged_line_cannot_cover_a_cut_tail(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    """The tamperer cuts entries 7 and 8 and replaces the log's last two lines with one for entry 6 of
    their own making: without the key, that line does not verify."""
    ws = make_mesh(mesh_files)
    changes(ws)
    sixth = audit_rows(ws)[5]
    tamper(ws, delete(ENTRIES).where(ENTRIES.c.seq > 6), update(HEAD).values(seq=6, hash=sixth["hash"]))
    raw = ws.audit_anchor.log_path.read_text().splitlines()
    write_lines(ws, [*raw[:-2], _attacker_line(raw[-3], json.loads(raw[0])["key"], first=5, seq=6,
                                               hash=sixth["hash"])])
    bad(ws, None, "line 5 has a signature that does not match its content")
    write_lines(ws, raw[:-2])  # or drops them: only an append-only log (see docs/security.md) prevents that
    assert quick_verify(ws).ok is True


def test_deleted_log_is_found(chain: Workspace) -> None:
    chain.audit_anchor.log_path.unlink()
    bad(chain, None, "the checkpoint log is missing or empty while its key exists", "`trustmesh audit checkpoint`")


def test_interrupted_last_line_is_not_read_and_the_next_write_starts_a_new_line(make_mesh: Any,
                                                                                mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    log = ws.audit_anchor.log_path
    with log.open("ab") as fh:
        fh.write(b'{"v":1,"kind":"checkp')  # a write cut short by a crash
    assert quick_verify(ws).ok is True  # an unfinished last line is not read (it may be being written)
    ask_for_items(ws)
    assert log.read_text().splitlines()[-2] == '{"v":1,"kind":"checkp'
    bad(ws, None, "line 3 is not a signed checkpoint: it was edited or damaged")


# -- keys and logs ------------------------------------------------------------------------------------------------


def test_public_key_alone_verifies_and_signs_nothing(make_mesh: Any, mesh_files: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ws = make_mesh(mesh_files)
    changes(ws)
    private = serialization.load_pem_private_key(ws.audit_anchor.key_path.read_bytes(), password=None)
    public = tmp_path / "audit-key.pub.pem"
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv(KEY_FILE_ENV, str(public))
    monkeypatch.setenv(LOG_ENV, str(ws.audit_anchor.log_path))
    auditor = Workspace.open(ws.root)
    try:
        assert auditor.audit.verify()["ok"] is True
        with pytest.raises(AuditAnchorError, match=r"holds only a public key.*fix: point TRUSTMESH_AUDIT_KEY_FILE"):
            ask_for_items(auditor)
        assert auditor.audit.verify()["entries"] == 8  # the refused change left no entry...
        with auditor.store.session() as s:  # ...and no request
            assert len(s.scalars(select(AccessRequestRow)).all()) == 2
    finally:
        auditor.close()


def test_unwritable_log_refuses_the_change(make_mesh: Any, mesh_files: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ws = make_mesh(mesh_files)
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "not-a-folder" / "audit.jsonl"))
    elsewhere = Workspace.open(ws.root)
    try:
        with pytest.raises(AuditAnchorError, match=r"cannot append to the audit checkpoint log .* fix: give this "
                                                   r"process write access to it, or set TRUSTMESH_AUDIT_LOG"):
            ask_for_items(elsewhere)
    finally:
        elsewhere.close()
    assert ws.audit.verify()["entries"] == 3


def test_key_readable_by_others_is_refused(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    ws.audit_anchor.key_path.chmod(0o644)
    again = Workspace.open(ws.root)
    try:
        with pytest.raises(AuditAnchorError, match=r"can be read by others .* fix: chmod 600"):
            ask_for_items(again)
    finally:
        again.close()


def test_missing_key_named_in_the_environment_is_refused(make_mesh: Any, mesh_files: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ws = make_mesh(mesh_files)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "absent.pem"))
    elsewhere = Workspace.open(ws.root)
    try:
        with pytest.raises(AuditAnchorError, match=r"no audit checkpoint key at .*absent.pem \(\$TRUSTMESH_AUDIT_KEY_FILE\)"):
            ask_for_items(elsewhere)
        assert not (tmp_path / "absent.pem").exists()  # a key named by the operator is never made up
        result = elsewhere.audit.verify()
        assert result["ok"] is False and "no audit checkpoint key" in result["problem"]
    finally:
        elsewhere.close()


def test_lost_key_is_not_replaced_while_its_log_has_lines(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    ws.audit_anchor.key_path.unlink()
    again = Workspace.open(ws.root)
    try:
        with pytest.raises(AuditAnchorError, match=r"has lines but its key .* is missing — fix: restore the key"):
            ask_for_items(again)
        assert not again.audit_anchor.key_path.exists()
        assert again.audit.verify()["problem"].startswith("the signed checkpoints cannot be checked: there is no "
                                                          "audit checkpoint key")
    finally:
        again.close()


def test_key_and_log_kept_apart_from_the_mesh_and_metastore(make_mesh: Any, mesh_files: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            metastore_url: str) -> None:
    """A server's deployment: the key a mounted secret, the log on another volume."""
    secret, volume = tmp_path / "secrets", tmp_path / "audit-volume"
    secret.mkdir()
    key = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    (secret / "audit.pem").write_bytes(key)
    (secret / "audit.pem").chmod(0o600)
    monkeypatch.setenv(KEY_FILE_ENV, str(secret / "audit.pem"))
    monkeypatch.setenv(LOG_ENV, str(volume / "checkpoints.jsonl"))
    ws = make_mesh(mesh_files, metastore_url=metastore_url)
    changes(ws)
    result = ws.audit.verify()
    assert result["ok"] is True and result["anchored"] == 8, result
    assert len((volume / "checkpoints.jsonl").read_text().splitlines()) == 6
    assert not (ws.root / ".trustmesh" / "audit-key.pem").exists()
    assert not (ws.root / ".trustmesh" / "audit-checkpoints.jsonl").exists()


# -- a metastore older than its checkpoints; restoring an older backup -------------------------------------------


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_metastore_older_than_its_checkpoints(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    changes(ws)
    ws.audit_anchor.log_path.unlink()
    ws.audit_anchor.key_path.unlink()
    old = Workspace.open(ws.root)  # as a mesh made before checkpoints existed
    try:
        result = old.audit.verify()
        assert result["ok"] is True and result["checkpoints"] == 0
        assert "no signed checkpoints yet" in result["notes"][0]
        started = cli("audit", "checkpoint", "--mesh", str(ws.root), "--json")
        assert started.exit_code == 0, started.output
        assert json.loads(started.stdout)["anchored"] == 8
        assert [(s["kind"], s["seq"]) for s in lines(old)] == [("accept", 8)]
        again = cli("audit", "checkpoint", "--mesh", str(ws.root))
        assert again.exit_code == 2 and "the checkpoint log has begun" in again.output
        one_more(old)
        assert old.audit.verify()["anchored"] == 9
    finally:
        old.close()


def test_first_change_after_upgrade_starts_the_log(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    ws.audit_anchor.log_path.unlink()
    ws.audit_anchor.key_path.unlink()
    old = Workspace.open(ws.root)
    try:
        changes(old)
        result = old.audit.verify()
        assert result["ok"] is True and result["anchored"] == 8
        assert result["notes"] == ["signed checkpoints start at entry 4: the entries before it are as they were "
                                   "when the checkpoint log began"]
    finally:
        old.close()


@pytest.mark.skipif(METASTORE_TIER == "postgresql", reason="restores a SQLite file; this tier's metastores are "
                    "PostgreSQL databases (the other tests here run on both)")
def test_restoring_an_older_backup_is_accepted_by_a_governance_admin(make_mesh: Any, mesh_files: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    ws = make_mesh(mesh_files)
    db = ws.root / ".trustmesh" / "metastore.db"
    backup = tmp_path / "metastore-backup.db"
    with sqlite3.connect(db) as source, sqlite3.connect(backup) as copy:
        source.backup(copy)  # after entry 3
    changes(ws)
    ws.close()
    with sqlite3.connect(backup) as source, sqlite3.connect(db) as target:
        source.backup(target)
    root = str(ws.root)
    restored = Workspace.open(ws.root)
    try:
        bad(restored, 4, "the chain ends at entry 3", "--accept")
        assert cli("audit", "checkpoint", "--accept", "--as", "gdo", "--mesh", root).exit_code == 2  # no reason
        with pytest.raises(Forbidden, match="takes a governance admin"):
            restored.audit.checkpoint("alpha-dev", accept=True, reason="restored the nightly dump")
        accepted = cli("audit", "checkpoint", "--accept", "--reason", "restored the nightly dump", "--as", "gdo",
                       "--mesh", root)
        assert accepted.exit_code == 0, accepted.output
        assert "verified" in accepted.stdout and "entries 4 to 8 signed before it were let go" in accepted.stdout
        result = restored.audit.verify()
        assert result["ok"] is True and result["entries"] == 4, result
        entry = restored.audit.log(AUDITOR, type="audit.accepted")[0]
        assert (entry["actor"], entry["details"]["up_to"], entry["details"]["reason"]) == (
            "gdo", 3, "restored the nightly dump")
        assert "the chain ends at entry 3" in entry["details"]["was"]
        changes(restored)  # the chain goes on: entries 5 to 9 are signed as usual
        assert restored.audit.verify()["ok"] is True
        with pytest.raises(UsageError, match="nothing to accept"):
            restored.audit.checkpoint("gdo", accept=True, reason="again")
        # Accepting lets go of a cut end, never of a rewrite: entry 2 rewritten is still found.
        entries = audit_rows(restored)
        entries[1]["actor"] = "gdo"
        rehash(restored, entries)
        bad(restored, 3, "entry 3 is not the entry signed")
        with pytest.raises(Conflict, match="does not verify, so it is not signed: entry 3"):
            restored.audit.checkpoint("gdo", accept=True, reason="hide it")
    finally:
        restored.close()


def test_unsigned_entries_can_be_accepted(chain: Workspace) -> None:
    """Entries committed by a process without the checkpoint log: found, and accepted once judged genuine."""
    unanchored = Metastore.open(chain.store.url, migrate=False)
    try:
        with unanchored.session() as session:
            audit.append(session, "token.revoked", "alpha-dev", "alpha-dev", {"token": "tok-1"})
    finally:
        unanchored.dispose()
    one_more(chain)
    bad(chain, 9, "entry 9 is vouched for by no signed checkpoint")
    result = chain.audit.checkpoint("gdo", accept=True, reason="tok-1 revoked by the operator's own script")
    assert result["ok"] is True and result["entries"] == 11 and result["anchored"] == 11


# -- concurrency ------------------------------------------------------------------------------------------------

WRITER = """
import sys
from concurrent.futures import ThreadPoolExecutor
from trustmesh.service import Workspace

ws = Workspace.open(sys.argv[1], metastore_url=sys.argv[2])
with ThreadPoolExecutor(3) as pool:
    list(pool.map(lambda i: ws.tokens.issue("alpha-dev", "alpha-dev", name=f"{sys.argv[3]}-{i}", days=1), range(8)))
ws.close()
"""


def test_concurrent_writers_keep_the_log_whole(make_mesh: Any, mesh_files: dict[str, Any], metastore_url: str) -> None:
    """Two processes of three threads each append at once: every commit has its line, each line follows the
    one before it, and the chain verifies."""
    ws = make_mesh(mesh_files, metastore_url=metastore_url)
    env = {k: v for k, v in os.environ.items() if k not in (KEY_FILE_ENV, LOG_ENV)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(ws.root), ws.store.url, name], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for w in writers:
        _, err = w.communicate(timeout=180)
        assert w.returncode == 0, err
    result = ws.audit.verify()
    assert result["ok"] is True and result["entries"] == 3 + 16 and result["anchored"] == 19, result
    signed = lines(ws)
    assert len(signed) == 2 + 16  # one per commit
    covered = sorted(n for s in signed for n in range(s["first"], s["seq"] + 1))
    assert covered == list(range(1, 20))


# -- front ends ----------------------------------------------------------------------------------------------------


def test_cli_verify_reports_checkpoints_and_tampering(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    ws = make_mesh(mesh_files)
    changes(ws)
    root = str(ws.root)
    ok = cli("audit", "verify", "--mesh", root)
    assert ok.exit_code == 0, ok.output
    assert "6 signed checkpoints; the newest vouches for entries 1 to 8" in ok.stdout
    seventh = audit_rows(ws)[6]
    tamper(ws, delete(ENTRIES).where(ENTRIES.c.seq == 8), update(HEAD).values(seq=7, hash=seventh["hash"]))
    cut = cli("audit", "verify", "--mesh", root)
    assert cut.exit_code == 1
    assert "TAMPERED" in cut.stdout and "entries after 7 were deleted" in cut.stdout
    assert json.loads(cli("audit", "verify", "--mesh", root, "--json").stdout)["first_bad"] == 8


def test_api_and_page_show_the_checkpoints(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    import warnings

    from trustmesh.web.app import create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    ws = make_mesh(mesh_files)
    token = ws.tokens.issue(AUDITOR, AUDITOR, name="tests", days=1)[0]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(ws)) as client:
        verified = client.get("/api/v1/audit/verify", headers=headers).json()
        assert (verified["ok"], verified["entries"], verified["anchored"], verified["checkpoints"]) == (True, 4, 4, 3)
        assert verified["notes"] == []
        page = client.get("/audit", headers=headers).text
        assert "Signed checkpoints" in page and "entries 1 to 4" in page
        tamper(ws, delete(ENTRIES).where(ENTRIES.c.seq == 4),
               update(HEAD).values(seq=3, hash=audit_rows(ws)[2]["hash"]))
        broken = client.get("/audit", headers=headers).text
        assert "Not verified: the chain is broken at entry 4." in broken and "entries after 3 were deleted" in broken


# -- coverage ---------------------------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 6)), max_size=40), st.integers(1, 70))
def test_coverage_gaps_are_what_no_range_covers(ranges: list[tuple[int, int]], hi: int) -> None:
    covered = Coverage()
    for lo, width in ranges:
        covered.add(lo, lo + width)
    expected = {n for n in range(1, hi + 1)} - {n for lo, width in ranges for n in range(lo, lo + width + 1)}
    gaps = covered.gaps(1, hi)
    assert {n for a, b in gaps for n in range(a, b + 1)} == expected
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in pairwise(gaps))  # merged, in order
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in pairwise(covered.ranges))


def test_signing_costs_one_small_write_per_commit(make_mesh: Any, mesh_files: dict[str, Any]) -> None:
    """The log is appended to, never read whole: its size grows by one line (< 1 KB) per commit."""
    ws = make_mesh(mesh_files)
    log = ws.audit_anchor.log_path
    before = log.stat().st_size
    started = time.perf_counter()
    for i in range(20):
        ws.tokens.issue("alpha-dev", "alpha-dev", name=f"t{i}", days=1)
    assert time.perf_counter() - started < 20
    grown = log.stat().st_size - before
    assert 20 * 300 < grown < 20 * 1024
