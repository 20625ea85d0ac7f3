"""Masking and anonymisation strategies (PDPC Guide to Basic Anonymisation) as DuckDB expressions.

A strategy turns a column into what a consumer without an unmasking grant sees. The expression is
applied inside the policy-enforced relation, before any of the consumer's SQL runs, so filters,
joins, aggregates and ordering only ever see masked values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("suppress", "mask", "pseudonymise", "generalise", "perturb")
# What each PII type gets when its contract names no strategy: the least revealing that keeps it useful.
DEFAULT_BY_PII_TYPE = {
    "nric": "mask",
    "email": "mask",
    "phone": "mask",
    "name": "mask",
    "address": "suppress",
    "postal-code": "generalise",
    "date-of-birth": "generalise",
}
HMAC_BLOCK = 64


@dataclass(frozen=True)
class Masking:
    """How one column is masked: the strategy, its parameters, and (for pseudonymisation) the key's id."""

    strategy: str
    pii_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def describe(self) -> str:
        if self.strategy == "mask":
            return {"nric": "character masking: last 3 digits and check letter",
                    "email": "character masking: domain kept", "phone": "character masking: last 4 digits",
                    "name": "character masking: first letter"}.get(self.pii_type or "", "character masking")
        if self.strategy == "generalise":
            if self.pii_type == "postal-code":
                return "generalised to the 2-digit postal sector"
            if self.pii_type == "date-of-birth":
                return "generalised to the year"
            return f"generalised to buckets of {self.params.get('bucket', 10)}"
        if self.strategy == "pseudonymise":
            return f"keyed pseudonym (HMAC-SHA256, key {self.params.get('key', '?')})"
        if self.strategy == "perturb":
            return f"perturbed by seeded noise within ±{self.params.get('bound', 1)}"
        return "suppressed (NULL)"

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "how": self.describe()}


def declared_masking(contract: dict[str, Any] | None) -> dict[str, Any]:
    """Each column's `masking` custom property in an ODCS contract (column name → strategy or settings)."""
    declared: dict[str, Any] = {}
    for col in ((contract or {}).get("schema") or [{}])[0].get("properties") or []:
        for prop in col.get("customProperties") or []:
            if prop.get("property") == "masking":
                declared[col.get("name")] = prop.get("value")
    return declared


def choose(pii_type: str | None, declared: Any = None) -> Masking:
    """The masking of a personal column: the contract's `masking` custom property, else by PII type.

    `declared` is a strategy name or `{strategy: ..., bucket|bound|key: ...}`.
    """
    params: dict[str, Any] = {}
    strategy = None
    if isinstance(declared, dict):
        params = {k: v for k, v in declared.items() if k != "strategy"}
        strategy = declared.get("strategy")
    elif isinstance(declared, str):
        strategy = declared
    strategy = strategy or DEFAULT_BY_PII_TYPE.get(pii_type or "", "suppress")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown masking strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    return Masking(strategy, pii_type, params)


def hmac_sql(value_sql: str, key: bytes) -> str:
    """HMAC-SHA256(key, value) in DuckDB SQL, as lower-case hex; equal to Python's `hmac.new(key, v, sha256)`."""
    if len(key) > HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(HMAC_BLOCK, b"\0")
    ipad = bytes(b ^ 0x36 for b in key).hex()
    opad = bytes(b ^ 0x5C for b in key).hex()
    inner = f"unhex(sha256(unhex('{ipad}') || encode({value_sql})))"
    return f"sha256(unhex('{opad}') || {inner})"


def canonical_nric_sql(value_sql: str) -> str:
    """Upper case without whitespace: the form every domain tokenises, so equal NRICs give equal tokens."""
    return f"upper(regexp_replace({value_sql}, '\\s', '', 'g'))"


