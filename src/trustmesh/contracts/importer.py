"""Turn an existing ODCS v3.1.0 contract into a product skeleton in the mesh, laid out like `trustmesh new product`.

Every schema object becomes an output dataset with its own contract, SQL and input port. What had to change
for the mesh (names, classification levels, types DuckDB cannot publish) is written into the contract as a
comment at its top and as `source…` custom properties, so nothing of the original is lost silently.

    >>> import_contract(Path("my-mesh"), Path("orders.odcs.yaml"), domain="sales", product=None)
    PosixPath('my-mesh/domains/sales/products/orders-dp/product.yaml')
"""

from __future__ import annotations

import copy
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustmesh.descriptors.loader import load_mesh, standard_problems
from trustmesh.descriptors.models import DATASET_PATTERN, NAME_PATTERN, ClassificationScheme, DomainSpec
from trustmesh.engines.duckdb import DEFAULT_TYPES
from trustmesh.errors import UsageError
from trustmesh.standards import ODCS
from trustmesh.yamlfile import dump_yaml, load_yaml, readable_path

# Common labels of other classification schemes → the IM8 level that keeps at least the same protection.
LEVEL_MAP = {"public": "official-open", "open": "official-open", "unclassified": "official-open",
             "internal": "official-closed", "official": "official-closed", "restricted": "restricted",
             "sensitive": "restricted", "confidential": "confidential", "secret": "secret",
             "top-secret": "top-secret", "top secret": "top-secret"}
FALLBACK_LEVEL = "official-closed"
CAST_TYPES = {**DEFAULT_TYPES, "object": "JSON"}  # an imported object column keeps its structure
_SAFE_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?(\[\])?$")


