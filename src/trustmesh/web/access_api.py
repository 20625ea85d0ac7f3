"""The access workflow and the audit trail under /api/v1: every route needs a bearer token.

The rules live in the service layer; these handlers only say who is calling and pass the call on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from trustmesh.access.trail import parse_since
from trustmesh.web.api import ERRORS, problem
from trustmesh.web.auth import Caller, WorkspaceDep
from trustmesh.web.paging import PAGED, PageLinks, Pager, page_links, pages

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: problem("The caller may not do this (e.g. decide another domain's request)"),
    409: problem("The request or grant changed state first (decided, withdrawn, expired)"),
    500: problem("An access policy could not be evaluated (nothing is allowed)"),
}
router = APIRouter(prefix="/api/v1", tags=["access"], responses=AUTH_ERRORS)
RequestId = Annotated[str, Path(description="The request id, `req-7` (or `7`).", examples=["req-1"])]
GrantId = Annotated[str, Path(description="The grant id, `grant-3` (or `3`).", examples=["grant-1"])]
# One window over both lists of a view, newest first; X-Total-Count is the longer list's length.
OverviewPage = Annotated[Pager, Depends(pages(200, 1000))]
AUDIT_MAX = 10_000


def _paged(page: Pager, overview: dict[str, Any]) -> dict[str, Any]:
    overview["requests"], overview["grants"] = page.window(overview["requests"], overview["grants"])
    return overview


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Me(BaseModel):
    id: str
    kind: str
    name: str
    email: str | None
    domain: str | None = Field(description="The person's agency/domain.")
    clearance: str | None = Field(description="IM8 level; none: the mesh's default clearance applies.")
    roles: list[str] = Field(description="`governance-admin`, `auditor`, or `<domain>/<role>`.")


class NewRequest(Model):
    dataset: str = Field(description="`<domain>.<product>.<dataset>`", examples=["health.activity-dp.participants"])
    purpose: str = Field(min_length=1, description="What the data is for, in a sentence the steward can judge.",
                         examples=["Active-mobility study linking programme participants to commutes"])
    purpose_category: str = Field(description="One of the mesh's purpose categories.", examples=["research"])
    days: int = Field(description="How long the grant should last.", examples=[30])
    columns: list[str] | None = Field(None, description="Only these columns (default: all).")
    unmask: list[str] | None = Field(None, description="Personal-data columns to see in the clear (two approvals).")
    for_product: str | None = Field(None, description="Ask on behalf of a product of your domain.",
                                    examples=["transport-tc.punctuality-dp"])
    rows: str | None = Field(None, description="Only rows matching this condition over the dataset's columns "
                                               "(comparisons, IN, BETWEEN, LIKE, IS NULL, AND/OR/NOT).",
                             examples=["origin = 'JFK'"])


class Note(Model):
    note: str = Field("", description="A note for the requester and the audit trail.")


class Reason(Model):
    reason: str = Field(description="Why; recorded for the requester or grantee and the auditors.")


class Approval(BaseModel):
    level: int
    approver: str
    decision: Literal["approve", "reject"]
    note: str
    at: str


class AccessRequest(BaseModel):
    id: str = Field(examples=["req-1"])
    state: Literal["pending", "approved", "rejected", "withdrawn", "expired"]
    requester: str
    principal: str = Field(description="Who the grant is for: the requester, or a product of theirs.")
    principal_kind: Literal["person", "product"]
    dataset: str
    domain: str
    columns: list[str] | None = Field(description="null: every column.")
    unmask: list[str]
    rows: str | None = Field(description="null: every row; else the condition rows must meet.")
    purpose: str
    purpose_category: str
    days: int
    levels: int = Field(description="Approvals needed: 1, or 2 (steward then data owner).")
    approvals: list[Approval]
    awaiting: list[str] = Field(description="Who may decide the next level.")
    created_at: str
    expires_at: str = Field(description="A request still pending then expires.")
    decided_at: str | None
    reason: str
    grant: str | None


class Grant(BaseModel):
    id: str = Field(examples=["grant-1"])
    state: Literal["active", "expired", "revoked"]
    principal: str
    principal_kind: Literal["person", "product"]
    dataset: str
    domain: str
    columns: list[str] | None
    unmask: list[str]
    rows: str | None
    purpose: str
    purpose_category: str
    approvers: list[str]
    granted_at: str
    expires_at: str
    ended_at: str | None
    revoked_by: str | None
    revoke_reason: str
    request: str | None


class Notice(BaseModel):
    product: str
    status: str = Field(description="at-risk or unfit for consumption")
    reasons: list[str]
    deadline: str | None


class Overview(BaseModel):
    view: Literal["inbox", "mine", "all"]
    principal: str
    requests: list[AccessRequest]
    grants: list[Grant]
    notices: list[Notice] = Field([], description="In the inbox: the caller's domains' products that governance "
                                                  "found at-risk or unfit for consumption.")


class Decision(BaseModel):
    principal: str
    dataset: str
    column: str | None = Field(None, description="The column asked about; absent for a whole dataset.")
    decision: Literal["allow", "deny", "mask"]
    policies: list[str] = Field(description="The Cedar policies or grants that decided (by @id).")
    reason: str
    columns: dict[str, Literal["allow", "deny", "mask"]] | None = None


class AuditEntry(BaseModel):
    seq: int
    at: str
    type: str
    actor: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class Verification(BaseModel):
    ok: bool
    entries: int
    head: str = Field(description="The newest entry's hash: record it, and pass it back as `expect_head` later.")
    first_bad: int | None
    problem: str
    checkpoints: int = Field(description="Signed checkpoints in the log kept outside the metastore, every one checked.")
    anchored: int = Field(description="The newest entry a signed checkpoint vouches for (and every entry before it).")
    notes: list[str] = Field(description="What an auditor should know: where the signed checkpoints start, and "
                                         "what an operator accepted (a restored older backup), when and why.")


@router.get("/me", response_model=Me)
def me(caller: Caller) -> dict[str, Any]:
    """Who the token belongs to."""
    return caller.to_dict()


@router.post("/access/requests", response_model=AccessRequest, status_code=201)
def create_request(body: NewRequest, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """Ask for access; the request lands in the inbox of the dataset's domain's stewards and owners."""
    return ws.access.request(caller.id, body.dataset, purpose=body.purpose, purpose_category=body.purpose_category,
                             days=body.days, columns=body.columns, unmask=body.unmask, for_product=body.for_product,
                             rows=body.rows)


@router.get("/access/requests", response_model=Overview, responses=PAGED)
def list_requests(caller: Caller, ws: WorkspaceDep, page: OverviewPage,
                  view: Annotated[Literal["inbox", "mine", "all"], Query(
                      description="inbox: waiting for my decision; mine: my requests and grants; all: everything "
                                  "(governance admins, auditors).")] = "mine",
                  state: Annotated[str | None, Query(description="Only this state.")] = None) -> dict[str, Any]:
    """Requests and grants, newest first, as one of three views; `limit` and `offset` window both lists."""
    return _paged(page, ws.access.overview(caller.id, view, state))


@router.get("/access/inbox", response_model=Overview, responses=PAGED)
def inbox(caller: Caller, ws: WorkspaceDep, page: OverviewPage) -> dict[str, Any]:
    """Requests waiting for the caller's decision, newest first."""
    return _paged(page, ws.access.overview(caller.id, "inbox"))


