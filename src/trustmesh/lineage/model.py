"""Lineage as data: where each output column comes from, and how (OpenLineage transformation types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIRECT = "DIRECT"
INDIRECT = "INDIRECT"
# OpenLineage subtypes: DIRECT → IDENTITY | TRANSFORMATION | AGGREGATION;
# INDIRECT → JOIN | GROUP_BY | FILTER | SORT | WINDOW | CONDITIONAL
DIRECT_SUBTYPES = ("IDENTITY", "TRANSFORMATION", "AGGREGATION")
INDIRECT_SUBTYPES = ("JOIN", "GROUP_BY", "FILTER", "SORT", "WINDOW", "CONDITIONAL")


@dataclass(frozen=True)
class Transformation:
    type: str  # DIRECT | INDIRECT
    subtype: str
    masking: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "subtype": self.subtype, "masking": self.masking}


@dataclass(frozen=True)
class ColumnRef:
    """A column of an input: `dataset` is an input reference (a port name or a dataset address)."""

    dataset: str
    column: str


@dataclass
class ColumnLineage:
    """One output column and every input column it depends on, with how."""

    column: str
    inputs: dict[ColumnRef, set[Transformation]] = field(default_factory=dict)

    def add(self, ref: ColumnRef, transformation: Transformation) -> None:
        self.inputs.setdefault(ref, set()).add(transformation)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "inputs": [
            {"dataset": ref.dataset, "column": ref.column,
             "transformations": [t.to_dict() for t in sorted(ts, key=lambda t: (t.type, t.subtype, t.masking))]}
            for ref, ts in sorted(self.inputs.items(), key=lambda kv: (kv[0].dataset, kv[0].column))]}


@dataclass
class DatasetLineage:
    """The lineage of one output dataset, as far as its SQL could be analysed."""

    address: str
    columns: dict[str, ColumnLineage] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)  # what could not be traced, in words

    @property
    def complete(self) -> bool:
        return not self.unresolved

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "complete": self.complete, "unresolved": list(self.unresolved),
                "columns": [self.columns[c].to_dict() for c in sorted(self.columns)]}
