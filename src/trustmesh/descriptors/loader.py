"""Load a mesh repo from disk into a `Mesh`, collecting every problem instead of stopping at the first."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trustmesh.descriptors.models import (
    DATASET_PATTERN,
    ENGINES,
    NAME_PATTERN,
    PRODUCT_KINDS,
    TIERS,
    Column,
    Contract,
    DomainSpec,
    InputPort,
    Mesh,
    MeshConfig,
    OutputDataset,
    Product,
    SourceSpec,
)
from trustmesh.descriptors.people import Declaration, role_problems, settings_problems, trust_problems
from trustmesh.errors import InvalidMesh, Problem, ProblemList
from trustmesh.standards import ODCS, ODPS, ValidCache, property_names, schema_errors
from trustmesh.yamlfile import YamlDocument, load_yaml

MESH_FILE = "mesh.yaml"


def load_mesh(root: Path, *, strict: bool = True) -> tuple[Mesh, list[Problem]]:
    """Read every descriptor under `root`. With `strict`, raise `InvalidMesh` listing all problems."""
    root = root.resolve()
    problems = ProblemList()
    if not (root / MESH_FILE).is_file():
        raise InvalidMesh(
            [Problem(str(root / MESH_FILE), f"no {MESH_FILE}: {root} is not a mesh repo",
                     fix="run `trustmesh init` here, or pass --mesh DIR / set TRUSTMESH_MESH")],
            "not a mesh",
        )
    config, mesh_doc = _load_model(root, root / MESH_FILE, MeshConfig, problems)
    mesh = Mesh(root=root, config=config or MeshConfig(name="unnamed"))
    cache = ValidCache(root / ".trustmesh" / "cache")
    docs = {MESH_FILE: mesh_doc} if mesh_doc is not None else {}
    people = [Declaration(p, i, None, MESH_FILE) for i, p in enumerate(mesh.config.people)]
    domains_dir = root / "domains"
    for folder in sorted(p for p in domains_dir.glob("*") if p.is_dir()) if domains_dir.is_dir() else []:
        loaded = _load_domain(root, folder, problems)
        if loaded is not None:
            domain, doc = loaded
            mesh.domains[domain.name] = domain
            docs[doc.file] = doc
            people += [Declaration(p, i, domain.name, doc.file) for i, p in enumerate(domain.people)]
    problems.extend(role_problems(people, docs) + trust_problems(people, docs))
    problems.extend(settings_problems(mesh, people, mesh_doc))
    for domain_name in sorted(mesh.domains):
        products_dir = domains_dir / domain_name / "products"
        for folder in sorted(p for p in products_dir.glob("*") if p.is_dir()) if products_dir.is_dir() else []:
            product = _load_product(mesh, folder, problems, cache)
            if product is not None:
                if product.address in mesh.products:
                    problems.add(product.file, f"duplicate product address {product.address}",
                                 path="id", fix="give each product a unique id <domain>.<product>")
                mesh.products[product.address] = product
    cache.save()
    if strict:
        problems.raise_if_any()
    return mesh, problems.items


def load_config(root: Path) -> MeshConfig:
    """Only mesh.yaml; raises InvalidMesh when it is missing or wrong."""
    root = root.resolve()
    problems = ProblemList()
    if not (root / MESH_FILE).is_file():
        load_mesh(root)  # raises the "not a mesh" error with its fix
    config, _ = _load_model(root, root / MESH_FILE, MeshConfig, problems)
    problems.raise_if_any()
    assert config is not None
    return config  # type: ignore[no-any-return]


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _load_model(
    root: Path, path: Path, model: type[BaseModel], problems: ProblemList
) -> tuple[Any, YamlDocument | None]:
    """The file as `model`, and its document (for lines); None for what could not be read."""
    doc, problem = load_yaml(path, _rel(root, path))
    if problem:
        problems.extend([problem])
        return None, None
    assert doc is not None
    try:
        return model.model_validate(doc.data), doc
    except ValidationError as exc:
        problems.extend(pydantic_problems(doc, exc, model))
        return None, None


def pydantic_problems(doc: YamlDocument, exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Turn pydantic's errors into Problems with lines, readable paths and fixes."""
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            key = loc[-1]
            message = f"unknown key {key!r}"
            fix = "remove it or correct its spelling"
            known = _known_keys(model, loc[:-1])
            close = difflib.get_close_matches(str(key), known, n=1)
            if close:
                fix = f"did you mean {close[0]!r}?"
            elif known:
                fix += f" (known keys: {', '.join(known)})"
            out.append(doc.problem(loc, message, fix))
        elif kind == "missing":
            out.append(doc.problem(loc[:-1], f"missing required key {loc[-1]!r}", f"add `{loc[-1]}:`"))
        else:
            value = err.get("input")
            shown = f" (got {value!r})" if not isinstance(value, dict | list) else ""
            out.append(doc.problem(loc, f"{err['msg']}{shown}", _fix_for(err)))
    return out


