"""Web sessions: a signed-in browser holds a random session id; the metastore holds its hash, the person and the
credential it was started from.

Every request re-checks the record and the credential behind it: signing out ends the session (the same cookie is
refused afterwards), and so does revoking or expiring the API token it was started with; a session from an OIDC ID
token ends when that token expires. A session lasts at most `SESSION_HOURS`.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from trustmesh.access.model import Principal
from trustmesh.access.tokens import API_TOKEN, Credential, Tokens
from trustmesh.errors import Unauthenticated
from trustmesh.metastore.schema import ApiTokenRow, WebSessionRow

SESSION_PREFIX = "tms_"
SESSION_HOURS = 24
KEEP_ENDED_DAYS = 7  # ended and expired records are deleted this long after, when someone signs in


def session_hash(session_id: str) -> str:
    """Session ids are 256 random bits: one SHA-256 keeps the metastore from holding anything a browser could send."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """Start, check and end the web sessions of the mesh's people, over the same tokens the API takes."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def start(self, credential: Credential) -> tuple[str, datetime]:
        """A new session for a verified token (`Tokens.identify`): its id, returned once, and when it ends at the
        latest (never after the token does)."""
        now = self.tokens.clock()
        expires = now + timedelta(hours=SESSION_HOURS)
        if credential.expires_at is not None:
            expires = min(expires, credential.expires_at)
        session_id = SESSION_PREFIX + secrets.token_urlsafe(32)
        with self.tokens.store.session() as session:
            session.execute(delete(WebSessionRow).where(
                WebSessionRow.expires_at < now - timedelta(days=KEEP_ENDED_DAYS)))
            session.add(WebSessionRow(hash=session_hash(session_id), principal=credential.principal.id,
                                      credential=credential.kind, token_id=credential.token_id,
                                      token_hash=credential.token_hash, created_at=now, expires_at=expires,
                                      ended_reason=""))
        return session_id, expires

    def authenticate(self, session_id: str, *, source: str | None = None) -> Principal:
        """The person of a live session; an unknown, ended or expired one, or one whose token no longer works, is
        refused (and audited within the refusal rate)."""
        try:
            return self._check(session_id)
        except Unauthenticated as exc:
            self.tokens.refused(str(exc), source=source, subject="session")
            raise

    def end(self, session_id: str, reason: str = "signed out") -> bool:
        """End a session now; False when it was unknown or had already ended."""
        with self.tokens.store.session() as session:
            result = session.execute(update(WebSessionRow).where(
                WebSessionRow.hash == session_hash(session_id), WebSessionRow.ended_at.is_(None))
                .values(ended_at=self.tokens.clock(), ended_reason=reason))
            return bool(getattr(result, "rowcount", 0))

    def _check(self, session_id: str) -> Principal:
        now = self.tokens.clock()
        directory = self.tokens.directory()
        with self.tokens.store.session() as session:
            row = session.scalars(select(WebSessionRow).where(WebSessionRow.hash == session_hash(session_id))).first()
            if row is None:
                raise Unauthenticated("unknown session — fix: sign in again")
            if row.ended_at is not None:
                raise Unauthenticated(f"the session ended ({row.ended_reason or 'ended'}) at "
                                      f"{row.ended_at:%Y-%m-%d %H:%M} UTC — fix: sign in again")
            if row.expires_at <= now:
                raise Unauthenticated(f"the session expired at {row.expires_at:%Y-%m-%d %H:%M} UTC — fix: sign in "
                                      "again")
            if row.credential != API_TOKEN:
                found = directory.principals.get(row.principal)
                if found is None:
                    raise Unauthenticated(f"the session's person {row.principal!r} is no longer declared in the mesh")
                return found
            token = session.get(ApiTokenRow, row.token_id) if row.token_id is not None else None
            try:
                if token is None or token.hash != row.token_hash:
                    raise Unauthenticated("the session's API token no longer exists — fix: sign in again")
                return self.tokens.api_token_user(session, token, directory)
            except Unauthenticated as exc:
                # The token no longer works: the session ends with it, for good (committed as the block ends).
                row.ended_at, row.ended_reason = now, _reason(str(exc))
                ended = exc
        raise ended


def _reason(message: str) -> str:
    """`API token tok-3 was revoked — fix: …` → `API token tok-3 was revoked` (what the record keeps)."""
    return message.split(" — ", 1)[0][:200]
