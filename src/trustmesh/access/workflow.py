"""The access workflow: request with a purpose → approve (one or two levels) → grant → expire or revoke.

Every rule is enforced here, below every front end, and every step — and every refused attempt — is an
audit entry written in the same transaction as the change it records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlglot import exp

from trustmesh.access.model import PERSON, PRODUCT, DatasetInfo, Directory, Principal
from trustmesh.access.policy import Authorizer, Decision, GrantTerms
from trustmesh.errors import Conflict, Forbidden, NotFound, TrustmeshError, UsageError
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.schema import AccessDecisionRow, AccessRequestRow, GrantRow, ProductStatusRow, utcnow

SYSTEM = "trustmesh"  # the actor of what happens on its own: expiry
UNFIT = "unfit for consumption"
Clock = Callable[[], datetime]


def _subject(value: str | int, prefix: str) -> str:
    """How a refused attempt names what it was about, even when the id itself was malformed."""
    text = str(value).strip().lower().removeprefix(f"{prefix}-")
    return f"{prefix}-{text}" if text.isdigit() else str(value)[:100]


def request_id(value: str | int) -> int:
    return _parse_id(value, "req")


def grant_id(value: str | int) -> int:
    return _parse_id(value, "grant")


def _parse_id(value: str | int, prefix: str) -> int:
    text = str(value).strip().lower().removeprefix(f"{prefix}-")
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"{value!r} is not a {prefix} id — fix: give it as {prefix}-7 or 7 (see `trustmesh access list`)")
    return int(text)


def request_to_dict(row: AccessRequestRow, decisions: list[AccessDecisionRow], awaiting: list[str]) -> dict[str, Any]:
    return {
        "id": f"req-{row.id}", "state": row.state, "requester": row.requester, "principal": row.principal,
        "principal_kind": row.principal_kind, "dataset": row.dataset, "domain": row.domain,
        "columns": row.columns, "unmask": list(row.unmask), "rows": row.row_filter, "purpose": row.purpose,
        "purpose_category": row.purpose_category, "days": row.days, "levels": row.levels,
        "approvals": [{"level": d.level, "approver": d.approver, "decision": d.decision, "note": d.note,
                       "at": d.decided_at.isoformat()} for d in sorted(decisions, key=lambda d: d.level)],
        "awaiting": awaiting, "created_at": row.created_at.isoformat(), "expires_at": row.expires_at.isoformat(),
        "decided_at": row.decided_at.isoformat() if row.decided_at else None, "reason": row.reason,
        "grant": f"grant-{row.grant_id}" if row.grant_id else None,
    }


def grant_state(row: GrantRow, now: datetime) -> str:
    """`expired` the moment its time is up, whether or not the expiry has been recorded yet."""
    if row.state == "active" and row.expires_at <= now:
        return "expired"
    return row.state


def grant_to_dict(row: GrantRow, now: datetime) -> dict[str, Any]:
    return {
        "id": f"grant-{row.id}", "state": grant_state(row, now), "principal": row.principal,
        "principal_kind": row.principal_kind, "dataset": row.dataset, "domain": row.domain, "columns": row.columns,
        "unmask": list(row.unmask), "rows": row.row_filter, "purpose": row.purpose,
        "purpose_category": row.purpose_category,
        "approvers": list(row.approvers), "granted_at": row.granted_at.isoformat(),
        "expires_at": row.expires_at.isoformat(), "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "revoked_by": row.revoked_by, "revoke_reason": row.revoke_reason,
        "request": f"req-{row.request_id}" if row.request_id else None,
    }


ROW_FILTER_NODES = (exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.And, exp.Or, exp.Not,
                    exp.Paren, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between, exp.Is,
                    exp.Like, exp.ILike, exp.Tuple, exp.Neg, exp.Cast, exp.DataType, exp.DataTypeParam)


def check_row_filter(text: str, ds: DatasetInfo) -> str:
    """A grant's row filter: a predicate of comparisons over the dataset's columns, and nothing else.

    No functions, no subqueries: what a steward approves is what it says. Returned in canonical form.
    """
    import sqlglot
    from sqlglot.errors import ParseError

    text = (text or "").strip()
    if not text:
        raise UsageError("--rows is empty — fix: a condition such as \"origin = 'JFK'\", or leave --rows out")
    try:
        tree = sqlglot.parse_one(text, read="duckdb", into=exp.Condition)
    except ParseError as exc:
        raise UsageError(f"--rows {text!r} is not a condition: {str(exc).splitlines()[0]}") from exc
    for node in tree.walk():
        if not isinstance(node, ROW_FILTER_NODES):
            raise UsageError(f"--rows may only compare columns with values (=, <>, <, >, IN, BETWEEN, LIKE, IS NULL, "
                             f"AND, OR, NOT); {type(node).__name__.upper()} is not allowed")
        if isinstance(node, exp.Column) and (node.table or node.name not in ds.columns):
            raise UsageError(f"--rows names {node.sql('duckdb')}, which is not a column of {ds.address} — fix: one "
                             f"of {', '.join(ds.columns)}")
    return tree.sql(dialect="duckdb")


def _changed(session: Session, statement: Any) -> int:
    """Rows an UPDATE changed: 0 when another writer got there first."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount)


