"""Typed models of mesh.yaml, domain.yaml, ODPS products and ODCS contracts, in the product's words."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z][a-z0-9_-]*$"
DATASET_PATTERN = r"^[a-z][a-z0-9_]*$"

IM8_LEVELS = ["official-open", "official-closed", "restricted", "confidential", "secret", "top-secret"]
SENSITIVITIES = ["non-sensitive", "sensitive-normal", "sensitive-high"]
PII_TYPES = ["nric", "name", "email", "phone", "address", "postal-code", "date-of-birth"]
DOMAIN_ROLES = ["data-owner", "data-domain-steward", "data-product-owner", "developer"]
MESH_ROLES = ["governance-admin", "auditor"]
PRODUCT_KINDS = ["source-aligned", "aggregated", "consumer-aligned"]
TIERS = ["bronze", "silver", "gold"]
WAREHOUSE_SCHEMES = ["s3"]
ENGINES = ["duckdb", "spark"]
PURPOSE_CATEGORIES = ["policy-analysis", "research", "statistics", "operations", "service-delivery",
                      "audit-and-compliance", "product-input"]


class Strict(BaseModel):
    """Descriptor sections owned by trustmesh: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GlossaryTerm(Strict):
    term: str = Field(pattern=NAME_PATTERN)
    definition: str
    synonyms: list[str] = []


class Person(Strict):
    """Someone who signs in, asks and decides; declared once, in mesh.yaml or in their domain's domain.yaml."""

    id: str = Field(pattern=r"^[a-z][a-z0-9._-]*$")
    name: str
    email: str | None = None
    roles: list[str] = []
    clearance: str | None = None  # mesh.yaml only; a domain's people get theirs from access.clearances
    attributes: dict[str, Any] = {}  # `agency` in mesh.yaml only; a domain's people read as their domain


class ClassificationScheme(Strict):
    levels: list[str] = Field(default_factory=lambda: list(IM8_LEVELS), min_length=1)
    sensitivities: list[str] = Field(default_factory=lambda: list(SENSITIVITIES), min_length=1)
    pii_types: list[str] = Field(default_factory=lambda: list(PII_TYPES), alias="piiTypes")


class Governance(Strict):
    classification: ClassificationScheme = Field(default_factory=ClassificationScheme)
    glossary: list[GlossaryTerm] = []


class SparkSettings(Strict):
    """Where the spark engine runs: local mode on this machine by default, or a cluster's master URL."""

    master: str = "local[*]"  # spark://host:7077, yarn, k8s://…, or local[N]
    conf: dict[str, str] = {}  # extra Spark settings, e.g. spark.executor.memory: 8g


class Platform(Strict):
    metastore: str = "sqlite:///.trustmesh/metastore.db"
    metastore_env: str = Field("TRUSTMESH_METASTORE_URL", alias="metastoreEnv")
    warehouse: str = ".trustmesh/warehouse"
    engine: Literal["duckdb", "spark"] = "duckdb"  # a product may choose its own (customProperties: engine)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    openlineage_url: str | None = Field(None, alias="openlineageUrl")  # else events go to a JSONL file
    openlineage_api_key_env: str | None = Field(None, alias="openlineageApiKeyEnv")
    oidc: Oidc | None = None
    object_storage: ObjectStorage | None = Field(None, alias="objectStorage")  # for an s3:// warehouse

    @field_validator("warehouse")
    @classmethod
    def _warehouse_location(cls, value: str) -> str:
        """A folder path, or s3://bucket/prefix; any other URL scheme is refused, naming what is supported."""
        scheme, sep, rest = value.partition("://")
        if not sep:
            return value
        if scheme.lower() != "s3":
            raise PydanticCustomError("warehouse_scheme", "warehouse {value} uses {scheme}://, which is not supported",
                                      {"value": value, "scheme": scheme, "fix": "use a local folder path, or "
                                       f"{' or '.join(s + '://bucket/prefix' for s in WAREHOUSE_SCHEMES)} for AWS S3 "
                                       "or an S3-compatible store (MinIO, Ceph...)"})
        if not rest.split("/", 1)[0]:
            raise PydanticCustomError("warehouse_bucket", "warehouse {value} names no bucket",
                                      {"value": value, "fix": "write it as s3://bucket/prefix, e.g. s3://mesh-data/prod"})
        return value

    @model_validator(mode="after")
    def _storage_for_remote(self) -> Platform:
        if self.object_storage is not None and "://" not in self.warehouse:
            raise PydanticCustomError("object_storage_unused", "objectStorage is set but the warehouse {value} is a local "
                                      "folder", {"value": self.warehouse, "fix": "set platform.warehouse to "
                                                 "s3://bucket/prefix, or remove platform.objectStorage"})
        return self


