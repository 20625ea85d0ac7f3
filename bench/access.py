"""Benchmark: Cedar access decisions on a large synthetic mesh, and request → approve → grant round trips.

A mesh of 20 domains, 1,000 people and 200 datasets (one per product, 10 columns, 1-2 of them personal) is
written as descriptor files in a temp folder and read into a `Directory`; 10,000 random grants to people and
products on other domains' datasets go into one `Authorizer`. Random (principal, dataset) pairs - granted,
own-domain and ungranted - are decided, each checked against the outcome worked out in plain Python, and
timed against a bare `cedarpy.is_authorized` call on the same compiled policies and entities (the floor
trustmesh adds to). Then `explain` (every column), and the same decision the way the API answers it.
Then request → approve → grant through the Workspace on a SQLite metastore in the temp folder (and on
PostgreSQL, in a throwaway database, with --postgres URL). Ends with one line of key=value figures,
judged against the aim of a 1 ms p99 decision.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cedarpy

from trustmesh.access.model import PERSON, PRODUCT, DatasetInfo, Directory, Principal
from trustmesh.access.policy import Authorizer, GrantTerms
from trustmesh.descriptors import load_mesh
from trustmesh.service import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lineage import postgres_database  # the throwaway PostgreSQL database bench/lineage.py makes
from meshfactory import column, contract_yaml, domain_yaml, file_input, person, product_yaml, write_files

AIM_DECIDE_P99_US = 1000.0


@dataclass(frozen=True)
class Sizes:
    domains: int
    people: int
    datasets: int
    grants: int
    decisions: int
    explains: int
    round_trips: int
    api_explains: int


FULL = Sizes(domains=20, people=1000, datasets=200, grants=10_000, decisions=20_000, explains=5_000,
             round_trips=200, api_explains=50)
QUICK = Sizes(domains=4, people=100, datasets=20, grants=500, decisions=2_000, explains=500, round_trips=20,
              api_explains=10)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the mesh ---------------------------------------------------------------------------------------------

def mesh_files(sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Each domain: an owner, a steward, a product owner ({domain}-dev) and developers, some with a clearance
    below or above the default (restricted); its products each publish one dataset of 10 columns."""
    files: dict[str, Any] = {"mesh.yaml": {"name": "bench-mesh", "description": "A synthetic mesh for the access "
                                           "benchmark.", "people": [person("gdo", "governance-admin")]}}
    names = [f"dom{d:02d}" for d in range(sizes.domains)]
    clearances: dict[str, str] = {}  # set by the governance office in mesh.yaml, never by a domain
    for d, domain in enumerate(names):
        doc = domain_yaml(domain, kind="ssot" if d % 3 else "trusted-centre", sector=f"sector{d % 5}")
        domain_people = sizes.people - 1  # and gdo, mesh-wide
        share = domain_people // sizes.domains + (d < domain_people % sizes.domains)
        for n in range(share - len(doc["people"])):
            dev = person(f"{domain}-u{n:03d}", "developer")
            roll = rng.random()
            if roll < 0.08:
                clearances[dev["id"]] = "official-closed"  # below most data: the global forbid decides
            elif roll < 0.12:
                clearances[dev["id"]] = "confidential"
            doc["people"].append(dev)
        files[f"domains/{domain}/domain.yaml"] = doc
    files["mesh.yaml"]["access"] = {"clearances": clearances}
    for k in range(sizes.datasets):
        domain, n = names[k % sizes.domains], k // sizes.domains
        product, dataset = f"p{n:02d}-dp", f"ds_{n:02d}"
        folder = f"domains/{domain}/products/{product}"
        files[f"{folder}/product.yaml"] = product_yaml(domain, product, [dataset],
                                                       [file_input("raw", "data/raw.csv")])
        files[f"{folder}/sql/{dataset}.sql"] = "SELECT * FROM raw\n"
        files[f"{folder}/contracts/{dataset}.odcs.yaml"] = contract_yaml(domain, product, dataset,
                                                                         dataset_columns(rng))
    return files


