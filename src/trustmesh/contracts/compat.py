"""Contracts over time: a breaking change to a published dataset needs the contract's major version raised."""

from __future__ import annotations

from sqlalchemy.orm import Session

from trustmesh.contracts.diff import diff_contracts, next_major
from trustmesh.descriptors import Mesh
from trustmesh.errors import Problem
from trustmesh.metastore.schema import DatasetRow


def breaking_change_problems(meta: Session, mesh: Mesh, products: list[str]) -> list[Problem]:
    """Each dataset whose repo contract breaks the published one without a major version bump."""
    problems = []
    for address in products:
        for output in mesh.products[address].outputs:
            published = meta.get(DatasetRow, output.address)
            if output.contract is None or published is None or published.current_version is None or not published.contract:
                continue
            diff = diff_contracts(published.contract, output.contract.document)
            if diff.requires_major_bump():
                breaking = [c for c in diff.changes if c.kind == "breaking"]
                problems.append(Problem(
                    output.contract.file,
                    f"breaking change to published {output.address} without a major version bump "
                    f"({diff.old_version} → {diff.new_version}): " + "; ".join(f"{c.what} ({c.path})" for c in breaking),
                    "version",
                    fix=f"raise `version` to {next_major(diff.old_version) or 'the next major'} so consumers know, or "
                        f"make the change compatible (see `trustmesh contract diff {output.address}`)",
                ))
    return problems