class ObjectStorage(Strict):
    """S3-compatible object storage holding an s3:// warehouse. Credentials come from the environment only."""

    endpoint: str | None = None  # e.g. http://127.0.0.1:9000 (MinIO, Ceph, ...); None: AWS S3 itself
    region: str = "us-east-1"
    access_key_env: str = Field("AWS_ACCESS_KEY_ID", alias="accessKeyEnv")  # the variable holding the access key
    secret_key_env: str = Field("AWS_SECRET_ACCESS_KEY", alias="secretKeyEnv")  # ... and the secret key

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        scheme, sep, rest = (value or "").partition("://")
        if value is not None and (not sep or scheme not in ("http", "https") or not rest.strip("/")):
            raise PydanticCustomError("endpoint_url", "endpoint {value} is not an http(s) URL",
                                      {"value": value, "fix": "write it as http://host:port or https://host, e.g. "
                                       "http://127.0.0.1:9000; leave it out for AWS S3"})
        return value


# OIDC claims a user (or anyone at the issuer) can set or change, so they cannot say who a person is.
MUTABLE_CLAIMS = ("preferred_username", "email", "name", "nickname", "given_name", "family_name", "upn", "unique_name")


class Oidc(Strict):
    """OIDC/JWT bearer tokens, verified offline against a key set file (JWKS) from the issuer."""

    issuer: str
    audience: str
    jwks: str  # path to the issuer's JWKS document, relative to the mesh folder
    # The claim whose value is the person's id in the mesh: immutable and unique at the issuer (`sub`, or a claim
    # the issuer's administrators set), never one a user can change.
    claim: str = "sub"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    # browser sign-in by the authorization-code flow; without these the sign-in page takes a pasted ID token
    authorization_endpoint: str | None = Field(None, alias="authorizationEndpoint")
    token_endpoint: str | None = Field(None, alias="tokenEndpoint")
    client_id: str | None = Field(None, alias="clientId")
    client_secret_env: str | None = Field(None, alias="clientSecretEnv")  # the variable holding the secret

    @field_validator("claim")
    @classmethod
    def _immutable_claim(cls, value: str) -> str:
        if value in MUTABLE_CLAIMS:
            raise PydanticCustomError(
                "mutable_claim", "claim {value} names a person by a value users can change and others can share",
                {"value": value, "fix": "use sub (the default: the issuer's subject must then be the person's id), or "
                 "a claim the issuer's administrators set to the person's id, e.g. claim: trustmesh_id"})
        return value

    @property
    def browser_sign_in(self) -> bool:
        return bool(self.authorization_endpoint and self.token_endpoint and self.client_id)


class AccessSettings(Strict):
    """The access workflow's rules for this mesh."""

    default_clearance: str = Field("restricted", alias="defaultClearance")  # for people who declare none
    max_days: int = Field(365, alias="maxDays", ge=1, le=3650)  # the longest grant anyone may request
    request_days: int = Field(30, alias="requestDays", ge=1, le=365)  # a request still pending then expires
    two_level_from: str = Field("confidential", alias="twoLevelFrom")  # and sensitive-high, and any unmask
    purpose_categories: list[str] = Field(default_factory=lambda: list(PURPOSE_CATEGORIES), min_length=1,
                                          alias="purposeCategories")
    # The governance office's word on people declared in a domain.yaml, which may set neither:
    clearances: dict[str, str] = {}  # person id -> IM8 level (else defaultClearance)
    agencies: dict[str, str] = {}  # person id -> the agency they read as (else their domain)


class LinkagePurpose(Strict):
    """A registered purpose for privacy-preserving linkage: its domains tokenise NRICs under one shared key.

    A member domain's product SQL calls `person_token('<name>', nric)`; the result is
    HMAC-SHA256(K_name, canonical NRIC), so a Trusted Centre can join the domains' outputs on the token
    without ever holding a raw identifier, and without the key.
    """

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    domains: list[str] = Field(min_length=2)

    @property
    def key_id(self) -> str:
        return f"linkage:{self.name}"


class MeshConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    platform: Platform = Field(default_factory=lambda: Platform.model_validate({}))
    governance: Governance = Field(default_factory=Governance)
    access: AccessSettings = Field(default_factory=lambda: AccessSettings.model_validate({}))
    linkage: list[LinkagePurpose] = []
    people: list[Person] = []


class BenchmarkScope(Strict):
    """Which columns a sector benchmark applies to; every condition given must hold."""

    primary_key: bool | None = Field(None, alias="primaryKey")
    logical_type: str | None = Field(None, alias="logicalType")
    column: str | None = None  # a regular expression over column names
    pii: bool | None = None


