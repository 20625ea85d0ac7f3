"""Who is calling the server: API tokens (kept only as hashes) and OIDC/JWT bearer tokens verified offline.

A refused token is an `auth.refused` audit entry, but a client sending bad tokens in a loop must not fill the audit
trail: `RefusalLog` writes at most `REFUSALS_PER_SOURCE` entries a minute for one client address and
`REFUSALS_PER_MINUTE` in all (per server process), counts the rest, and the next entry it writes says how many it
left out.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from trustmesh.access.model import PERSON, Directory, Principal
from trustmesh.descriptors.models import Oidc
from trustmesh.errors import Conflict, Forbidden, NotFound, Unauthenticated, UsageError
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.schema import ApiTokenRow

PREFIX = "tmk_"
MAX_TOKEN_DAYS = 365
API_TOKEN, OIDC = "api-token", "oidc"
REFUSALS_PER_SOURCE = 20  # `auth.refused` entries a minute from one client address
REFUSALS_PER_MINUTE = 100  # … and from every client together


def token_hash(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough: a stolen hash gives nobody the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _token_dict(row: ApiTokenRow, now: datetime) -> dict[str, Any]:
    state = "revoked" if row.revoked_at else ("expired" if row.expires_at and row.expires_at <= now else "active")
    return {"id": f"tok-{row.id}", "principal": row.principal, "name": row.name, "state": state,
            "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None}


@dataclass(frozen=True)
class Credential:
    """A verified bearer token: who it names, and what it was (an API token and its row id, or an OIDC JWT and
    its expiry), so a web session started from it can be checked against it again later."""

    principal: Principal
    kind: str  # API_TOKEN or OIDC
    token_hash: str
    token_id: int | None = None
    expires_at: datetime | None = None


class RefusalLog:
    """Writes `auth.refused` entries, a bounded number a minute: at most `per_source` for one client address and
    `overall` for all of them; refusals beyond that are counted, and the next entry written carries the count
    (`not_recorded`). The state is one minute's counts (at most `overall` addresses) and that one number."""

    def __init__(self, per_source: int = REFUSALS_PER_SOURCE, overall: int = REFUSALS_PER_MINUTE) -> None:
        self.per_source = per_source
        self.overall = overall
        self._lock = threading.Lock()
        self._minute: datetime | None = None
        self._written: dict[str, int] = {}
        self._not_recorded = 0

    def admit(self, source: str, now: datetime) -> int | None:
        """None: leave this refusal out (it is counted); else write it, saying how many were left out before it."""
        minute = now.replace(second=0, microsecond=0)
        with self._lock:
            if minute != self._minute:
                self._minute, self._written = minute, {}
            written = self._written.get(source, 0)
            if written >= self.per_source or sum(self._written.values()) >= self.overall:
                self._not_recorded += 1
                return None
            self._written[source] = written + 1
            left_out, self._not_recorded = self._not_recorded, 0
            return left_out

    def write(self, store: Metastore, reason: str, *, source: str | None, subject: str, at: datetime) -> None:
        left_out = self.admit(source or "unknown", at)
        if left_out is None:
            return
        details: dict[str, Any] = {"reason": reason, "source": source or "unknown"}
        if left_out:
            details["not_recorded"] = left_out  # refusals before this one, over the limit, written nowhere
        with store.session() as session:
            audit.append(session, "auth.refused", "anonymous", subject, details, at=at)


