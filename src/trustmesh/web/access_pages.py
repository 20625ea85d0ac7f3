"""The access pages: ask for a dataset, the custodians' inbox (approve or reject, level by level), and My access.

Each page has a JSON twin; each form posts to the service with the signed-in person as the actor, so the
workflow's rules (who decides, two levels, no self-approval) hold exactly as on the CLI and the API.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from trustmesh.access.model import PRODUCT, Principal
from trustmesh.errors import TrustmeshError, UsageError
from trustmesh.service import Workspace
from trustmesh.web.auth import Viewer, WorkspaceDep, check_csrf
from trustmesh.web.render import render

router = APIRouter(include_in_schema=False)
DEFAULT_DAYS = 30
# what a redirect after a form says: ?done=<code>&id=<request> → the sentence shown at the top of the page
DONE = {"requested": "Request {id} sent: it waits in the inbox of the dataset's stewards and owners.",
        "approved": "You approved {id}.", "granted": "You approved {id}: the grant is active now.",
        "rejected": "You rejected {id}; the requester sees your reason.", "withdrawn": "You withdrew {id}."}


def flash(done: str | None, ident: str | None) -> str:
    """The sentence for a finished form, built here from a known code (never text from the URL)."""
    if done not in DONE:
        return ""
    safe = ident if ident and ident.replace("-", "").isalnum() else "the request"
    return DONE[done].format(id=safe)


def own_products(ws: Workspace, me: Principal) -> list[str]:
    """Products of the person's domains: what they may ask on behalf of."""
    return sorted(p.id for p in ws.directory().principals.values() if p.kind == PRODUCT and p.domain in me.member_of())


def request_form(ws: Workspace, me: Principal, dataset: dict[str, Any], values: dict[str, Any] | None = None,
                 ) -> dict[str, Any]:
    """What the Request access form needs: the dataset's columns, the mesh's purposes and limits, and the
    values to show (the last attempt's after an error, else every column and the default duration)."""
    settings = ws.config.access
    columns = [c["name"] for c in dataset["columns"]]
    values = values or {"columns": columns, "unmask": [], "purpose": "", "purpose_category": "", "days": DEFAULT_DAYS,
                        "rows": "", "for_product": ""}
    return {"dataset": dataset, "columns": dataset["columns"], "purposes": settings.purpose_categories,
            "max_days": settings.max_days, "products": own_products(ws, me), "values": values}


@router.get("/request")
def request_page(request: Request, ws: WorkspaceDep, me: Viewer,
                 dataset: Annotated[str, Query(description="The dataset to ask for.")]) -> Response:
    shown = ws.catalog.show(dataset)
    return render(request, "request.html", {"title": f"Request access to {shown['address']}",
                                            "form": request_form(ws, me, shown), "message": ""})


@router.post("/access/requests")
async def create_request(request: Request, ws: WorkspaceDep, me: Viewer, csrf: Annotated[str, Form()] = "",
                         dataset: Annotated[str, Form()] = "", purpose: Annotated[str, Form()] = "",
                         purpose_category: Annotated[str, Form()] = "", days: Annotated[str, Form()] = "",
                         columns: Annotated[list[str] | None, Form()] = None,
                         unmask: Annotated[list[str] | None, Form()] = None, rows: Annotated[str, Form()] = "",
                         for_product: Annotated[str, Form()] = "") -> Response:
    """Send a request; on any refusal, the form again with the values kept and the reason at the top."""
    check_csrf(request, csrf)
    shown = await run_in_threadpool(ws.catalog.show, dataset)
    values = {"columns": columns or [], "unmask": unmask or [], "purpose": purpose, "purpose_category": purpose_category,
              "days": days, "rows": rows, "for_product": for_product}
    try:
        if not days.strip().isdigit():
            raise UsageError(f"duration {days!r} is not a number of days — fix: a whole number such as 30")
        if not columns:
            raise UsageError("no columns chosen — fix: tick at least one column")
        made = await run_in_threadpool(lambda: ws.access.request(
            me.id, shown["address"], purpose=purpose.strip(), purpose_category=purpose_category, days=int(days),
            columns=None if set(columns) == {c["name"] for c in shown["columns"]} else columns,
            unmask=unmask or None, for_product=for_product or None, rows=rows.strip() or None))
    except TrustmeshError as exc:
        status = exc.http_status if 400 <= exc.http_status < 500 else 400
        return render(request, "request.html", {"title": f"Request access to {shown['address']}",
                                                "form": request_form(ws, me, shown, values), "message": str(exc)},
                      status_code=status)
    return RedirectResponse("/access?" + urlencode({"done": "requested", "id": made["id"]}), status_code=303)


@router.get("/access")
@router.get("/access.json")
def my_access(request: Request, ws: WorkspaceDep, me: Viewer, done: str | None = None,
              id: str | None = None) -> Response:
    data = ws.access.overview(me.id, "mine")
    if request.url.path.endswith(".json"):
        return JSONResponse(data)
    return render(request, "my_access.html", {"title": "My access", "data": data, "flash": flash(done, id),
                                              "json_url": "/access.json"})


@router.get("/inbox")
@router.get("/inbox.json")
def inbox(request: Request, ws: WorkspaceDep, me: Viewer, done: str | None = None, id: str | None = None) -> Response:
    data = ws.access.overview(me.id, "inbox")
    if request.url.path.endswith(".json"):
        return JSONResponse(data)
    return render(request, "inbox.html", {"title": "Inbox", "data": data, "flash": flash(done, id),
                                          "custodian": bool(me.custodian_of()), "json_url": "/inbox.json"})


@router.post("/inbox/{request_id}/approve")
async def approve(request: Request, ws: WorkspaceDep, me: Viewer, request_id: str, csrf: Annotated[str, Form()] = "",
                  note: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    decided = await run_in_threadpool(ws.access.approve, me.id, request_id, note.strip())
    done = "granted" if decided["state"] == "approved" else "approved"
    return RedirectResponse("/inbox?" + urlencode({"done": done, "id": decided["id"]}), status_code=303)


@router.post("/inbox/{request_id}/reject")
async def reject(request: Request, ws: WorkspaceDep, me: Viewer, request_id: str, csrf: Annotated[str, Form()] = "",
                 reason: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    decided = await run_in_threadpool(ws.access.reject, me.id, request_id, reason.strip())
    return RedirectResponse("/inbox?" + urlencode({"done": "rejected", "id": decided["id"]}), status_code=303)


@router.post("/access/requests/{request_id}/withdraw")
async def withdraw(request: Request, ws: WorkspaceDep, me: Viewer, request_id: str,
                   csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    done = await run_in_threadpool(ws.access.withdraw, me.id, request_id)
    return RedirectResponse("/access?" + urlencode({"done": "withdrawn", "id": done["id"]}), status_code=303)
