"""Addresses as people type them: `d.p.ds`, `d.p.port.ds`, quoted parts, `d/p` for products."""

from __future__ import annotations

from trustmesh.errors import UsageError


def normalise_address(address: str) -> str:
    """Accept `d.p.ds` and the port-qualified `d.p.port.ds` (one dataset per port); quotes are ignored."""
    parts = [p.strip('"') for p in address.strip().split(".")]
    if len(parts) == 4 and parts[2] == parts[3]:
        parts = parts[:2] + parts[3:]
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"{address!r} is not a dataset address — fix: use <domain>.<product>.<dataset>, "
                         "e.g. bts.flights-dp.flights")
    return ".".join(parts)


def normalise_product_address(address: str) -> str:
    """`<domain>.<product>`, checked before any lookup so a malformed address is a usage error, not "not found"."""
    parts = [p.strip('"') for p in address.strip().replace("/", ".").split(".")]
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"{address!r} is not a product address — fix: use <domain>.<product>, e.g. bts.flights-dp")
    return ".".join(parts)