class Tokens:
    """Issue, list, revoke and check API tokens of the mesh's people."""

    def __init__(self, store: Metastore, directory: Callable[[], Directory], clock: Callable[[], datetime],
                 oidc: Oidc | None = None, root: Path | None = None) -> None:
        self.store = store
        self._directory = directory
        self.clock = clock
        self.oidc = oidc
        self.root = root
        self.refusals = RefusalLog()

    def directory(self) -> Directory:
        """The mesh's people and products as they are declared now."""
        return self._directory()

    def _may_manage(self, actor: Principal, person: str) -> None:
        if actor.id != person and not actor.has_role("governance-admin"):
            raise Forbidden(f"{actor.id} may not manage {person}'s tokens: that takes {person} or a governance admin")

    def issue(self, actor_id: str, person: str, *, name: str = "", days: int = 90) -> tuple[str, dict[str, Any]]:
        """A new token for a person; the token itself is returned once and never stored."""
        directory = self._directory()
        actor = _person(directory, actor_id)
        subject = _person(directory, person)
        self._may_manage(actor, subject.id)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_TOKEN_DAYS:
            raise UsageError(f"--days {days!r}: a token lasts 1 to {MAX_TOKEN_DAYS} days — fix: e.g. --days 90")
        token = PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        with self.store.session() as session:
            row = ApiTokenRow(principal=subject.id, name=name, hash=token_hash(token), created_by=actor.id,
                              created_at=now, expires_at=now + timedelta(days=days))
            session.add(row)
            session.flush()
            audit.append(session, "token.created", actor.id, subject.id,
                         {"token": f"tok-{row.id}", "name": name, "expires_at": row.expires_at.isoformat()
                          if row.expires_at else None}, at=now)
            return token, _token_dict(row, now)

    def list(self, actor_id: str, person: str | None = None) -> list[dict[str, Any]]:
        directory = self._directory()
        actor = _person(directory, actor_id)
        person = person or actor.id
        self._may_manage(actor, person)
        now = self.clock()
        with self.store.session() as session:
            rows = session.scalars(select(ApiTokenRow).where(ApiTokenRow.principal == person).order_by(ApiTokenRow.id))
            return [_token_dict(r, now) for r in rows]

    def revoke(self, actor_id: str, token_id: str) -> dict[str, Any]:
        text = token_id.strip().lower().removeprefix("tok-")
        if not text.isdigit():
            raise UsageError(f"{token_id!r} is not a token id — fix: e.g. tok-3 (see `trustmesh user tokens`)")
        directory = self._directory()
        actor = _person(directory, actor_id)
        now = self.clock()
        with self.store.session() as session:
            row = session.get(ApiTokenRow, int(text))
            if row is None:
                raise NotFound(f"no token tok-{text}")
            self._may_manage(actor, row.principal)
            if row.revoked_at:
                raise Conflict(f"tok-{row.id} is already revoked")
            session.execute(update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(revoked_at=now))
            audit.append(session, "token.revoked", actor.id, row.principal, {"token": f"tok-{row.id}"}, at=now)
            session.refresh(row)
            return _token_dict(row, now)

    def authenticate(self, authorization: str | None, *, source: str | None = None) -> Principal:
        """The principal behind an `Authorization: Bearer …` header; anything else is refused (and audited, as
        coming from `source`, the client's address)."""
        return self.identify(authorization, source=source).principal

    def identify(self, authorization: str | None, *, source: str | None = None) -> Credential:
        """`authenticate`, keeping what the token was (a session started from it is checked against it again)."""
        try:
            return self._authenticate(authorization)
        except Unauthenticated as exc:
            self.refused(str(exc), source=source, subject="api")
            raise

    def refused(self, reason: str, *, source: str | None, subject: str) -> None:
        """Record a refused credential in the audit trail, within the rate `RefusalLog` allows."""
        self.refusals.write(self.store, reason, source=source, subject=subject, at=self.clock())

    def _authenticate(self, authorization: str | None) -> Credential:
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("no bearer token — fix: send `Authorization: Bearer <token>`; create one with "
                                  "`trustmesh user token PERSON`")
        directory = self._directory()
        if token.startswith(PREFIX):
            return self._api_token(token, directory)
        if token.count(".") == 2 and self.oidc is not None:
            return self._jwt(token, directory)
        raise Unauthenticated("the bearer token is not a trustmesh API token" +
                              (" nor a JWT" if self.oidc else " (no OIDC issuer is configured)"))

    def _api_token(self, token: str, directory: Directory) -> Credential:
        digest = token_hash(token)
        with self.store.session() as session:
            row = session.scalars(select(ApiTokenRow).where(ApiTokenRow.hash == digest)).first()
            if row is None:
                raise Unauthenticated("unknown API token — fix: create one with `trustmesh user token PERSON`")
            return Credential(self.api_token_user(session, row, directory), API_TOKEN, digest, row.id,
                              row.expires_at)

    def api_token_user(self, session: Session, row: ApiTokenRow, directory: Directory) -> Principal:
        """The person of a stored API token, if it is still good (not revoked, not expired, its person still
        declared); notes its use at most once a minute."""
        now = self.clock()
        if row.revoked_at is not None:
            raise Unauthenticated(f"API token tok-{row.id} was revoked — fix: create a new one")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated(f"API token tok-{row.id} expired on {row.expires_at:%Y-%m-%d} — fix: create a new one")
        if row.last_used_at is None or (now - row.last_used_at) > timedelta(minutes=1):
            row.last_used_at = now
        found = directory.principals.get(row.principal)
        if found is None:
            raise Unauthenticated(f"the token's person {row.principal!r} is no longer declared in the mesh")
        return found

    def _jwt(self, token: str, directory: Directory) -> Credential:
        import jwt

        assert self.oidc is not None
        path = Path(self.oidc.jwks)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        try:
            keys = jwt.PyJWKSet.from_json(path.read_text())
            kid = jwt.get_unverified_header(token).get("kid")
            candidates = [k for k in keys.keys if kid is None or k.key_id == kid]
            if not candidates:
                raise Unauthenticated(f"the JWT's key id {kid!r} is not in the issuer's key set {path}")
            claims = jwt.decode(token, candidates[0].key, algorithms=self.oidc.algorithms, audience=self.oidc.audience,
                                issuer=self.oidc.issuer, options={"require": ["exp", "iss", "aud", self.oidc.claim]},
                                leeway=30)
        except (jwt.PyJWTError, ValueError, OSError, json.JSONDecodeError) as exc:
            raise Unauthenticated(f"the JWT was refused: {exc}") from exc
        # One claim, one field: the claim's value is a person's id, nothing else (not their email), so a token
        # names at most one person and only the claim the mesh chose (an immutable one: `sub` by default) counts.
        name = claims.get(self.oidc.claim)
        found = directory.principals.get(name) if isinstance(name, str) else None
        if found is None or found.kind != PERSON:
            raise Unauthenticated(f"the JWT's {self.oidc.claim} claim {name!r} is not the id of a person of this "
                                  f"mesh — fix: the issuer's {self.oidc.claim} must be the person's id in mesh.yaml "
                                  "or a domain.yaml (or set platform.oidc.claim to a claim that carries it)")
        expires = claims.get("exp")
        return Credential(found, OIDC, token_hash(token), None,
                          datetime.fromtimestamp(expires, UTC) if isinstance(expires, int | float) else None)


def _person(directory: Directory, pid: str) -> Principal:
    found = directory.principals.get(pid)
    if found is None or found.kind != PERSON:
        raise NotFound(f"no person {pid!r} in this mesh — fix: declare them under `people:` in mesh.yaml or a domain.yaml")
    return found
