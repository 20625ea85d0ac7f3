"""Benchmark: re-evaluating every product of a large synthetic mesh under the shipped governance rules.

Meshes of 1,000, 5,000 and 10,000 products (--quick: one mesh of 200, a smoke run) in 50 domains of 5 sectors, each product
publishing one dataset of 20 columns (200,000 columns at 10k), are written as descriptor files in a temp
folder, with a `governance/policies/` folder holding the shipped rules as global policies (every rule but
open-data-k-anonymity, which reads data). Violations are sprinkled in: teams without a product owner (a
domain without its owner or steward does not load), short descriptions, unclassified columns, personal
columns without a masking strategy (a policy still in its grace period: at-risk), gold datasets without
quality rules, inputs from other domains without a grant, badly named products and columns, price columns
without their glossary term.

Timed at each size: loading the mesh (cold: the standards' JSON-schema validation of every file; warm: from
its validation cache, as every later command loads it), loading the policies, building the RuleContext
(RuleContext(mesh, Directory.from_mesh(mesh), now), empty platform state: no metastore) and `evaluate` over
every product — each product's failing policies and status checked against what was sprinkled. Growth is
linear when the time per product stays within 1.5x of the smallest mesh's. `--profile` adds cProfile's
top functions of the warm load and of the evaluation of the largest mesh. Ends with one line of key=value
figures, judged against the aim of re-evaluating 10k products (policies + context + evaluate) in < 10 s.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trustmesh.access.model import Directory
from trustmesh.descriptors import Mesh, load_mesh
from trustmesh.governance.context import RuleContext
from trustmesh.governance.evaluate import AT_RISK, COMPLIANT, UNFIT, evaluate
from trustmesh.governance.loader import load_policies
from trustmesh.governance.model import Policy, ProductStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from meshfactory import (
    column,
    contract_yaml,
    domain_yaml,
    file_input,
    person,
    product_input,
    product_yaml,
    write_files,
)

AIM_S = 10.0  # re-evaluating every product of a 10k mesh: policies + context + evaluate
LINEAR_TOLERANCE = 1.5  # time per product at most this much above the smallest mesh's
DOMAINS = 50
SECTORS = ("transport", "health", "education", "finance", "environment")
COLUMNS = 20
SIZES = (1_000, 5_000, 10_000)
QUICK_SIZE = 200
NOW = datetime.now(UTC)

# The sprinkled violations: how often each happens.
P_NO_PRODUCT_OWNER = 0.005  # a product's team names only a developer
P_BAD_PRODUCT_NAME = 0.005  # p00042-feed, not p00042-dp
P_SHORT_DESCRIPTION = 0.003  # per column
P_UNCLASSIFIED = 0.003  # per column
P_CAMEL_CASE = 0.002  # per ordinary column: m07Value
P_NO_MASKING = 0.03  # per personal column
P_UNKNOWN_MASKING = 0.005  # per personal column
P_PII_NOT_SENSITIVE = 0.005  # per personal column
P_GOLD_BROKEN = 0.05  # a gold dataset with one quality rule, or without its freshness SLA
P_PRODUCT_INPUT = 0.3  # a product also reads an earlier product's dataset ...
P_CROSS_DOMAIN = 0.1  # ... of another domain (no grant: inputs-granted fails)
P_PRICE = 0.5  # a dataset has a unit_price column ...
P_NO_TERM = 0.03  # ... without its glossary term

PII = [("nric", "nric", "mask"), ("email", "email", "mask"), ("full_name", "name", "pseudonymise"),
       ("postal_code", "postal-code", "generalise"), ("phone", "phone", "suppress")]

# The shipped rules as global policies, one file each; pii-masking is in its grace period (at-risk, not unfit).
POLICIES: list[dict[str, Any]] = [
    {"id": "gdo.owners-named", "rule": "owners-named", "severity": "error"},
    {"id": "gdo.columns-described", "rule": "columns-described", "severity": "error", "params": {"min_length": 10}},
    {"id": "gdo.columns-classified", "rule": "columns-classified", "severity": "error"},
    {"id": "gdo.naming-convention", "rule": "naming-convention", "severity": "warning"},
    {"id": "gdo.pii-masking", "rule": "pii-masking", "severity": "error",
     "effective": (NOW - timedelta(days=30)).date().isoformat(), "graceDays": 60},
    {"id": "gdo.gold-quality", "rule": "gold-quality", "severity": "error"},
    {"id": "gdo.lineage-complete", "rule": "lineage-complete", "severity": "error"},
    {"id": "gdo.no-undeclared-pii", "rule": "no-undeclared-pii", "severity": "error"},
    {"id": "gdo.inputs-granted", "rule": "inputs-granted", "severity": "error"},
    {"id": "gdo.contract-versioned", "rule": "contract-versioned", "severity": "error"},
    {"id": "gdo.glossary-terms", "rule": "glossary-terms", "severity": "warning",
     "params": {"terms": {"price": "(^|_)price$"}}},
]
BINDING = ("gdo.owners-named", "gdo.columns-described", "gdo.columns-classified", "gdo.gold-quality",
           "gdo.inputs-granted")


@dataclass
class Expected:
    """What was sprinkled: the products each policy must fail, and so each product's status."""

    failing: dict[str, set[str]] = field(default_factory=lambda: {p["id"]: set() for p in POLICIES})
    products: list[str] = field(default_factory=list)

    def status(self, address: str) -> str:
        if any(address in self.failing[p] for p in BINDING):
            return UNFIT
        return AT_RISK if address in self.failing["gdo.pii-masking"] else COMPLIANT