def grant_terms(row: GrantRow) -> GrantTerms:
    return GrantTerms(f"grant-{row.id}", row.principal, row.dataset,
                      tuple(row.columns) if row.columns is not None else None, tuple(row.unmask), row.expires_at,
                      row.row_filter)


class AccessService:
    """The workflow over one metastore; `directory` reads the mesh's people and datasets when called."""

    def __init__(self, store: Metastore, directory: Callable[[], Directory], *, clock: Clock = utcnow,
                 extra_policies: Callable[[], str] = lambda: "") -> None:
        self.store = store
        self._directory = directory
        self.clock = clock
        self._extra_policies = extra_policies

    # -- who ----------------------------------------------------------------------------------------------

    def directory(self) -> Directory:
        return self._directory()

    def principal(self, principal_id: str, directory: Directory | None = None) -> Principal:
        directory = directory or self.directory()
        found = directory.principals.get(principal_id)
        if found is None:
            raise NotFound(f"no principal {principal_id!r} in this mesh — fix: use a person id declared under "
                           "`people:` in mesh.yaml or a domain.yaml, or a product address like bts.flights-dp")
        return found

    def dataset(self, address: str, directory: Directory) -> DatasetInfo:
        from trustmesh.descriptors.addresses import normalise_address

        address = normalise_address(address)
        found = directory.datasets.get(address)
        if found is None:
            raise NotFound(f"no dataset {address} in this mesh — fix: check the address (`trustmesh catalog list`, "
                           "`trustmesh search`)")
        return found

    # -- audit of refusals ----------------------------------------------------------------------------------

    @contextmanager
    def _attempt(self, actor: str, action: str, subject: str, **details: Any) -> Iterator[None]:
        """Run an action; if it is refused, record the attempt and why, then let the error through."""
        try:
            yield
        except (TrustmeshError, IntegrityError) as exc:
            error = exc if isinstance(exc, TrustmeshError) else Conflict(
                f"{subject} was changed by someone else at the same moment; nothing was changed — fix: look again "
                "(`trustmesh access list`)")
            with self.store.session() as session:
                audit.append(session, "access.refused", actor, subject,
                             {"action": action, "reason": str(error), **details}, at=self.clock())
            if error is exc:
                raise
            raise error from exc

    # -- expiry -------------------------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """Record what has expired: pending requests past their deadline and grants past their expiry."""
        now = self.clock()
        counts = {"requests": 0, "grants": 0}
        with self.store.session() as session:
            due = list(session.scalars(select(GrantRow.id).where(GrantRow.state == "active", GrantRow.expires_at <= now)))
            stale = list(session.scalars(select(AccessRequestRow.id).where(
                AccessRequestRow.state == "pending", AccessRequestRow.expires_at <= now)))
        for gid in due:
            with self.store.session() as session:
                done = _changed(session, update(GrantRow).where(GrantRow.id == gid, GrantRow.state == "active")
                                       .values(state="expired", ended_at=now))
                if done:
                    row = session.get(GrantRow, gid)
                    assert row is not None
                    audit.append(session, "grant.expired", SYSTEM, row.dataset,
                                 {"grant": f"grant-{gid}", "principal": row.principal,
                                  "expires_at": row.expires_at.isoformat()}, at=now)
                    counts["grants"] += 1
        for rid in stale:
            with self.store.session() as session:
                done = _changed(session, update(AccessRequestRow).where(
                    AccessRequestRow.id == rid, AccessRequestRow.state == "pending")
                    .values(state="expired", decided_at=now, revision=AccessRequestRow.revision + 1))
                if done:
                    req = session.get(AccessRequestRow, rid)
                    assert req is not None
                    audit.append(session, "access.request-expired", SYSTEM, req.dataset,
                                 {"request": f"req-{rid}", "principal": req.principal}, at=now)
                    counts["requests"] += 1
        return counts

    # -- request ------------------------------------------------------------------------------------------

    def request(self, actor: str, address: str, *, purpose: str, purpose_category: str, days: int,
                columns: list[str] | None = None, unmask: list[str] | None = None,
                for_product: str | None = None, rows: str | None = None) -> dict[str, Any]:
        """File a request; it lands, pending, in the inbox of the dataset's domain's stewards and owners."""
        with self._attempt(actor, "request", str(address), principal=for_product or actor, days=days):
            directory = self.directory()
            requester = self.principal(actor, directory)
            if requester.kind != PERSON:
                raise Forbidden(f"{actor} is a product; a person asks on its behalf — fix: "
                                f"`trustmesh access request ADDRESS --for {actor} --as PERSON`")
            ds = self.dataset(address, directory)
            principal = self._grantee(requester, for_product, directory)
            settings = directory.mesh.config.access
            purpose = (purpose or "").strip()
            if len(purpose) < 10:
                raise UsageError("--purpose must say what the data is for, in at least 10 characters — fix: e.g. "
                                 "--purpose 'Quarterly punctuality report to the Ministry'")
            if purpose_category not in settings.purpose_categories:
                raise UsageError(f"--purpose-category {purpose_category!r} is not one of this mesh's categories — fix: "
                                 f"one of {', '.join(settings.purpose_categories)}")
            if isinstance(days, bool) or not isinstance(days, int) or days < 1 or days > settings.max_days:
                raise UsageError(f"--days {days!r}: a grant lasts from 1 to {settings.max_days} days in this mesh — "
                                 "fix: ask for what the purpose needs; renew with a new request later")
            wanted = self._columns(ds, columns, "--columns")
            unmasked = self._columns(ds, unmask, "--unmask") or []
            for col in unmasked:
                if not ds.columns[col].personal:
                    raise UsageError(f"{col} is not personal data, so it is never masked — fix: drop it from --unmask")
                if wanted is not None and col not in wanted:
                    raise UsageError(f"--unmask {col} is not among the requested --columns — fix: add it to --columns")
            row_filter = check_row_filter(rows, ds) if rows is not None else None
            if ds.domain in principal.member_of():
                raise UsageError(f"{principal.id} already reads {ds.address} as part of the {ds.domain} domain; "
                                 "no grant is needed")
            self._fit_for_consumption(ds)
            self._within_policy(principal, ds, wanted, unmasked, days, directory)
            levels = self.levels(ds, wanted, unmasked, directory)
            now = self.clock()
            with self.store.session() as session:
                dup = session.scalars(select(AccessRequestRow).where(
                    AccessRequestRow.principal == principal.id, AccessRequestRow.dataset == ds.address,
                    AccessRequestRow.state == "pending", AccessRequestRow.expires_at > now)).first()
                if dup is not None:
                    raise Conflict(f"req-{dup.id} for {principal.id} on {ds.address} is still pending — fix: wait for "
                                   f"it, or `trustmesh access withdraw req-{dup.id}` and ask again")
                row = AccessRequestRow(
                    requester=requester.id, principal=principal.id, principal_kind=principal.kind, dataset=ds.address,
                    domain=ds.domain, columns=wanted, unmask=unmasked, row_filter=row_filter, purpose=purpose,
                    purpose_category=purpose_category, days=days, levels=levels, state="pending", revision=0,
                    created_at=now, expires_at=now + timedelta(days=settings.request_days), reason="")
                session.add(row)
                session.flush()
                audit.append(session, "access.requested", requester.id, ds.address, {
                    "request": f"req-{row.id}", "principal": principal.id, "columns": wanted, "unmask": unmasked,
                    "rows": row_filter,
                    "purpose": purpose, "purpose_category": purpose_category, "days": days, "levels": levels}, at=now)
                return request_to_dict(row, [], self._awaiting(row, [], ds, directory))

    def _grantee(self, requester: Principal, for_product: str | None, directory: Directory) -> Principal:
        if not for_product:
            return requester
        from trustmesh.descriptors.addresses import normalise_product_address

        product = self.principal(normalise_product_address(for_product), directory)
        if product.kind != PRODUCT:
            raise UsageError(f"--for {for_product}: not a product — fix: give a product address like transport-tc.punctuality-dp")
        if product.domain not in requester.member_of():
            raise Forbidden(f"{requester.id} is not in the {product.domain} domain, so cannot ask on behalf of "
                            f"{product.id} — fix: its domain's data product owner or developer asks")
        return product

    def _fit_for_consumption(self, ds: DatasetInfo, session: Session | None = None) -> None:
        """No new grant on a product governance found unfit for consumption (its last evaluation says so)."""
        if session is None:
            with self.store.session() as own:
                status = own.get(ProductStatusRow, ds.product)
        else:
            status = session.get(ProductStatusRow, ds.product)
        if status is not None and status.status == UNFIT:
            reasons = "; ".join(status.reasons[:3]) or "see `trustmesh policy status`"
            raise Forbidden(f"{ds.product} is unfit for consumption, so no new grant is made on {ds.address}: "
                            f"{reasons} — fix: its owners fix the findings (`trustmesh check {ds.product}`)")

    def _columns(self, ds: DatasetInfo, names: list[str] | None, option: str) -> list[str] | None:
        if names is None:
            return None
        cleaned = [n.strip() for n in names if n.strip()]
        if not cleaned:
            raise UsageError(f"{option} is empty — fix: name columns, comma-separated, or leave {option} out")
        unknown = [n for n in cleaned if n not in ds.columns]
        if unknown:
            raise UsageError(f"{ds.address} has no column {', '.join(unknown)} — fix: one of {', '.join(ds.columns)}")
        return list(dict.fromkeys(cleaned))

    def levels(self, ds: DatasetInfo, columns: list[str] | None, unmask: list[str], directory: Directory) -> int:
        """Two levels (steward, then data owner) for confidential-and-above, sensitive-high, or any unmasking."""
        threshold = directory.mesh.config.access.two_level_from
        level = ds.classification(directory.levels, columns)
        high = threshold in directory.levels and directory.rank(level) >= directory.rank(threshold)
        sensitive = ds.sensitivity(directory.sensitivities, columns) == directory.sensitivities[-1]
        return 2 if (high or sensitive or unmask) else 1

    def _within_policy(self, principal: Principal, ds: DatasetInfo, columns: list[str] | None, unmask: list[str],
                       days: int, directory: Directory) -> None:
        """Refuse up front what a global forbid would deny even with the grant: no grant overrides those."""
        trial = GrantTerms("grant-requested", principal.id, ds.address, tuple(columns) if columns else None,
                           tuple(unmask), self.clock() + timedelta(days=days))
        authorizer = Authorizer(directory, [trial], self._extra_policies())
        decision = authorizer.explain(principal, ds, self.clock())
        denied = [c for c in (columns or list(ds.columns)) if decision.columns.get(c) == "deny"]
        if not decision.allowed or denied:
            why = decision.reason if not decision.allowed else authorizer.explain(
                principal, ds, self.clock(), denied[0]).reason
            raise Forbidden(f"no grant could let {principal.id} read {ds.address}: {why}")
        masked = [c for c in unmask if decision.columns.get(c) == "mask"]
        if masked:
            column = authorizer.explain(principal, ds, self.clock(), masked[0])
            rules = [f"{r} — {authorizer.descriptions.get(r, 'a global rule')}" for r in column.policies
                     if r in authorizer.forbids]
            raise Forbidden(f"no grant could let {principal.id} see {ds.address}.{masked[0]} in the clear: "
                            + ("; ".join(rules) or column.reason) + " — fix: drop it from --unmask")

    # -- deciding -----------------------------------------------------------------------------------------

    def approvers(self, ds: DatasetInfo, level: int, levels: int, directory: Directory) -> list[str]:
        """Who may decide a request at a level: the contract's named approvers, else the domain's stewards/owners."""
        first = list(ds.first_level) or [p.id for p in directory.people_in_role("data-domain-steward", ds.domain)]
        second = list(ds.second_level) or [p.id for p in directory.people_in_role("data-owner", ds.domain)]
        if levels == 1:
            return list(dict.fromkeys(first + second))
        return first if level == 1 else second

    def _awaiting(self, row: AccessRequestRow, decisions: list[AccessDecisionRow], ds: DatasetInfo | None,
                  directory: Directory) -> list[str]:
        if row.state != "pending" or ds is None:
            return []
        level = len(decisions) + 1
        excluded = {row.requester, row.principal} | {d.approver for d in decisions}
        return [p for p in self.approvers(ds, level, row.levels, directory) if p not in excluded]

    def approve(self, actor: str, request: str | int, note: str = "") -> dict[str, Any]:
        self.sweep()
        with self._attempt(actor, "approve", _subject(request, "req")):
            return self._decide(actor, request_id(request), "approve", note)

    def reject(self, actor: str, request: str | int, reason: str) -> dict[str, Any]:
        self.sweep()
        with self._attempt(actor, "reject", _subject(request, "req")):
            if not (reason or "").strip():
                raise UsageError("a rejection needs --reason, so the requester knows what to change")
            return self._decide(actor, request_id(request), "reject", reason.strip())

    def _decide(self, actor: str, rid: int, decision: str, note: str) -> dict[str, Any]:
        """One decision; the caller records a refusal."""
        directory = self.directory()
        approver = self.principal(actor, directory)
        now = self.clock()
        with self.store.session() as session:
            row = session.get(AccessRequestRow, rid)
            if row is None:
                raise NotFound(f"no request req-{rid} — fix: see `trustmesh access list --inbox`")
            if row.state != "pending":
                raise Conflict(f"req-{rid} is {row.state}; only a pending request can be decided")
            ds = directory.datasets.get(row.dataset)
            decisions = list(session.scalars(select(AccessDecisionRow).where(AccessDecisionRow.request_id == rid)))
            level = len(decisions) + 1
            if approver.id in (row.requester, row.principal):
                raise Forbidden(f"{approver.id} asked for req-{rid}; nobody decides their own request")
            if any(d.approver == approver.id for d in decisions):
                raise Forbidden(f"{approver.id} already approved req-{rid} at level 1; level 2 needs a different "
                                "person (the dataset's data owner)")
            allowed = self.approvers(ds, level, row.levels, directory) if ds else []
            if approver.id not in allowed:
                who = "a data domain steward" if row.levels == 2 and level == 1 else (
                    "a data owner" if row.levels == 2 else "a data domain steward or data owner")
                raise Forbidden(f"{approver.id} may not decide req-{rid} at level {level} of {row.levels}: that "
                                f"takes {who} of the {row.domain} domain ({', '.join(allowed) or 'nobody is named'})")
            final = decision == "reject" or level == row.levels
            if final and decision == "approve" and ds is not None:
                self._fit_for_consumption(ds, session)
            values: dict[str, Any] = {"revision": row.revision + 1}
            if final:
                values.update(state="approved" if decision == "approve" else "rejected", decided_at=now)
                if decision == "reject":
                    values["reason"] = note
            moved = _changed(session, update(AccessRequestRow).where(
                AccessRequestRow.id == rid, AccessRequestRow.revision == row.revision,
                AccessRequestRow.state == "pending").values(**values))
            if not moved:
                raise Conflict(f"req-{rid} was decided by someone else at the same moment; nothing was changed")
            session.add(AccessDecisionRow(request_id=rid, level=level, approver=approver.id, decision=decision,
                                          note=note, decided_at=now))
            session.flush()
            audit.append(session, "access.approved" if decision == "approve" else "access.rejected", approver.id,
                         row.dataset, {"request": f"req-{rid}", "level": level, "of": row.levels, "note": note,
                                       "principal": row.principal}, at=now)
            if final and decision == "approve":
                grant = self._grant(session, row, [*(d.approver for d in decisions), approver.id], now)
                _changed(session, update(AccessRequestRow).where(AccessRequestRow.id == rid).values(grant_id=grant.id))
            session.flush()
            session.refresh(row)
            decisions = list(session.scalars(select(AccessDecisionRow).where(AccessDecisionRow.request_id == rid)))
            return request_to_dict(row, decisions, self._awaiting(row, decisions, ds, directory))

    def _grant(self, session: Session, req: AccessRequestRow, approvers: list[str], now: datetime) -> GrantRow:
        grant = GrantRow(request_id=req.id, principal=req.principal, principal_kind=req.principal_kind,
                         dataset=req.dataset, domain=req.domain, columns=req.columns, unmask=list(req.unmask),
                         row_filter=req.row_filter,
                         purpose=req.purpose, purpose_category=req.purpose_category, approvers=approvers,
                         granted_at=now, expires_at=now + timedelta(days=req.days), state="active", revoke_reason="")
        session.add(grant)
        session.flush()
        audit.append(session, "grant.created", approvers[-1], req.dataset, {
            "grant": f"grant-{grant.id}", "request": f"req-{req.id}", "principal": req.principal,
            "columns": req.columns, "unmask": list(req.unmask), "rows": req.row_filter, "purpose": req.purpose,
            "expires_at": grant.expires_at.isoformat(), "approvers": approvers}, at=now)
        return grant

    def withdraw(self, actor: str, request: str | int) -> dict[str, Any]:
        self.sweep()
        with self._attempt(actor, "withdraw", _subject(request, "req")):
            rid = request_id(request)
            directory = self.directory()
            self.principal(actor, directory)
            now = self.clock()
            with self.store.session() as session:
                row = session.get(AccessRequestRow, rid)
                if row is None:
                    raise NotFound(f"no request req-{rid} — fix: see `trustmesh access list --mine`")
                if row.requester != actor:
                    raise Forbidden(f"req-{rid} was filed by {row.requester}; only they can withdraw it")
                if row.state != "pending":
                    raise Conflict(f"req-{rid} is {row.state}; only a pending request can be withdrawn")
                moved = _changed(session, update(AccessRequestRow).where(
                    AccessRequestRow.id == rid, AccessRequestRow.revision == row.revision,
                    AccessRequestRow.state == "pending").values(
                    state="withdrawn", decided_at=now, revision=row.revision + 1))
                if not moved:
                    raise Conflict(f"req-{rid} was decided at the same moment; it was not withdrawn")
                audit.append(session, "access.withdrawn", actor, row.dataset, {"request": f"req-{rid}"}, at=now)
                session.refresh(row)
                decisions = list(session.scalars(select(AccessDecisionRow).where(AccessDecisionRow.request_id == rid)))
                return request_to_dict(row, decisions, [])

    def revoke(self, actor: str, grant: str | int, reason: str) -> dict[str, Any]:
        self.sweep()
        with self._attempt(actor, "revoke", _subject(grant, "grant")):
            gid = grant_id(grant)
            if not (reason or "").strip():
                raise UsageError("a revocation needs --reason, recorded for the grantee and the auditors")
            directory = self.directory()
            who = self.principal(actor, directory)
            now = self.clock()
            with self.store.session() as session:
                row = session.get(GrantRow, gid)
                if row is None:
                    raise NotFound(f"no grant grant-{gid} — fix: see `trustmesh access list --all`")
                state = grant_state(row, now)
                if state != "active":
                    raise Conflict(f"grant-{gid} is already {state}")
                may = (row.domain in who.custodian_of() or who.has_role("governance-admin")
                       or (row.principal == actor))
                if not may:
                    raise Forbidden(f"{actor} may not revoke grant-{gid}: that takes an owner or steward of the "
                                    f"{row.domain} domain, a governance admin, or the grantee")
                moved = _changed(session, update(GrantRow).where(GrantRow.id == gid, GrantRow.state == "active").values(
                    state="revoked", ended_at=now, revoked_by=actor, revoke_reason=reason.strip()))
                if not moved:
                    raise Conflict(f"grant-{gid} changed at the same moment; it was not revoked")
                audit.append(session, "grant.revoked", actor, row.dataset, {
                    "grant": f"grant-{gid}", "principal": row.principal, "reason": reason.strip()}, at=now)
                session.refresh(row)
                return grant_to_dict(row, now)

    # -- reading ------------------------------------------------------------------------------------------

    def overview(self, actor: str, view: str = "mine", state: str | None = None) -> dict[str, Any]:
        """`inbox`: requests the actor may decide next; `mine`: their requests and grants; `all`: everything."""
        self.sweep()
        with self._attempt(actor, "list", f"view:{view}"):
            return self._overview(actor, view, state)

    def _overview(self, actor: str, view: str, state: str | None) -> dict[str, Any]:
        directory = self.directory()
        who = self.principal(actor, directory)
        now = self.clock()
        if view not in ("inbox", "mine", "all"):
            raise UsageError(f"unknown view {view!r} — fix: inbox, mine or all")
        if view == "all" and not (who.has_role("governance-admin") or who.has_role("auditor")):
            raise Forbidden(f"{actor} may not list every request: that takes a governance admin or an auditor — "
                            "fix: --inbox or --mine")
        with self.store.session() as session:
            requests = select(AccessRequestRow).order_by(AccessRequestRow.id.desc())
            grants = select(GrantRow).order_by(GrantRow.id.desc())
            if view == "inbox":
                requests = requests.where(AccessRequestRow.state == "pending")
                grants = grants.where(GrantRow.id < 0)
            elif view == "mine":
                products = [p.id for p in directory.principals.values()
                            if p.kind == PRODUCT and p.domain in who.member_of()]
                requests = requests.where(or_(AccessRequestRow.requester == actor, AccessRequestRow.principal == actor,
                                              AccessRequestRow.principal.in_(products)))
                grants = grants.where(or_(GrantRow.principal == actor, GrantRow.principal.in_(products)))
            if state:
                requests = requests.where(AccessRequestRow.state == state)
            rows = list(session.scalars(requests))
            decisions: dict[int, list[AccessDecisionRow]] = {}
            if rows:
                for d in session.scalars(select(AccessDecisionRow).where(
                        AccessDecisionRow.request_id.in_([r.id for r in rows]))):
                    decisions.setdefault(d.request_id, []).append(d)
            out = []
            for r in rows:
                awaiting = self._awaiting(r, decisions.get(r.id, []), directory.datasets.get(r.dataset), directory)
                if view == "inbox" and actor not in awaiting:
                    continue
                out.append(request_to_dict(r, decisions.get(r.id, []), awaiting))
            grant_rows = [grant_to_dict(g, now) for g in session.scalars(grants)]
            if state:
                grant_rows = [g for g in grant_rows if g["state"] == state]
            notices = []
            if view == "inbox":  # governance: the caller's domains' products that are at-risk or unfit
                mine = {p.id for p in directory.principals.values()
                        if p.kind == PRODUCT and p.domain in who.custodian_of()}
                if mine:
                    for status in session.scalars(select(ProductStatusRow).where(
                            ProductStatusRow.product.in_(sorted(mine)), ProductStatusRow.status != "compliant")):
                        notices.append({"product": status.product, "status": status.status,
                                        "reasons": list(status.reasons), "deadline": status.deadline})
        return {"view": view, "principal": actor, "requests": out, "grants": grant_rows, "notices": notices}

    def show(self, actor: str, request: str | int) -> dict[str, Any]:
        with self._attempt(actor, "show", _subject(request, "req")):
            return self._show(actor, request_id(request))

    def _show(self, actor: str, rid: int) -> dict[str, Any]:
        directory = self.directory()
        who = self.principal(actor, directory)
        with self.store.session() as session:
            row = session.get(AccessRequestRow, rid)
            if row is None:
                raise NotFound(f"no request req-{rid}")
            decisions = list(session.scalars(select(AccessDecisionRow).where(AccessDecisionRow.request_id == rid)))
            ds = directory.datasets.get(row.dataset)
            awaiting = self._awaiting(row, decisions, ds, directory)
            involved = {row.requester, row.principal, *awaiting, *(d.approver for d in decisions)}
            if actor not in involved and row.domain not in who.custodian_of() and not (
                    who.has_role("governance-admin") or who.has_role("auditor")):
                raise Forbidden(f"{actor} is not involved in req-{rid}")
            return request_to_dict(row, decisions, awaiting)

    def active_grants(self, principal: str | None = None) -> list[GrantTerms]:
        now = self.clock()
        with self.store.session() as session:
            query = select(GrantRow).where(GrantRow.state == "active", GrantRow.expires_at > now)
            if principal:
                query = query.where(GrantRow.principal == principal)
            return [grant_terms(g) for g in session.scalars(query)]

    def authorizer(self, principal: str | None = None, directory: Directory | None = None,
                   grants: list[GrantTerms] | None = None) -> Authorizer:
        """Decisions over the active grants (of one principal, when named: all a decision for them needs)."""
        return Authorizer(directory or self.directory(),
                          self.active_grants(principal) if grants is None else grants, self._extra_policies())

    def readable(self, principal_id: str) -> list[Decision]:
        """Every dataset of the mesh the principal may read now, each with its columns' outcomes (allow, mask,
        deny): what a query of theirs may name."""
        directory = self.directory()
        principal = self.principal(principal_id, directory)
        authorizer = self.authorizer(principal.id, directory)
        now = self.clock()
        return [authorizer.explain(principal, ds, now) for _, ds in sorted(directory.datasets.items())
                if authorizer.decide(principal, ds, now).allowed]

    def explain(self, principal_id: str, address: str, column: str | None = None, *,
                actor: str | None = None) -> Decision:
        """allow / deny / mask for a principal on a dataset (each column) or one column, naming what decided.

        With `actor` (the server), only the principal themselves, the dataset's domain custodians, a product's
        own domain, governance admins and auditors may ask.
        """
        if actor is None:
            return self._explain(principal_id, address, column, None)
        with self._attempt(actor, "explain", str(address)[:400], principal=principal_id):
            return self._explain(principal_id, address, column, actor)

    def _explain(self, principal_id: str, address: str, column: str | None, actor: str | None) -> Decision:
        directory = self.directory()
        principal = self.principal(principal_id, directory)
        ds = self.dataset(address, directory)
        if actor is not None and actor != principal.id:
            who = self.principal(actor, directory)
            may = (who.has_role("governance-admin") or who.has_role("auditor") or ds.domain in who.custodian_of()
                   or (principal.kind == PRODUCT and principal.domain in who.member_of()))
            if not may:
                raise Forbidden(f"{actor} may not ask what {principal.id} may read: that takes {principal.id}, a "
                                f"custodian of the {ds.domain} domain, a governance admin or an auditor")
        if column is not None and column not in ds.columns:
            raise UsageError(f"{ds.address} has no column {column} — fix: one of {', '.join(ds.columns)}")
        return self.authorizer(principal.id, directory).explain(principal, ds, self.clock(), column)
