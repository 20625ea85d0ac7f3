"""The REST API under /api/v1: thin handlers that parse, call the `Catalog`, and return its data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from trustmesh.catalog import Catalog
from trustmesh.service import Workspace
from trustmesh.web.auth import Caller, current_principal, get_workspace
from trustmesh.web.caching import ETagRoute
from trustmesh.web.paging import PAGED, PageLinks, Pager, page_links, pages

SEARCH_LIMIT = 50
PRODUCT_EXAMPLE = "bts.flights-dp"
DATASET_EXAMPLE = "bts.flights-dp.flights"


def get_catalog(workspace: Annotated[Workspace, Depends(get_workspace)]) -> Catalog:
    return workspace.catalog


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
DatasetAddress = Annotated[str, Path(description="`<domain>.<product>.<dataset>`", examples=[DATASET_EXAMPLE])]
LineageTarget = Annotated[str, Path(description="`<domain>.<product>.<dataset>` or `<domain>.<product>.<dataset>.<column>`",
                                    examples=[DATASET_EXAMPLE, f"{DATASET_EXAMPLE}.dep_delay"])]
ColumnAddress = Annotated[str, Path(description="`<domain>.<product>.<dataset>.<column>`",
                                    examples=[f"{DATASET_EXAMPLE}.dep_delay"])]
MAX_LINEAGE_DEPTH = 1000
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
    quality: str | None = None
    freshness: str | None = None
    governance: str | None = None
    limit: int = SEARCH_LIMIT
    offset: int = 0

    def run(self, catalog: Catalog) -> dict[str, Any]:
        return catalog.search(self.q, limit=self.limit, offset=self.offset, domain=self.domain, sector=self.sector,
                              product_kind=self.product_kind, classification=self.classification,
                              sensitivity=self.sensitivity, has_pii=self.pii, quality=self.quality,
                              freshness=self.freshness, governance=self.governance)


def search_query(
    q: Annotated[str, Query(description="Words to find in names, descriptions, tags and glossary terms; "
                                        "empty lists every dataset.")] = "",
    domain: Annotated[str | None, Query(description="Only this domain, e.g. `bts`.")] = None,
    sector: Annotated[str | None, Query(description="Only this sector, e.g. `transport`.")] = None,
    product_kind: Annotated[str | None, Query(description="source-aligned, aggregated or consumer-aligned.")] = None,
    classification: Annotated[str | None, Query(description="IM8 level, e.g. `official-open`.")] = None,
    sensitivity: Annotated[str | None, Query(description="non-sensitive, sensitive-normal or sensitive-high.")] = None,
    pii: Annotated[bool | None, Query(description="Only datasets with (true) or without (false) PII.")] = None,
    quality: Annotated[Literal["good", "fair", "poor", "none"] | None, Query(
        description="Quality band of the served version: good (score ≥ 95), fair (≥ 80), poor, none (not "
                    "measured).")] = None,
    freshness: Annotated[Literal["fresh", "stale"] | None, Query(
        description="stale: older than its freshness SLA allows.")] = None,
    governance: Annotated[Literal["compliant", "at-risk", "unfit for consumption", "not evaluated"] | None, Query(
        description="The product's governance status from the last policy evaluation.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Most hits to return.")] = SEARCH_LIMIT,
    offset: Annotated[int, Query(ge=0, le=100_000, description="Hits to skip (for the next page).")] = 0,
) -> SearchQuery:
    # An empty form field means "any", not "equal to the empty string".
    return SearchQuery(q.strip(), domain or None, sector or None, product_kind or None, classification or None,
                       sensitivity or None, pii, quality or None, freshness or None, governance or None, limit,
                       offset)


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
    quality_score: float | None = Field(description="The served version's quality score, 0 to 100 (none: not measured).")
    stale: bool = Field(description="The served version is older than its freshness SLA allows.")


class Masking(CatalogRecord):
    strategy: str = Field(description="suppress, mask, pseudonymise, generalise or perturb.", examples=["mask"])
    how: str = Field(examples=["character masking: last 3 digits and check letter"])


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
    masking: Masking | None = Field(None, description="Personal columns: how a reader whose grant does not unmask "
                                                      "the column sees it.")


class QualitySummary(CatalogRecord):
    """The outcome of one version's checks; empty for a version published before quality was measured."""

    score: float | None = Field(None, description="Share of weighted checks passed, 0 to 100.")
    checks: int | None = None
    passed: int | None = None
    failed_errors: int | None = None
    failed_warnings: int | None = None
    rows: int | None = None