# -- the mesh ---------------------------------------------------------------------------------------------

def described(name: str) -> str:
    return f"The {name.replace('_', ' ')} of the record, as the source system keeps it."


def dataset_columns(rng: random.Random, address: str, expected: Expected) -> list[dict[str, Any]]:
    """20 columns: a key, two personal ones, maybe a price, the rest ordinary; some of them broken."""
    def level() -> str:
        return "restricted" if rng.random() < 0.2 else "official-closed"

    cols = [column("id", "integer", description=described("identifier"), required=True, primaryKey=True,
                   primaryKeyPosition=1, classification=level(),
                   quality=[{"name": "id-not-null", "metric": "nullValues", "mustBe": 0}])]
    for name, pii_type, masking in rng.sample(PII, 2):
        props = [{"property": "piiType", "value": pii_type}]
        roll = rng.random()
        if roll < P_PII_NOT_SENSITIVE:
            expected.failing["gdo.columns-classified"].add(address)  # personal, yet non-sensitive
        else:
            props.append({"property": "sensitivity", "value": "sensitive-high" if pii_type == "nric"
                          else "sensitive-normal"})
        roll = rng.random()
        if roll < P_NO_MASKING:
            expected.failing["gdo.pii-masking"].add(address)
        elif roll < P_NO_MASKING + P_UNKNOWN_MASKING:
            props.append({"property": "masking", "value": "scramble"})
            expected.failing["gdo.pii-masking"].add(address)
        else:
            props.append({"property": "masking", "value": masking})
        cols.append(column(name, "string", description=described(name), classification="restricted",
                           customProperties=props))
    if rng.random() < P_PRICE:
        price = column("unit_price", "number", description=described("unit price in SGD"), classification=level())
        if rng.random() < P_NO_TERM:
            expected.failing["gdo.glossary-terms"].add(address)
        else:
            price["customProperties"] = [{"property": "glossaryTerm", "value": "price"}]
        cols.append(price)
    j = 0
    while len(cols) < COLUMNS:
        name = f"m{j:02d}"
        if rng.random() < P_CAMEL_CASE:
            name += "Value"
            expected.failing["gdo.naming-convention"].add(address)
        cols.append(column(name, rng.choice(["string", "integer", "number", "date"]), description=described(name),
                           classification=level()))
        j += 1
    for col in cols:
        if rng.random() < P_SHORT_DESCRIPTION:
            col["description"] = "tbd"
            expected.failing["gdo.columns-described"].add(address)
        if rng.random() < P_UNCLASSIFIED:
            del col["classification"]
            expected.failing["gdo.columns-classified"].add(address)
    return cols