def dataset_columns(rng: random.Random) -> list[dict[str, Any]]:
    def level() -> str:
        return "restricted" if rng.random() < 0.1 else "official-closed"

    cols = [column("id", "integer", required=True, primaryKey=True, primaryKeyPosition=1, classification=level())]
    personal = rng.choice([["nric"], ["email"], ["nric", "email"]])
    if "nric" in personal:
        cols.append(column("nric", "string", classification=level(), customProperties=[
            {"property": "piiType", "value": "nric"}, {"property": "sensitivity", "value": "sensitive-high"}]))
    if "email" in personal:
        cols.append(column("email", "string", classification=level(), customProperties=[
            {"property": "piiType", "value": "email"}, {"property": "sensitivity", "value": "sensitive-normal"}]))
    for j in range(10 - len(cols)):
        cols.append(column(f"m{j:02d}", rng.choice(["string", "integer", "number", "date"]), classification=level()))
    return cols


def load_directory(root: Path) -> tuple[Directory, float]:
    started = time.perf_counter()
    mesh, problems = load_mesh(root)  # strict: raises InvalidMesh listing every problem
    if problems:
        raise RuntimeError(f"the synthetic mesh has problems: {[p.message for p in problems][:5]}")
    directory = Directory.from_mesh(mesh)
    return directory, time.perf_counter() - started


# -- grants and decisions ---------------------------------------------------------------------------------

def make_grants(d: Directory, count: int, now: datetime, rng: random.Random) -> list[GrantTerms]:
    """Random grantee (a person, or now and then a product) on a random dataset of another domain; some for a
    subset of columns, some unmasking personal columns; every one expiring within the year."""
    people = [p for p in d.principals.values() if p.kind == PERSON and p.member_of()]
    products = [p for p in d.principals.values() if p.kind == PRODUCT]
    datasets = list(d.datasets.values())
    grants = []
    for i in range(count):
        who = rng.choice(products) if rng.random() < 0.1 else rng.choice(people)
        ds = rng.choice(datasets)
        while ds.domain in who.member_of():
            ds = rng.choice(datasets)
        names = list(ds.columns)
        columns = tuple(sorted(rng.sample(names, rng.randint(3, 6)), key=names.index)) \
            if rng.random() < 0.3 else None
        eligible = [c for c in ds.personal_columns if columns is None or c in columns]
        unmask = tuple(rng.sample(eligible, rng.randint(1, len(eligible)))) if eligible and rng.random() < 0.25 else ()
        grants.append(GrantTerms(f"grant-{i + 1}", who.id, ds.address, columns, unmask,
                                 now + timedelta(days=rng.randint(1, 365), seconds=rng.randint(0, 86_399))))
    return grants


def expected(d: Directory, granted: set[tuple[str, str]], p: Principal, ds: DatasetInfo) -> tuple[bool, str]:
    """The outcome the policies should reach, in plain Python: (allowed, why)."""
    if p.kind == PERSON and d.clearance_rank(p) < d.rank(ds.classification(d.levels)):
        return False, "clearance"
    if ds.domain in p.member_of():
        return True, "role"
    if (p.id, ds.address) in granted:
        return True, "grant"
    return False, "default"


def sample_pairs(d: Directory, grants: list[GrantTerms], granted: set[tuple[str, str]], count: int,
                 rng: random.Random) -> list[tuple[Principal, DatasetInfo]]:
    """A third each: a pair some grant covers, a principal and a dataset of its own domain, and a pair of
    different domains with no grant."""
    principals = [p for p in d.principals.values() if p.member_of()]
    datasets = list(d.datasets.values())
    by_domain: dict[str, list[DatasetInfo]] = {}
    for ds in datasets:
        by_domain.setdefault(ds.domain, []).append(ds)
    pairs = []
    for i in range(count):
        if i % 3 == 0:
            g = rng.choice(grants)
            pairs.append((d.principals[g.principal], d.datasets[g.dataset]))
            continue
        p = rng.choice(principals)
        home = next(iter(p.member_of()))
        if i % 3 == 1 and by_domain.get(home):
            pairs.append((p, rng.choice(by_domain[home])))
            continue
        ds = rng.choice(datasets)
        while ds.domain in p.member_of() or (p.id, ds.address) in granted:
            ds = rng.choice(datasets)
        pairs.append((p, ds))
    return pairs


