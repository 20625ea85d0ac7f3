"""Lineage pictures: datasets in layers (upstream left, downstream right), drawn as inline SVG on the server.

No script and no network: the layout is a small layered one (longest-path layers, a few barycentre sweeps to
untangle each layer), bounded in depth and in nodes so a picture stays readable and cheap to draw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

MAX_DEPTH = 3  # steps drawn each way
MAX_NODES = 40  # datasets in one picture, the one it is about included
MAX_COLUMN_EDGES = 300  # rows of the column table

NODE_W, NODE_H = 200, 46
GAP_X, GAP_Y, PAD = 72, 14, 8
NAME_CHARS, SUB_CHARS = 23, 31  # what fits in a node at 13px and 11px
SWEEPS = 4

SOURCE = "source:"
DASHED = ' stroke-dasharray="5 4"'


@dataclass
class Node:
    id: str  # a dataset address, or `source:<product>.<port>` for a source outside the mesh
    layer: int  # < 0 upstream, 0 the dataset itself, > 0 downstream
    distance: int  # fewest steps from the dataset
    x: float = 0.0
    y: float = 0.0

    @property
    def kind(self) -> str:
        if self.layer == 0:
            return "focus"
        return "source" if self.id.startswith(SOURCE) else "dataset"

    @property
    def side(self) -> str:
        return "up" if self.layer < 0 else "down" if self.layer > 0 else "self"

    @property
    def name(self) -> str:
        return self.id.rsplit(".", 1)[-1]

    @property
    def product(self) -> str:
        return self.id.removeprefix(SOURCE).rsplit(".", 1)[0]


@dataclass
class Link:
    """One dataset feeding another, folded from its column edges."""

    source: str
    target: str
    columns: int  # column edges folded into it
    direct: bool  # some value flows (otherwise it only filters, joins, groups or orders)
    masked: bool  # some value is masked on the way


@dataclass
class Picture:
    address: str
    nodes: list[Node]
    links: list[Link]
    column_edges: list[dict[str, Any]]  # each edge with `direction` (up or down), nearest first
    cut: list[str] = field(default_factory=list)  # why the picture shows less than the whole lineage
    width: float = 0.0
    height: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.links


def picture(address: str, up: Iterable[dict[str, Any]], down: Iterable[dict[str, Any]], *, depth: int = MAX_DEPTH,
            max_nodes: int = MAX_NODES, max_column_edges: int = MAX_COLUMN_EDGES) -> Picture:
    """Lay out a dataset's lineage from the catalog's edges, fetched one step deeper than `depth` so the picture
    knows whether the lineage goes further than it draws."""
    cut: list[str] = []
    sides: dict[str, list[dict[str, Any]]] = {}
    for direction, edges in (("up", list(up)), ("down", list(down))):
        sides[direction] = [e for e in edges if e["depth"] <= depth]
        if len(sides[direction]) < len(edges):
            cut.append(f"{'upstream' if direction == 'up' else 'downstream'} lineage goes on beyond "
                       f"{depth} step{'' if depth == 1 else 's'}")

    # the fewest steps to each dataset, on its side; a dataset on both sides (a cycle) stays upstream
    distance: dict[str, tuple[int, int]] = {address: (0, 0)}
    for direction, sign, far in (("up", -1, "source_dataset"), ("down", 1, "dataset")):
        for e in sides[direction]:
            node = e[far]
            if node not in distance or (distance[node][1] == sign and e["depth"] < distance[node][0]):
                distance[node] = (e["depth"], sign)
    ranked = sorted((n for n in distance if n != address), key=lambda n: (distance[n][0], distance[n][1], n))
    kept = {address, *ranked[:max_nodes - 1]}
    if len(ranked) > max_nodes - 1:
        cut.append(f"showing the {max_nodes - 1} nearest of {len(ranked)} related datasets")

    column_edges = [{**e, "direction": direction} for direction in ("up", "down") for e in sides[direction]
                    if e["dataset"] in kept and e["source_dataset"] in kept]
    column_edges.sort(key=lambda e: (e["depth"], e["direction"] != "up", e["source_dataset"], e["source_column"],
                                     e["dataset"], e["column"]))
    links = _fold(column_edges)
    kept = {address} | {link.source for link in links} | {link.target for link in links}  # none left dangling
    if len(column_edges) > max_column_edges:
        cut.append(f"the column table lists the {max_column_edges} nearest of {len(column_edges)} column edges")
        column_edges = column_edges[:max_column_edges]

    layers = _layers(address, links, {n: distance[n][1] for n in kept})
    nodes = {n: Node(n, layers[n], distance[n][0]) for n in kept}
    links.sort(key=lambda link: (layers[link.source], layers[link.target], link.source, link.target))
    result = Picture(address, sorted(nodes.values(), key=lambda n: (n.layer, n.id)), links, column_edges, cut)
    if links:
        _place(result, nodes)
    return result


def _fold(column_edges: list[dict[str, Any]]) -> list[Link]:
    folded: dict[tuple[str, str], Link] = {}
    for e in column_edges:
        key = (e["source_dataset"], e["dataset"])
        link = folded.get(key)
        if link is None:
            link = folded[key] = Link(key[0], key[1], 0, False, False)
        link.columns += 1
        link.direct = link.direct or e["type"] == "DIRECT"
        link.masked = link.masked or bool(e["masking"])
    return sorted(folded.values(), key=lambda link: (link.source, link.target))


def _layers(address: str, links: list[Link], side: dict[str, int]) -> dict[str, int]:
    """Longest path from (upstream) or to (downstream) the dataset, so every arrow points right. A cycle cannot
    loop for ever: each pass can only push a layer one further, and there are as many passes as datasets."""
    layer = {n: side[n] for n in side}
    for _ in range(len(side)):
        changed = False
        for link in links:
            s, t = link.source, link.target
            if side[s] < 0 and s != address and t in layer and layer[t] <= 0 and layer[s] > layer[t] - 1:
                layer[s], changed = layer[t] - 1, True
            if side[t] > 0 and t != address and s in layer and layer[s] >= 0 and layer[t] < layer[s] + 1:
                layer[t], changed = layer[s] + 1, True
        if not changed:
            break
    layer[address] = 0
    return layer


def _place(result: Picture, nodes: dict[str, Node]) -> None:
    """Order each layer by the mean position of its neighbours in the next layer (barycentres), then place it."""
    by_layer: dict[int, list[Node]] = {}
    for node in result.nodes:
        by_layer.setdefault(node.layer, []).append(node)
    neighbours: dict[str, list[str]] = {n: [] for n in nodes}
    for link in result.links:
        neighbours[link.source].append(link.target)
        neighbours[link.target].append(link.source)
    order = sorted(by_layer)
    position: dict[str, float] = {}

    def settle(layer: list[Node]) -> None:
        for i, node in enumerate(layer):
            position[node.id] = i - (len(layer) - 1) / 2

    for layer in by_layer.values():
        settle(layer)
    # sweep outward from the dataset on each side, then back, a few times
    upstream, downstream = [k for k in order if k < 0], [k for k in order if k > 0]
    passes = [list(reversed(upstream)) + downstream, upstream + list(reversed(downstream))]
    for sweep in range(SWEEPS):
        for k in passes[sweep % 2]:
            def key(node: Node) -> tuple[float, str]:
                near = [position[m] for m in neighbours[node.id] if nodes[m].layer != node.layer]
                return (sum(near) / len(near) if near else position[node.id], node.id)
            by_layer[k].sort(key=key)
            settle(by_layer[k])

    tallest = max(len(layer) for layer in by_layer.values())
    result.height = 2 * PAD + tallest * NODE_H + (tallest - 1) * GAP_Y
    result.width = 2 * PAD + len(order) * NODE_W + (len(order) - 1) * GAP_X
    for column, k in enumerate(order):
        layer = by_layer[k]
        top = (result.height - (len(layer) * NODE_H + (len(layer) - 1) * GAP_Y)) / 2
        for i, node in enumerate(layer):
            node.x = PAD + column * (NODE_W + GAP_X)
            node.y = top + i * (NODE_H + GAP_Y)
    result.nodes = [n for k in order for n in by_layer[k]]


# --- drawing ------------------------------------------------------------------------------------------------------


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def describe(node: Node) -> str:
    """What a node is, in words: its title in the picture."""
    if node.kind == "focus":
        return f"{node.id} (this dataset)"
    steps = f"{node.distance} step{'' if node.distance == 1 else 's'} {'upstream' if node.side == 'up' else 'downstream'}"
    if node.kind == "source":
        return f"source {node.name} of {node.product}, outside the mesh ({steps})"
    return f"{node.id} ({steps})"


def _num(value: float) -> str:
    return f"{value:g}"


def svg(result: Picture, ident: str, link: Callable[[str], str | None]) -> Markup:
    """The picture as an inline SVG: a `<title>`, arrows (hidden from screen readers: the edge list repeats them),
    and one node per dataset, each a link to its product page; sources outside the mesh drawn as files."""
    if result.empty:
        return Markup("")
    ups = sum(1 for n in result.nodes if n.side == "up")
    downs = sum(1 for n in result.nodes if n.side == "down")
    title = (f"Lineage of {result.address}: {ups} upstream and {downs} downstream "
             f"dataset{'' if ups + downs == 1 else 's'}")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage-graph" role="group" '
           f'width="{_num(result.width)}" height="{_num(result.height)}" '
           f'viewBox="0 0 {_num(result.width)} {_num(result.height)}" aria-labelledby="{escape(ident)}-title">',
           f'<title id="{escape(ident)}-title">{escape(title)}</title>',
           f'<defs><marker id="{escape(ident)}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           f'markerHeight="7" orient="auto"><path d="M0 0L10 5L0 10z" fill="#57606a"/></marker></defs>',
           '<g class="edges" aria-hidden="true">']
    at = {n.id: n for n in result.nodes}
    for edge in result.links:
        s, t = at[edge.source], at[edge.target]
        x1, y1, x2, y2 = s.x + NODE_W, s.y + NODE_H / 2, t.x, t.y + NODE_H / 2
        bend = max(GAP_X / 2, (x2 - x1) / 3)
        classes = " ".join(["edge", "direct" if edge.direct else "indirect", *(["masked"] if edge.masked else [])])
        out.append(f'<path class="{classes}" d="M{_num(x1)} {_num(y1)}C{_num(x1 + bend)} {_num(y1)} '
                   f'{_num(x2 - bend)} {_num(y2)} {_num(x2 - 1)} {_num(y2)}" fill="none" stroke="#57606a" '
                   f'stroke-width="1.5"{"" if edge.direct else DASHED} '
                   f'marker-end="url(#{escape(ident)}-arrow)"/>')
    out.append("</g>")
    for node in result.nodes:
        out.append(_node(node, link(node.id) if node.kind != "focus" else None))
    out.append("</svg>")
    return Markup("".join(out))


def _node(node: Node, href: str | None) -> str:
    x, y, w, h = node.x, node.y, NODE_W, NODE_H
    if node.kind == "source":  # a page with a folded corner
        fold = 12
        shape = (f'<path class="shape" d="M{_num(x)} {_num(y)}H{_num(x + w - fold)}L{_num(x + w)} {_num(y + fold)}'
                 f'V{_num(y + h)}H{_num(x)}Z M{_num(x + w - fold)} {_num(y)}V{_num(y + fold)}H{_num(x + w)}" '
                 f'fill="#f6f8fa" stroke="#57606a"/>')
        sub = f"source · {node.product}"
    else:
        shape = (f'<rect class="shape" x="{_num(x)}" y="{_num(y)}" width="{w}" height="{h}" rx="6" '
                 f'fill="{"#e6effc" if node.kind == "focus" else "#ffffff"}" stroke="#57606a"/>')
        sub = "this dataset" if node.kind == "focus" else node.product
    title = f"<title>{escape(describe(node))}</title>"  # the accessible name of the link (or group)
    body = (f'{shape}'
            f'<text x="{_num(x + 10)}" y="{_num(y + 19)}" class="name">{escape(_fit(node.name, NAME_CHARS))}</text>'
            f'<text x="{_num(x + 10)}" y="{_num(y + 36)}" class="sub">{escape(_fit(sub, SUB_CHARS))}</text>')
    if href:
        return f'<a href="{escape(href)}">{title}<g class="node {node.kind}">{body}</g></a>'
    return f'<g class="node {node.kind}">{title}{body}</g>'