def import_contract(root: Path, contract_path: Path, *, domain: str | None = None, product: str | None = None) -> Path:
    """Write domains/<domain>/products/<product>/ from the contract; returns the new product.yaml."""
    root = root.resolve()
    mesh, _ = load_mesh(root, strict=False)
    source = _read(contract_path)
    domain = _name("domain", domain, source.get("domain"), NAME_PATTERN, "-", "--domain")
    product = _name("product", product, source.get("dataProduct") or source.get("name"), NAME_PATTERN, "-",
                    "--product")
    domain_dir = root / "domains" / domain
    if not (domain_dir / "domain.yaml").is_file():
        raise UsageError(f"no domain {domain} in {root} — fix: run `trustmesh new domain {domain}` first, "
                         "or pass --domain to import into an existing domain")
    spec = mesh.domains.get(domain)
    if spec is None:
        raise UsageError(f"domains/{domain}/domain.yaml has problems — fix: run `trustmesh validate` and correct it")
    folder = domain_dir / "products" / product
    if (folder / "product.yaml").exists() or (folder.is_dir() and any(folder.iterdir())):
        raise UsageError(f"product {domain}/{product} already exists ({folder}) — fix: pass --product NAME to "
                         "import it under another name, or remove that folder first")
    datasets = _datasets(source, contract_path)
    owner = _product_owner(spec)
    fit = _Fit(mesh.config.governance.classification, set(mesh.glossary_terms(domain)), PublishableType(root))
    try:
        written = [_dataset_files(source, contract_path.name, obj, name, domain, product, owner, fit)
                   for name, obj in datasets]
    finally:
        fit.publishable.close()
    for sub in ("contracts", "sql", "data"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for files in written:
        for rel, text in files.items():
            (folder / rel).write_text(text, encoding="utf-8")
    (folder / "product.yaml").write_text(dump_yaml(_product_yaml(source, contract_path.name, domain, product, owner,
                                                                 datasets)), encoding="utf-8")
    return folder / "product.yaml"


def _read(path: Path) -> dict[str, Any]:
    """The contract as data, or a UsageError listing every way it is not valid ODCS v3.1.0."""
    doc, problem = load_yaml(path, str(path))
    if problem is not None:
        raise UsageError(f"cannot import {path}: {problem}")
    assert doc is not None
    problems = standard_problems(doc, ODCS, "ODCS v3.1.0")
    if problems:
        listed = "\n  ".join(str(p) for p in problems)
        raise UsageError(f"{path} is not a valid ODCS v3.1.0 contract ({len(problems)} problem"
                         f"{'s' if len(problems) != 1 else ''}):\n  {listed}\nfix: correct the contract and import it again")
    return dict(doc.data)


def normalise_name(value: str, pattern: str, separator: str) -> str:
    """`My Quantum` → `my-quantum` (or `my_quantum` for datasets): the mesh's name pattern."""
    text = re.sub(r"[^a-z0-9_-]+" if separator == "-" else r"[^a-z0-9_]+", separator, value.strip().lower())
    text = text.strip("-_")
    if text and not text[0].isalpha():
        text = f"x{separator}{text}"
    return text if re.match(pattern, text) else ""


def _name(kind: str, given: str | None, found: object, pattern: str, separator: str, option: str) -> str:
    if given is not None:
        if not re.match(pattern, given):
            raise UsageError(f"{kind} name {given!r} is not valid — fix: use lower-case letters, digits, '-' and '_', "
                             "starting with a letter")
        return given
    name = normalise_name(str(found), pattern, separator) if found else ""
    if not name:
        raise UsageError(f"the contract names no usable {kind} ({found!r}) — fix: pass {option} NAME")
    return name


def _datasets(source: dict[str, Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(dataset name, schema object) for each schema object; every problem at once."""
    objects = [o for o in source.get("schema") or [] if isinstance(o, dict)]
    if not objects:
        raise UsageError(f"{path} describes no dataset (its `schema` is empty) — fix: add a schema object with "
                         "its properties, one per dataset")
    problems, out, seen = [], [], set()
    for obj in objects:
        name = normalise_name(str(obj.get("name", "")), DATASET_PATTERN, "_")
        where = readable_path(source, ["schema", objects.index(obj)])
        if not name:
            problems.append(f"{where}: {obj.get('name')!r} cannot be made a dataset name")
        elif name in seen:
            problems.append(f"{where}: two schema objects become the dataset {name!r}")
        props = [p for p in obj.get("properties") or [] if isinstance(p, dict)]
        if not props:
            problems.append(f"{where}: no properties (columns)")
        names = [p.get("name") for p in props]
        dupes = sorted({str(n) for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"{where}: duplicate columns {', '.join(dupes)}")
        seen.add(name)
        out.append((name, obj))
    if problems:
        raise UsageError(f"cannot import {path}:\n  " + "\n  ".join(problems)
                         + "\nfix: give each schema object a distinct name and its own columns")
    return out


def _product_owner(domain: DomainSpec) -> str:
    """The person who owns the imported product: the domain's data product owner (or, lacking one, its owner)."""
    for role in ("data-product-owner", "data-owner", "data-domain-steward"):
        people = domain.people_in_role(role)
        if people:
            return people[0].id
    if domain.people:
        return domain.people[0].id
    raise UsageError(f"domains/{domain.name}/domain.yaml names no people — fix: add a data-product-owner to it")


class PublishableType:
    """Whether the engine can publish a physicalType as a column of a logical type: DuckDB decides, not a list."""

    def __init__(self, root: Path) -> None:
        from trustmesh.engines import get_engine

        self.engine = get_engine("duckdb", [str(root)])
        self.session = self.engine.session()

    def __call__(self, physical: str, logical: str) -> bool:
        from trustmesh.engines import QueryFailed, type_fits

        if not _SAFE_TYPE.match(physical.strip()):
            return False
        try:
            described = self.session.describe(f"SELECT CAST(NULL AS {physical}) AS c")
        except QueryFailed:
            return False
        return type_fits(logical, self.engine.logical_type(described[0].type))

    def close(self) -> None:
        self.session.close()


@dataclass(frozen=True)
class _Fit:
    """What a column must fit in this mesh."""

    scheme: ClassificationScheme
    terms: set[str]
    publishable: PublishableType


_LOGICAL_FROM_PHYSICAL = (
    (re.compile(r"INT|SERIAL|^(DEC|NUM)\w*\(\s*\d+\s*(,\s*0\s*)?\)$"), "integer"),  # NUMBER(10): no scale
    (re.compile(r"DEC|NUM|FLOAT|DOUBLE|REAL|MONEY"), "number"),
    (re.compile(r"BOOL|BIT"), "boolean"), (re.compile(r"TIMESTAMP|DATETIME"), "timestamp"),
    (re.compile(r"^DATE"), "date"), (re.compile(r"^TIME"), "time"),
)


def _logical_from(physical: object) -> str:
    text = str(physical or "").upper()
    return next((logical for pattern, logical in _LOGICAL_FROM_PHYSICAL if pattern.search(text)), "string")


def _set_cp(prop: dict[str, Any], name: str, value: Any) -> None:
    items = [cp for cp in prop.get("customProperties") or [] if not (isinstance(cp, dict) and cp.get("property") == name)]
    prop["customProperties"] = [*items, {"property": name, "value": value}]


def _fit_column(prop: dict[str, Any], where: str, fit: _Fit, notes: list[str]) -> tuple[dict[str, Any], str]:
    """The column made valid for the mesh, and the DuckDB type its SQL casts to."""
    scheme = fit.scheme
    prop = copy.deepcopy(prop)
    if "logicalType" not in prop:
        prop["logicalType"] = _logical_from(prop.get("physicalType"))
        notes.append(f"{where}.logicalType set to {prop['logicalType']} (trustmesh needs one; from physicalType "
                     f"{prop.get('physicalType') or '(none)'})")
    logical = str(prop["logicalType"])
    level = prop.get("classification")
    if level is not None and level not in scheme.levels:
        mapped = LEVEL_MAP.get(str(level).strip().lower(), FALLBACK_LEVEL)
        if mapped not in scheme.levels:
            mapped = scheme.levels[min(1, len(scheme.levels) - 1)]
        prop["classification"] = mapped
        _set_cp(prop, "sourceClassification", level)
        notes.append(f"{where}.classification {level} → {mapped} (the mesh's levels are {', '.join(scheme.levels)})")
    physical = prop.get("physicalType")
    cast = CAST_TYPES.get(logical, "VARCHAR")
    if physical is not None:
        if fit.publishable(str(physical), logical):
            cast = str(physical)
        else:
            del prop["physicalType"]
            _set_cp(prop, "sourcePhysicalType", physical)
            notes.append(f"{where}.physicalType {physical} moved to customProperties sourcePhysicalType "
                         f"(DuckDB cannot publish it as {logical}); the column is published as {cast}")
    allowed = {"sensitivity": set(scheme.sensitivities), "piiType": set(scheme.pii_types), "glossaryTerm": fit.terms}
    for cp in prop.get("customProperties") or []:
        name = cp.get("property") if isinstance(cp, dict) else None
        if name in allowed and cp.get("value") not in allowed[name]:
            cp["property"] = f"source{name[0].upper()}{name[1:]}"
            notes.append(f"{where}.customProperties {name} {cp.get('value')!r} renamed {cp['property']} "
                         "(not known to this mesh)")
    return prop, cast


def _dataset_files(source: dict[str, Any], source_name: str, obj: dict[str, Any], dataset: str, domain: str,
                   product: str, owner: str, fit: _Fit) -> dict[str, str]:
    """The contract, SQL and header-only CSV of one dataset, as {relative path: text}."""
    from trustmesh.engines.duckdb import quote

    address = f"{domain}.{product}.{dataset}"
    notes = [f"id, domain, dataProduct and name set to the trustmesh address {address} (they were "
             f"{source.get('id')!r}, {source.get('domain')!r}, {source.get('dataProduct')!r}, {source.get('name')!r})"]
    if source.get("servers"):
        notes.append("servers removed: trustmesh serves the data (`trustmesh contract export` adds the server)")
    if source.get("team"):
        notes.append(f"team set to the product owner {owner}; the original is in customProperties sourceTeam")
    obj = copy.deepcopy(obj)
    original_name = obj.get("name")
    if original_name != dataset:
        notes.append(f"schema object {obj.get('name')!r} named {dataset!r} (a dataset name is a SQL identifier)")
        obj["name"] = dataset
    casts: list[tuple[str, str]] = []
    props = []
    for prop in obj.get("properties") or []:
        fitted, cast = _fit_column(prop, f"schema[{dataset}].properties[{prop.get('name')}]", fit, notes)
        props.append(fitted)
        casts.append((str(fitted["name"]), cast))
    obj["properties"] = props
    contract: dict[str, Any] = {"apiVersion": "v3.1.0", "kind": "DataContract", "id": address, "name": dataset,
                                "version": source["version"], "status": source["status"], "domain": domain,
                                "dataProduct": product}
    skipped = {"servers", "schema", "team", "customProperties", *contract}
    contract.update({k: copy.deepcopy(v) for k, v in source.items() if k not in skipped})
    contract["schema"] = [obj]
    team = source.get("team")
    contract["team"] = {"name": (team.get("name") if isinstance(team, dict) else None) or f"{product} team",
                        "members": [{"username": owner, "role": "data-product-owner"}]}
    imported = {"file": source_name, "id": source.get("id"), "domain": source.get("domain"),
                "dataProduct": source.get("dataProduct"), "schemaObject": original_name}
    extra = [{"property": "importedFrom", "value": imported}] + (
        [{"property": "sourceTeam", "value": team}] if team else [])
    contract["customProperties"] = [*copy.deepcopy(source.get("customProperties") or []), *extra]
    header = [f"# Imported by `trustmesh contract import` from {source_name}. Changed to fit the mesh:"]
    header += [f"#   - {' '.join(note.split())}" for note in notes]  # one comment line each, whatever the values
    sql = (f"-- Imported from {source_name}: the SELECT producing {dataset}. It reads the input port raw_{dataset}\n"
           f"-- (data/{dataset}.csv, only a header so far): point the port at the real source, then adapt the casts.\n"
           "SELECT\n"
           + ",\n".join(f"    CAST({quote(name)} AS {cast}) AS {quote(name)}" for name, cast in casts)
           + f"\nFROM raw_{dataset}\n")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([name for name, _ in casts])
    return {
        f"contracts/{dataset}.odcs.yaml": "\n".join(header) + "\n" + dump_yaml(contract),
        f"sql/{dataset}.sql": sql,
        f"data/{dataset}.csv": buffer.getvalue(),
    }


def _product_yaml(source: dict[str, Any], source_name: str, domain: str, product: str, owner: str,
                  datasets: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    found = source.get("description")
    described: dict[str, Any] = found if isinstance(found, dict) else {}
    description = {key: str(described.get(key) or default) for key, default in (
        ("purpose", f"What {product} is for, in one sentence (imported from {source_name})."),
        ("usage", "How consumers should use it."),
        ("limitations", "What it does not cover."))}
    version = str(source.get("version", "0.1.0"))
    return {
        "apiVersion": "v1.0.0", "kind": "DataProduct", "id": f"{domain}.{product}", "name": product, "domain": domain,
        "status": "draft", "version": version, "description": description,
        "tags": [str(t) for t in source.get("tags") or []],
        "team": {"name": f"{product} team", "members": [{"username": owner, "role": "data-product-owner"}]},
        "customProperties": [{"property": "productKind", "value": "source-aligned"},
                             {"property": "tier", "value": "gold"}],
        "inputPorts": [{"name": f"raw_{d}", "version": "1.0.0", "contractId": f"source.{domain}.{product}.raw_{d}",
                        "customProperties": [{"property": "source", "value": {
                            # only a header so far, read as text: the SQL casts each column
                            "type": "file", "format": "csv", "path": f"data/{d}.csv",
                            "options": {"all_varchar": True}}}]} for d, _ in datasets],
        "outputPorts": [{"name": d, "version": version, "type": "tables",
                         "description": str(obj.get("description") or f"The {d} dataset."),
                         "contractId": f"{domain}.{product}.{d}"} for d, obj in datasets],
    }
