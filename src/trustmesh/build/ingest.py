"""Landing: every external input becomes an immutable, content-addressed bronze Parquet file."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from trustmesh.descriptors import InputPort, Product
from trustmesh.errors import BuildFailed, Problem
from trustmesh.metastore.schema import SourceStampRow
from trustmesh.validate import source_files, source_format


@dataclass(frozen=True)
class LandedInput:
    port: str
    fingerprint: str
    files: list[str]
    origins: dict[str, str] = field(default_factory=dict)  # bronze copy → the source file it came from


def file_digest(session: Session, path: Path) -> str:
    """SHA-256 of a source file, cached by (size, mtime) so an unchanged file is never re-read."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = session.get(SourceStampRow, key)
    if stamp and stamp.size == stat.st_size and stamp.mtime_ns == stat.st_mtime_ns:
        return stamp.sha256
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    session.merge(SourceStampRow(path=key, size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digest.hexdigest()))
    return digest.hexdigest()


def input_fingerprint(session: Session, product: Product, port: InputPort) -> str:
    """What identifies this input's content: file hashes and reader options."""
    files = source_files(product, port)
    if not files:
        raise BuildFailed(product.address, f"source file {port.source.path} not found",
                          [Problem(product.file, f"source file {port.source.path} not found", f"inputPorts[{port.name}]",
                                   fix="put the file there, or correct `path` (relative to the product folder)")])
    digest = hashlib.sha256(repr((source_format(port), sorted(port.source.options.items()))).encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_digest(session, path).encode())
    return digest.hexdigest()


def land_file(product: Product, port: InputPort, fingerprint: str, bronze: Path) -> LandedInput:
    """Copy a CSV/Parquet/JSON source, byte for byte, into bronze; reuse the copy while its content is unchanged.

    Bronze keeps the input exactly as it arrived, so a version can always be traced to (and rebuilt from)
    what was read; the transform then reads the bronze copy, never the working tree.
    """
    folder = bronze / product.domain / product.name / port.name / fingerprint[:32]
    sources = source_files(product, port)
    targets = [folder / path.name for path in sources]
    if not folder.is_dir():
        staging = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            for path in sources:
                shutil.copyfile(path, staging / path.name)
            os.replace(staging, folder)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BuildFailed(product.address, f"cannot land {port.source.path}: {exc.strerror}", [Problem(
                product.file, f"cannot copy {port.source.path} into bronze: {exc}", f"inputPorts[{port.name}]",
                fix="check the file is readable and the warehouse folder is writable")]) from exc
    return LandedInput(port.name, fingerprint, [str(t) for t in targets],
                       {str(t): _mesh_path(product, s) for t, s in zip(targets, sources, strict=True)})


def _mesh_path(product: Product, source: Path) -> str:
    """A source file as the mesh names it (`domains/<d>/products/<p>/data/x.csv`), for problems to point at."""
    try:
        rel = source.relative_to(product.folder.resolve()).as_posix()
    except ValueError:
        rel = source.name
    return f"{product.file.rsplit('/', 1)[0]}/{rel}"


def land_database(product: Product, port: InputPort, bronze: Path) -> LandedInput:
    """Copy a table from a SQLAlchemy-reachable database into bronze; its content hash is its fingerprint."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import MetaData, Table, create_engine, select
    from sqlalchemy.exc import SQLAlchemyError

    env = port.source.url_env or ""
    url = os.environ.get(env)
    where = f"inputPorts[{port.name}]"
    if not url:
        raise BuildFailed(product.address, f"${env} is not set", [Problem(
            product.file, f"the database source {port.source.table} needs ${env}", where,
            fix=f"export {env}=<SQLAlchemy URL> (URLs never go in the repo)")])
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            schema, _, name = (port.source.table or "").rpartition(".")
            table = Table(name, MetaData(), schema=schema or None, autoload_with=conn)
            result = conn.execute(select(table))
            columns = list(result.keys())
            rows = result.fetchall()
        engine.dispose()
    except SQLAlchemyError as exc:
        raise BuildFailed(product.address, f"cannot read {port.source.table} from ${env}", [Problem(
            product.file, f"cannot read table {port.source.table}: {str(exc).splitlines()[0]}", where,
            fix=f"check ${env} and that the table exists")]) from exc
    data = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink)
    payload = sink.getvalue().to_pybytes()
    fingerprint = hashlib.sha256(payload).hexdigest()
    target = bronze / product.domain / product.name / port.name / f"{fingerprint[:32]}.parquet"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(f".{os.getpid()}.tmp")
        staging.write_bytes(payload)
        os.replace(staging, target)
    return LandedInput(port.name, fingerprint, [str(target)])


def landing_fix(message: str) -> str:
    """The fix for a source file the engine could not read, from what it said (see engines.duckdb._condense)."""
    lowered = message.lower()
    if "unicode" in lowered or "utf" in lowered or "encoding" in lowered:
        return ("save the file as UTF-8, or name its encoding in the source's options (`options: {encoding: "
                "latin-1}` or `utf-16`), then build again")
    if "fields where the header has" in lowered:
        return ("correct that line: every row has the header's fields, and a value holding the delimiter is quoted; "
                "then build again")
    if "csv error" in lowered or "line" in lowered:
        return "correct the row named above (or set reader options such as delim, quote, nullstr)"
    return "check the file's format and the source options"