def mesh_files(size: int, rng: random.Random) -> tuple[dict[str, Any], Expected]:
    expected = Expected()
    files: dict[str, Any] = {
        "mesh.yaml": {"name": "bench-mesh", "description": "A synthetic mesh for the governance benchmark.",
                      "governance": {"glossary": [{"term": "price", "definition": "What something costs, in SGD."}]},
                      "people": [person("gdo", "governance-admin")]}}
    for p in POLICIES:
        files[f"governance/policies/{p['id']}.yaml"] = {
            "title": f"The {p['rule']} standard", "rationale": "The office's standard for every data product.", **p}
    names = [f"dom{d:02d}" for d in range(DOMAINS)]
    for d, domain in enumerate(names):
        files[f"domains/{domain}/domain.yaml"] = domain_yaml(domain, kind="trusted-centre" if d < len(SECTORS)
                                                             else "ssot", sector=SECTORS[d % 5])
    datasets: list[tuple[str, str]] = []  # (domain, dataset address) of the products written so far
    for k in range(size):
        d = k % DOMAINS
        domain = names[d]
        bad_name = rng.random() < P_BAD_PRODUCT_NAME
        product = f"p{k:05d}-feed" if bad_name else f"p{k:05d}-dp"
        dataset = f"d{k:05d}"
        address = f"{domain}.{product}"
        expected.products.append(address)
        if bad_name:
            expected.failing["gdo.naming-convention"].add(address)
        inputs = [file_input("raw", "data/raw.csv")]
        if datasets and rng.random() < P_PRODUCT_INPUT:
            cross = rng.random() < P_CROSS_DOMAIN
            pool = [a for dom, a in datasets[-5 * DOMAINS:] if (dom != domain) == cross]
            if pool:
                inputs.append(product_input(rng.choice(pool), "upstream"))
                if cross:
                    expected.failing["gdo.inputs-granted"].add(address)
        doc = product_yaml(domain, product, [dataset], inputs,
                           kind="aggregated" if len(inputs) > 1 else "source-aligned")
        tier = rng.choices(["gold", "silver", "bronze"], [0.2, 0.4, 0.4])[0]
        doc["customProperties"].append({"property": "tier", "value": tier})
        if rng.random() < P_NO_PRODUCT_OWNER:
            doc["team"]["members"] = [{"username": f"{domain}-dev", "role": "developer"}]
            expected.failing["gdo.owners-named"].add(address)
        folder = f"domains/{domain}/products/{product}"
        files[f"{folder}/product.yaml"] = doc
        files[f"{folder}/sql/{dataset}.sql"] = "SELECT * FROM raw\n"
        contract = contract_yaml(domain, product, dataset, dataset_columns(rng, address, expected))
        if tier == "gold":
            rules = [{"name": "has-rows", "metric": "rowCount", "mustBeGreaterThan": 0}]
            sla = [{"property": "frequency", "value": 1, "unit": "d"}]
            if rng.random() < P_GOLD_BROKEN:
                expected.failing["gdo.gold-quality"].add(address)
                rules, sla = (rules, []) if rng.random() < 0.5 else ([], sla)  # the key column's rule alone: 1
            contract["schema"][0]["quality"] = rules
            if sla:
                contract["slaProperties"] = sla
        files[f"{folder}/contracts/{dataset}.odcs.yaml"] = contract
        datasets.append((domain, f"{domain}.{product}.{dataset}"))
    return files, expected


# -- the runs ---------------------------------------------------------------------------------------------

@dataclass
class Figures:
    size: int
    columns: int = 0
    write_s: float = 0.0
    load_cold_s: float = 0.0
    load_s: float = 0.0
    policies_s: float = 0.0
    context_s: float = 0.0
    evaluate_s: float = 0.0
    graph_s: float = 0.0  # of evaluate: the access entity graph (Cedar), built once per run by inputs-granted
    rules_s: float = 0.0  # evaluate again, the entity graph already built: the rules themselves
    findings: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def reeval_s(self) -> float:
        return self.policies_s + self.context_s + self.evaluate_s

    @property
    def per_product_ms(self) -> float:
        return self.evaluate_s / self.size * 1000