def expression(column_sql: str, masking: Masking, column_type: str, key: Callable[[str], bytes],
               keyed_udf: str | None = None) -> str:
    """The masked value of `column_sql` (its DuckDB type `column_type`) under `masking`.

    `key(key_id)` returns a pseudonymisation key from the platform's key store. With `keyed_udf` (the
    name of a function registered by `register_keyed_functions`), keys stay in Python and never appear
    in the SQL text; without it the HMAC is written out in SQL (for tools that run it offline).
    """
    c = column_sql
    text_type = column_type.upper() in ("VARCHAR", "TEXT", "STRING") or column_type.upper().startswith("VARCHAR")
    if masking.strategy == "suppress":
        return f"CAST(NULL AS {column_type})"
    if masking.strategy == "mask":
        as_text = c if text_type else f"CAST({c} AS VARCHAR)"
        if masking.pii_type == "email":
            body = (f"CASE WHEN strpos({as_text}, '@') > 0 THEN '***@' || split_part({as_text}, '@', 2) "
                    "ELSE '***' END")
        elif masking.pii_type == "name":
            body = f"left({as_text}, 1) || '***'"
        elif masking.pii_type in ("nric", "phone"):
            keep = 4  # NRIC: 3 digits and the check letter; phone: the last 4 digits; a shorter value: nothing
            body = (f"CASE WHEN length({as_text}) <= {keep + 1} THEN repeat('*', length({as_text})) "
                    f"ELSE repeat('*', length({as_text}) - {keep}) || right({as_text}, {keep}) END")
        else:
            body = "'***'"
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE {body} END"
    if masking.strategy == "pseudonymise":
        key_id = str(masking.params.get("key", "default"))
        value = canonical_nric_sql(f"CAST({c} AS VARCHAR)") if masking.pii_type == "nric" else f"CAST({c} AS VARCHAR)"
        token = f"{keyed_udf}('pseudonym:{key_id}', {value})" if keyed_udf else hmac_sql(value, key(f"pseudonym:{key_id}"))
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE {token} END"
    if masking.strategy == "generalise":
        if masking.pii_type == "postal-code":  # a postal code stored as a number keeps its leading zero
            text = c if text_type else f"lpad(CAST({c} AS VARCHAR), 6, '0')"
            return f"left({text}, 2)"
        if masking.pii_type == "date-of-birth" or column_type.upper() in ("DATE", "TIMESTAMP"):
            return f"CAST(date_trunc('year', {c}) AS {column_type})"
        bucket = float(masking.params.get("bucket", 10))
        return f"CAST(floor({c} / {bucket!r}) * {bucket!r} AS {column_type})"
    if masking.strategy == "perturb":
        bound = float(masking.params.get("bound", 1))
        seed = str(masking.params.get("seed", "default"))
        # Noise from a keyed hash of the value: the same value always gets the same noise, so repeating a
        # query cannot average it away, and without the key nobody can compute (and subtract) it.
        digest = (f"{keyed_udf}('perturb:{seed}', CAST({c} AS VARCHAR))" if keyed_udf
                  else hmac_sql(f"CAST({c} AS VARCHAR)", key(f"perturb:{seed}")))
        noise = f"((CAST(('0x' || left({digest}, 8)) AS BIGINT) % 2001) / 1000.0 - 1.0) * {bound!r}"
        return f"CAST({c} + {noise} AS {column_type})"
    raise ValueError(f"unknown masking strategy {masking.strategy!r}")


def register_keyed_functions(con: Any, key: Callable[[str], bytes], name: str) -> None:
    """Register `name(key_id, value)` → HMAC-SHA256 hex on a DuckDB connection; the keys stay in Python."""
    import hmac as hmac_lib

    import pyarrow as pa
    import pyarrow.compute as pc

    def keyed(key_ids: Any, values: Any) -> Any:
        ids = pc.unique(key_ids).to_pylist()
        if len(ids) != 1:
            return pa.array([None if v is None else hmac_lib.new(key(k), v.encode(), hashlib.sha256).hexdigest()
                             for k, v in zip(key_ids.to_pylist(), values.to_pylist(), strict=True)], pa.string())
        secret = key(ids[0])
        flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        encoded = flat.dictionary_encode()
        digests = [None if v is None else hmac_lib.new(secret, v.encode(), hashlib.sha256).hexdigest()
                   for v in encoded.dictionary.to_pylist()]
        return pa.array(digests, pa.string()).take(encoded.indices)

    con.create_function(name, keyed, ["VARCHAR", "VARCHAR"], "VARCHAR", type="arrow", null_handling="special",
                        side_effects=False)