@router.get("/access/mine", response_model=Overview, responses=PAGED)
def mine(caller: Caller, ws: WorkspaceDep, page: OverviewPage) -> dict[str, Any]:
    """The caller's requests and grants (and their products'), newest first."""
    return _paged(page, ws.access.overview(caller.id, "mine"))


@router.get("/access/requests/{request_id}", response_model=AccessRequest)
def show_request(request_id: RequestId, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return ws.access.show(caller.id, request_id)


@router.post("/access/requests/{request_id}/approve", response_model=AccessRequest)
def approve(request_id: RequestId, body: Note, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """Approve at the next level; the last approval creates the grant."""
    return ws.access.approve(caller.id, request_id, body.note)


@router.post("/access/requests/{request_id}/reject", response_model=AccessRequest)
def reject(request_id: RequestId, body: Reason, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return ws.access.reject(caller.id, request_id, body.reason)


@router.post("/access/requests/{request_id}/withdraw", response_model=AccessRequest)
def withdraw(request_id: RequestId, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return ws.access.withdraw(caller.id, request_id)


@router.post("/access/grants/{grant_id}/revoke", response_model=Grant)
def revoke(grant_id: GrantId, body: Reason, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """Revoke a grant: it stops working on the next read."""
    return ws.access.revoke(caller.id, grant_id, body.reason)


@router.get("/access/explain", response_model=Decision, response_model_exclude_none=True)
def explain(caller: Caller, ws: WorkspaceDep,
            principal: Annotated[str, Query(description="A person id or a product address.", examples=["irfan"])],
            dataset: Annotated[str, Query(description="The dataset address.",
                                          examples=["health.activity-dp.participants"])],
            column: Annotated[str | None, Query(description="Only this column.")] = None) -> dict[str, Any]:
    """allow / deny / mask, naming the Cedar policy or grant that decided."""
    return ws.access.explain(principal, dataset, column, actor=caller.id).to_dict()


@router.get("/audit", response_model=list[AuditEntry], tags=["audit"], responses=PAGED)
def audit_log(caller: Caller, ws: WorkspaceDep, links: Annotated[PageLinks, Depends(page_links)],
              actor: Annotated[str | None, Query(description="Only entries by this actor.")] = None,
              subject: Annotated[str | None, Query(description="Only this subject and what is under it.")] = None,
              type: Annotated[str | None, Query(description="An event type or a prefix, e.g. `access.`.")] = None,
              since: Annotated[str | None, Query(description="7d, 12h, 30m or an ISO date.")] = None,
              before: Annotated[int | None, Query(ge=1, description="Only entries older than this sequence number: "
                                                                     "the cursor of `Link: rel=\"next\"`.")] = None,
              limit: Annotated[int, Query(ge=1, le=AUDIT_MAX)] = 200) -> list[dict[str, Any]]:
    """Audit entries, newest first (auditors and governance admins); `X-Total-Count` counts every page."""
    at = parse_since(since, "since")
    entries = ws.audit.log(caller.id, by=actor, subject=subject, type=type, since=at, before=before, limit=limit + 1)
    shown = entries[:limit]  # one more than the page was read, to know whether older entries follow
    links(ws.audit.count(caller.id, by=actor, subject=subject, type=type, since=at),
          {"before": shown[-1]["seq"], "limit": limit} if len(entries) > limit else None)
    return shown


@router.get("/audit/verify", response_model=Verification, tags=["audit"])
def audit_verify(caller: Caller, ws: WorkspaceDep,
                 expect_head: Annotated[str | None, Query(description="A head hash recorded earlier.")] = None
                 ) -> dict[str, Any]:
    """Recompute the hash chain, check it against its signed checkpoints, and name the first bad entry, if any."""
    return ws.audit.verify(expect_head)


@router.get("/audit/export", response_class=PlainTextResponse, tags=["audit"],
            responses={200: {"content": {"application/x-ndjson": {}}}})
def audit_export(caller: Caller, ws: WorkspaceDep) -> PlainTextResponse:
    """Every entry as JSON lines, oldest first (auditors and governance admins)."""
    text = "".join(line + "\n" for line in ws.audit.export(caller.id))
    return PlainTextResponse(text, media_type="application/x-ndjson")
