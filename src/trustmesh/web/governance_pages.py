"""The governance and audit pages, each with a JSON twin (the same URL plus `.json`) holding what it renders.

Governance, for everyone signed in: compliance by sector and domain, the unfit and at-risk products with their
findings, the mesh's policies and the status history — the compliance report of `trustmesh report compliance`
and the policy list of `trustmesh policy list`. Audit, for auditors and governance admins (the audit trail
refuses anyone else): the chain's verification, then its entries, newest first, filtered and paged by sequence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from trustmesh.access.trail import parse_since
from trustmesh.governance.model import Policy
from trustmesh.governance.report import compliance_report
from trustmesh.metastore.audit import EVENT_TYPES
from trustmesh.service import Workspace
from trustmesh.web import render
from trustmesh.web.auth import Viewer, WorkspaceDep

AUDIT_PAGE = 100  # entries per audit page unless `limit` says otherwise
AUDIT_MAX_PAGE = 500
BRIEF_VALUE = 60  # characters of one detail value in an entry's summary
BRIEF_KEYS = 4  # keys of a nested object named in a summary
SUMMARY_CHARS = 240

router = APIRouter(include_in_schema=False)


def _given(value: str | None) -> str | None:
    """An empty form field means "any", not "equal to the empty string"."""
    return (value.strip() or None) if value is not None else None


def _query_string(params: dict[str, Any]) -> str:
    given = {k: v for k, v in params.items() if v not in (None, "")}
    return f"?{urlencode(given)}" if given else ""


# --- template filters ---------------------------------------------------------------------------------------------


def percent(share: float | None) -> str:
    """The report's share (0.8) as people read it (80%); `—` where there is nothing to share."""
    return "—" if share is None else f"{render.plain(share * 100)}%"


def day(stamp: str | None) -> str:
    """A deadline's day: `2027-01-02T00:00:00+00:00` → `2027-01-02`."""
    return stamp[:10] if stamp else "—"


def _brief(value: Any) -> str:
    if isinstance(value, dict):
        keys = [str(k) for k in value]
        more = f", … {len(keys) - BRIEF_KEYS} more" if len(keys) > BRIEF_KEYS else ""
        return "{" + ", ".join(keys[:BRIEF_KEYS]) + more + "}"
    if isinstance(value, list):
        items = [_brief(v) for v in value[:3]]
        return "[" + ", ".join(items) + (f", … {len(value) - 3} more" if len(value) > 3 else "") + "]"
    text = "—" if value is None else str(value)
    return text if len(text) <= BRIEF_VALUE else text[:BRIEF_VALUE - 1] + "…"


def details_summary(details: dict[str, Any]) -> str:
    """An entry's details on one line: `run: 2; trigger: apply; unfit: [carriers.airlines-dp]`."""
    text = "; ".join(f"{key}: {_brief(value)}" for key, value in details.items())
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 1] + "…"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def audit_time(stamp: str) -> str:
    """The trail's `2026-12-03T10:20:45.649925Z` (always UTC) as `2026-12-03 10:20:45`."""
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S")


render.env.filters.update(details_summary=details_summary, pretty_json=pretty_json, audit_time=audit_time,
                          percent=percent, day=day)


# --- governance ---------------------------------------------------------------------------------------------------


def policy_line(policy: Policy, standing: dict[str, Any] | None) -> dict[str, Any]:
    """A policy as the list shows it, with the report's counts of the products shown (None: it applies to none)."""
    deadline = policy.deadline()
    return {"id": policy.id, "version": policy.version, "title": policy.title, "level": policy.level,
            "owner": policy.owner, "rule": policy.rule, "severity": policy.severity,
            "scope": policy.scope.model_dump(), "scope_text": policy.scope.describe(),
            "effective": policy.effective.isoformat() if policy.effective else None, "grace_days": policy.grace_days,
            "binding_from": deadline.isoformat() if deadline else None, "tightens": policy.tightens,
            "file": policy.file, "in_scope": standing["in_scope"] if standing else None,
            "failing": standing["failing"] if standing else None}


def governance_data(ws: Workspace, sector: str | None, domain: str | None) -> dict[str, Any]:
    """What the governance page shows: the compliance report of the sector or domain, and the mesh's policies."""
    mesh = ws.directory().mesh  # parsed once, re-read when the repo changes
    report = compliance_report(mesh, ws.governance, sector=sector, domain=domain)
    policies, problems = ws.governance.policies(mesh)
    standing = {line["policy"]: dict(line) for line in report["by_policy"]}
    figures: Mapping[str, object] = report
    shown = ("last_evaluated_at", "products", "evaluated", "totals", "share_compliant", "by_sector", "by_domain",
             "unfit", "at_risk", "trend", "changes")
    return {
        "filters": {"sector": sector, "domain": domain},
        "sectors": sorted({d.sector for d in mesh.domains.values()}),
        "domains": [{"domain": name, "sector": d.sector} for name, d in sorted(mesh.domains.items())],
        **{key: figures[key] for key in shown},
        "policies": [policy_line(p, standing.get(p.id)) for p in policies],
        "policy_problems": [p.to_dict() for p in problems],
    }


