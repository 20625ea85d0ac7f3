"""Federated governance over HTTP: the mesh's policies, each product's status, applying the policies, the
compliance report and the CI gate — `trustmesh policy list/status/apply`, `trustmesh report compliance` and
`trustmesh check`.

Reading is for anyone with a token. Applying records statuses and the policies as applied by the caller, so it
takes a governance admin or a data owner or steward of a domain that owns policies (the service decides).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from trustmesh.governance.report import compliance_report, render_html, render_markdown
from trustmesh.web.access_api import AUTH_ERRORS
from trustmesh.web.api import PRODUCT_EXAMPLE, problem
from trustmesh.web.auth import Caller, WorkspaceDep
from trustmesh.web.paging import PAGED, Pager, pages

Status = Literal["compliant", "at-risk", "unfit for consumption"]
router = APIRouter(prefix="/api/v1/governance", tags=["governance"], responses={
    **{status: AUTH_ERRORS[status] for status in (400, 401, 404, 422, 503)},
    403: problem("The caller may not apply the policies (the reason names who may)"),
    409: AUTH_ERRORS[409]})
ProductAddress = Annotated[str, Path(description="`<domain>.<product>`", examples=[PRODUCT_EXAMPLE])]


class Record(BaseModel):
    """Documents the fields governance returns today, and passes through any it adds tomorrow."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PolicyScope(Record):
    domains: list[str]
    sectors: list[str]
    kinds: list[str]
    tiers: list[str]
    classifications: list[str] = Field(description="A product matches when any of its datasets has one of these.")
    exempt: list[str] = Field(description="Products the policy does not apply to.")


class PolicyInfo(Record):
    id: str = Field(examples=["transport.carrier-codes"])
    version: int
    title: str
    rationale: str
    rule: str = Field(description="The rule the policy applies.", examples=["allowed-values"])
    severity: Literal["info", "warning", "error"]
    scope: PolicyScope
    effective: str | None = Field(description="The day it takes effect (none: at once).", examples=["2026-01-01"])
    grace_days: int = Field(alias="graceDays", description="Days after `effective` before failing it binds.")
    params: dict[str, Any] = Field(description="The rule's parameters.")
    tightens: str | None = Field(description="The higher-level policy this one tightens.")
    level: Literal["global", "sector", "domain"]
    owner: str | None = Field(description="The domain of a sector or domain policy.", examples=["transport-tc"])
    file: str = Field(description="The policy file in the mesh repo.")


class PolicyList(Record):
    policies: list[PolicyInfo]
    problems: list[dict[str, Any]] = Field(description="Problems in the policy files (with the fix).")


class PolicyFinding(Record):
    product: str
    policy: str
    policy_version: int
    rule: str
    severity: Literal["info", "warning", "error"]
    level: str
    message: str
    dataset: str | None
    column: str | None
    fix: str
    binding: bool = Field(description="false: the policy is still in its grace period (at-risk, not unfit).")
    deadline: str | None
    file: str


class ProductGovernance(Record):
    """A product's stored status, from the last apply or build that evaluated it."""

    product: str = Field(examples=[PRODUCT_EXAMPLE])
    status: Status
    reasons: list[str]
    deadline: str | None = Field(description="At-risk: when the failing policy starts to bind.")
    findings: list[PolicyFinding]
    evaluated_at: str


class HistoryPoint(Record):
    run: int
    status: Status
    failing: list[str] = Field(description="The policies with findings at that evaluation.")
    at: str


class ProductGovernanceDetail(ProductGovernance):
    history: list[HistoryPoint] = Field(description="Every evaluation of the product, oldest first.")


class EvaluatedStatus(Record):
    product: str
    status: Status
    reasons: list[str]
    deadline: str | None
    findings: list[PolicyFinding]
    policies: dict[str, int] = Field(description="Policy id → the version evaluated.")


class PolicyChange(Record):
    policy: str
    version: int | None = Field(description="None: the policy was removed.")
    newly_failing: list[str]
    fixed: list[str]


class ApplyReport(Record):
    """What applying changed: per policy, the products newly non-compliant and fixed; every status."""

    run: int
    trigger: Literal["apply"]
    summary: dict[str, int] = Field(description="Products by status, and error and warning findings.",
                                    examples=[{"products": 9, "compliant": 7, "at-risk": 1,
                                               "unfit for consumption": 1, "errors": 2, "warnings": 0}])
    changed_policies: list[str] = Field(description="Policies added, changed or removed since the last apply "
                                                    "(each an audit entry with its diff).")
    changes: list[PolicyChange]
    statuses: dict[str, EvaluatedStatus]
    problems: list[dict[str, Any]]


class DomainCompliance(Record):
    domain: str
    sector: str
    kind: str
    products: int
    counts: dict[str, int] = Field(description="Products by status (and `not evaluated`).")
    share_compliant: float | None


