"""The audit trail: an append-only chain of events, each entry hashing the one before it.

An entry is written in the same transaction as the change it records, so there is never a change
without its entry nor an entry without its change. `verify` recomputes the chain and names the first
entry that was modified, deleted, inserted or moved; with an `AuditAnchor` (signed checkpoints of the
head, kept outside the metastore) it also finds entries cut off the end and a chain rewritten and
re-hashed from some entry on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Select, event, func, insert, select, update
from sqlalchemy.orm import Session

from trustmesh.errors import TrustmeshError
from trustmesh.metastore.anchor import IN_FLIGHT_S, LOG_ENV, AuditAnchor, AuditAnchorError, Vouching, vouch
from trustmesh.metastore.schema import AuditHeadRow, AuditRow, utcnow

GENESIS = "0" * 64
HEAD_INFO = "trustmesh.audit.head"  # in session.info: what this transaction appended, signed after its commit

log = logging.getLogger(__name__)
_anchors: WeakKeyDictionary[Engine, AuditAnchor] = WeakKeyDictionary()

# Stable event type codes: what happened, never reworded once shipped.
EVENT_TYPES = {
    "access.requested": "a principal asked for access to a dataset",
    "access.approved": "an approver approved a request at one level",
    "access.rejected": "an approver rejected a request",
    "access.withdrawn": "the requester withdrew a pending request",
    "access.request-expired": "a request stayed pending past its deadline",
    "access.refused": "an access action was refused (the attempt, its actor and the reason)",
    "grant.created": "an approved request became a grant",
    "grant.expired": "a grant reached its expiry",
    "grant.revoked": "a grant was revoked",
    "token.created": "an API token was issued",
    "token.revoked": "an API token was revoked",
    "auth.refused": "a request to the server carried a bad, expired or revoked token",
    "build.finished": "a build ran (what it built, what failed)",
    "query.run": "a governed query ran (SQL as sent, datasets and versions, masking, filters, rows, duration)",
    "query.refused": "a query was refused, and why",
    "policy.changed": "a policy was added, changed or removed (with its diff) when policies were applied",
    "governance.evaluated": "policies were evaluated over products (statuses, what changed)",
    "privacy.scan": "a custodian scanned a dataset version for personal data",
    "privacy.kanon": "a custodian measured the k-anonymity of a dataset version",
    "product.published": "a product published new dataset versions",
    "audit.accepted": "an operator vouched for the chain as it is (a restored older backup, entries left unsigned)",
}


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, seq: int, at: datetime, type: str, actor: str, subject: str,
               details: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the entry's canonical JSON."""
    body = json.dumps({"seq": seq, "at": _stamp(at), "type": type, "actor": actor, "subject": subject,
                       "details": details}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def sign_heads(engine: Engine, anchor: AuditAnchor) -> None:
    """After every transaction on `engine` that appended to the chain, sign what it appended into `anchor`'s log."""
    _anchors[engine] = anchor


def anchor_of(session: Session) -> AuditAnchor | None:
    bind = session.get_bind()
    return _anchors.get(bind.engine if isinstance(bind, Connection) else bind)


def append(session: Session, type: str, actor: str, subject: str, details: dict[str, Any] | None = None,
           at: datetime | None = None) -> AuditRow:
    """Add one entry to the chain inside the caller's transaction.

    Moving the head first takes the write lock (SQLite) or the head row's lock (PostgreSQL), so
    concurrent appenders queue and each links to the entry committed before it. On an anchored
    metastore the change is made only if its checkpoint can be signed, and is signed once committed.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {type!r}")
    anchor = anchor_of(session)
    if anchor is not None:
        anchor.ready()
    details = json.loads(json.dumps(details or {}, default=str))  # exactly what a reader will get back
    at = at or utcnow()
    moved = session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1)
                            .values(seq=AuditHeadRow.seq + 1).returning(AuditHeadRow.seq, AuditHeadRow.hash)).one()
    seq, prev = int(moved[0]), str(moved[1])
    digest = entry_hash(prev, seq, at, type, actor, subject, details)
    values = {"seq": seq, "at": at, "type": type, "actor": actor, "subject": subject, "details": details,
              "prev_hash": prev, "hash": digest}
    session.execute(insert(AuditRow), [values])  # Core, not the ORM: this runs once per query
    session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(hash=digest))
    if anchor is not None:
        first = session.info[HEAD_INFO][0] if HEAD_INFO in session.info else seq
        session.info[HEAD_INFO] = (first, seq, digest, anchor)
    return AuditRow(**values)


@event.listens_for(Session, "after_commit")
def _sign_head(session: Session) -> None:
    """The change is committed: a failure to sign it now is logged (verify will call its entries unsigned)."""
    head = session.info.pop(HEAD_INFO, None)
    if head is None:
        return
    first, seq, digest, anchor = head
    try:
        anchor.record(first, seq, digest)
    except (OSError, TrustmeshError) as exc:
        log.error("audit entries %s to %s are committed but their checkpoint could not be written to %s: %s — "
                  "`trustmesh audit verify` reports them as vouched for by no signed checkpoint; fix the log, then "
                  "a governance admin accepts them with `trustmesh audit checkpoint --accept`", first, seq,
                  anchor.log_path, exc)


@event.listens_for(Session, "after_rollback")
def _forget_head(session: Session) -> None:
    session.info.pop(HEAD_INFO, None)


def to_dict(row: AuditRow) -> dict[str, Any]:
    return {"seq": row.seq, "at": _stamp(row.at), "type": row.type, "actor": row.actor, "subject": row.subject,
            "details": row.details, "prev_hash": row.prev_hash, "hash": row.hash}


def entries(session: Session, *, actor: str | None = None, subject: str | None = None, type: str | None = None,
            since: datetime | None = None, before: int | None = None, limit: int | None = None,
            newest_first: bool = False) -> list[AuditRow]:
    """Entries matching every filter given; `subject` also matches anything under it (`bts.` → bts's datasets);
    `before` keeps entries with a smaller sequence number (the next page of a newest-first listing)."""
    query = _matching(select(AuditRow), actor, subject, type, since)
    if before is not None:
        query = query.where(AuditRow.seq < before)
    query = query.order_by(AuditRow.seq.desc() if newest_first else AuditRow.seq)
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def count(session: Session, *, actor: str | None = None, subject: str | None = None, type: str | None = None,
          since: datetime | None = None) -> int:
    """How many entries match the filters (as `entries` reads them), counted by the database."""
    query = _matching(select(func.count()).select_from(AuditRow), actor, subject, type, since)
    return int(session.scalar(query) or 0)


def _matching(query: Select[Any], actor: str | None, subject: str | None, type: str | None,
              since: datetime | None) -> Select[Any]:
    if actor:
        query = query.where(AuditRow.actor == actor)
    if subject:
        query = query.where((AuditRow.subject == subject) | AuditRow.subject.startswith(subject + ".", autoescape=True))
    if type:
        query = query.where(AuditRow.type.startswith(type, autoescape=True))
    if since:
        query = query.where(AuditRow.at >= since)
    return query


@dataclass
class Verification:
    ok: bool
    entries: int
    head: str
    first_bad: int | None = None
    problem: str = ""
    checkpoints: int = 0  # signed lines in the checkpoint log, every one checked
    anchored: int = 0  # the newest entry a signed checkpoint vouches for, and with it every entry before it
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "first_bad": self.first_bad,
                "problem": self.problem, "checkpoints": self.checkpoints, "anchored": self.anchored,
                "notes": self.notes}


def _walk(session: Session, batch: int = 5000) -> Iterator[AuditRow]:
    """Every row in sequence order, from the smallest sequence number there is (a forged 0 or -1 included)."""
    query = select(AuditRow).order_by(AuditRow.seq).limit(batch)
    rows = list(session.scalars(query))
    while rows:
        yield from rows
        rows = list(session.scalars(query.where(AuditRow.seq > rows[-1].seq)))


def verify(session: Session, expect_head: str | None = None, anchor: AuditAnchor | None = None, *,
           accept: bool = False, wait: float = IN_FLIGHT_S) -> Verification:
    """Recompute the whole chain; the first entry that does not fit is named with what is wrong with it.

    With an `anchor`, the chain is then compared with its signed checkpoints: an entry cut off the end, a
    chain rewritten and re-hashed, or an entry added straight to the metastore is found without trusting
    the metastore. `accept` reads the checkpoints as if the chain as it is had been accepted (see
    `AuditAnchor.accept`). `expect_head`, a head recorded earlier, must still be an entry's hash: entries
    may have been added since, but none of those before it rewritten, even consistently.
    """
    until = anchor.size() if anchor is not None else 0  # before the chain: every line read is of a committed entry
    prev, expected_seq, count = GENESIS, 1, 0
    seen_expected = expect_head in (None, GENESIS)
    for row in _walk(session):
        if row.seq < expected_seq:
            return Verification(False, count, prev, row.seq, f"entry {row.seq} comes before the first entry: it "
                                "was inserted")
        if row.seq != expected_seq:
            return Verification(False, count, prev, expected_seq,
                                f"entry {expected_seq} is missing (the next one is {row.seq}): entries were deleted")
        if row.prev_hash != prev:
            return Verification(False, count, prev, row.seq,
                                f"entry {row.seq} does not link to entry {row.seq - 1}: an entry was inserted, "
                                "removed or reordered before it")
        recomputed = entry_hash(prev, row.seq, row.at, row.type, row.actor, row.subject, row.details)
        if recomputed != row.hash:
            return Verification(False, count, prev, row.seq,
                                f"entry {row.seq} ({row.type} by {row.actor}) was modified after it was written")
        prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
        seen_expected = seen_expected or row.hash == expect_head
    head = session.get(AuditHeadRow, 1)
    if head is None or head.seq != count or head.hash != prev:
        return Verification(False, count, prev, count + 1 if head is None or head.seq > count else count,
                            f"the chain ends at entry {count} but its head records entry "
                            f"{head.seq if head else '(none)'}: entries at the end were deleted or the head was edited")
    result = Verification(True, count, prev)
    if anchor is None:
        result.notes.append("no checkpoint log is configured: entries cut off the end, a chain rewritten and "
                            "re-hashed, or entries added straight to the metastore would go unnoticed")
    else:
        _vouched(session, anchor, until, result, accept, wait)
    if result.ok and not seen_expected:
        assert expect_head is not None
        result.ok, result.problem = False, (f"the recorded head {expect_head[:16]}… is no longer an entry of the chain: "
                                            "the chain was rewritten since that head was recorded (or cut back before it)")
    return result


def _vouched(session: Session, anchor: AuditAnchor, until: int, result: Verification, accept: bool,
             wait: float) -> None:
    """Compare a sound chain with its signed checkpoints; a contradiction fails `result`, the rest are notes."""
    count = result.entries

    def lookup(seqs: list[int]) -> dict[int, str]:
        if not seqs:
            return {}
        rows = session.execute(select(AuditRow.seq, AuditRow.hash).where(AuditRow.seq.in_(seqs)))
        return {int(seq): str(digest) for seq, digest in rows}

    def fail(first_bad: int | None, problem: str) -> None:
        result.ok, result.first_bad, result.problem = False, first_bad, problem

    if until == 0 and not accept:
        if count and anchor.has_key():
            fail(None, f"the chain has {count} entries but the checkpoint log is missing or empty while its key exists: "
                 f"the log was deleted or moved — fix: put the log back where ${LOG_ENV} (else "
                 "`.trustmesh/audit-checkpoints.jsonl`) says; if this metastore never had one, start it with "
                 "`trustmesh audit checkpoint`")
        elif count:
            result.notes.append("no signed checkpoints yet (this metastore predates them): the next change signs the "
                                "first, or run `trustmesh audit checkpoint`; until then entries cut off the end, a "
                                "consistent rewrite or entries added straight to the metastore go unnoticed")
        return
    try:
        found = vouch(anchor.reader(), until, count, lookup, accept_at=(count, result.head) if accept else None,
                      wait=wait)
    except AuditAnchorError as exc:
        fail(None, f"the signed checkpoints cannot be checked: {exc}")
        return
    result.checkpoints, result.anchored = found.lines, found.anchored
    if found.problem:
        fail(None, f"the checkpoint log cannot vouch for the chain: its {found.problem} — fix: put back the log from "
             "its append-only copy or backup, and find out who could write to it (a forged line needs the key)")
    elif (point := found.rewritten) is not None:
        fail(point.seq, f"entry {point.seq} is not the entry signed {point.at} (line {point.line} of the checkpoint "
             f"log): the chain was rewritten at or before it and re-hashed to hide it — fix: restore the metastore "
             "from a backup that verifies, and compare it with your `trustmesh audit export` archives")
    elif (point := found.beyond) is not None:
        fail(count + 1, f"the chain ends at entry {count}, but line {point.line} of the checkpoint log (signed "
             f"{point.at}) vouches for entry {point.seq}: entries after {count} were deleted and the head moved back "
             f"— fix: restore the metastore from a backup taken after {point.at}; if an older backup was restored "
             "on purpose, accept it with `trustmesh audit checkpoint --accept --reason TEXT`")
    elif found.unsigned:
        a, b = found.unsigned[0]
        fail(a, f"{_span(a, b)} {'is' if a == b else 'are'} vouched for by no signed checkpoint: added straight to "
             "the metastore, or written by a process that could not reach the checkpoint log — fix: find out which "
             "(its log says 'could not be written'); only if the entries are genuine, accept them with "
             "`trustmesh audit checkpoint --accept --reason TEXT`")
    result.notes += _notes(found, count)


def _span(a: int, b: int) -> str:
    return f"entry {a}" if a == b else f"entries {a} to {b}"


def _notes(found: Vouching, count: int) -> list[str]:
    """What an auditor should know about a chain that verifies: since when it is vouched for, what was accepted."""
    notes = []
    if found.start is not None and found.start > 1:
        notes.append(f"signed checkpoints start at entry {found.start}: the entries before it are as they were "
                     "when the checkpoint log began")
    for point, signed in found.accepted:
        dropped = f"; {_span(point.seq + 1, signed)} signed before it were let go" if signed > point.seq else ""
        notes.append(f"the chain up to entry {point.seq} was accepted {point.at} (\"{point.reason}\"){dropped}")
    return notes
