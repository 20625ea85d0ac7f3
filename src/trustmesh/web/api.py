"""The REST API under /api/v1: thin handlers that parse, call the `Catalog`, and return its data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict

from trustmesh.catalog import Catalog
from trustmesh.service import Workspace

SEARCH_LIMIT = 50
PRODUCT_EXAMPLE = "bts.flights-dp"
DATASET_EXAMPLE = "bts.flights-dp.flights"


def get_workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


def get_catalog(workspace: Annotated[Workspace, Depends(get_workspace)]) -> Catalog:
    return workspace.catalog


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
DatasetAddress = Annotated[str, Path(description="`<domain>.<product>.<dataset>`", examples=[DATASET_EXAMPLE])]
ProductAddress = Annotated[str, Path(description="`<domain>.<product>`", examples=[PRODUCT_EXAMPLE])]


@dataclass(frozen=True)
class SearchQuery:
    """The search text and facet filters, parsed once for the API and the search page alike."""

    q: str = ""
    domain: str | None = None
    sector: str | None = None
    product_kind: str | None = None
    classification: str | None = None
    sensitivity: str | None = None
    pii: bool | None = None
    limit: int = SEARCH_LIMIT

    def run(self, catalog: Catalog) -> dict[str, Any]:
        return catalog.search(self.q, limit=self.limit, domain=self.domain, sector=self.sector,
                              product_kind=self.product_kind, classification=self.classification,
                              sensitivity=self.sensitivity, has_pii=self.pii)


def search_query(
    q: Annotated[str, Query(description="Words to find in names, descriptions, tags and glossary terms; "
                                        "empty lists every dataset.")] = "",
    domain: Annotated[str | None, Query(description="Only this domain, e.g. `bts`.")] = None,
    sector: Annotated[str | None, Query(description="Only this sector, e.g. `transport`.")] = None,
    product_kind: Annotated[str | None, Query(description="source-aligned, aggregated or consumer-aligned.")] = None,
    classification: Annotated[str | None, Query(description="IM8 level, e.g. `official-open`.")] = None,
    sensitivity: Annotated[str | None, Query(description="non-sensitive, sensitive-normal or sensitive-high.")] = None,
    pii: Annotated[bool | None, Query(description="Only datasets with (true) or without (false) PII.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Most hits to return.")] = SEARCH_LIMIT,
) -> SearchQuery:
    # An empty form field means "any", not "equal to the empty string".
    return SearchQuery(q.strip(), domain or None, sector or None, product_kind or None, classification or None,
                       sensitivity or None, pii, limit)


SearchDep = Annotated[SearchQuery, Depends(search_query)]


class CatalogRecord(BaseModel):
    """Documents the fields the catalog returns today, and passes through any it adds tomorrow."""

    model_config = ConfigDict(extra="allow")


class Person(CatalogRecord):
    id: str
    name: str
    email: str | None


class Domain(CatalogRecord):
    name: str
    kind: str
    sector: str
    description: str
    products: int


class DatasetBase(CatalogRecord):
    address: str
    name: str
    domain: str
    product: str
    product_kind: str
    description: str
    classification: str | None
    sensitivity: str
    has_pii: bool
    version: int | None
    tags: list[Any]


class DatasetSummary(DatasetBase):
    rows: int | None
    published_at: str | None


class ColumnInfo(CatalogRecord):
    name: str
    logical_type: str
    physical_type: str | None
    description: str
    required: bool
    primary_key: bool
    unique: bool
    classification: str | None
    sensitivity: str
    pii_type: str | None
    glossary_term: str | None
    tags: list[Any]


class Version(CatalogRecord):
    version: int
    published_at: str
    rows: int
    snapshot_id: int
    build_id: str
    contract_version: str
    columns: list[dict[str, Any]]
    inputs: dict[str, Any]


class DatasetDetail(DatasetBase):
    sector: str | None
    product_description: dict[str, Any]
    product_status: str
    tier: str
    contract_version: str
    sla: list[dict[str, Any]]
    columns: list[ColumnInfo]
    current_version: Version | None
    inputs: list[dict[str, Any]]
    owners: dict[str, list[Person]]


class ProductDataset(DatasetDetail):
    versions: list[Version]


class Product(CatalogRecord):
    address: str
    domain: str
    name: str
    kind: str
    tier: str
    status: str
    version: str
    description: dict[str, Any]
    tags: list[Any]
    team: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    sector: str | None
    domain_kind: str | None
    built_at: str | None
    owners: dict[str, list[Person]]
    datasets: list[ProductDataset]


class Hit(CatalogRecord):
    kind: str
    address: str
    dataset: str
    product: str
    domain: str
    sector: str
    product_kind: str
    classification: str | None
    sensitivity: str
    has_pii: bool
    rank: float


class SearchResult(CatalogRecord):
    query: str
    filters: dict[str, Any]
    hits: list[Hit]
    total: int
    facets: dict[str, dict[str, int]]


class Health(CatalogRecord):
    status: str
    mesh: str
    metastore: str
    domains: int


class Error(BaseModel):
    error: str
    problems: list[dict[str, Any]]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "Malformed input, e.g. an address with the wrong number of parts"},
    404: {"model": Error, "description": "No such domain, product or dataset in the catalog"},
    503: {"model": Error, "description": "The metastore cannot be reached"},
}

router = APIRouter(prefix="/api/v1", tags=["catalog"], responses=ERRORS)


@router.get("/health", response_model=Health, tags=["platform"])
def health(workspace: Annotated[Workspace, Depends(get_workspace)]) -> dict[str, Any]:
    """The server is up and its metastore answers."""
    domains = workspace.catalog.domains()
    return {"status": "ok", "mesh": workspace.config.name, "metastore": workspace.store.dialect,
            "domains": len(domains)}


@router.get("/domains", response_model=list[Domain])
def domains(catalog: CatalogDep) -> list[dict[str, Any]]:
    """Every domain with its kind, sector and number of products."""
    return catalog.domains()


@router.get("/datasets", response_model=list[DatasetSummary])
def datasets(catalog: CatalogDep,
             domain: Annotated[str | None, Query(description="Only this domain.")] = None) -> list[dict[str, Any]]:
    """Every published dataset (optionally of one domain), with its current version's rows."""
    return catalog.datasets(domain or None)


@router.get("/datasets/{address}", response_model=DatasetDetail)
def dataset(catalog: CatalogDep, address: DatasetAddress) -> dict[str, Any]:
    """One dataset: contract, schema with classification, SLA, current version, inputs and owners."""
    return catalog.show(address)


@router.get("/datasets/{address}/versions", response_model=list[Version])
def versions(catalog: CatalogDep, address: DatasetAddress) -> list[dict[str, Any]]:
    """Every published version of a dataset, newest first."""
    return catalog.versions(address)


@router.get("/products/{address}", response_model=Product)
def product(catalog: CatalogDep, address: ProductAddress) -> dict[str, Any]:
    """One data product: description, owners, inputs, and each dataset with its versions."""
    return catalog.product(address)


@router.get("/search", response_model=SearchResult)
def search(catalog: CatalogDep, query: SearchDep) -> dict[str, Any]:
    """Ranked dataset and column hits, and facet counts over the matching datasets."""
    return query.run(catalog)
