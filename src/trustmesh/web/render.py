"""What every page shares: the Jinja environment and its filters, URLs of catalog things, and `render`, which adds
who is signed in (and the CSRF value of their forms) to every page."""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined

from trustmesh.catalog import quality_band
from trustmesh.web import graph
from trustmesh.web.auth import SESSION_COOKIE, SignInRequired, csrf_value, session_token


def product_url(address: str) -> str:
    return f"/products/{quote(address)}"


def dataset_url(address: str) -> str:
    """The product page anchored at the dataset: one link, no redirect."""
    product, name = address.rsplit(".", 1)
    return f"{product_url(product)}#dataset-{quote(name)}"


def column_url(dataset: str, column: str) -> str:
    product, name = dataset.rsplit(".", 1)
    return f"{product_url(product)}#column-{quote(name)}-{quote(column)}"


def lineage_url(node: str) -> str:
    """A node of a lineage picture: a dataset's section, or for a source outside the mesh its input port's row."""
    if node.startswith(graph.SOURCE):
        product, port = node.removeprefix(graph.SOURCE).rsplit(".", 1)
        return f"{product_url(product)}#input-{quote(port)}"
    return dataset_url(node)


def lineage_column_url(node: str, column: str) -> str:
    return lineage_url(node) if node.startswith(graph.SOURCE) else column_url(node, column)


def node_label(node: str) -> str:
    """`source:bts.flights-dp.raw_flights` → `raw_flights (source of bts.flights-dp)`; a dataset is its address."""
    if node.startswith(graph.SOURCE):
        product, port = node.removeprefix(graph.SOURCE).rsplit(".", 1)
        return f"{port} (source of {product})"
    return node


def column_label(node: str, column: str) -> str:
    if node.startswith(graph.SOURCE):
        product, port = node.removeprefix(graph.SOURCE).rsplit(".", 1)
        return f"{port}.{column} (source of {product})"
    return f"{node}.{column}"


def when(iso: str | None) -> str:
    """An ISO timestamp as people read it: 2024-05-01 09:30 UTC."""
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip()


def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def label(value: str) -> str:
    """`data-domain-steward` → `Data domain steward`."""
    return value.replace("-", " ").replace("_", " ").capitalize()


# --- quality ------------------------------------------------------------------------------------------------------

COUNTED = ("nullValues", "missingValues", "invalidValues", "duplicateValues", "rowCount")  # measured in rows
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def plain(value: float | None) -> str:
    """A number as people write it: 3, not 3.0; 33.33, not 33.333333."""
    if value is None:
        return "—"
    rounded = round(float(value), 2)
    return str(int(rounded)) if rounded.is_integer() else f"{rounded:g}"


def source_label(source: str) -> str:
    """`benchmark:transport-tc` → `sector benchmark (transport-tc)`; `schema` and `contract` stay as they are."""
    kind, _, owner = source.partition(":")
    return f"sector benchmark ({owner})" if kind == "benchmark" and owner else source


def _in_rows(check: dict[str, Any]) -> bool:
    return check.get("unit") != "percent" and check["metric"] in COUNTED


def expected(check: dict[str, Any]) -> str:
    """The catalog's `= 0`, `≤ 5%`, `between 1 and 10`, with the unit when it counts rows: `= 0 rows`."""
    return f"{check['expected']} rows" if _in_rows(check) else str(check["expected"])


def measured(check: dict[str, Any]) -> str:
    value = check.get("value")
    if value is None:
        return "not measured"
    if _in_rows(check):
        return f"{plain(value)} row{'' if value == 1 else 's'}"
    return f"{plain(value)}%" if check.get("unit") == "percent" else plain(value)


def checks_view(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures first (errors, then warnings, then info), then passes; each with what the table shows."""
    ordered = sorted(checks, key=lambda c: (bool(c["passed"]), SEVERITY_ORDER.get(c["severity"], 3)))
    return [{**c, "source_label": source_label(c["source"]), "expected_text": expected(c), "measured": measured(c),
             "sample_columns": list(dict.fromkeys(k for row in c.get("samples") or [] for k in row))}
            for c in ordered]


def age(hours: float | None) -> str:
    """`0.01` → `under a minute`; `5.5` → `5.5 hours`; `50` → `2.1 days`."""
    if hours is None:
        return "—"
    minutes = hours * 60
    if minutes < 1:
        return "under a minute"
    if hours < 1:
        return f"{round(minutes)} minute{'' if round(minutes) == 1 else 's'}"
    if hours < 48:
        return f"{plain(round(hours, 1))} hour{'' if round(hours, 1) == 1 else 's'}"
    return f"{plain(round(hours / 24, 1))} days"


env = Environment(loader=PackageLoader("trustmesh.web", "templates"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True)
env.filters.update(when=when, number=number, label=label, quality_band=quality_band, plain=plain, age=age,
                   checks=checks_view, source_label=source_label)
env.globals.update(product_url=product_url, dataset_url=dataset_url, column_url=column_url, lineage_url=lineage_url,
                   lineage_column_url=lineage_column_url, node_label=node_label,
                   column_label=column_label)
templates = Jinja2Templates(env=env)


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """A page, with the signed-in person (`me`, none on the sign-in and error pages) and their forms' CSRF value."""
    principal = getattr(request.state, "principal", None)
    token = session_token(request)
    extra = {"me": principal.to_dict() if principal else None, "csrf": csrf_value(token) if token else "",
             "path": request.url.path}
    return templates.TemplateResponse(request, template, {**extra, **context}, status_code=status_code)


def twin(address: str, parts: int) -> tuple[str, bool]:
    """Split `a.b.json` into (`a.b`, True) when what is left still has `parts` parts, so a thing named json stays."""
    stem = address.removesuffix(".json")
    if stem != address and stem.count(".") >= parts - 1:
        return stem, True
    return address, False


def render_error(request: Request, status: int, message: str, problems: list[dict[str, Any]]) -> Response:
    context = {"title": HTTPStatus(status).phrase, "status": status, "message": message, "problems": problems}
    return render(request, "error.html", context, status_code=status)




def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    """To the sign-in page and back; an ended session also loses its cookie and says why."""
    response = RedirectResponse(exc.location + ("&ended=1" if session_token(request) else ""), status_code=303)
    if session_token(request):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response