class ComplianceReport(Record):
    """Compliance by sector, domain and policy, trends, offenders, unfit and at-risk products (stored statuses)."""

    title: str
    mesh: str
    sector: str | None
    domain: str | None
    generated_at: str
    last_evaluated_at: str | None
    products: int
    evaluated: int
    totals: dict[str, int]
    share_compliant: float | None = Field(description="Share of the products covered that are compliant, 0 to 1.")
    by_domain: list[DomainCompliance]
    by_policy: list[dict[str, Any]]
    trend: list[dict[str, Any]] = Field(description="Per stored run, oldest first: products by status.")
    worst_offenders: list[dict[str, Any]]
    unfit: list[dict[str, Any]]
    at_risk: list[dict[str, Any]]
    stale: list[str] = Field(description="Stored statuses of products no longer in the mesh.")


class GateResult(Record):
    """`trustmesh check --format json`: validation problems and the policy findings of each product."""

    ok: bool = Field(description="false: an error problem, or a binding error finding — the change should not "
                                 "merge.")
    problems: list[dict[str, Any]]
    products: dict[str, EvaluatedStatus]


@router.get("/policies", response_model=PolicyList, response_model_by_alias=True)
def policies(ws: WorkspaceDep, caller: Caller) -> dict[str, Any]:
    """Every policy of the mesh: id, version, level and owner, rule and parameters, severity, scope, effective
    date and grace — `trustmesh policy list`."""
    found, problems = ws.governance.policies(ws.directory().mesh)
    return {"policies": [p.model_dump(mode="json", by_alias=True) for p in found],
            "problems": [p.to_dict() for p in problems]}


@router.get("/products", response_model=list[ProductGovernance], responses=PAGED)
def statuses(ws: WorkspaceDep, caller: Caller, page: Annotated[Pager, Depends(pages(100, 1000))],
             status: Annotated[Status | None, Query(description="Only products with this status.")] = None,
             domain: Annotated[str | None, Query(description="Only this domain's products.", examples=["bts"])]
             = None) -> list[dict[str, Any]]:
    """Products' stored governance status, by address: compliant, at-risk (with the deadline) or unfit for
    consumption — `trustmesh policy status`."""
    stored = ws.governance.statuses(status=status, domain=domain or None)
    return page([{"product": address, **s} for address, s in stored.items()])


@router.get("/products/{address}", response_model=ProductGovernanceDetail)
def product_status(ws: WorkspaceDep, caller: Caller, address: ProductAddress) -> dict[str, Any]:
    """One product's stored status, findings and status history — `trustmesh policy status PRODUCT`."""
    return ws.governance.product_status(address)


@router.post("/apply", response_model=ApplyReport)
def apply(ws: WorkspaceDep, caller: Caller) -> dict[str, Any]:
    """Re-evaluate every product under the policies as the repo has them now; store the statuses, audit each
    changed policy with its diff — `trustmesh policy apply`. Governance admins, and data owners and stewards of
    a domain that owns policies."""
    return ws.governance.apply(ws.mesh, caller.id)


@router.get("/report", response_model=ComplianceReport,
            responses={200: {"content": {"text/markdown": {}, "text/html": {}},
                             "description": "JSON, or the report as Markdown (`format=md`) or one HTML page."}})
def report(ws: WorkspaceDep, caller: Caller,
           sector: Annotated[str | None, Query(description="Only this sector's domains.", examples=["transport"])]
           = None,
           domain: Annotated[str | None, Query(description="Only this domain.", examples=["bts"])] = None,
           format: Annotated[Literal["json", "md", "html"], Query(description="json, md (Markdown) or html (one "
                                                                                "self-contained page).")] = "json",
           ) -> Any:
    """The compliance report from the stored statuses — `trustmesh report compliance`."""
    data = compliance_report(ws.directory().mesh, ws.governance, sector=sector or None, domain=domain or None)
    if format == "md":
        return Response(render_markdown(data), media_type="text/markdown")
    if format == "html":
        return Response(render_html(data), media_type="text/html")
    return data


@router.get("/check", response_model=GateResult,
            responses={200: {"content": {"application/xml": {}, "application/sarif+json": {}},
                             "description": "JSON, JUnit XML (`format=junit`) or SARIF 2.1.0 (`format=sarif`)."}})
def check(ws: WorkspaceDep, caller: Caller,
          selector: Annotated[str | None, Query(description="Only these products: a domain, `DOMAIN.PRODUCT`, `+` "
                                                            "for upstream/downstream (as `build`).",
                                                examples=["transport-tc"])] = None,
          format: Annotated[Literal["json", "junit", "sarif"], Query(description="json, junit (JUnit XML) or sarif "
                                                                                 "(SARIF 2.1.0).")] = "json",
          ) -> Any:
    """The governance gate over the repo as it is: every validation problem and every applicable policy's findings;
    nothing is recorded — `trustmesh check`. `ok` is false when a CI run should fail."""
    gate = ws.check(selector or None)
    if format == "junit":
        return Response(gate.junit(), media_type="application/xml")
    if format == "sarif":
        return Response(json.dumps(gate.sarif()), media_type="application/sarif+json")
    return gate.to_dict()