def _fix_for(err: Any) -> str:
    ctx = err.get("ctx") or {}
    if "fix" in ctx:
        return str(ctx["fix"])
    if "expected" in ctx:
        return f"use {ctx['expected']}"
    if "pattern" in ctx:
        return "use lower-case letters, digits, '-' and '_', starting with a letter"
    return "correct the value"


def _known_keys(model: type[BaseModel], loc: list[Any]) -> list[str]:
    current: Any = model
    for key in loc:
        if isinstance(key, int):
            continue
        field = current.model_fields.get(key) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _load_domain(root: Path, folder: Path, problems: ProblemList) -> tuple[DomainSpec, YamlDocument] | None:
    path = folder / "domain.yaml"
    rel = _rel(root, path)
    if not path.exists():
        problems.add(rel, "domain folder without domain.yaml", fix=f"run `trustmesh new domain {folder.name}`")
        return None
    domain, doc = _load_model(root, path, DomainSpec, problems)
    if domain is None or doc is None:
        return None
    assert isinstance(domain, DomainSpec)
    if domain.name != folder.name:
        problems.add(rel, f"name {domain.name!r} differs from the folder name {folder.name!r}", path="name",
                     fix=f"set `name: {folder.name}` or rename the folder")
    if domain.quality_benchmarks and domain.kind != "trusted-centre":
        problems.add(rel, "only a Trusted Centre sets quality benchmarks for its sector", path="qualityBenchmarks",
                     fix="move the rules into this domain's contracts, or set `kind: trusted-centre`")
    for role in ("data-owner", "data-domain-steward"):
        if not domain.people_in_role(role):
            problems.add(rel, f"no person with the role {role}", path="people",
                         fix=f"name at least one person with `roles: [{role}]`")
    return domain, doc


