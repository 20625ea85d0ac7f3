"""trustmesh's own rules on top of the standards: references resolve, SQL parses and matches its contract."""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustmesh.descriptors import InputPort, Mesh, OutputDataset, Product
from trustmesh.descriptors.sql import ProductSql, parse_product_sql
from trustmesh.engines import ColumnType, Engine, EngineSession, QueryFailed, Reach, type_fits
from trustmesh.engines.duckdb import CSV_ENCODINGS, DEFAULT_TYPES, csv_fault, publish_type, quote
from trustmesh.errors import Problem
from trustmesh.plan import cycle_problems
from trustmesh.quality import QualityRule, compile_quality, dataset_rules
from trustmesh.quality.freshness import sla_problems
from trustmesh.sqlguard import PRODUCT, QUALITY_RULE, QueryRefused


def view_name(reference: str) -> str:
    """The engine view serving an input reference (a port name or a dataset address)."""
    return "in__" + re.sub(r"[^a-z0-9_]", "_", reference.lower())


URL_LIKE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # s3:, http:, file:, c: ...


def source_path_problem(product: Product, port: InputPort) -> str | None:
    """Why a file source's `path` is not one of the product's own files, or None when it is.

    A product reads files inside its own folder only, judged after `..` and symlinks are resolved: never
    another product's files, another domain's, the platform's state (`.trustmesh/`, keys, the metastore,
    the warehouse) or anything outside the mesh, whatever the spelling.
    """
    return _own_files(product, port)[0]


def source_files(product: Product, port: InputPort) -> list[Path]:
    """The files a file-source input port reads (a glob may match several), resolved, and only while every one
    is the product's own (see `source_path_problem`): a path that leads anywhere else reads nothing."""
    problem, files = _own_files(product, port)
    return [] if problem else files


def _own_files(product: Product, port: InputPort) -> tuple[str | None, list[Path]]:
    """(why the path is not the product's own, or None; the resolved files it names)."""
    pattern = port.source.path or ""
    if not pattern.strip():
        return "the source path is empty", []
    if "\x00" in pattern:
        return "the source path holds a NUL character", []
    if pattern.startswith(("/", "\\")) or Path(pattern).is_absolute():
        return f"source path {pattern!r} is absolute", []
    if pattern.startswith("~"):
        return f"source path {pattern!r} names a home folder", []
    if URL_LIKE.match(pattern):
        return f"source path {pattern!r} is a URL, not a file of the product", []
    if any(part == ".." for part in re.split(r"[/\\]", pattern)):
        return f"source path {pattern!r} climbs out with '..'", []
    if any(ch in pattern for ch in "*?["):
        found = sorted(p for p in product.folder.glob(pattern) if p.is_file())
    else:
        found = [product.folder / pattern] if (product.folder / pattern).is_file() else []
    folder = product.folder.resolve()
    resolved = [p.resolve() for p in found]
    for path in resolved:
        if not path.is_relative_to(folder):
            return f"source path {pattern!r} leads to {path}, outside the product folder", []
    return None, resolved


def file_argument(product: Product, port: InputPort) -> list[str]:
    """The files of a file input, as the engine reader is given them."""
    return [str(p) for p in source_files(product, port)]


def source_format(port: InputPort) -> str:
    if port.source.format:
        return port.source.format
    suffix = Path(port.source.path or "").suffix.lower().lstrip(".")
    return {"ndjson": "json", "jsonl": "json", "tsv": "csv", "txt": "csv"}.get(suffix, suffix)


def resolve_views(product: Product, sql: ProductSql,
                  failed: Collection[str] = ()) -> tuple[dict[str, InputPort], list[Problem]]:
    """Map each reference in the SQL to the input port serving it; a problem for each that does not resolve.

    `failed`: ports with problems of their own (an upstream address with a typo). A reference closest to one of
    them is left unresolved without a problem (fixing the port fixes it), and none is proposed as a fix.
    """
    by_address = {p.source.address: p for p in product.inputs if p.source.type == "product"}
    known = {p.name: p for p in product.inputs} | {a: p for a, p in by_address.items() if a}
    resolved: dict[str, InputPort] = {}
    problems = []
    for ref in sql.references:
        port = product.input_named(ref) or by_address.get(ref)
        if port is None:
            nearest = difflib.get_close_matches(ref, list(known), n=1)
            if nearest and known[nearest[0]].name in failed:
                continue
            close = difflib.get_close_matches(ref, [k for k, p in known.items() if p.name not in failed], n=1)
            fix = f"did you mean {close[0]!r}?" if close else (
                "declare it as an input port in product.yaml (a file, a database table, or another product's "
                "dataset by its address) and read it by that name")
            problems.append(Problem(sql.file, f"the query reads {ref!r}, which is not an input port of {product.address}",
                                    fix=fix))
        else:
            resolved[ref] = port
    return resolved, problems


