"""Contracts and quality rules over HTTP: a published version's ODCS contract, what the repo's contract changes
against it, and the SQL the quality checks compile to — `trustmesh contract export/diff` and
`trustmesh quality --show-sql`. Catalog metadata: any caller with a token may read them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from trustmesh.descriptors.addresses import normalise_address
from trustmesh.web.api import DATASET_EXAMPLE, ERRORS, DatasetAddress, problem
from trustmesh.web.auth import WorkspaceDep, current_principal
from trustmesh.web.caching import ETagRoute
from trustmesh.yamlfile import dump_yaml

YAML = "application/yaml"
CONTRACT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: problem("No such dataset or version in the catalog (or in the repo, for a diff), or "
                                         "the contract of that version is no longer kept"),
    422: problem("A parameter does not fit its schema, or the repo's contract has problems"),
}
router = APIRouter(prefix="/api/v1", tags=["contracts"], responses=CONTRACT_ERRORS,
                   dependencies=[Depends(current_principal)], route_class=ETagRoute)
Version = Annotated[int | None, Query(ge=1, le=2**31 - 1, description="A published version (default: the served one).",
                                      examples=[1])]


class ContractDocument(BaseModel):
    """An ODCS v3.1.0 data contract: the registered document, with a `servers` entry for the version's files."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_version: str = Field(alias="apiVersion", examples=["v3.1.0"])
    kind: str = Field(examples=["DataContract"])
    id: str = Field(description="The dataset's address.", examples=[DATASET_EXAMPLE])
    version: str = Field(description="The contract's own (semantic) version.", examples=["1.0.0"])
    status: str = Field(examples=["active"])
    schema_: list[dict[str, Any]] = Field(alias="schema", description="The schema object and its properties "
                                                                     "(columns), as ODCS writes them.")
    servers: list[dict[str, Any]] = Field(description="One `local` Parquet server: exactly this version's data "
                                                      "files, as paths on the trustmesh server.")
    custom_properties: list[dict[str, Any]] = Field(alias="customProperties", description="Includes "
                                                    "`trustmeshAddress` and `trustmeshVersion`.")


class ContractSource(BaseModel):
    """Where one side of a diff came from."""

    source: Literal["catalog", "repo", "file"] = Field(description="catalog: registered for a published version; "
                                                                   "repo: the mesh repo's contract now.")
    version: int | None = Field(None, description="The published version (catalog only).", examples=[1])
    file: str | None = Field(None, description="The contract file (repo only).",
                             examples=["domains/bts/products/flights-dp/contracts/flights.odcs.yaml"])
    contract_version: str = Field(description="The contract's own version.", examples=["1.0.0"])


class ContractChange(BaseModel):
    kind: Literal["breaking", "compatible"]
    path: str = Field(description="Where in the contract.", examples=["schema[flights].properties[dep_delay]"
                                                                      ".logicalType"])
    what: str = Field(description="The change.", examples=["integer → string"])
    reason: str = Field(description="Why it does or does not break the dataset's consumers.")


class ContractDiffResult(BaseModel):
    """What the repo's contract changes against a published version's, and whether it breaks consumers."""

    address: str = Field(examples=[DATASET_EXAMPLE])
    old: ContractSource
    new: ContractSource
    old_version: str = Field(description="The old contract's version.", examples=["1.0.0"])
    new_version: str = Field(description="The repo contract's version.", examples=["1.1.0"])
    breaking: bool = Field(description="Any change breaks the dataset's current consumers.")
    requires_major_bump: bool = Field(description="A breaking change ships without a major version bump: "
                                                  "`validate` and `build` refuse it.")
    changes: list[ContractChange] = Field(description="Every difference, with its kind and reason.")
    fix: str | None = Field(description="What to do when a major bump is missing; none: nothing.",
                            examples=["set `version: 2.0.0` in domains/bts/products/flights-dp/contracts/"
                                      "flights.odcs.yaml, and tell the consumers"])


class BusinessRule(BaseModel):
    rule: str = Field(description="The rule's id.", examples=["contract/flights/no-negative-distance"])
    sql: str = Field(description="Its guarded query, bound to the candidate file.")


class QualitySql(BaseModel):
    """The SQL a build runs to check a dataset: one scan for every metric, and one query per business rule."""

    address: str = Field(examples=[DATASET_EXAMPLE])
    sql: str = Field(description="Every statement, formatted and commented, as `trustmesh quality --show-sql` "
                                 "prints it.")
    scan_sql: str = Field(description="The one SELECT computing every metric over the candidate file.")
    metrics: list[str] = Field(description="The scan's output columns, in order (`row_count` first).",
                               examples=[["row_count", "m1", "m2"]])
    rules: dict[str, str] = Field(description="Rule id → the scan column answering it (identical metrics are "
                                              "computed once).", examples=[{"schema/flight_id/required": "m1"}])
    business_rules: list[BusinessRule] = Field(description="`type: sql` rules, each run apart.")
    type_rules: list[str] = Field(description="Rules checked on the file's schema, not by a query "
                                              "(e.g. `utcTimestamps`).")
    problems: list[dict[str, Any]] = Field(description="Rules that could not be compiled, with the fix.")


@router.get("/datasets/{address}/contract", response_model=ContractDocument, response_model_exclude_unset=True,
            responses={200: {"content": {YAML: {}}, "description": "The contract as JSON, or YAML with `format=yaml`."}})
def contract(ws: WorkspaceDep, address: DatasetAddress, version: Version = None,
             format: Annotated[Literal["json", "yaml"], Query(description="json, or yaml (as `trustmesh contract "
                                                                          "export` writes it).")] = "json",
             ) -> Any:
    """The ODCS contract of a published version (default: the served one), standalone, with a server pointing at
    that version's Parquet files — what `trustmesh contract export` writes, for outside tools to test."""
    exported = ws.export_contract(address, version)
    if format == "yaml":
        return Response(dump_yaml(exported.document), media_type=YAML)
    return exported.document


@router.get("/datasets/{address}/contract/diff", response_model=ContractDiffResult, response_model_exclude_unset=True)
def contract_diff(ws: WorkspaceDep, address: DatasetAddress, against: Version = None) -> dict[str, Any]:
    """What the repo's contract (what the next build publishes) changes against the contract registered for a
    published version (default: the served one): each change, breaking or compatible, and whether the contract
    version needs a major bump — `trustmesh contract diff --against N`."""
    comparison = ws.contract_diff(address, against)
    return {**comparison.to_dict(), "fix": comparison.fix}


@router.get("/datasets/{address}/quality/sql", response_model=QualitySql, tags=["quality"])
def quality_sql(ws: WorkspaceDep, address: DatasetAddress) -> dict[str, Any]:
    """The compiled quality checks of a dataset, from the repo's contract, schema and sector benchmarks:
    exactly what the next build runs over its candidate file — `trustmesh quality --show-sql`."""
    return {"address": normalise_address(address), **ws.compiled_quality(address).to_dict()}