def timed_load(root: Path) -> tuple[Mesh, float]:
    started = time.perf_counter()
    mesh, problems = load_mesh(root)  # strict: raises InvalidMesh listing every problem
    took = time.perf_counter() - started
    if problems:
        raise RuntimeError(f"the synthetic mesh has problems: {[p.message for p in problems][:5]}")
    return mesh, took


def context(mesh: Mesh) -> RuleContext:
    ctx = RuleContext(mesh, Directory.from_mesh(mesh), NOW)
    ctx.breaking = None
    ctx.files = None
    return ctx


def check(statuses: dict[str, ProductStatus], expected: Expected) -> None:
    """Each product fails exactly the policies sprinkled into it, and has the status that follows."""
    assert sorted(statuses) == sorted(expected.products), "evaluate did not return every product"
    wrong = []
    for address, status in statuses.items():
        got = {f.policy for f in status.findings}
        want = {p for p, products in expected.failing.items() if address in products}
        if got != want or status.status != expected.status(address):
            wrong.append((address, sorted(got), sorted(want), status.status, expected.status(address)))
    assert not wrong, f"{len(wrong)} product(s) differ from what was sprinkled, e.g. {wrong[:3]}"


def run_size(work: Path, size: int, seed: int) -> tuple[Figures, Mesh, list[Policy]]:
    f = Figures(size)
    root = work / f"mesh-{size}"
    started = time.perf_counter()
    files, expected = mesh_files(size, random.Random(seed + size))
    write_files(root, files)
    f.write_s = time.perf_counter() - started
    del files
    gc.collect()
    _, f.load_cold_s = timed_load(root)
    gc.collect()
    mesh, f.load_s = timed_load(root)
    f.columns = sum(len(o.contract.columns) for p in mesh.products.values() for o in p.outputs if o.contract)
    gc.collect()
    started = time.perf_counter()
    policies, problems = load_policies(mesh)
    f.policies_s = time.perf_counter() - started
    assert not problems and len(policies) == len(POLICIES), [p.message for p in problems][:5]
    started = time.perf_counter()
    ctx = context(mesh)
    f.context_s = time.perf_counter() - started
    started = time.perf_counter()
    statuses = evaluate(ctx, policies)
    f.evaluate_s = time.perf_counter() - started
    check(statuses, expected)
    f.findings = sum(len(s.findings) for s in statuses.values())
    f.statuses = Counter(s.status for s in statuses.values())
    del statuses
    gc.collect()
    again = context(mesh)
    started = time.perf_counter()
    again.authorizer()._graph(columns=False)  # what inputs-granted needs: the dataset-level graph
    f.graph_s = time.perf_counter() - started
    started = time.perf_counter()
    statuses = evaluate(again, policies)
    f.rules_s = time.perf_counter() - started
    check(statuses, expected)
    print(f"{size:>6,} products ({f.columns:,} columns, {DOMAINS} domains): written in {f.write_s:.1f}s; "
          f"load cold {f.load_cold_s:.2f}s, warm {f.load_s:.2f}s; policies {f.policies_s:.3f}s; "
          f"context {f.context_s:.3f}s; evaluate {f.evaluate_s:.2f}s ({f.per_product_ms:.3f} ms/product)")
    print(f"        of evaluate: the access entity graph (Cedar; inputs-granted builds it once per run) "
          f"{f.graph_s:.2f}s, the rules themselves {f.rules_s:.2f}s ({f.rules_s / size * 1000:.3f} ms/product)")
    print(f"        {f.statuses[COMPLIANT]:,} compliant, {f.statuses[AT_RISK]:,} at-risk, "
          f"{f.statuses[UNFIT]:,} unfit; {f.findings:,} findings; every product as sprinkled")
    return f, mesh, policies


def show(label: str, profiler: cProfile.Profile | str, top: int, sort: str) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    print(f"profile of {label} (top {top} by {'own' if sort == 'tottime' else 'cumulative'} time; cProfile slows "
          "everything down):")
    for line in lines[start:start + top + 1]:
        print("  " + line.replace(str(Path(sys.prefix)), "<venv>").replace(str(Path(__file__).parents[1]), "."))