class Freshness(CatalogRecord):
    sla: str | None = Field(description="The promise freshness is judged by, e.g. `frequency 1 d`; none: never stale.")
    stale: bool
    age_hours: float | None = Field(description="Hours since the served version was published.")
    due_at: str | None = Field(None, description="When the next version is due (only with an SLA and a version).")


class QualityCheck(CatalogRecord):
    rule: str = Field(description="`<source>/[<column>/]<name>`, e.g. `contract/category/only-alpha`.")
    name: str = Field(description="The rule's name, e.g. `only-alpha` or `record_id is required`.")
    source: str = Field(description="`schema`, `contract`, or `benchmark:<trusted centre>` for a sector benchmark.")
    column: str | None
    metric: str
    dimension: str | None
    severity: str = Field(description="error (fails the build), warning or info.")
    operator: str = Field(description="ODCS operator, e.g. `mustBe`, `mustBeBetween`.")
    threshold: list[float]
    unit: str = Field(description="rows or percent.")
    expected: str = Field(description="Operator and threshold as people read them, e.g. `= 0`, `≤ 5%`.")
    value: float | None = Field(description="What was measured (none: the check could not run).")
    passed: bool
    samples: list[dict[str, Any]] = Field(description="A few failing rows, keys and checked column only, "
                                                      "personal data masked; only for the people of the dataset's "
                                                      "domain (empty for everyone else: see `samples_withheld`).")


class DatasetQuality(CatalogRecord):
    score: float | None
    summary: QualitySummary
    freshness: Freshness
    checks: list[QualityCheck]
    samples_withheld: str | None = Field(None, description="Why the checks carry no failing-row samples for this "
                                                           "caller (they are rows of the data outside any grant, so "
                                                           "only the dataset's domain sees them); none: shown.")


class ScorePoint(CatalogRecord):
    version: int
    published_at: str
    score: float | None


class QuarantinedCandidate(CatalogRecord):
    build_id: str
    data_file: str
    rows: int
    reason: str
    created_at: str
    checks: list[QualityCheck]


class QualityReport(DatasetQuality):
    address: str
    version: int | None
    history: list[ScorePoint] = Field(description="The score of every published version, newest first.")
    quarantine: list[QuarantinedCandidate] = Field(description="Candidates an error-severity check kept from "
                                                               "publishing, newest first.")


class Version(CatalogRecord):
    version: int
    published_at: str
    rows: int
    snapshot_id: int
    build_id: str
    contract_version: str
    columns: list[dict[str, Any]]
    inputs: dict[str, Any]
    quality_score: float | None
    quality: QualitySummary


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
    quality: DatasetQuality
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
    quality_score: float | None = Field(description="Mean quality score of the product's datasets.")
    stale: bool = Field(description="Any of the product's datasets is stale.")


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
    quality_score: float | None = Field(None, description="Dataset hits only: the served version's quality score.")
    stale: bool | None = Field(None, description="Dataset hits only: past its freshness SLA.")


class SearchResult(CatalogRecord):
    query: str
    filters: dict[str, Any]
    hits: list[Hit]
    total: int
    facets: dict[str, dict[str, int]]


class LineageEdge(CatalogRecord):
    """One column feeding another in the served versions."""

    dataset: str = Field(description="The dataset whose column is fed.")
    column: str
    source_dataset: str = Field(description="A dataset, or `source:<product>.<port>` for a source outside the mesh.")
    source_column: str
    type: str = Field(description="DIRECT (values flow into the column) or INDIRECT (they filter, join, group, "
                                  "order or decide it).")
    subtype: str = Field(description="e.g. IDENTITY, TRANSFORMATION, AGGREGATION; JOIN, FILTER, GROUP_BY, SORT.")
    masking: bool = Field(description="The value is masked (hashed, redacted) on the way.")
    depth: int = Field(description="Steps from the target, 1 for its own inputs.")


class Lineage(CatalogRecord):
    target: str
    dataset: str
    column: str | None = Field(description="The column the walk started from; none: every column of the dataset.")
    direction: str = Field(description="up (where it comes from) or down (where it goes).")
    depth: int | None = Field(description="Most steps walked; none: all of them.")
    edges: list[LineageEdge] = Field(description="Every column edge reached, nearest first.")
    datasets: list[str] = Field(description="The datasets (and sources) reached.")


