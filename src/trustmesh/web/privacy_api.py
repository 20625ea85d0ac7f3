"""Privacy review over HTTP: `trustmesh scan` and `trustmesh privacy kanon`, run as the caller and audited.

On a dataset both read the published files directly, so they are for the dataset's domain's custodians and
governance admins (others get 403 naming who may); k-anonymity of a governed query's result is anyone's.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from trustmesh.privacy.kanon import DEFAULT_K, SMALLEST
from trustmesh.privacy.scan import DEFAULT_SAMPLE
from trustmesh.web.access_api import AUTH_ERRORS
from trustmesh.web.api import problem
from trustmesh.web.auth import Caller, WorkspaceDep

PARTICIPANTS = "health.activity-dp.participants"
MAX_SAMPLE = 1_000_000
router = APIRouter(prefix="/api/v1/privacy", tags=["privacy"], responses={
    **{status: AUTH_ERRORS[status] for status in (400, 401, 404, 422, 503)},
    403: problem("The caller is no custodian of the dataset's domain nor a governance admin "
                                         "(the reason names who may), or the governed query was refused"),
    408: problem("The governed query ran past its time limit and was stopped")})


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScanRequest(Body):
    dataset: str = Field(min_length=1, description="`<domain>.<product>.<dataset>`", examples=[PARTICIPANTS])
    sample: int = Field(DEFAULT_SAMPLE, ge=1, le=MAX_SAMPLE, description="Rows to sample (a reproducible reservoir "
                                                                        "sample; every row when there are fewer).")
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="A published version (default: the served one).")
    record: bool = Field(False, description="Store each undeclared detection as an `undeclared-pii` finding on the "
                                            "served version (replacing the last scan's); not with `version`.")


class ColumnScan(BaseModel):
    column: str = Field(examples=["email"])
    type: str = Field(description="The column's DuckDB type.", examples=["VARCHAR"])
    non_null: int = Field(description="Non-null values in the sample.")
    candidate: str | None = Field(description="The detector that fitted best (none: no value matched any).",
                                  examples=["email"])
    detected: str | None = Field(description="The candidate, when its match rate reached the threshold.")
    matches: int
    rate: float | None = Field(description="Matches over the sampled non-null values.", examples=[0.98])
    threshold: float | None = Field(description="The rate the detector needs.", examples=[0.8])
    method: str = Field(description="How the detector decided.")
    declared: str | None = Field(description="The contract's piiType for the column.")
    status: Literal["undeclared", "declared", "declared-differently", "not-detected", "clean"] = Field(
        description="undeclared: personal data served unmasked to every reader — declare it, then rebuild.")


class ScanResult(BaseModel):
    """What the scan found in each column, against what the contract declares."""

    dataset: str = Field(examples=[PARTICIPANTS])
    version: int = Field(description="The version scanned.")
    served_version: int | None
    contract: str | None = Field(description="The contract file the declarations came from (none: the catalog's).")
    sampled: int = Field(description="Rows in the sample.")
    sample: int = Field(description="Rows asked for.")
    seed: int = Field(description="The sample's seed: the same rows every time.")
    columns: list[ColumnScan]
    detected: dict[str, str] = Field(description="Column → the personal data detected in it.")
    undeclared: list[str] = Field(description="Detected columns whose contract declares no piiType.")
    recorded: int | None = Field(description="Findings recorded (`record`); none: nothing was recorded.")
    ok: bool = Field(description="No undeclared personal data in the sample.")


class KanonRequest(Body):
    quasi: list[str] = Field(min_length=1, max_length=32, description="The quasi-identifiers: columns an attacker "
                             "could know.", examples=[["gender", "postal_code"]])
    dataset: str | None = Field(None, min_length=1, description="A dataset (its custodians), or give `sql`.",
                                examples=[PARTICIPANTS])
    sql: str | None = Field(None, min_length=1, description="Measure this governed query's result instead (run as "
                            "the caller, masked as their grants say).",
                            examples=['SELECT gender, postal_code FROM health."activity-dp".participants'])
    k: int = Field(DEFAULT_K, ge=1, le=1_000_000, description="Every combination of quasi-identifier values must be "
                                                             "shared by at least k rows.")
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="A published version of `dataset` (default: "
                                                                      "the served one).")
    max_suppression: float = Field(0.0, ge=0.0, lt=1.0, description="Share of rows the suggestion may suppress "
                                                                    "instead of generalising further.")
    smallest: int = Field(SMALLEST, ge=0, le=1000, description="How many of the smallest classes to show.")
    weight: str | None = Field(None, min_length=1, description="For an aggregate release: the column counting the "
                                                               "people each row stands for.", examples=["people"])


class KanonSource(BaseModel):
    """What was measured: a dataset version, or a governed query's result."""

    dataset: str | None = None
    version: int | None = None
    sql: str | None = None
    query_id: str | None = None
    datasets: dict[str, int] | None = Field(None, description="The query's datasets and versions.")
    masked: list[str] | None = Field(None, description="Columns the gateway masked before the query saw them.")
    truncated: bool | None = Field(None, description="The query result was cut at the row limit.")


class EquivalenceClass(BaseModel):
    values: dict[str, Any] = Field(description="The quasi-identifier values the class shares.")
    size: int = Field(description="Its rows (with a weight: the people it stands for).")


class Generalisation(BaseModel):
    generalisation: str = Field(examples=["first 2 characters"])
    sql: str = Field(examples=['left(CAST("postal_code" AS VARCHAR), 2) AS "postal_code"'])


class Step(Generalisation):
    column: str
    k: int | None
    classes: int
    rows_below_k: int


class Suggestion(BaseModel):
    """The generalisation (and row suppression) found greedily that reaches k."""

    quasi: list[str]
    k_target: int
    max_suppression: float
    reached: bool
    k_before: int | None
    k: int | None
    k_without_suppression: int | None
    rows: int
    classes: int
    rows_suppressed: int
    rows_below_k: int
    steps: list[Step]
    generalisation: dict[str, Generalisation] = Field(description="Per column: the rung taken, as SQL.")


class KanonResult(BaseModel):
    """k (the smallest class) against the target, the classes below it, and how to reach it."""

    source: KanonSource
    quasi: list[str]
    k_target: int
    k: int | None = Field(description="The smallest class; none: no rows.")
    satisfied: bool
    rows: int
    classes: int
    classes_below_k: int
    rows_below_k: int
    smallest_classes: list[EquivalenceClass]
    suggestion: Suggestion | None = Field(description="None with a weight (an aggregate release is not "
                                                      "generalised).")


@router.post("/scan", response_model=ScanResult)
def scan(body: ScanRequest, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """Find personal data in a sample of a published version and compare with its contract (NRIC/FIN, e-mail,
    phone, postal code, date of birth, person names) — `trustmesh scan`. Custodians and governance admins;
    audited as `privacy.scan`."""
    return ws.privacy.scan(caller.id, body.dataset, sample=body.sample, version=body.version,
                           record=body.record).to_dict()


@router.post("/kanon", response_model=KanonResult, response_model_exclude_unset=True)
def kanon(body: KanonRequest, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """k-anonymity over quasi-identifiers of a dataset version (custodians and governance admins; audited as
    `privacy.kanon`) or of a governed query's result (anyone; audited as the query) — `trustmesh privacy kanon`."""
    result = ws.privacy.kanon(caller.id, body.quasi, dataset=body.dataset, sql=body.sql, k=body.k,
                              version=body.version, max_suppression=body.max_suppression, smallest=body.smallest,
                              weight=body.weight).to_dict()
    return {**result, "suggestion": result["suggestion"] or None}
