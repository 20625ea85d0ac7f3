"""naming-convention: product, dataset and column names follow the mesh's conventions.

Each parameter is a regular expression searched in the name; anchor it (`^...$`) to constrain the whole
name. Regular expressions are not ordered, so a lower-level policy cannot be checked to only tighten one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, field_validator

from trustmesh.governance.model import Violation
from trustmesh.governance.rules import Rule

if TYPE_CHECKING:
    from trustmesh.descriptors import Product
    from trustmesh.governance.context import RuleContext


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product: str = r"^[a-z][a-z0-9-]*-dp$"
    dataset: str = r"^[a-z][a-z0-9_]*$"
    column: str = r"^[a-z][a-z0-9_]*$"

    @field_validator("product", "dataset", "column")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value


def check(ctx: RuleContext, product: Product, params: Params) -> list[Violation]:
    out = []
    if not re.search(params.product, product.name):
        out.append(Violation(
            f"product name {product.name!r} does not match {params.product}",
            fix=f"rename the folder domains/{product.domain}/products/{product.name} and the `id` and `name` in "
                f"{product.file} to a name matching {params.product} (consumers' input ports change with it)"))
    for output in product.outputs:
        if not re.search(params.dataset, output.name):
            out.append(Violation(
                f"dataset name {output.name!r} of {product.address} does not match {params.dataset}", output.address,
                fix=f"rename the output port {output.name} in {product.file}, its contract (id, schema name) and "
                    f"its SQL file to a name matching {params.dataset}"))
        contract = output.contract
        if contract is None:
            continue
        for col in contract.columns:
            if not re.search(params.column, col.name):
                out.append(Violation(
                    f"column name {col.name!r} of {output.address} does not match {params.column}",
                    output.address, col.name,
                    fix=f"rename {col.name} in {output.sql_file} (`AS <new name>`) and in {contract.file} to a name "
                        f"matching {params.column}; a rename is a breaking change: raise the contract's major "
                        "version"))
    return out


RULE = Rule("naming-convention", "Product, dataset and column names match the mesh's regular expressions.",
            check, Params)
