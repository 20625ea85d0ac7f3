"""The build plan: products as a DAG across domains, selectors, cycles, and the order to build in."""

from __future__ import annotations

import difflib
from graphlib import CycleError, TopologicalSorter

from trustmesh.descriptors import Mesh
from trustmesh.errors import InvalidMesh, Problem, UsageError


def product_of(mesh: Mesh, address: str) -> str | None:
    """The product address owning a dataset address, if the dataset exists."""
    dataset = mesh.datasets.get(address)
    return f"{dataset.domain}.{dataset.product}" if dataset else None


def upstream_graph(mesh: Mesh) -> dict[str, set[str]]:
    """product → the products it reads (unknown references are left to validation)."""
    graph: dict[str, set[str]] = {}
    for address, product in mesh.products.items():
        deps = {product_of(mesh, ref) for ref in product.upstream_addresses}
        graph[address] = {d for d in deps if d and d != address} | ({address} if _self_reference(mesh, address) else set())
    return graph


def _self_reference(mesh: Mesh, address: str) -> bool:
    return any(product_of(mesh, ref) == address for ref in mesh.products[address].upstream_addresses)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        cycle: list[str] = list(exc.args[1])
        return cycle
    return None


def cycle_problems(mesh: Mesh) -> list[Problem]:
    cycle = find_cycle(upstream_graph(mesh))
    if not cycle:
        return []
    chain = " → ".join(reversed(cycle))
    first = mesh.products[cycle[0]]
    return [Problem(first.file, f"products depend on each other in a cycle: {chain}", "inputPorts",
                    fix="break the cycle: one of these products must stop reading the other")]


def build_order(mesh: Mesh, products: set[str]) -> list[str]:
    """The selected products, upstream before downstream; a cycle among them is an invalid mesh."""
    graph = upstream_graph(mesh)
    problems = cycle_problems(mesh)
    if problems:
        raise InvalidMesh(problems)
    sorter = TopologicalSorter({p: sorted(graph.get(p, set()) & products) for p in sorted(products)})
    return list(sorter.static_order())


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def select(mesh: Mesh, selector: str | None) -> list[str]:
    """Products matched by a selector, in build order.

    Selectors: nothing (every product), `DOMAIN`, `DOMAIN.PRODUCT` (or `DOMAIN/PRODUCT`), a dataset
    address, each optionally with a leading `+` (and everything upstream) and/or a trailing `+`
    (and everything downstream).
    """
    if not selector or selector in ("*", "all"):
        return build_order(mesh, set(mesh.products))
    text = selector.strip()
    up, down = text.startswith("+"), text.endswith("+")
    core = text.strip("+").replace("/", ".")
    if core in mesh.domains:
        chosen = {a for a, p in mesh.products.items() if p.domain == core}
    elif core in mesh.products:
        chosen = {core}
    elif product_of(mesh, core):
        chosen = {product_of(mesh, core) or ""}
    else:
        names = list(mesh.domains) + list(mesh.products) + list(mesh.datasets)
        close = difflib.get_close_matches(core, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `trustmesh catalog list`"
        raise UsageError(f"selector {selector!r} matches no domain, product or dataset — fix: {hint}")
    graph = upstream_graph(mesh)
    downstream: dict[str, set[str]] = {p: set() for p in graph}
    for product, deps in graph.items():
        for dep in deps:
            downstream.setdefault(dep, set()).add(product)
    extra: set[str] = set()
    for product in chosen:
        if up:
            extra |= _closure(graph, product)
        if down:
            extra |= _closure(downstream, product)
    return build_order(mesh, chosen | extra)
