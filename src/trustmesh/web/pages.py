"""The catalog pages: search and product pages, each with a JSON twin (the same URL plus `.json`) holding what it
renders."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from trustmesh.catalog import STANDING_FACETS, Catalog
from trustmesh.descriptors.models import IM8_LEVELS, PRODUCT_KINDS, SENSITIVITIES
from trustmesh.web import graph
from trustmesh.web.access_pages import request_form
from trustmesh.web.api import CatalogDep, SearchDep, SearchQuery
from trustmesh.web.auth import Viewer, WorkspaceDep, page_principal
from trustmesh.web.render import dataset_url, lineage_url, product_url, render, twin

# facet in the catalog's search result → (query parameter, heading, preferred order of values)
FACETS: dict[str, tuple[str, str, list[str]]] = {
    "domain": ("domain", "Domain", []),
    "sector": ("sector", "Sector", []),
    "product_kind": ("product_kind", "Product kind", PRODUCT_KINDS),
    "classification": ("classification", "Classification (IM8)", IM8_LEVELS),
    "sensitivity": ("sensitivity", "Sensitivity", SENSITIVITIES),
    "has_pii": ("pii", "Personal data", ["true", "false"]),
    "quality": ("quality", "Quality", STANDING_FACETS["quality"]),
    "freshness": ("freshness", "Freshness", STANDING_FACETS["freshness"]),
    "governance": ("governance", "Compliance", STANDING_FACETS["governance"]),
}
VALUE_LABELS = {"true": "Contains PII", "false": "No PII", "good": "Good (score ≥ 95)", "fair": "Fair (80 to 95)",
                "poor": "Poor (under 80)", "none": "Not measured", "fresh": "Within its SLA",
                "stale": "Stale (past its SLA)"}


router = APIRouter(include_in_schema=False, dependencies=[Depends(page_principal)])


# --- search -------------------------------------------------------------------------------------------------------


def search_data(catalog: Catalog, query: SearchQuery) -> dict[str, Any]:
    """What the search page shows: the ranked hits and facets, and the datasets' descriptions and row counts."""
    return {"search": query.run(catalog), "datasets": catalog.datasets(query.domain)}


def _state(query: SearchQuery) -> dict[str, str]:
    """The query as URL parameters, so facet links keep the text and the other filters."""
    values = {"q": query.q, "domain": query.domain, "sector": query.sector, "product_kind": query.product_kind,
              "classification": query.classification, "sensitivity": query.sensitivity,
              "pii": None if query.pii is None else str(query.pii).lower(), "quality": query.quality,
              "freshness": query.freshness, "governance": query.governance,
              "limit": None if query.limit == SearchQuery.limit else str(query.limit)}
    return {k: v for k, v in values.items() if v}


def search_url(params: dict[str, str]) -> str:
    return f"/?{urlencode(params)}" if params else "/"


def _ordered(counts: dict[str, int], preferred: list[str]) -> Iterable[tuple[str, int]]:
    rank = {v: i for i, v in enumerate(preferred)}
    return sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), -kv[1], kv[0]))