def decisions(authorizer: Authorizer, d: Directory, grants: list[GrantTerms], sizes: Sizes, now: datetime,
              rng: random.Random) -> dict[str, Any]:
    granted = {(g.principal, g.dataset) for g in grants}
    datasets = list(d.datasets.values())
    f: dict[str, Any] = {}
    # Warm-up, and the cost of a principal's first decision: the Authorizer compiles its grants then, once.
    first = []
    for p in d.principals.values():
        ds = rng.choice(datasets)
        started = time.perf_counter_ns()
        authorizer.decide(p, ds, now)
        first.append((time.perf_counter_ns() - started) / 1000)
    f["first_decide_p50_us"], f["first_decide_p99_us"] = pct(first, 0.5), pct(first, 0.99)
    f["compile_all_s"] = sum(first) / 1e6
    for p, ds in sample_pairs(d, grants, granted, 1000, rng):
        authorizer.decide(p, ds, now)

    pairs = sample_pairs(d, grants, granted, sizes.decisions, rng)
    times, split, mismatches = [], Counter[str](), []
    for p, ds in pairs:
        started = time.perf_counter_ns()
        decision = authorizer.decide(p, ds, now)
        times.append((time.perf_counter_ns() - started) / 1000)
        allowed, why = expected(d, granted, p, ds)
        split[why] += 1
        if decision.allowed != allowed:
            mismatches.append((p.id, ds.address, decision.outcome, why))
    assert not mismatches, f"{len(mismatches)} decisions differ from the expected outcome, e.g. {mismatches[:3]}"
    f["decide_us"] = times
    f["split"] = split

    # The floor: Cedar alone on the same request, policy set and entities, without trustmesh around it.
    bare = []
    for p, ds in pairs:
        policies, _ = authorizer._policies(p)
        request = authorizer._request(p, "read", f'Trustmesh::Dataset::"{ds.address}"', now)
        started = time.perf_counter_ns()
        cedarpy.is_authorized(request, policies, authorizer._graph(columns=False))
        bare.append((time.perf_counter_ns() - started) / 1000)
    f["bare_us"] = bare

    explain_pairs = sample_pairs(d, grants, granted, sizes.explains, rng)
    for p, ds in explain_pairs[:200]:
        authorizer.explain(p, ds, now)
    times, outcomes = [], Counter[str]()
    for p, ds in explain_pairs:
        started = time.perf_counter_ns()
        decision = authorizer.explain(p, ds, now)
        times.append((time.perf_counter_ns() - started) / 1000)
        outcomes[decision.outcome] += 1
        assert decision.allowed == expected(d, granted, p, ds)[0], (p.id, ds.address)
    f["explain_us"] = times
    f["explain_outcomes"] = outcomes
    return f


# -- the workflow -----------------------------------------------------------------------------------------