def custom_properties(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    """ODPS/ODCS `customProperties` lists as a dict."""
    return {str(item.get("property")): item.get("value") for item in items or [] if isinstance(item, dict)}


def _cp_index(items: list[dict[str, Any]] | None, name: str) -> int | None:
    for i, item in enumerate(items or []):
        if isinstance(item, dict) and item.get("property") == name:
            return i
    return None


def _cp_path(items: list[dict[str, Any]] | None, name: str) -> list[str | int]:
    """The path of a named custom property's value, for pointing a problem at its line."""
    idx = _cp_index(items, name)
    return ["customProperties"] if idx is None else ["customProperties", idx, "value"]


MAX_NESTED_PROPERTIES = 5  # object columns within object columns: each level triples the schema check's work


def _nesting(data: Any, path: list[str | int]) -> tuple[int, list[str | int]]:
    """How many `properties` lists are nested inside one another in `data`, and where the deepest one is."""
    deepest: tuple[int, list[str | int]] = (0, path)
    stack: list[tuple[Any, int, list[str | int]]] = [(data, 0, path)]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                level = depth + 1 if key == "properties" and isinstance(value, list) else depth
                if level > deepest[0]:
                    deepest = (level, [*where, key])
                stack.append((value, level, [*where, key]))
        elif isinstance(node, list):
            stack.extend((value, depth, [*where, i]) for i, value in enumerate(node))
    return deepest


QUALITY_ARGUMENTS = ("validValues", "pattern", "missingValues")  # an ODCS quality metric's `arguments:`


def _unexpected_fix(schema: str, standard: str, message: str, path: list[Any]) -> str:
    """The fix for a key the standard does not allow: a metric argument moved under `arguments:`, the key it
    most likely misspells, else where trustmesh's own fields go."""
    keys = re.findall(r"'([^']+)'", message[message.rfind("("):])
    for key in keys:
        if "quality" in path and key in QUALITY_ARGUMENTS:
            return f"a metric's arguments go under `arguments:` — write `arguments: {{{key}: ...}}`"
        close = difflib.get_close_matches(key, sorted(property_names(schema)), n=1, cutoff=0.8)
        if close:
            return f"did you mean '{close[0]}'?"
    return f"{standard} does not allow this key; trustmesh fields go in `customProperties`"


def standard_problems(doc: YamlDocument, schema: str, standard: str, cache: ValidCache | None = None) -> list[Problem]:
    """Problems of `doc` against an official JSON schema, deduplicated, with lines.

    A document nesting object columns deeper than `MAX_NESTED_PROPERTIES` is refused before the schema is
    checked: the check's cost grows threefold with each level, so a small file could stall every build.
    """
    depth, where = _nesting(doc.data, [])
    if depth > MAX_NESTED_PROPERTIES:
        return [doc.problem(where, f"{standard}: `properties` are nested {depth} levels deep; at most "
                            f"{MAX_NESTED_PROPERTIES} are accepted",
                            "flatten the nested object columns (e.g. a separate dataset, or fewer levels)")]
    seen: set[tuple[str, str]] = set()
    out = []
    for err in schema_errors(schema, doc.data, cache):
        path = list(err.absolute_path)
        message = err.message.replace("Unevaluated properties", "Additional properties")
        key = (doc.readable_path(path), message)
        if key in seen:
            continue
        seen.add(key)
        if "was unexpected" in message:
            fix = _unexpected_fix(schema, standard, message, path)
        elif err.validator == "required":
            fix = "add the missing key"
        elif err.validator == "enum":
            fix = f"use one of {', '.join(map(str, err.validator_value))}"
        else:
            fix = f"see the {standard} schema"
        out.append(doc.problem(path, f"{standard}: {message}", fix))
    return out


def _load_product(mesh: Mesh, folder: Path, problems: ProblemList, cache: ValidCache) -> Product | None:
    root = mesh.root
    path = folder / "product.yaml"
    rel = _rel(root, path)
    domain_name = folder.parent.parent.name
    if not path.exists():
        problems.add(rel, "product folder without product.yaml",
                     fix=f"run `trustmesh new product {domain_name}/{folder.name}`")
        return None
    doc, problem = load_yaml(path, rel)
    if problem:
        problems.extend([problem])
        return None
    assert doc is not None
    schema_issues = standard_problems(doc, ODPS, "ODPS v1.0.0", cache)
    problems.extend(schema_issues)
    if schema_issues:
        return None
    data = doc.data
    name = folder.name
    address = f"{domain_name}.{name}"
    if not re.match(NAME_PATTERN, name):
        problems.add(rel, f"product folder name {name!r} is not a valid name", fix="rename it: lower case, digits, '-', '_'")
    for key, want in (("id", address), ("name", name), ("domain", domain_name)):
        if data.get(key) != want:
            problems.add(rel, f"{key} is {data.get(key)!r}, expected {want!r}", path=key, line=doc.line_of([key]),
                         fix=f"set `{key}: {want}` (it follows the folder layout domains/<domain>/products/<product>)")
    props = custom_properties(data.get("customProperties"))
    kind = props.get("productKind")
    if kind not in PRODUCT_KINDS:
        problems.extend([doc.problem(_cp_path(data.get("customProperties"), "productKind"), f"productKind is {kind!r}" if kind else "no productKind custom property",
                                     f"add `- {{property: productKind, value: <{'|'.join(PRODUCT_KINDS)}>}}`")])
    tier = props.get("tier", "gold")
    if tier not in TIERS:
        problems.extend([doc.problem(_cp_path(data.get("customProperties"), "tier"),
                                     f"tier is {tier!r}", f"use one of {', '.join(TIERS)}")])
    engine = props.get("engine")
    if engine is not None and engine not in ENGINES:
        problems.extend([doc.problem(_cp_path(data.get("customProperties"), "engine"),
                                     f"engine is {engine!r}", f"use one of {', '.join(ENGINES)} (or drop it: the "
                                     "mesh's platform.engine builds it)")])
    team = list((data.get("team") or {}).get("members") or [])
    for i, member in enumerate(team):
        if mesh.person(member.get("username", "")) is None:
            problems.extend([doc.problem(["team", "members", i, "username"],
                                         f"unknown person {member.get('username')!r}",
                                         f"declare them under `people:` in domains/{domain_name}/domain.yaml or mesh.yaml")])
    inputs = _input_ports(doc, problems)
    outputs = _output_ports(mesh, doc, folder, domain_name, name, problems, cache)
    return Product(
        address=address, domain=domain_name, name=name, kind=kind if kind in PRODUCT_KINDS else "source-aligned",
        tier=tier if tier in TIERS else "gold", status=data.get("status", ""), version=str(data.get("version", "")),
        description=data.get("description") or {}, tags=data.get("tags") or [], team=team,
        inputs=inputs, outputs=outputs, folder=folder, file=rel, document=data,
        engine=engine if engine in ENGINES else None,
    )


def _input_ports(doc: YamlDocument, problems: ProblemList) -> list[InputPort]:
    ports = []
    seen: set[str] = set()
    for i, port in enumerate(doc.data.get("inputPorts") or []):
        name = port["name"]
        if name in seen:
            problems.extend([doc.problem(["inputPorts", i, "name"], f"duplicate input port {name!r}",
                                         "give each input port its own name")])
        seen.add(name)
        idx = _cp_index(port.get("customProperties"), "source")
        if idx is None:
            problems.extend([doc.problem(["inputPorts", i], f"input port {name!r} has no `source` custom property",
                                         "add `customProperties: [{property: source, value: {type: file, path: data/x.csv}}]`")])
            continue
        where: list[str | int] = ["inputPorts", i, "customProperties", idx, "value"]
        raw = port["customProperties"][idx]["value"]
        try:
            source = SourceSpec.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                problems.extend([doc.problem([*where, *err["loc"]], f"source: {err['msg']}", _fix_for(err))])
            continue
        needed = {"file": ["path"], "database": ["url_env", "table"], "product": ["address"]}[source.type]
        missing = [k for k in needed if getattr(source, k) is None]
        if missing:
            keys = ", ".join({"url_env": "urlEnv"}.get(k, k) for k in missing)
            problems.extend([doc.problem(where, f"a {source.type} source needs {keys}", f"add {keys} to the source")])
            continue
        ports.append(InputPort(name=name, version=str(port["version"]), contract_id=port["contractId"], source=source,
                               line=doc.line_of(where)))
    return ports


def _output_ports(
    mesh: Mesh, doc: YamlDocument, folder: Path, domain: str, product: str, problems: ProblemList, cache: ValidCache
) -> list[OutputDataset]:
    outputs: list[OutputDataset] = []
    ports = doc.data.get("outputPorts") or []
    if not ports:
        problems.extend([doc.problem(["outputPorts"], "the product has no output port",
                                     "add an output port; a product without output is useless")])
    seen: set[str] = set()
    for i, port in enumerate(ports):
        name = port["name"]
        address = f"{domain}.{product}.{name}"
        if name in seen:
            problems.extend([doc.problem(["outputPorts", i, "name"], f"duplicate address {address}",
                                         "give each output port its own name")])
            continue
        seen.add(name)
        if not re.match(DATASET_PATTERN, name):
            problems.extend([doc.problem(["outputPorts", i, "name"], f"output dataset name {name!r} is not a SQL identifier",
                                         "use lower-case letters, digits and '_', starting with a letter")])
            continue
        if port.get("contractId") != address:
            problems.extend([doc.problem(["outputPorts", i, "contractId"],
                                         f"contractId is {port.get('contractId')!r}, expected {address!r}",
                                         f"set `contractId: {address}` (a dataset's contract id is its address)")])
        props = custom_properties(port.get("customProperties"))
        sql_rel = props.get("sql", f"sql/{name}.sql")
        contract_rel = props.get("contract", f"contracts/{name}.odcs.yaml")
        prefix = _rel(mesh.root, folder)
        sql_path = folder / sql_rel
        sql = None
        if not sql_path.is_file():
            problems.extend([doc.problem(["outputPorts", i], f"no SQL file {prefix}/{sql_rel} for dataset {name!r}",
                                         f"write the SELECT that produces {name} in {prefix}/{sql_rel}")])
        else:
            try:
                sql = sql_path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as exc:
                problems.add(f"{prefix}/{sql_rel}", f"cannot read the SQL file: {exc}", fix="save it as UTF-8 text")
        contract = _load_contract(mesh, folder / contract_rel, f"{prefix}/{contract_rel}", domain, product, name,
                                  problems, cache)
        if contract is None and not (folder / contract_rel).exists():
            problems.extend([doc.problem(["outputPorts", i], f"no contract {prefix}/{contract_rel} for dataset {name!r}",
                                         f"write an ODCS v3.1.0 contract in {prefix}/{contract_rel}")])
        outputs.append(OutputDataset(
            address=address, domain=domain, product=product, name=name, version=str(port["version"]),
            description=port.get("description", ""), sql_file=f"{prefix}/{sql_rel}", sql=sql, contract=contract,
        ))
    return outputs


def _load_contract(
    mesh: Mesh, path: Path, rel: str, domain: str, product: str, dataset: str, problems: ProblemList,
    cache: ValidCache,
) -> Contract | None:
    if not path.exists():
        return None
    doc, problem = load_yaml(path, rel)
    if problem:
        problems.extend([problem])
        return None
    assert doc is not None
    issues = standard_problems(doc, ODCS, "ODCS v3.1.0", cache)
    problems.extend(issues)
    if issues:
        return None
    data = doc.data
    address = f"{domain}.{product}.{dataset}"
    for key, want in (("id", address), ("domain", domain), ("dataProduct", product)):
        if (key == "id" or key in data) and data.get(key) != want:
            problems.extend([doc.problem([key], f"{key} is {data.get(key)!r}, expected {want!r}", f"set `{key}: {want}`")])
    objects = data.get("schema") or []
    if len(objects) != 1 or objects[0].get("name") != dataset:
        names = [o.get("name") for o in objects]
        problems.extend([doc.problem(["schema"], f"expected exactly one schema object named {dataset!r}, found {names}",
                                     f"describe the dataset as `schema: [{{name: {dataset}, properties: [...]}}]`")])
        return None
    obj = objects[0]
    scheme = mesh.config.governance.classification
    terms = mesh.glossary_terms(domain)
    columns = []
    seen: set[str] = set()
    for i, prop in enumerate(obj.get("properties") or []):
        where: list[str | int] = ["schema", 0, "properties", i]
        name = prop["name"]
        if name in seen:
            problems.extend([doc.problem(where, f"duplicate column {name!r}", "list each column once")])
        seen.add(name)
        if "logicalType" not in prop:
            problems.extend([doc.problem(where, f"column {name!r} has no logicalType",
                                         "add `logicalType:` (string, integer, number, boolean, date, timestamp, ...)")])
            continue
        cps = prop.get("customProperties")
        cp = custom_properties(cps)
        classification = prop.get("classification")
        if classification is not None and classification not in scheme.levels:
            problems.extend([doc.problem([*where, "classification"], f"classification {classification!r} is not in the mesh's scheme",
                                         f"use one of {', '.join(scheme.levels)}")])
        sensitivity = cp.get("sensitivity", "non-sensitive")
        if sensitivity not in scheme.sensitivities:
            problems.extend([doc.problem([*where, *_cp_path(cps, "sensitivity")],
                                         f"sensitivity {sensitivity!r} is not in the mesh's scheme",
                                         f"use one of {', '.join(scheme.sensitivities)}")])
        pii = cp.get("piiType")
        if pii is not None and pii not in scheme.pii_types:
            problems.extend([doc.problem([*where, *_cp_path(cps, "piiType")],
                                         f"piiType {pii!r} is not known", f"use one of {', '.join(scheme.pii_types)}")])
        term = cp.get("glossaryTerm")
        if term is not None and term not in terms:
            close = difflib.get_close_matches(str(term), list(terms), n=1)
            problems.extend([doc.problem([*where, *_cp_path(cps, "glossaryTerm")],
                                         f"glossary term {term!r} is not defined for domain {domain}",
                                         f"did you mean {close[0]!r}?" if close else "define it in mesh.yaml or the domain's glossary")])
        columns.append(Column(
            name=name, logical_type=prop["logicalType"], physical_type=prop.get("physicalType"),
            description=prop.get("description", ""), required=bool(prop.get("required", False)),
            primary_key=bool(prop.get("primaryKey", False)), primary_key_position=int(prop.get("primaryKeyPosition", -1)),
            unique=bool(prop.get("unique", False)), classification=classification,
            sensitivity=sensitivity, pii_type=pii, glossary_term=term, tags=prop.get("tags") or [],
        ))
    if not columns:
        problems.extend([doc.problem(["schema", 0], "the contract declares no columns", "list the columns under `properties:`")])
    return Contract(
        id=data["id"], name=data.get("name", dataset), version=str(data["version"]), status=data["status"],
        description=data.get("description") or {}, tags=data.get("tags") or [],
        dataset_description=obj.get("description", ""), columns=columns, sla=data.get("slaProperties") or [],
        file=rel, document=data,
    )