def facet_view(query: SearchQuery, facets: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Each facet's values with counts and a link that selects the value, or clears it when already selected."""
    state = _state(query)
    state.pop("limit", None)
    out = []
    for facet, (param, heading, preferred) in FACETS.items():
        selected = state.get(param)
        others = {k: v for k, v in state.items() if k != param}
        values = [{"value": value, "label": VALUE_LABELS.get(value, value), "count": count,
                   "selected": value == selected, "url": search_url(others if value == selected else
                                                                    {**others, param: value})}
                  for value, count in _ordered(facets.get(facet, {}), preferred)]
        out.append({"param": param, "heading": heading, "values": values, "selected": selected,
                    "clear_url": search_url(others)})
    return out


def result_view(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Hits folded into one entry per dataset (in rank order), with its matching columns under it."""
    described = {d["address"]: d for d in data["datasets"]}
    results: dict[str, dict[str, Any]] = {}
    for hit in data["search"]["hits"]:
        entry = results.get(hit["dataset"])
        if entry is None:
            info = described.get(hit["dataset"], {})
            entry = results[hit["dataset"]] = {
                "address": hit["dataset"], "name": hit["dataset"].rsplit(".", 1)[1], "product": hit["product"],
                "domain": hit["domain"], "sector": hit["sector"], "product_kind": hit["product_kind"],
                "classification": info.get("classification", hit["classification"]),
                "sensitivity": info.get("sensitivity", hit["sensitivity"]),
                "has_pii": info.get("has_pii", hit["has_pii"]), "description": info.get("description", ""),
                "rows": info.get("rows"), "quality_score": info.get("quality_score", hit.get("quality_score")),
                "stale": info.get("stale", hit.get("stale", False)), "columns": []}
        if hit["kind"] == "column":
            entry["columns"].append(hit["address"].rsplit(".", 1)[1])
    return list(results.values())


def by_domain(results: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in results:
        groups.setdefault(entry["domain"], []).append(entry)
    return sorted(groups.items())


@router.get("/", response_class=HTMLResponse)
@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, catalog: CatalogDep, query: SearchDep) -> Response:
    data = search_data(catalog, query)
    results = result_view(data)
    state = _state(query)
    more = search_url({**state, "limit": str(min(query.limit * 4, 500))}) if data["search"]["total"] > query.limit \
        else None
    context = {"title": f"“{query.q}” — search" if query.q else "Find data", "query": query, "data": data,
               "results": results, "groups": by_domain(results), "facets": facet_view(query, data["search"]["facets"]),
               "hidden": {k: v for k, v in state.items() if k != "q"}, "more_url": more,
               "json_url": "/.json" + (f"?{urlencode(state)}" if state else "")}
    return render(request, "search.html", context)


@router.get("/.json")
@router.get("/search.json")
def search_page_json(catalog: CatalogDep, query: SearchDep) -> dict[str, Any]:
    return search_data(catalog, query)


# --- products and datasets ----------------------------------------------------------------------------------------


@router.get("/products/{address}")
def product_page(request: Request, catalog: CatalogDep, ws: WorkspaceDep, me: Viewer, address: str) -> Response:
    address, as_json = twin(address, 2)
    product = catalog.product(address, reader=me)  # failing-row samples only for the product's own domain
    if as_json:
        return JSONResponse(product)
    # Quarantined candidates, lineage and findings are not part of the product record (nor of its JSON twin):
    # only the page shows them; the API has them at /datasets/{address}/quality, /lineage and /findings.
    quarantine = {ds["address"]: catalog.quality(ds["address"], reader=me)["quarantine"] for ds in product["datasets"]}
    lineage = {ds["address"]: lineage_view(catalog, ds["address"], f"lineage-{ds['name']}")
               for ds in product["datasets"]}
    forms = {ds["address"]: request_form(ws, me, ds) for ds in product["datasets"]}
    # Who uses the data is the owning domain's business (and governance's): others do not see its consumers.
    users = ({ds["address"]: catalog.consumers(ds["address"]) for ds in product["datasets"]}
             if product["domain"] in me.member_of() or me.has_role("governance-admin") else None)
    context = {"title": f"{product['name']} — {product['domain']}", "product": product, "quarantine": quarantine,
               "lineage": lineage, "forms": forms, "reads": me.member_of(), "consumers": users,
               "json_url": f"{product_url(product['address'])}.json"}
    return render(request, "product.html", context)


def lineage_view(catalog: Catalog, address: str, ident: str) -> dict[str, Any]:
    """A dataset's lineage picture (bounded: `graph.MAX_DEPTH` steps each way, `graph.MAX_NODES` datasets) and its
    findings. The edges are fetched one step deeper than drawn, so the page can say when the lineage goes further."""
    deeper = graph.MAX_DEPTH + 1
    picture = graph.picture(address, catalog.lineage(address, direction="up", depth=deeper)["edges"],
                            catalog.lineage(address, direction="down", depth=deeper)["edges"])
    return {"picture": picture, "svg": graph.svg(picture, ident, lineage_url), "id": ident,
            "findings": catalog.findings(address)}


@router.get("/datasets/{address}")
def dataset_page(catalog: CatalogDep, address: str) -> RedirectResponse:
    """A dataset lives on its product's page: check it exists, then send the reader to its section there."""
    address, as_json = twin(address, 3)
    shown = catalog.show(address)
    if as_json:
        return RedirectResponse(f"{product_url(shown['product'])}.json", status_code=307)
    return RedirectResponse(dataset_url(shown["address"]), status_code=307)
