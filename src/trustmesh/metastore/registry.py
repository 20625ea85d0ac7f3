"""Writes to the metastore: the mesh's descriptors as catalog rows, and published versions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from trustmesh.descriptors import Mesh, OutputDataset, Product
from trustmesh.descriptors.models import IM8_LEVELS, SENSITIVITIES
from trustmesh.metastore import serialize
from trustmesh.metastore.iceberg import table_identifier
from trustmesh.metastore.schema import (
    ColumnRow,
    DatasetRow,
    DomainRow,
    PersonRow,
    ProductRow,
    RoleRow,
    SearchDocRow,
    utcnow,
)


def highest(values: list[str | None], order: list[str]) -> str | None:
    """The most restrictive of some labels, by their order in the scheme."""
    ranked = [v for v in values if v in order]
    return max(ranked, key=order.index) if ranked else None


def register_domains(session: Session, mesh: Mesh) -> None:
    """Domains, people and roles as declared now (the repo is the source of truth).

    Builds starting together each rewrite these rows: they take turns, so none sees another's half-done rewrite.
    """
    serialize(session, "trustmesh.register_domains")
    session.execute(delete(RoleRow))
    for domain in mesh.domains.values():
        session.merge(DomainRow(name=domain.name, kind=domain.kind, sector=domain.sector,
                                description=domain.description, glossary=[t.model_dump() for t in domain.glossary]))
    people = [(p, None) for p in mesh.config.people] + [(p, d.name) for d in mesh.domains.values() for p in d.people]
    seen_roles: set[tuple[str, str, str | None]] = set()
    for person, domain_name in people:
        session.merge(PersonRow(id=person.id, name=person.name, email=person.email, domain=domain_name,
                                clearance=person.clearance, attributes=person.attributes))
        for role in person.roles:
            key = (person.id, role, domain_name)
            if key not in seen_roles:
                seen_roles.add(key)
                session.add(RoleRow(person_id=person.id, role=role, domain=domain_name))


def register_product(session: Session, mesh: Mesh, product: Product, fingerprint: str | None) -> None:
    """Upsert a product, its datasets and columns, and rewrite its search documents."""
    session.merge(ProductRow(
        address=product.address, domain=product.domain, name=product.name, kind=product.kind, tier=product.tier,
        status=product.status, version=product.version, description=product.description, tags=product.tags,
        team=product.team, inputs=[p.model_dump(mode="json") for p in product.inputs], descriptor=product.document,
        fingerprint=fingerprint, built_at=utcnow(),
    ))
    session.flush()
    scheme = mesh.config.governance.classification
    for output in product.outputs:
        contract = output.contract
        assert contract is not None
        existing = session.get(DatasetRow, output.address)
        row = DatasetRow(
            address=output.address, product=product.address, domain=product.domain, name=output.name,
            description=output.description or contract.dataset_description, contract=contract.document,
            contract_version=contract.version,
            classification=highest([c.classification for c in contract.columns], scheme.levels or IM8_LEVELS),
            sensitivity=highest([c.sensitivity for c in contract.columns], scheme.sensitivities or SENSITIVITIES)
            or "non-sensitive",
            has_pii=any(c.pii_type for c in contract.columns), iceberg_table=".".join(table_identifier(output.address)),
            current_version=existing.current_version if existing else None,
        )
        session.merge(row)
        session.flush()
        session.execute(delete(ColumnRow).where(ColumnRow.dataset == output.address))
        for position, col in enumerate(contract.columns):
            session.add(ColumnRow(
                dataset=output.address, name=col.name, position=position, logical_type=col.logical_type,
                physical_type=col.physical_type, description=col.description, required=col.required,
                primary_key=col.primary_key, unique=col.unique, classification=col.classification,
                sensitivity=col.sensitivity, pii_type=col.pii_type, glossary_term=col.glossary_term, tags=col.tags,
            ))
        _index(session, mesh, product, output, row)


def _index(session: Session, mesh: Mesh, product: Product, output: OutputDataset, row: DatasetRow) -> None:
    contract = output.contract
    assert contract is not None
    session.execute(delete(SearchDocRow).where(SearchDocRow.dataset == output.address))
    terms = mesh.glossary_terms(product.domain)
    sector = mesh.domains[product.domain].sector if product.domain in mesh.domains else ""
    facets: dict[str, Any] = dict(dataset=output.address, product=product.address, domain=product.domain,
                                  sector=sector, product_kind=product.kind)

    def words(*parts: object) -> str:
        text = " ".join(str(p) for p in parts if p)
        return f"{text} {text.replace('_', ' ').replace('-', ' ')}"

    column_text = []
    for col in contract.columns:
        term = terms.get(col.glossary_term or "")
        term_text = f"{term.term} {term.definition} {' '.join(term.synonyms)}" if term else ""
        column_text.append(words(col.name, col.description, col.pii_type, " ".join(col.tags), term_text))
        session.add(SearchDocRow(
            kind="column", address=f"{output.address}.{col.name}", title=words(col.name),
            body=words(col.description, col.pii_type, " ".join(col.tags), term_text, output.name),
            classification=col.classification, sensitivity=col.sensitivity, has_pii=bool(col.pii_type), **facets,
        ))
    description = " ".join(str(v) for v in product.description.values())
    contract_text = " ".join(str(v) for v in contract.description.values())
    session.add(SearchDocRow(
        kind="dataset", address=output.address, title=words(output.name, product.name),
        body=words(row.description, contract_text, description, " ".join(product.tags + contract.tags),
                   " ".join(column_text), product.domain, sector),
        classification=row.classification, sensitivity=row.sensitivity, has_pii=row.has_pii, **facets,
    ))


def forget_missing(session: Session, mesh: Mesh) -> None:
    """Drop search documents of datasets no longer in the repo (their versions stay readable)."""
    known = set(mesh.datasets)
    for (dataset,) in session.execute(select(SearchDocRow.dataset).distinct()).all():
        if dataset not in known:
            session.execute(delete(SearchDocRow).where(SearchDocRow.dataset == dataset))
