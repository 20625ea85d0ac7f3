"""A dataset as one principal may read it: the policy relation the gateway serves and a build binds.

For a principal and a dataset, the authorizer's decision says which columns are clear, masked or
withheld; the contract adds its row filter and aggregate-only setting for readers outside the domain;
grants that filter rows limit which rows (and on which rows each column) are visible. `PolicyRelation`
holds that outcome, and `select` turns it into one SELECT over the version's Parquet files. A consumer's
query reads it through the gateway; a product reading another domain's data reads exactly the same
relation in its build, so a grant means the same thing to a person and to a product.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trustmesh.access.model import DatasetInfo, Directory, Principal
from trustmesh.access.policy import Decision, GrantTerms
from trustmesh.engines.duckdb import literal, quote
from trustmesh.privacy.masking import Masking, choose, declared_masking, expression
from trustmesh.sqlguard import PERSON_COLUMN, QueryRefused


@dataclass
class PolicyRelation:
    """One dataset as this principal may read it: the version, its files, and the SELECT over them."""

    address: str
    version: int
    files: list[str]
    view: str
    select: str = ""
    masked: dict[str, Masking] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    row_filter: str | None = None
    policies: list[str] = field(default_factory=list)
    # With grants that filter rows: a column is visible (clear) only on the rows of a grant that covers
    # (unmasks) it; `None` means no such condition.
    visible_when: dict[str, str | None] = field(default_factory=dict)
    clear_when: dict[str, str | None] = field(default_factory=dict)
    aggregate_only: tuple[int, str | None] | None = None  # (k, the column naming the person; None: each row one)
    partly_masked: dict[str, Masking] = field(default_factory=dict)  # clear on some grants' rows, masked elsewhere
    declared: dict[str, Any] = field(default_factory=dict)  # the contract's `masking` per column

    @property
    def restricted(self) -> bool:
        """Whether the relation differs from the dataset as stored (anything masked, withheld or filtered)."""
        return bool(self.masked or self.withheld or self.row_filter or self.aggregate_only
                    or any(v is not None for v in self.visible_when.values())
                    or any(v is not None for v in self.clear_when.values()))

    def terms(self) -> str:
        """What the policy does, as stable text: a product's fingerprint changes when its grant's terms do."""
        return repr((sorted((c, m.to_dict()) for c, m in self.masked.items()), sorted(self.withheld), self.row_filter,
                     sorted(self.visible_when.items(), key=str), sorted(self.clear_when.items(), key=str),
                     self.aggregate_only, sorted(self.declared.items(), key=str)))


def apply_policy(relation: PolicyRelation, ds: DatasetInfo, decision: Decision, principal: Principal,
                 directory: Directory, grants: list[GrantTerms], now: Any) -> None:
    """Fill `relation` from the decision, the contract and the grants: what is masked (and how), withheld,
    filtered, and whether only aggregates are released. Readers inside the dataset's domain read it whole."""
    output = directory.mesh.datasets.get(ds.address)
    contract = output.contract if output else None
    relation.declared = declared_masking(contract.document if contract else None)
    outside = ds.domain not in principal.member_of()
    if contract and outside:
        properties = contract.document.get("schema", [{}])[0].get("customProperties") or []
        filters = [p.get("value") for p in properties if p.get("property") == "rowFilter"]
        if filters:
            relation.row_filter = bind_filter(str(filters[0]), principal)
        aggregate = next((p.get("value") for p in properties if p.get("property") == "aggregateOnly"), None)
        if aggregate:
            settings = aggregate if isinstance(aggregate, dict) else {}
            person = settings.get("person") or next(iter(contract.primary_key), None)
            relation.aggregate_only = (int(settings.get("k", 5)), person)
    for name, outcome in decision.columns.items():
        if outcome == "mask":
            relation.masked[name] = choose(ds.columns[name].pii_type, relation.declared.get(name))
        elif outcome == "deny":
            relation.withheld.append(name)
    if len(relation.withheld) == len(ds.columns):
        raise QueryRefused(f"{principal.id} may read no column of {ds.address}")
    if outside:
        _grant_rows(relation, ds, decision, grants, now)