class ImpactedColumn(CatalogRecord):
    column: str
    via: list[str] = Field(description="How the change reaches it, e.g. `direct identity`, `indirect filter`.")
    effect: str


class ImpactedConsumer(CatalogRecord):
    principal: str = Field(description="A person or a product (by address).")
    kind: str = Field(description="person | product")
    grant: str
    columns: list[str] | None = Field(description="The granted columns; null: every column.")
    expires_at: str


class RecentQuerier(CatalogRecord):
    principal: str = Field(description="A person whose governed queries read the dataset.")
    queries: int = Field(description="How many, in the last 30 days.")
    last_at: str = Field(description="When the last one ran.")


class ImpactedDataset(CatalogRecord):
    dataset: str
    product: str | None
    domain: str
    columns: list[ImpactedColumn]
    owners: dict[str, list[str]] = Field(description="Names by role, for the people to tell.")
    consumers: list[ImpactedConsumer] = Field(description="Principals holding an active grant on the dataset.")
    queried_by: list[RecentQuerier] = Field(description="People who queried the dataset in the last 30 days, most "
                                                        "queries first.")


class Impact(CatalogRecord):
    source: str = Field(description="The column that would change.")
    change: str
    datasets: list[ImpactedDataset] = Field(description="The column's own dataset first, then every downstream "
                                                        "dataset the change reaches.")
    products: list[str]
    domains: list[str]


class Finding(CatalogRecord):
    dataset: str
    kind: str = Field(description="no-lineage (the build could not trace a column) or undeclared-pii (a column "
                                  "derived from personal data is not declared personal).")
    severity: str
    column: str | None
    message: str
    build_id: str
    version: int | None


class Health(CatalogRecord):
    status: str
    mesh: str
    metastore: str
    domains: int
    worker: int = Field(description="The process id of the server worker that answered.")
    unapplied: list[str] = Field(default_factory=list, description="Problems of an edit to the repo that "
                                 "makes the mesh invalid: it is not applied, and the mesh as it last loaded is "
                                 "served until the files are fixed.")


