"""Reading the audit trail: for auditors and governance admins; anyone may verify the chain."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from trustmesh.access.model import Directory
from trustmesh.errors import Forbidden, NotFound, UsageError
from trustmesh.metastore import Metastore, audit
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
    def __init__(self, store: Metastore, directory: Callable[[], Directory]) -> None:
        self.store = store
        self._directory = directory

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
            return audit.verify(session, expect_head).to_dict()
