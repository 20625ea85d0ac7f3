"""The audit trail: an append-only chain of events, each entry hashing the one before it.

An entry is written in the same transaction as the change it records, so there is never a change
without its entry nor an entry without its change. `verify` recomputes the chain and names the first
entry that was modified, deleted, inserted or moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.orm import Session

from trustmesh.metastore.schema import AuditHeadRow, AuditRow, utcnow

GENESIS = "0" * 64

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
}


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, seq: int, at: datetime, type: str, actor: str, subject: str,
               details: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the entry's canonical JSON."""
    body = json.dumps({"seq": seq, "at": _stamp(at), "type": type, "actor": actor, "subject": subject,
                       "details": details}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def append(session: Session, type: str, actor: str, subject: str, details: dict[str, Any] | None = None,
           at: datetime | None = None) -> AuditRow:
    """Add one entry to the chain inside the caller's transaction.

    Moving the head first takes the write lock (SQLite) or the head row's lock (PostgreSQL), so
    concurrent appenders queue and each links to the entry committed before it.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {type!r}")
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
    return AuditRow(**values)


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

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "first_bad": self.first_bad,
                "problem": self.problem}


def _walk(session: Session, batch: int = 5000) -> Iterator[AuditRow]:
    """Every row in sequence order, from the smallest sequence number there is (a forged 0 or -1 included)."""
    query = select(AuditRow).order_by(AuditRow.seq).limit(batch)
    rows = list(session.scalars(query))
    while rows:
        yield from rows
        rows = list(session.scalars(query.where(AuditRow.seq > rows[-1].seq)))


def verify(session: Session, expect_head: str | None = None) -> Verification:
    """Recompute the whole chain; the first entry that does not fit is named with what is wrong with it.

    `expect_head`, a head recorded earlier, must still be an entry's hash: entries may have been added
    since, but none of those before it rewritten, even consistently.
    """
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
    if not seen_expected:
        assert expect_head is not None
        return Verification(False, count, prev, None,
                            f"the recorded head {expect_head[:16]}… is no longer an entry of the chain: the chain "
                            "was rewritten since that head was recorded (or cut back before it)")
    return Verification(True, count, prev)