class Error(BaseModel):
    """RFC 9457 problem details, with the problems found and the detail repeated as `error`."""

    type: str = Field("about:blank", description="Always `about:blank`: the status says what kind of error it is.")
    title: str = Field(description="The HTTP status phrase, e.g. `Not Found`.", examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(description="What went wrong and, after `— fix:`, what to do about it.",
                        examples=["no dataset bts.flights-dp.nope — fix: check the address"])
    instance: str = Field(description="The path that was asked for.")
    error: str = Field(description="The detail again, for clients that read `error`.")
    problems: list[dict[str, Any]] = Field(description="Every problem found: message, and file, line, path and fix "
                                                       "where known.")


def problem(description: str) -> dict[str, Any]:
    """An error response as the app sends it: the `Error` model, as `application/problem+json`."""
    return {"model": Error, "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: problem("Malformed input, e.g. an address with the wrong number of parts"),
    401: problem("No bearer token, or a forged, expired or revoked one"),
    404: problem("No such domain, product or dataset in the catalog"),
    422: problem("A parameter or the body does not fit its schema"),
    503: problem("The metastore cannot be reached"),
}

router = APIRouter(prefix="/api/v1", tags=["catalog"], responses=ERRORS, dependencies=[Depends(current_principal)],
                   route_class=ETagRoute)  # every catalog GET answers with an ETag, and 304 to If-None-Match
platform = APIRouter(prefix="/api/v1", tags=["platform"], responses={503: ERRORS[503]})
# Every route answers with `response_model_exclude_unset`, so a response is what the catalog returns field for
# field: what the catalog leaves out (a column hit's quality score, an unmeasured version's empty quality summary)
# stays out instead of coming back as null.


@platform.get("/health", response_model=Health, response_model_exclude_unset=True)
def health(workspace: Annotated[Workspace, Depends(get_workspace)]) -> dict[str, Any]:
    """The server is up and its metastore answers."""
    domains = workspace.catalog.domains()
    found = {"status": "ok", "mesh": workspace.config.name, "metastore": workspace.store.dialect,
             "domains": len(domains), "worker": os.getpid()}
    if workspace.unapplied:
        found["unapplied"] = [str(p) for p in workspace.unapplied[:20]]
    return found


@router.get("/domains", response_model=list[Domain], response_model_exclude_unset=True)
def domains(catalog: CatalogDep) -> list[dict[str, Any]]:
    """Every domain with its kind, sector and number of products."""
    return catalog.domains()


@router.get("/datasets", response_model=list[DatasetSummary], response_model_exclude_unset=True, responses=PAGED)
def datasets(catalog: CatalogDep, page: Annotated[Pager, Depends(pages(100, 1000))],
             domain: Annotated[str | None, Query(description="Only this domain.")] = None) -> list[dict[str, Any]]:
    """Published datasets (optionally of one domain), by address, with their current version's rows, quality
    score and staleness; a page at a time (`X-Total-Count`, `Link: rel="next"`)."""
    return page(catalog.datasets(domain or None))


@router.get("/datasets/{address}", response_model=DatasetDetail, response_model_exclude_unset=True)
def dataset(catalog: CatalogDep, caller: Caller, address: DatasetAddress) -> dict[str, Any]:
    """One dataset: contract, schema with classification, SLA, current version, inputs, quality and owners."""
    return catalog.show(address, reader=caller)


@router.get("/datasets/{address}/quality", response_model=QualityReport, response_model_exclude_unset=True)
def quality(catalog: CatalogDep, caller: Caller, address: DatasetAddress) -> dict[str, Any]:
    """A dataset's quality: the served version's score and checks, its freshness against the SLA, the score of
    every version, and the candidates quarantined for failing an error-severity check. Failing-row samples
    (personal data masked) only for the people of the dataset's domain; `samples_withheld` says why when not."""
    return catalog.quality(address, reader=caller)


@router.get("/datasets/{address}/versions", response_model=list[Version], response_model_exclude_unset=True)
def versions(catalog: CatalogDep, address: DatasetAddress) -> list[dict[str, Any]]:
    """Every published version of a dataset, newest first, each with its quality score and summary."""
    return catalog.versions(address)


@router.get("/products/{address}", response_model=Product, response_model_exclude_unset=True)
def product(catalog: CatalogDep, caller: Caller, address: ProductAddress) -> dict[str, Any]:
    """One data product: description, owners, inputs, and each dataset with its versions."""
    return catalog.product(address, reader=caller)


@router.get("/search", response_model=SearchResult, response_model_exclude_unset=True, responses=PAGED)
def search(catalog: CatalogDep, query: SearchDep, links: Annotated[PageLinks, Depends(page_links)]) -> dict[str, Any]:
    """Ranked dataset and column hits, and facet counts over the matching datasets; `total` (and `X-Total-Count`)
    counts every hit, `Link: rel="next"` names the next page."""
    result = query.run(catalog)
    links.by_offset(result["total"], limit=query.limit, offset=query.offset)
    return result


@router.get("/lineage/{target}", response_model=Lineage, response_model_exclude_unset=True, tags=["lineage"])
def lineage(catalog: CatalogDep, target: LineageTarget,
            direction: Annotated[str, Query(description="`up`: where it comes from; `down`: where it goes.")] = "up",
            depth: Annotated[int | None, Query(ge=1, le=MAX_LINEAGE_DEPTH,
                                               description="Most steps to walk; leave out for all.")] = None,
            ) -> dict[str, Any]:
    """Column-level lineage of a dataset (every column) or of one column, in the served versions."""
    return catalog.lineage(target, direction=direction, depth=depth)


@router.get("/impact/{target}", response_model=Impact, response_model_exclude_unset=True, tags=["lineage"])
def impact(catalog: CatalogDep, target: ColumnAddress,
           change: Annotated[str, Query(description="`drop`, `rename` or `retype` the column.")] = "drop",
           ) -> dict[str, Any]:
    """Who a change to one column would hurt: its own dataset and the downstream datasets and columns, their
    products, domains and owners, the principals holding active grants on them and the people who queried them
    in the last 30 days."""
    return catalog.impact(target, change=change)


@router.get("/findings", response_model=list[Finding], response_model_exclude_unset=True, tags=["lineage"])
def findings(catalog: CatalogDep,
             dataset: Annotated[str | None, Query(description="Only this dataset, `<domain>.<product>.<dataset>`.",
                                                  examples=[DATASET_EXAMPLE])] = None) -> list[dict[str, Any]]:
    """Lineage and privacy findings on the served versions: columns the build could not trace, and columns
    derived from personal data that their contract does not declare personal."""
    return catalog.findings(dataset or None)