def select(relation: PolicyRelation, ds: DatasetInfo, types: dict[str, str], key: Callable[[str], bytes],
           keyed_udf: str, person: Callable[[str], str] | None = None) -> str:
    """The relation's SELECT over its files: withheld columns absent, masked ones masked, rows filtered.

    `types` are the files' column types. For an aggregate-only relation a column naming the person each row
    is about is added (for the group-size check only); `person` may wrap it (a build hashes it, so the
    identifier itself never reaches the product's session).
    """
    source = f"read_parquet({literal(relation.files)})"
    columns = []
    for name, type_ in types.items():
        if name in relation.withheld or name not in ds.columns:
            if name not in relation.withheld:
                relation.withheld.append(name)  # not in the contract any more: nobody outside reads it
            continue
        masking = relation.masked.get(name)
        raw = quote(name)
        masked = expression(raw, masking, type_, key, keyed_udf) if masking else None
        value = masked or raw
        visible, clear = relation.visible_when.get(name), relation.clear_when.get(name)
        if masking is None and ds.columns[name].personal and masked is None and clear is not None:
            # readable in the clear only on the rows of a grant that unmasks it; masked elsewhere, the way
            # the contract says this column is masked
            partly = choose(ds.columns[name].pii_type, relation.declared.get(name))
            relation.partly_masked[name] = partly
            fallback = expression(raw, partly, type_, key, keyed_udf)
            value = f"CASE WHEN {clear} THEN {raw} ELSE {fallback} END"
        if visible is not None:
            value = f"CASE WHEN {visible} THEN {value} END"
        columns.append(value if value == raw else f"{value} AS {raw}")
    if not columns:
        raise QueryRefused(f"no column of {relation.address} v{relation.version} is readable")
    if relation.aggregate_only is not None:  # who each row is about, for the group-size check only
        who = relation.aggregate_only[1]
        if who in types:
            identity = quote(who)
        else:
            source = f"read_parquet({literal(relation.files)}, filename = true, file_row_number = true)"
            identity = "(filename || ':' || file_row_number)"
        columns.append(f"{person(identity) if person else identity} AS {quote(PERSON_COLUMN)}")
    where = f" WHERE {relation.row_filter}" if relation.row_filter else ""
    relation.select = f"SELECT {', '.join(columns)} FROM {source}{where}"
    return relation.select


def _any(conditions: list[str | None]) -> str | None:
    """OR of row conditions, where None is "every row" (and so wins)."""
    if not conditions or any(c is None for c in conditions):
        return None
    return " OR ".join(f"({c})" for c in sorted(set(c for c in conditions if c)))


def _grant_rows(relation: PolicyRelation, ds: DatasetInfo, decision: Decision, grants: list[GrantTerms],
                now: Any) -> None:
    """Rows limited by grants: a row is visible on any grant's rows; a column only on the rows of a grant that
    covers it, and in the clear only on the rows of one that unmasks it. Cedar's column outcome still caps it."""
    live = [g for g in grants if g.dataset == ds.address and g.expires_at > now]
    if not live or all(g.row_filter is None for g in live):
        return
    rows = _any([g.row_filter for g in live])
    relation.row_filter = f"({relation.row_filter}) AND ({rows})" if relation.row_filter and rows else \
        (relation.row_filter or rows)
    for name, outcome in decision.columns.items():
        if outcome == "deny":
            continue
        covering = [g for g in live if g.columns is None or name in g.columns]
        relation.visible_when[name] = _any([g.row_filter for g in covering]) if covering else "false"
        if outcome == "allow" and ds.columns[name].personal:
            unmasking = [g.row_filter for g in covering if name in g.unmask]
            relation.clear_when[name] = _any(unmasking) if unmasking else "false"


def bind_filter(template: str, principal: Principal) -> str:
    """A contract's row filter for outside readers; `{agency}` and `{principal}` become the reader's values."""
    values = {"agency": principal.domain or "", "principal": principal.id}
    # One pass, so a value that itself looks like a placeholder is never substituted again.
    text = re.sub(r"\{(agency|principal)\}", lambda m: "'" + values[m.group(1)].replace("'", "''") + "'", template)
    return f"({text})"