def profile(smallest: Path, mesh: Mesh, policies: list[Policy], top: int) -> None:
    """cProfile's top functions of a cold load of the smallest mesh (the schema validation grows linearly),
    and of a warm load and an evaluation of the largest.

    The cold load runs in a fresh process, its validation cache removed: this one remembers valid documents."""
    shutil.rmtree(smallest / ".trustmesh", ignore_errors=True)
    stats = smallest.parent / "cold.prof"
    subprocess.run([sys.executable, "-c", "import cProfile, sys; from pathlib import Path; "
                    "from trustmesh.descriptors import load_mesh; "
                    "cProfile.run('load_mesh(Path(sys.argv[1]))', sys.argv[2])", str(smallest), str(stats)],
                   check=True)
    show(f"the cold load of {smallest.name}", str(stats), top, "cumulative")
    profiler = cProfile.Profile()
    profiler.enable()
    load_mesh(mesh.root)
    profiler.disable()
    show(f"the warm load of {len(mesh.products):,} products", profiler, top, "tottime")
    profiler = cProfile.Profile()
    profiler.enable()
    evaluate(context(mesh), policies)
    profiler.disable()
    show(f"evaluate over {len(mesh.products):,} products", profiler, top, "tottime")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 200-product mesh: a smoke run")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--profile", action="store_true", help="also profile the warm load and the evaluation of "
                        "the largest mesh")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    args = parser.parse_args()
    sizes = (QUICK_SIZE,) if args.quick else SIZES
    work = Path(tempfile.mkdtemp(prefix="trustmesh-bench-governance-"))
    try:
        results: list[Figures] = []
        largest: tuple[Mesh, list[Policy]] | None = None
        for size in sizes:
            f, mesh, policies = run_size(work, size, args.seed)
            results.append(f)
            largest = (mesh, policies)
            del mesh, policies
            gc.collect()
        first, last = results[0], results[-1]
        ratio = last.per_product_ms / first.per_product_ms
        linear = ratio <= LINEAR_TOLERANCE
        if len(results) > 1:
            print(f"growth: {'linear' if linear else 'NOT linear'} — evaluate per product "
                  + ", ".join(f"{r.size // 1000}k {r.per_product_ms:.3f} ms" for r in results)
                  + f" ({last.size // 1000}k/{first.size // 1000}k {ratio:.2f}x); warm load per product "
                  + ", ".join(f"{r.size // 1000}k {r.load_s / r.size * 1000:.3f} ms" for r in results))
        print(f"re-evaluation of {last.size:,} products (policies + context + evaluate): {last.reeval_s:.2f}s "
              f"(aim: < {AIM_S:.0f}s at 10k); with the warm load of the mesh: {last.reeval_s + last.load_s:.2f}s")
        if args.profile and largest is not None:
            profile(work / f"mesh-{sizes[0]}", *largest, args.top)
        ok = linear and (last.size < SIZES[-1] or last.reeval_s < AIM_S)
        line = [f"products={last.size}", f"columns={last.columns}", f"load_s={last.load_s:.2f}",
                f"load_cold_s={last.load_cold_s:.2f}", f"policies_s={last.policies_s:.3f}",
                f"context_s={last.context_s:.3f}"]
        line += [f"evaluate_{r.size // 1000}k_s={r.evaluate_s:.2f}" if r.size >= 1000 else
                 f"evaluate_{r.size}_s={r.evaluate_s:.2f}" for r in results]
        line += [f"entity_graph_s={last.graph_s:.2f}", f"rules_s={last.rules_s:.2f}",
                 f"per_product_ms={last.per_product_ms:.3f}", f"growth_ratio={ratio:.2f}",
                 f"linear={str(linear).lower()}", f"reeval_s={last.reeval_s:.2f}", f"findings={last.findings}",
                 f"unfit={last.statuses[UNFIT]}", f"at_risk={last.statuses[AT_RISK]}", f"aim_s={AIM_S:.0f}",
                 f"ok={str(ok).lower()}"]
        print(" ".join(line))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
