"""What a product's build depends on, hashed: its files, its inputs' content, its upstream versions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustmesh import __version__
from trustmesh.build.ingest import input_fingerprint
from trustmesh.descriptors import Mesh, Product
from trustmesh.metastore.schema import DatasetRow, ProductRow, VersionRow
from trustmesh.quality import dataset_rules
from trustmesh.validate import source_files


@dataclass
class Fingerprint:
    """A product's inputs as known before reading them; database inputs can only be known by reading."""

    digest: Any
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)

    def with_read(self, port: str, content: str) -> None:
        self.inputs[port] = {"fingerprint": content}
        self.digest.update(f"{port}={content}".encode())

    @property
    def value(self) -> str:
        return str(self.digest.hexdigest())


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(mesh: Mesh, meta: Session, product: Product, engine: str) -> Fingerprint:
    """Hash everything a rebuild of `product` would read; upstream datasets count by their served version."""
    digest = hashlib.sha256(f"trustmesh {__version__} {engine}".encode())
    own = {product.folder / "product.yaml"} | {mesh.root / o.sql_file for o in product.outputs}
    own |= {mesh.root / o.contract.file for o in product.outputs if o.contract}
    for path in sorted(own):
        digest.update(f"{path.relative_to(mesh.root)}:{_file_hash(path)}".encode())
    for output in product.outputs:  # a new sector benchmark re-checks every product of the sector
        if output.contract is not None:
            rules, _ = dataset_rules(mesh, output)
            digest.update(repr(sorted((r.id, r.metric, r.operator, r.threshold, r.severity, r.unit,
                                       sorted(r.arguments.items(), key=str), r.query) for r in rules)).encode())
    fp = Fingerprint(digest)
    for port in product.inputs:
        if port.source.type == "file":
            present = bool(source_files(product, port))  # a missing file is reported by validation, not here
            record: dict[str, Any] = {"fingerprint": input_fingerprint(meta, product, port) if present else None}
            if not present:
                fp.unread.append(port.name)
        elif port.source.type == "product":
            address = port.source.address or ""
            upstream = mesh.datasets.get(address)
            contract = _file_hash(mesh.root / upstream.contract.file) if upstream and upstream.contract else ""
            record = {"address": address, "version": None, "snapshot_id": None, "contract": contract}
            current = meta.scalar(select(DatasetRow.current_version).where(DatasetRow.address == address))
            if current is not None:
                snapshot = meta.scalar(select(VersionRow.snapshot_id).where(
                    VersionRow.dataset == address, VersionRow.version == current))
                record.update(version=current, snapshot_id=snapshot)
        else:
            fp.unread.append(port.name)
            continue
        fp.inputs[port.name] = record
        digest.update(f"{port.name}={sorted(record.items())}".encode())
    return fp


def is_current(meta: Session, product: Product, fp: Fingerprint) -> bool:
    """Built before from exactly these inputs, and every dataset of it is served."""
    if fp.unread:
        return False
    row = meta.get(ProductRow, product.address)
    if row is None or row.fingerprint != fp.value:
        return False
    return all((d := meta.get(DatasetRow, o.address)) is not None and d.current_version is not None
               for o in product.outputs)