def round_trips(ws: Workspace, count: int, warmup: int, rng: random.Random) -> dict[str, Any]:
    """request → approve (→ approve) → grant, as the workflow's people do it; ms per step and per round trip.

    The asker is a developer with the default clearance (or asks for their domain's product), on a dataset of
    another domain: the whole dataset, a subset of ordinary columns (one level), or with personal columns
    unmasked (two levels). The approver is the first of the response's `awaiting`."""
    d = ws.directory()
    askers = [p for p in d.principals.values() if p.kind == PERSON and p.clearance is None
              and p.has_role("developer", p.domain)]
    products = {dom: [p.id for p in d.principals.values() if p.kind == PRODUCT and p.domain == dom]
                for dom in {p.domain for p in askers}}
    datasets = list(d.datasets.values())
    used: set[tuple[str, str]] = set()
    total, request_ms, approve_ms, levels = [], [], [], Counter[int]()
    for i in range(warmup + count):
        asker = rng.choice(askers)
        for_product = rng.choice(products[asker.domain]) if rng.random() < 0.2 and products[asker.domain] else None
        ds = rng.choice(datasets)
        while ds.domain == asker.domain or (for_product or asker.id, ds.address) in used:
            ds = rng.choice(datasets)
        used.add((for_product or asker.id, ds.address))
        kind = rng.random()
        columns, unmask = None, None
        if kind < 0.3:
            columns = [c for c in ds.columns if not ds.columns[c].personal][:5]
        elif kind < 0.6:
            unmask = ds.personal_columns
        started = time.perf_counter()
        req = ws.access.request(asker.id, ds.address, purpose="Benchmark of the access workflow, quarterly report",
                                purpose_category="statistics", days=rng.randint(30, 365), columns=columns,
                                unmask=unmask, for_product=for_product)
        requested = time.perf_counter()
        approvals = 0
        while req["state"] == "pending":
            req = ws.access.approve(req["awaiting"][0], req["id"], note="reviewed")
            approvals += 1
        done = time.perf_counter()
        assert req["state"] == "approved" and req["grant"], req
        if i >= warmup:
            total.append((done - started) * 1000)
            request_ms.append((requested - started) * 1000)
            approve_ms.append((done - requested) * 1000 / approvals)
            levels[req["levels"]] += 1
    return {"total_ms": total, "request_ms": request_ms, "approve_ms": approve_ms, "levels": levels}


def api_explains(ws: Workspace, count: int, rng: random.Random) -> list[float]:
    """`AccessService.explain`, what GET /access/explain runs: a new Authorizer (entity graph and the
    principal's active grants from the metastore) for every call."""
    d = ws.directory()
    people = [p for p in d.principals.values() if p.kind == PERSON and p.member_of()]
    datasets = list(d.datasets)
    ws.access.explain(people[0].id, datasets[0])
    times = []
    for _ in range(count):
        started = time.perf_counter()
        ws.access.explain(rng.choice(people).id, rng.choice(datasets))
        times.append((time.perf_counter() - started) * 1000)
    return times


def run_workflow(label: str, root: Path, url: str | None, sizes: Sizes, seed: int) -> dict[str, Any]:
    ws = Workspace.open(root, metastore_url=url)
    try:
        f = round_trips(ws, sizes.round_trips, 5, random.Random(seed))
        f["api_explain_ms"] = api_explains(ws, sizes.api_explains, random.Random(seed + 1))
    finally:
        ws.close()
    t, lv = f["total_ms"], f["levels"]
    print(f"workflow on {label}: {len(t)} round trips ({lv[1]} one-level, {lv[2]} two-level): "
          f"request→grant p50 {pct(t, 0.5):.1f} ms, p99 {pct(t, 0.99):.1f} ms, max {max(t):.1f} ms; "
          f"request p50 {pct(f['request_ms'], 0.5):.1f} ms, each approval p50 {pct(f['approve_ms'], 0.5):.1f} ms")
    a = f["api_explain_ms"]
    print(f"  explain as the API answers it (new Authorizer per call): p50 {pct(a, 0.5):.1f} ms, "
          f"p99 {pct(a, 0.99):.1f} ms over {len(a)} calls")
    return f


