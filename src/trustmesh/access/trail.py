"""Reading the audit trail: for auditors and governance admins; anyone may verify the chain.

Verifying also checks the chain against its signed checkpoints (`metastore.anchor`), which live outside
the metastore. Where the checkpoint key is, `checkpoint` starts the log of an older metastore, and a
governance admin can accept a chain its checkpoints no longer vouch for (a restored older backup).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from trustmesh.access.model import Directory
from trustmesh.errors import Conflict, Forbidden, NotFound, UsageError
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.anchor import AuditAnchor
from trustmesh.metastore.schema import utcnow

READERS = ("auditor", "governance-admin")


def parse_since(text: str | None, name: str = "--since") -> datetime | None:
    """`7d`, `12h`, `30m`, or an ISO date/time (UTC when no zone is given); `name` is the input's in messages."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if found:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[found.group(2)]
        return utcnow() - timedelta(**{unit: int(found.group(1))})
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{name} {text!r} is not a time — fix: 7d, 12h, 30m or an ISO date like 2026-11-01") from exc
    return at if at.tzinfo else at.replace(tzinfo=utcnow().tzinfo)


class AuditTrail:
    def __init__(self, store: Metastore, directory: Callable[[], Directory], anchor: AuditAnchor | None = None) -> None:
        self.store = store
        self._directory = directory
        self.anchor = anchor

    def _reader(self, actor: str) -> None:
        who = self._directory().principals.get(actor)
        if who is None:
            raise NotFound(f"no principal {actor!r} in this mesh — fix: act as a person declared under `people:`")
        if not any(who.has_role(r) for r in READERS):
            raise Forbidden(f"{actor} may not read the audit trail: that takes an auditor or a governance admin")

    def log(self, actor: str, *, by: str | None = None, subject: str | None = None, type: str | None = None,
            since: datetime | None = None, before: int | None = None,
            limit: int | None = 200) -> list[dict[str, Any]]:
        """Entries matching the filters, newest first; `before` a sequence number: only older entries (next page)."""
        self._reader(actor)
        with self.store.session() as session:
            return [audit.to_dict(r) for r in audit.entries(session, actor=by, subject=subject, type=type, since=since,
                                                            before=before, limit=limit, newest_first=True)]

    def count(self, actor: str, *, by: str | None = None, subject: str | None = None, type: str | None = None,
              since: datetime | None = None) -> int:
        """How many entries match the filters of `log` (every page of them)."""
        self._reader(actor)
        with self.store.session() as session:
            return audit.count(session, actor=by, subject=subject, type=type, since=since)

    def export(self, actor: str) -> Iterator[str]:
        """Every entry as one JSON line, oldest first, with its hashes, for an external archive.

        The caller's role is checked at once, before the first line is asked for.
        """
        self._reader(actor)
        return self._lines()

    def _lines(self) -> Iterator[str]:
        with self.store.session() as session:
            for row in audit.entries(session):
                yield json.dumps(audit.to_dict(row), sort_keys=True, ensure_ascii=False)

    def verify(self, expect_head: str | None = None) -> dict[str, Any]:
        with self.store.session() as session:
            return audit.verify(session, expect_head, self.anchor).to_dict()

    def checkpoint(self, actor: str | None = None, *, accept: bool = False, reason: str = "") -> dict[str, Any]:
        """Start the checkpoint log on the chain as it is, or (`accept`) vouch for a chain its checkpoints no
        longer fully vouch for; returns the verification after signing.

        A metastore older than its checkpoint log has none until its next change; this signs its head now.
        Once the log has begun every change signs its own line, and only a governance admin, giving a reason,
        may accept the chain as it is: after restoring a backup older than the newest checkpoint, or when
        entries were committed by a process that could not write the log. Acceptance is recorded as an
        `audit.accepted` entry. A rewritten entry is never accepted: signing would vouch for it.
        """
        if self.anchor is None:
            raise UsageError("this mesh has no audit checkpoint log — fix: open it through trustmesh, which keeps one")
        begun = self.anchor.size() > 0
        if accept:
            who = self._directory().principals.get(actor or "")
            if who is None or not who.has_role("governance-admin"):
                raise Forbidden(f"{actor or 'nobody'} may not accept the audit chain: that takes a governance admin "
                                "— fix: --as a person with the governance-admin role")
        elif begun:
            raise UsageError("the checkpoint log has begun: every change signs its own checkpoint — fix: to vouch "
                             "for entries no checkpoint covers, or for a restored older backup, add --accept "
                             "--reason TEXT --as a governance admin")
        with self.store.session() as session:
            now = audit.verify(session, anchor=self.anchor if begun else None)
            accepted = audit.verify(session, anchor=self.anchor, accept=True) if accept else now
        if accept and now.ok:
            raise UsageError("there is nothing to accept: the signed checkpoints vouch for the whole chain — fix: "
                             "none needed")
        if not accepted.ok:
            raise Conflict(f"the audit chain does not verify, so it is not signed: {accepted.problem}")
        if not accept:
            self.anchor.accept(accepted.entries, accepted.head, reason or "started the checkpoint log")
            return self.verify()
        self.anchor.accept(accepted.entries, accepted.head, reason)
        with self.store.session() as session:
            audit.append(session, "audit.accepted", actor or "", "audit",
                         {"up_to": accepted.entries, "reason": reason.strip(), "was": now.problem}, at=utcnow())
        return self.verify()