def check_mesh(mesh: Mesh, engine: Engine, products: list[str] | None = None) -> list[Problem]:
    """Every cross-file problem of the mesh (or of the given products), all at once.

    A product's SQL and quality rules are dry-run on a session that opens no file at all: every input is an
    empty, typed stand-in (a file source typed by the platform's own reader), so validating a product can
    read nothing of any product's data, its own included.
    """
    problems = list(cycle_problems(mesh)) + access_problems(mesh)
    datasets = mesh.datasets
    from trustmesh.engines.duckdb import DuckDBSession

    with tempfile.TemporaryDirectory(prefix="trustmesh-validate-") as scratch:
        reader = DuckDBSession([str(mesh.root)])
        dry = engine.session(Reach(scratch=scratch))
        try:
            for address in sorted(mesh.products) if products is None else products:
                product = mesh.products[address]
                inputs = check_inputs(product, datasets, reader)
                problems += inputs.all()
                for output in product.outputs:
                    problems += check_output(mesh, engine, dry, product, output, inputs)
        finally:
            dry.close()
            reader.close()
    return problems


def token_problems(mesh: Mesh, product: Product, output: OutputDataset, tree: Any) -> list[Problem]:
    """`person_token('<purpose>', value)` names a registered linkage purpose that includes the product's domain."""
    from sqlglot import exp

    problems = []
    purposes = {p.name: p for p in mesh.config.linkage}
    for call in tree.find_all(exp.Anonymous):
        if call.name.lower() != "person_token":
            continue
        args = call.expressions
        first = args[0] if args else None
        if len(args) != 2 or not isinstance(first, exp.Literal) or not first.is_string:
            problems.append(Problem(output.sql_file, "person_token takes a linkage purpose as a quoted name and a "
                                    "value: person_token('<purpose>', nric)", fix="e.g. person_token('active-commuting', nric)"))
            continue
        purpose = purposes.get(first.this)
        if purpose is None:
            problems.append(Problem(output.sql_file, f"person_token names {first.this!r}, which is not a linkage "
                                    "purpose of this mesh", fix="register it under `linkage:` in mesh.yaml "
                                    f"({', '.join(purposes) or 'none is registered'})"))
        elif product.domain not in purpose.domains:
            problems.append(Problem(output.sql_file, f"{product.domain} is not a domain of the linkage purpose "
                                    f"{purpose.name!r} ({', '.join(purpose.domains)}), so its products cannot "
                                    "tokenise under it", fix="ask the governance office to add the domain to the "
                                    "purpose in mesh.yaml, or read the tokens through a grant instead"))
    return problems


def access_problems(mesh: Mesh) -> list[Problem]:
    """Clearances and thresholds are levels of the mesh's scheme, named approvers exist, Cedar files parse."""
    from trustmesh.access.policy import check_policy_files

    problems = check_policy_files(mesh.root, mesh.domains)
    levels = mesh.config.governance.classification.levels
    settings = mesh.config.access
    for key, value in (("defaultClearance", settings.default_clearance), ("twoLevelFrom", settings.two_level_from)):
        if value not in levels:
            problems.append(Problem("mesh.yaml", f"access.{key} {value!r} is not a classification level", f"access.{key}",
                                    fix=f"one of {', '.join(levels)}"))
    for i, purpose in enumerate(mesh.config.linkage):
        for name in purpose.domains:
            if name not in mesh.domains:
                problems.append(Problem("mesh.yaml", f"linkage purpose {purpose.name!r} names domain {name!r}, which "
                                        "does not exist", f"linkage[{i}].domains", fix=f"one of {', '.join(mesh.domains)}"))
    declared = [("mesh.yaml", p) for p in mesh.config.people]
    declared += [(f"domains/{d.name}/domain.yaml", p) for d in mesh.domains.values() for p in d.people]
    for file, person in declared:
        if person.clearance is not None and person.clearance not in levels:
            problems.append(Problem(file, f"{person.id}'s clearance {person.clearance!r} is not a classification level",
                                    f"people[{person.id}].clearance", fix=f"one of {', '.join(levels)}"))
    for output in mesh.datasets.values():
        if output.contract is None:
            continue
        for i, role in enumerate(output.contract.document.get("roles") or []):
            for key in ("firstLevelApprovers", "secondLevelApprovers"):
                names = [n.strip() for n in str(role.get(key) or "").replace(";", ",").split(",") if n.strip()]
                for name in names:
                    if mesh.person(name) is None:
                        problems.append(Problem(
                            output.contract.file, f"{key} names {name!r}, who is not a person of this mesh: the "
                            "name is ignored when routing requests", f"roles[{i}].{key}", severity="warning",
                            fix="name person ids declared under `people:`, comma-separated, to route requests to them"))
    return problems