# -- main -------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small mesh and few samples: a smoke run")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--postgres", metavar="URL", help="also run the workflow on PostgreSQL, in a fresh "
                        "database created through this (admin) URL and dropped afterwards")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="trustmesh-bench-access-"))
    try:
        root = work / "mesh"
        started = time.perf_counter()
        write_files(root, mesh_files(sizes, rng))
        written_s = time.perf_counter() - started
        directory, load_s = load_directory(root)
        people = sum(p.kind == PERSON for p in directory.principals.values())
        products = sum(p.kind == PRODUCT for p in directory.principals.values())
        columns = sum(len(ds.columns) for ds in directory.datasets.values())
        print(f"synthetic mesh: {sizes.domains} domains, {people:,} people, {products} products, "
              f"{len(directory.datasets)} datasets ({columns:,} columns); written in {written_s:.1f}s, "
              f"loaded into a Directory in {load_s:.1f}s")

        now = datetime.now(UTC)
        grants = make_grants(directory, sizes.grants, now, rng)
        started = time.perf_counter()
        authorizer = Authorizer(directory, grants)
        build_s = time.perf_counter() - started
        print(f"authorizer: {len(grants):,} grants ({sum(g.columns is not None for g in grants):,} for some columns, "
              f"{sum(bool(g.unmask) for g in grants):,} unmasking), built in {build_s * 1000:.0f} ms")

        f = decisions(authorizer, directory, grants, sizes, now, rng)
        print(f"  first decision per principal (compiles its grants): p50 {f['first_decide_p50_us']:.0f} us, "
              f"p99 {f['first_decide_p99_us']:.0f} us; {f['compile_all_s']:.2f}s for all {len(directory.principals):,}")
        dt, bare, split = f["decide_us"], f["bare_us"], f["split"]
        allowed = split["role"] + split["grant"]
        print(f"decide: {len(dt):,} decisions, {allowed:,} allow ({split['grant']:,} by a grant, {split['role']:,} "
              f"by a domain role) / {len(dt) - allowed:,} deny ({split['default']:,} ungranted, {split['clearance']:,}"
              f" by the clearance forbid), all as expected")
        print(f"  decide       p50 {pct(dt, 0.5):7.1f} us  p99 {pct(dt, 0.99):7.1f} us  max {max(dt):8.1f} us"
              f"   (aim: p99 < {AIM_DECIDE_P99_US:.0f} us)")
        print(f"  bare Cedar   p50 {pct(bare, 0.5):7.1f} us  p99 {pct(bare, 0.99):7.1f} us  max {max(bare):8.1f} us"
              f"   (cedarpy.is_authorized on the same request; decide/bare p50 "
              f"{pct(dt, 0.5) / pct(bare, 0.5):.2f}x)")
        et, eo = f["explain_us"], f["explain_outcomes"]
        print(f"  explain      p50 {pct(et, 0.5):7.1f} us  p99 {pct(et, 0.99):7.1f} us  max {max(et):8.1f} us"
              f"   ({len(et):,} calls, every column: {eo['allow']:,} allow, {eo['mask']:,} mask, "
              f"{eo['deny']:,} deny)")

        workflows = {"sqlite": run_workflow("SQLite", root, None, sizes, args.seed + 2)}
        if args.postgres:
            with postgres_database(args.postgres) as url:
                if url is not None:
                    workflows["pg"] = run_workflow("PostgreSQL", root, url, sizes, args.seed + 2)

        decide_p99 = pct(dt, 0.99)
        line = [f"principals={len(directory.principals)}", f"people={people}", f"datasets={len(directory.datasets)}",
                f"grants={len(grants)}", f"decisions={len(dt)}", f"decide_p50_us={pct(dt, 0.5):.1f}",
                f"decide_p99_us={decide_p99:.1f}", f"decide_max_us={max(dt):.1f}",
                f"bare_cedar_p50_us={pct(bare, 0.5):.1f}", f"ratio={pct(dt, 0.5) / pct(bare, 0.5):.2f}",
                f"allow={allowed}", f"deny={len(dt) - allowed}",
                f"explain_p50_us={pct(et, 0.5):.1f}", f"explain_p99_us={pct(et, 0.99):.1f}",
                f"authorizer_build_s={build_s:.3f}", f"first_decide_p99_us={f['first_decide_p99_us']:.0f}"]
        for backend, w in workflows.items():
            prefix = "" if backend == "sqlite" else f"{backend}_"
            line += [f"{prefix}workflow_p50_ms={pct(w['total_ms'], 0.5):.1f}",
                     f"{prefix}workflow_p99_ms={pct(w['total_ms'], 0.99):.1f}",
                     f"{prefix}api_explain_p50_ms={pct(w['api_explain_ms'], 0.5):.1f}"]
        if "pg" not in workflows:
            line.append("pg=skipped")
        line += [f"aim_decide_p99_us={AIM_DECIDE_P99_US:.0f}", f"ok={str(decide_p99 < AIM_DECIDE_P99_US).lower()}"]
        print(" ".join(line))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