class QualityBenchmark(Strict):
    """A Trusted Centre's quality rule for every product of its sector; products cannot switch it off."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    applies_to: BenchmarkScope = Field(default_factory=lambda: BenchmarkScope.model_validate({}), alias="appliesTo")
    metric: str
    severity: str = "error"
    dimension: str | None = None
    unit: str = "rows"
    arguments: dict[str, Any] = {}
    must_be: Any = Field(None, alias="mustBe")
    must_not_be: Any = Field(None, alias="mustNotBe")
    must_be_greater_than: Any = Field(None, alias="mustBeGreaterThan")
    must_be_greater_or_equal_to: Any = Field(None, alias="mustBeGreaterOrEqualTo")
    must_be_less_than: Any = Field(None, alias="mustBeLessThan")
    must_be_less_or_equal_to: Any = Field(None, alias="mustBeLessOrEqualTo")
    must_be_between: Any = Field(None, alias="mustBeBetween")
    must_not_be_between: Any = Field(None, alias="mustNotBeBetween")

    def rule(self) -> dict[str, Any]:
        """The benchmark written as an ODCS quality entry."""
        data = self.model_dump(by_alias=True, exclude_none=True, exclude={"name", "applies_to"})
        if self.metric == "utcTimestamps" and not any(k.startswith("must") for k in data):
            data["mustBe"] = 0
        return data


class DomainSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["ssot", "trusted-centre"]
    sector: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    people: list[Person] = []
    glossary: list[GlossaryTerm] = []
    quality_benchmarks: list[QualityBenchmark] = Field([], alias="qualityBenchmarks")

    def people_in_role(self, role: str) -> list[Person]:
        return [p for p in self.people if role in p.roles]


class SourceSpec(BaseModel):
    """Where an input port reads from: a file, a database table, or another product's dataset."""

    type: Literal["file", "database", "product"]
    path: str | None = None
    format: Literal["csv", "parquet", "json"] | None = None
    options: dict[str, Any] = {}
    url_env: str | None = Field(None, alias="urlEnv")
    table: str | None = None
    address: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputPort(BaseModel):
    name: str
    version: str
    contract_id: str
    source: SourceSpec
    line: int | None = Field(None, exclude=True)  # the line of its `source` in product.yaml, for problems


class Column(BaseModel):
    """One property of an ODCS schema object, with trustmesh's classification fields lifted out."""

    name: str
    logical_type: str
    physical_type: str | None = None
    description: str = ""
    required: bool = False
    primary_key: bool = False
    primary_key_position: int = -1
    unique: bool = False
    classification: str | None = None
    sensitivity: str = "non-sensitive"
    pii_type: str | None = None
    glossary_term: str | None = None
    tags: list[str] = []


class Contract(BaseModel):
    """An ODCS v3.1.0 data contract for one output dataset."""

    id: str
    name: str
    version: str
    status: str
    description: dict[str, Any] = {}
    tags: list[str] = []
    dataset_description: str = ""
    columns: list[Column]
    sla: list[dict[str, Any]] = []
    file: str
    document: dict[str, Any]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def primary_key(self) -> list[str]:
        keyed = [c for c in self.columns if c.primary_key]
        return [c.name for c in sorted(keyed, key=lambda c: (c.primary_key_position, self.columns.index(c)))]


class OutputDataset(BaseModel):
    """An output port of a product and the one dataset it serves."""

    address: str
    domain: str
    product: str
    name: str
    version: str
    description: str = ""
    sql_file: str
    sql: str | None = None
    contract: Contract | None = None


class Product(BaseModel):
    """An ODPS v1.0.0 data product descriptor and the files around it."""

    address: str
    domain: str
    name: str
    kind: str
    tier: str = "gold"
    status: str
    version: str = ""
    description: dict[str, Any] = {}
    tags: list[str] = []
    team: list[dict[str, Any]] = []
    inputs: list[InputPort] = []
    outputs: list[OutputDataset] = []
    folder: Path
    file: str
    document: dict[str, Any]
    engine: str | None = None  # None: the mesh's platform.engine

    def input_named(self, name: str) -> InputPort | None:
        return next((p for p in self.inputs if p.name == name), None)

    @property
    def upstream_addresses(self) -> list[str]:
        return [p.source.address for p in self.inputs if p.source.type == "product" and p.source.address]


class Mesh(BaseModel):
    """The whole mesh repo, loaded: configuration, domains, products and their datasets."""

    root: Path
    config: MeshConfig
    domains: dict[str, DomainSpec] = {}
    products: dict[str, Product] = {}

    @property
    def datasets(self) -> dict[str, OutputDataset]:
        return {d.address: d for p in self.products.values() for d in p.outputs}

    def person(self, person_id: str) -> Person | None:
        for p in self.config.people:
            if p.id == person_id:
                return p
        for d in self.domains.values():
            for p in d.people:
                if p.id == person_id:
                    return p
        return None

    def glossary_terms(self, domain: str | None = None) -> dict[str, GlossaryTerm]:
        """Terms visible from a domain: global, the domain's sector (its Trusted Centres), its own."""
        terms = {t.term: t for t in self.config.governance.glossary}
        if domain and domain in self.domains:
            sector = self.domains[domain].sector
            for d in self.domains.values():
                if d.kind == "trusted-centre" and d.sector == sector:
                    terms.update({t.term: t for t in d.glossary})
            terms.update({t.term: t for t in self.domains[domain].glossary})
        return terms