@dataclass
class ProductInputs:
    """What validation found of a product's inputs: each port's problems, each readable file source's columns, and
    the ports that cannot be bound (an unknown upstream, a missing or unreadable file): SQL reading those is not
    checked, as its errors would only follow from the port's."""

    problems: dict[str, list[Problem]] = field(default_factory=dict)
    columns: dict[str, list[ColumnType]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def all(self) -> list[Problem]:
        return [p for found in self.problems.values() for p in found]


def check_inputs(product: Product, datasets: dict[str, OutputDataset], reader: EngineSession) -> ProductInputs:
    """Every input port resolves: an upstream dataset, a file of the product's own that the platform's reader
    (`reader`) can read, a variable of its domain. File sources are typed here, once for all its datasets."""
    found = ProductInputs()
    for port in product.inputs:
        problems = _port_problems(product, port, datasets)
        if not problems and port.source.type == "file":
            read = read_source(product, port, reader)
            if isinstance(read, Problem):
                problems.append(read)
            else:
                found.columns[port.name] = read
        found.problems.setdefault(port.name, []).extend(problems)
        if problems and not (port.source.type == "product" and port.source.address in datasets):
            found.failed.add(port.name)
    return found


def _port_problems(product: Product, port: InputPort, datasets: dict[str, OutputDataset]) -> list[Problem]:
    problems = []
    where = f"inputPorts[{port.name}]"
    if port.source.type == "product":
        ref = port.source.address or ""
        if ref not in datasets:
            close = difflib.get_close_matches(ref, list(datasets), n=1)
            problems.append(Problem(product.file, f"input port reads {ref!r}, which no product publishes", where,
                                    port.line, fix=f"did you mean {close[0]!r}?" if close
                                    else "check the address: <domain>.<product>.<dataset>"))
        elif datasets[ref].contract and port.contract_id != datasets[ref].contract.id:  # type: ignore[union-attr]
            problems.append(Problem(product.file, f"contractId {port.contract_id!r} is not the contract of {ref}",
                                    where, port.line, fix=f"set `contractId: {ref}`"))
    elif port.source.type == "file":
        outside = source_path_problem(product, port)
        encoding = str(port.source.options.get("encoding") or "utf-8")
        if outside is not None:
            problems.append(Problem(product.file, f"{outside}: a product reads only files inside its own folder",
                                    where, port.line, fix="put the file in the product folder (e.g. data/) and give "
                                    "its path relative to product.yaml; another product's data is read through its "
                                    "output port and a grant"))
        elif not source_files(product, port):
            rel = f"{product.file.rsplit('/', 1)[0]}/{port.source.path}"
            near = _nearest_file(product, port.source.path or "")
            problems.append(Problem(product.file, f"source file {rel} not found", where, port.line,
                                    fix=f"did you mean `path: {near}`?" if near else
                                    "put the file there, or correct `path` (relative to the product folder)"))
        elif source_format(port) not in ("csv", "parquet", "json"):
            problems.append(Problem(product.file, f"cannot tell the format of {port.source.path!r}", where, port.line,
                                    fix="add `format: csv | parquet | json` to the source"))
        elif source_format(port) == "csv" and encoding.lower() not in CSV_ENCODINGS:
            problems.append(Problem(product.file, f"encoding {encoding!r} is not one the CSV reader decodes",
                                    f"{where}.options.encoding", port.line,
                                    fix=f"use one of {', '.join(CSV_ENCODINGS)}, or save the file as UTF-8"))
    elif port.source.type == "database":
        env = port.source.url_env or ""
        prefix = env_prefix(product.domain)
        if not env.startswith(prefix) or not re.fullmatch(r"[A-Z][A-Z0-9_]*", env):
            problems.append(Problem(product.file, f"urlEnv {env!r} is not one of the {product.domain} domain's "
                                    f"variables: a domain names only variables starting with {prefix}", where,
                                    port.line, fix=f"ask the platform team to export the URL as {prefix}<NAME> (e.g. "
                                    f"{prefix}DB_URL) and name that; the platform's own variables are never a source"))
    return problems


DATA_SUFFIXES = {".csv", ".tsv", ".txt", ".parquet", ".json", ".ndjson", ".jsonl"}


def _nearest_file(product: Product, pattern: str) -> str | None:
    """The product's own data file whose path is closest to `pattern`, which names none (a typo)."""
    suffixes = DATA_SUFFIXES | {Path(pattern).suffix.lower()}
    found: list[str] = []
    for top, dirs, names in os.walk(product.folder):  # symlinked folders are not followed
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [(Path(top) / n).relative_to(product.folder).as_posix() for n in sorted(names)
                  if Path(n).suffix.lower() in suffixes]
        if len(found) > 5000:  # a typo is looked up among a product's files, not in a data lake
            break
    close = difflib.get_close_matches(pattern, found, n=1)
    return close[0] if close else None


def read_source(product: Product, port: InputPort, reader: EngineSession) -> list[ColumnType] | Problem:
    """A file source's columns as the platform's reader types them, or the one problem that stops it."""
    fmt, options = source_format(port), port.source.options
    try:
        columns: list[ColumnType] | None = _describe_files(reader, file_argument(product, port), fmt, options)
        failure = ""
    except ValueError as exc:  # an option the reader does not take
        return Problem(product.file, f"cannot read source {port.source.path}: {exc}", f"inputPorts[{port.name}]",
                       port.line, fix="correct the source options")
    except QueryFailed as exc:
        columns, failure = None, _first_line(exc)
    if fmt == "csv":
        problem = csv_problem(product, port, reader, None if columns is None else [c.name for c in columns])
        if problem is not None:
            return problem
    if columns is None:
        return Problem(product.file, f"cannot read source {port.source.path}: {failure}", f"inputPorts[{port.name}]",
                       port.line, fix="check the file and the source options")
    return columns


def _describe_files(reader: EngineSession, files: list[str], fmt: str, options: dict[str, Any]) -> list[ColumnType]:
    view = "in__source"
    try:
        reader.bind_file(view, files, fmt, options)
        return reader.describe(f"SELECT * FROM {quote(view)}")
    finally:
        reader.drop_view(view)


def csv_problem(product: Product, port: InputPort, reader: EngineSession, columns: list[str] | None) -> Problem | None:
    """A CSV source the reader cannot read (or reads as one column of `a;b;c`, or without rows) as one problem at
    the file's line: the cause, and the reader option that fixes it, tried on the file before it is suggested.

    `columns`: what the reader made of the file, None when it could not read it.
    """
    files = file_argument(product, port)
    for path in files if columns is None else files[:1]:
        fault = csv_fault(path, port.source.options, columns)
        if fault is None:
            continue
        fix = fault.fix
        if fault.option and _reads_with(reader, files, {**port.source.options, **fault.option}):
            fix = f"{_option_fix(product, port, fault.option)}, or {fault.fix}"
        elif fault.option and columns is not None:
            continue  # read, and no other reading is better: e.g. one column whose header holds a ';'
        return Problem(_mesh_path(product, path), fault.message, line=fault.line, fix=fix)
    return None


def _reads_with(reader: EngineSession, files: list[str], options: dict[str, Any]) -> bool:
    """Whether the reader reads the files with these options (into more than one column, for a new delimiter)."""
    try:
        columns = _describe_files(reader, files, "csv", options)
    except (QueryFailed, ValueError):
        return False
    return len(columns) > 1 or "delim" not in options


def _option_fix(product: Product, port: InputPort, option: dict[str, Any]) -> str:
    """Where and what to add to a source's options, in the descriptor's words."""
    flow = ", ".join(f"{key}: {_yaml_scalar(value)}" for key, value in option.items())
    at = f"{product.file}:{port.line}" if port.line else product.file
    if port.source.options:
        return f"add `{flow}` to the `options` of the source of inputPorts[{port.name}] ({at})"
    return f"add `options: {{{flow}}}` to the source of inputPorts[{port.name}] ({at})"


def _yaml_scalar(value: Any) -> str:
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        return text
    return f"'{text}'" if text.isprintable() and "'" not in text else json.dumps(text)


def _mesh_path(product: Product, path: str) -> str:
    """A source file as the mesh names it: `domains/<d>/products/<p>/data/x.csv`."""
    try:
        rel = Path(path).relative_to(product.folder.resolve()).as_posix()
    except ValueError:
        return path
    return f"{product.file.rsplit('/', 1)[0]}/{rel}"


def bind_standins(mesh: Mesh, session: EngineSession, product: Product, ports: dict[str, InputPort],
                  columns: dict[str, list[ColumnType]]) -> list[Problem]:
    """Bind every input as an empty, typed view the engine can type-check against, without reading data.

    A file source is typed by the platform's reader over the product's own files (`columns`, from
    `check_inputs`), never by the session that runs the product's SQL.
    """
    problems = []
    for ref, port in ports.items():
        view = view_name(ref)
        if port.source.type == "product":
            upstream = mesh.datasets.get(port.source.address or "")
            if upstream is None or upstream.contract is None:
                continue
            declared = [(c.name, c.physical_type or DEFAULT_TYPES.get(c.logical_type, "VARCHAR"))
                        for c in upstream.contract.columns]  # as published: cast where some engine cannot read it
            cols = [ColumnType(name, publish_type(t, None) or t) for name, t in declared]
            session.bind_empty(view, cols)
        elif port.source.type == "file" and port.name in columns:
            session.bind_empty(view, columns[port.name])
        elif port.source.type == "database" and not os.environ.get(port.source.url_env or ""):
            problems.append(Problem(product.file, f"${port.source.url_env} is not set; the query's columns from "
                                    f"{port.source.table} were not checked", f"inputPorts[{port.name}]", port.line,
                                    fix=f"export {port.source.url_env}=<SQLAlchemy URL> to check and build", severity="warning"))
    return problems


def check_output(mesh: Mesh, engine: Engine, session: EngineSession, product: Product, output: OutputDataset,
                 inputs: ProductInputs) -> list[Problem]:
    """One dataset's SQL: it parses, reads only its own inputs, fits its contract; its quality rules run.

    SQL reading an input with problems of its own is not run: its errors would only follow from the input's.
    """
    if output.sql is None:
        return []
    error = session.syntax_error(output.sql)
    if error:
        message, line = error
        return [Problem(output.sql_file, f"SQL does not parse: {message}", f"line {line}" if line else "", line,
                        f"correct the SQL ({engine.capabilities.dialect} dialect)")]
    sql, problems = parse_product_sql(output.sql, output.sql_file)
    if sql is None:
        return problems
    linkage = token_problems(mesh, product, output, sql.tree)
    if linkage:
        return linkage
    ports, problems = resolve_views(product, sql, inputs.failed)
    if problems or output.contract is None:
        return problems
    if set(sql.references) - set(ports) or inputs.failed & {p.name for p in ports.values()}:
        return []  # the inputs' own problems are the cause: the SQL is checked once they are fixed
    views = {ref: view_name(ref) for ref in ports}
    try:
        problems = bind_standins(mesh, session, product, ports, inputs.columns)
        if any(p.severity == "error" for p in problems) or any(p.source.type == "database" for p in ports.values()):
            return problems
        bound = sql.bind(views)
        try:
            session.check_read(bound, set(views.values()), PRODUCT)
            described = session.describe(bound)
        except QueryRefused as exc:
            return [*problems, Problem(output.sql_file, f"the query is refused: {exc}",
                                       fix="read only the product's input ports, with side-effect-free functions")]
        except QueryFailed as exc:
            return [*problems, Problem(output.sql_file, f"the query fails: {_first_line(exc)}",
                                       fix="correct the SQL; column and input names must exist")]
        problems += compare_columns(engine, output, described)
        return problems + check_quality_rules(mesh, engine, session, output, described)
    finally:
        for view in views.values():
            session.drop_view(view)


def check_quality_rules(mesh: Mesh, engine: Engine, session: EngineSession, output: OutputDataset,
                        described: list[ColumnType]) -> list[Problem]:
    """The dataset's quality rules parse, name real columns, and compile to SQL the engine accepts."""
    assert output.contract is not None
    rules, problems = dataset_rules(mesh, output)
    problems += sla_problems(output.contract.sla, output.contract.file, output.name)
    if problems:
        return problems
    relation = f"qc__{output.name}"
    session.bind_empty(relation, described)
    try:
        return _run_rules(engine, session, output, rules, relation)
    finally:
        session.drop_view(relation)


def _run_rules(engine: Engine, session: EngineSession, output: OutputDataset, rules: list[QualityRule],
               relation: str) -> list[Problem]:
    """Each rule over the empty relation, business SQL rules checked by the engine's own parser first."""
    assert output.contract is not None
    compiled = compile_quality(rules, relation, engine.quote, dataset=output.name, address=output.address)
    problems = [Problem(output.contract.file, p.message, p.path, fix=p.fix) for p in compiled.problems]
    statements = [(None, compiled.scan_sql)] + [(rule, sql) for rule, sql in compiled.sql_rules]
    for rule, sql in statements:
        try:
            if rule is not None:
                session.check_read(sql, {relation}, QUALITY_RULE)
            session.query(sql)  # run over the empty relation: some engines check a regex only when they run it
        except QueryRefused as exc:
            assert rule is not None
            problems.append(Problem(output.contract.file, f"quality rule {rule.name!r} is refused: {exc}",
                                    f"schema[{output.name}].quality[{rule.name}]",
                                    fix="a `type: sql` rule is one SELECT over this dataset, written as ${table}"))
        except QueryFailed as exc:
            culprits = [rule] if rule else _failing_rules(engine, session, rules, relation)
            for culprit in culprits:
                problems.append(Problem(output.contract.file, f"the engine cannot run quality rule {culprit.name!r}: {exc}",
                                        f"schema[{output.name}].quality[{culprit.name}]",
                                        fix="rewrite the rule (e.g. a pattern the engine's regex syntax supports)"))
    return problems


def _failing_rules(engine: Engine, session: EngineSession, rules: list[QualityRule], relation: str) -> list[QualityRule]:
    failing = []
    for rule in rules:
        if rule.metric in ("sql", "utcTimestamps"):
            continue
        try:
            session.query(compile_quality([rule], relation, engine.quote).scan_sql)
        except QueryFailed:
            failing.append(rule)
    return failing


def compare_columns(engine: Engine, output: OutputDataset, described: list[ColumnType]) -> list[Problem]:
    """The query's output columns against the contract: the same names, types of the right family."""
    assert output.contract is not None
    contract = output.contract
    problems = []
    got = {c.name: c.type for c in described}
    if len(got) != len(described):
        dupes = sorted({c.name for c in described if [d.name for d in described].count(c.name) > 1})
        problems.append(Problem(output.sql_file, f"the query returns duplicate column names {dupes}",
                                fix="alias each output column uniquely"))
    for col in contract.columns:
        where = f"schema[{output.name}].properties[{col.name}]"
        if col.name not in got:
            close = difflib.get_close_matches(col.name, list(got), n=1)
            problems.append(Problem(output.sql_file, f"the query's output has no column {col.name!r}, which the contract "
                                    f"{contract.file} declares", where,
                                    fix=f"alias {close[0]!r} AS {col.name}" if close else f"select a column named {col.name}"))
            continue
        actual = engine.logical_type(got[col.name])
        if not type_fits(col.logical_type, actual):
            problems.append(Problem(output.sql_file, f"column {col.name!r} is {got[col.name]} ({actual}) but the contract "
                                    f"says {col.logical_type}", where,
                                    fix=f"CAST it in the SQL, or change logicalType in {contract.file}"))
    for name in got:
        if contract.column(name) is None:
            problems.append(Problem(output.sql_file, f"the query returns column {name!r}, which the contract "
                                    f"{contract.file} does not declare", fix="add it to the contract or drop it from the SELECT"))
    return problems


def env_prefix(domain: str) -> str:
    """The environment variables a domain's database sources may name: `BTS_…` for bts, `TRANSPORT_TC_…`."""
    return re.sub(r"[^A-Z0-9]", "_", domain.upper()) + "_"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