def governance_query(
    sector: Annotated[str | None, Query(description="Only this sector's domains.")] = None,
    domain: Annotated[str | None, Query(description="Only this domain.")] = None,
) -> tuple[str | None, str | None]:
    return _given(sector), _given(domain)


GovernanceDep = Annotated[tuple[str | None, str | None], Depends(governance_query)]


@router.get("/governance", response_class=HTMLResponse)
def governance_page(request: Request, ws: WorkspaceDep, viewer: Viewer, query: GovernanceDep) -> Response:
    data = governance_data(ws, *query)
    sector, domain = query
    shown = f"domain {domain}" if domain else f"sector {sector}" if sector else None
    context = {"title": f"Governance: {shown}" if shown else "Governance", "data": data,
               "json_url": "/governance.json" + _query_string(data["filters"])}
    return render.render(request, "governance.html", context)


@router.get("/governance.json")
def governance_json(ws: WorkspaceDep, viewer: Viewer, query: GovernanceDep) -> dict[str, Any]:
    return governance_data(ws, *query)


# --- audit --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    subject: str | None = None
    type: str | None = None
    since: str | None = None
    before: int | None = None
    limit: int = AUDIT_PAGE


def audit_query(
    actor: Annotated[str | None, Query(description="Only entries by this principal.")] = None,
    subject: Annotated[str | None, Query(description="Only entries about this (or anything under it).")] = None,
    type: Annotated[str | None, Query(description="An event type, or a prefix such as `access.`.")] = None,
    since: Annotated[str | None, Query(description="7d, 12h, 30m or an ISO date/time.")] = None,
    before: Annotated[int | None, Query(ge=1, description="Only entries older than this sequence number.")] = None,
    limit: Annotated[int, Query(ge=1, le=AUDIT_MAX_PAGE, description="Entries per page.")] = AUDIT_PAGE,
) -> AuditQuery:
    return AuditQuery(_given(actor), _given(subject), _given(type), _given(since), before, limit)


AuditDep = Annotated[AuditQuery, Depends(audit_query)]


def audit_data(ws: Workspace, reader: str, query: AuditQuery) -> dict[str, Any]:
    """What the audit page shows: one page of entries, newest first, and the whole chain's verification.

    The trail decides who may read it (it refuses anyone but auditors and governance admins); one entry more
    than the page is asked for, to know whether older ones follow."""
    since = parse_since(query.since, "since")
    entries = ws.audit.log(reader, by=query.actor, subject=query.subject, type=query.type, since=since,
                           before=query.before, limit=query.limit + 1)
    shown = entries[:query.limit]
    older = shown[-1]["seq"] if len(entries) > query.limit else None
    return {"filters": asdict(query), "chain": ws.audit.verify(), "entries": shown, "older_before": older}


def _audit_url(query: AuditQuery, path: str = "/audit", **changes: Any) -> str:
    """The page (or its twin) with the same filters and page size, and the changes (`before=…`)."""
    params = {**asdict(query), **changes}
    if params["limit"] == AUDIT_PAGE:
        params["limit"] = None
    return path + _query_string(params)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, ws: WorkspaceDep, viewer: Viewer, query: AuditDep) -> Response:
    data = audit_data(ws, viewer.id, query)
    prefixes = sorted({t.split(".", 1)[0] + "." for t in EVENT_TYPES})
    bad = data["chain"]["first_bad"]
    context = {
        "title": "Audit trail", "data": data, "default_limit": AUDIT_PAGE,
        "event_types": [*prefixes, *sorted(EVENT_TYPES)],
        "older_url": _audit_url(query, before=data["older_before"]) if data["older_before"] else None,
        "newest_url": _audit_url(query, before=None) if query.before else None,
        "first_bad_url": f"/audit?before={bad + 1}#entry-{bad}" if bad else None,
        "json_url": _audit_url(query, "/audit.json"),
    }
    return render.render(request, "audit.html", context)


@router.get("/audit.json")
def audit_json(ws: WorkspaceDep, viewer: Viewer, query: AuditDep) -> dict[str, Any]:
    return audit_data(ws, viewer.id, query)
