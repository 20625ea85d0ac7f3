"""The compliance report for the governance office and Trusted Centres, from the stored statuses.

`compliance_report` reads what the last runs recorded (`trustmesh policy apply`, builds) — it evaluates
nothing — for the whole mesh, one sector or one domain: totals by status, compliance by sector, by domain
and by policy, the trend over the stored runs and the products whose status changed, the worst offenders,
the unfit products with their reasons and findings and the at-risk ones with their deadlines. A product of the mesh without a stored status counts as
`not evaluated`. `render_markdown` writes it as Markdown tables; `render_html` as one self-contained page
(inline styles, no scripts, no external resources) that survives being emailed.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from sqlalchemy import func, or_, select

from trustmesh.descriptors import Mesh, Product
from trustmesh.errors import UsageError
from trustmesh.governance.model import SEVERITIES, STATUSES, Policy
from trustmesh.metastore.schema import PolicyRunRow, StatusHistoryRow

if TYPE_CHECKING:
    from trustmesh.governance.service import Governance

COMPLIANT, AT_RISK, UNFIT = STATUSES
NOT_EVALUATED = "not evaluated"
COLUMNS = (*STATUSES, NOT_EVALUATED)  # every count a report gives, in this order
RUNS = 30  # the trend covers the last RUNS stored runs
CHANGES = 50  # the newest status changes listed
OFFENDERS = 20  # the worst offenders listed
SHOWN = 200  # rows of a long list the Markdown and HTML renderings show (the JSON has them all)
REASONS_SHOWN = 5  # reasons shown per product
NONE = "-"  # a figure that does not apply


class DomainLine(TypedDict):
    domain: str
    sector: str
    kind: str
    products: int
    counts: dict[str, int]  # status (and "not evaluated") → products
    share_compliant: float | None  # compliant / products; None without products


class SectorLine(TypedDict):
    sector: str
    domains: int
    products: int
    counts: dict[str, int]  # status (and "not evaluated") → products of the sector's domains
    share_compliant: float | None


class PolicyLine(TypedDict):
    policy: str
    title: str
    rule: str
    version: int | None
    level: str
    owner: str | None  # the domain of a sector or domain policy
    severity: str
    deadline: str | None  # failing binds from then (None: binding already)
    in_scope: int | None  # products of the selection the policy applies to now (None: not a current policy)
    failing: int  # products whose stored findings include the policy
    findings: int
    binding: int  # products failing it with a binding finding
    share_compliant: float | None  # (in_scope - failing) / in_scope


class RunLine(TypedDict):
    run: int
    at: str
    trigger: str
    actor: str
    products: int
    counts: dict[str, int]
    share_compliant: float | None


class ChangeLine(TypedDict):
    product: str
    domain: str
    run: int
    at: str
    before: str  # the status of the product's evaluation before this one
    after: str
    failing: list[str]  # the policies failed at this evaluation


class Offender(TypedDict):
    product: str
    domain: str
    status: str
    findings: int
    errors: int
    warnings: int
    info: int
    policies: list[str]


class UnfitLine(TypedDict):
    product: str
    domain: str
    reasons: list[str]
    findings: list[dict[str, Any]]  # as `Finding.to_dict`: policy, severity, message, fix, binding, deadline
    evaluated_at: str


class AtRiskLine(TypedDict):
    product: str
    domain: str
    deadline: str | None
    days_left: int | None
    reasons: list[str]
    findings: list[dict[str, Any]]


class ComplianceReport(TypedDict):
    title: str
    mesh: str
    sector: str | None
    domain: str | None
    generated_at: str
    last_evaluated_at: str | None
    products: int
    evaluated: int
    totals: dict[str, int]
    share_compliant: float | None
    by_sector: list[SectorLine]
    by_domain: list[DomainLine]
    by_policy: list[PolicyLine]
    trend: list[RunLine]
    changes: list[ChangeLine]  # newest first, at most CHANGES
    worst_offenders: list[Offender]
    unfit: list[UnfitLine]
    at_risk: list[AtRiskLine]
    stale: list[str]  # stored statuses of products no longer in the mesh (left out of every figure)


# -- the data -----------------------------------------------------------------------------------------------

def compliance_report(mesh: Mesh, governance: Governance, *, sector: str | None = None,
                      domain: str | None = None) -> ComplianceReport:
    """The compliance of the mesh's products (of one sector, or one domain) as the stored statuses say."""
    domains = _domains(mesh, sector, domain)
    chosen = sorted((a, p) for a, p in mesh.products.items() if p.domain in domains)
    stored = governance.statuses()
    now = governance.access.clock()
    totals = _counts()
    by_domain: dict[str, Counter[str]] = {name: Counter() for name in domains}
    offenders: list[Offender] = []
    unfit: list[UnfitLine] = []
    at_risk: list[AtRiskLine] = []
    failing: dict[str, set[str]] = {}
    binding: dict[str, set[str]] = {}
    findings: Counter[str] = Counter()
    first: dict[str, dict[str, Any]] = {}  # policy → a finding of it (severity, level, rule of a gone policy)
    last_evaluated: str | None = None
    for address, product in chosen:
        row = stored.get(address)
        status = str(row["status"]) if row else NOT_EVALUATED
        totals[status] = totals.get(status, 0) + 1
        by_domain[product.domain][status] += 1
        if row is None:
            continue
        evaluated_at = str(row.get("evaluated_at") or "")
        last_evaluated = max(last_evaluated or evaluated_at, evaluated_at)
        found = [f for f in row.get("findings") or [] if isinstance(f, dict)]
        severities = Counter(str(f.get("severity")) for f in found)
        for f in found:
            policy = str(f.get("policy"))
            failing.setdefault(policy, set()).add(address)
            findings[policy] += 1
            first.setdefault(policy, f)
            if f.get("severity") == "error" and f.get("binding", True):
                binding.setdefault(policy, set()).add(address)
        if found:
            offenders.append(Offender(product=address, domain=product.domain, status=status, findings=len(found),
                                      errors=severities["error"], warnings=severities["warning"],
                                      info=severities["info"],
                                      policies=sorted({str(f.get("policy")) for f in found})))
        reasons = [str(r) for r in row.get("reasons") or []]
        if status == UNFIT:
            unfit.append(UnfitLine(product=address, domain=product.domain, reasons=reasons, findings=found,
                                   evaluated_at=evaluated_at))
        elif status == AT_RISK:
            deadline = row.get("deadline")
            at_risk.append(AtRiskLine(product=address, domain=product.domain,
                                      deadline=str(deadline) if deadline else None,
                                      days_left=_days_left(deadline, now), reasons=reasons, findings=found))
    offenders.sort(key=lambda o: (-o["errors"], -o["findings"], o["product"]))
    at_risk.sort(key=lambda r: (r["deadline"] or "9999", r["product"]))
    evaluated = len(chosen) - totals[NOT_EVALUATED]
    all_domains = len(domains) == len(mesh.domains)
    domain_lines = [_domain_line(mesh, name, counts) for name, counts in sorted(by_domain.items())]
    return ComplianceReport(
        title=_title(mesh, sector, domain), mesh=mesh.config.name, sector=sector, domain=domain,
        generated_at=now.isoformat(), last_evaluated_at=last_evaluated, products=len(chosen), evaluated=evaluated,
        totals=totals, share_compliant=_share(totals[COMPLIANT], len(chosen)),
        by_sector=_sector_lines(domain_lines), by_domain=domain_lines,
        by_policy=_by_policy(mesh, governance, [p for _, p in chosen], now, failing, binding, findings, first),
        trend=_trend(governance, None if all_domains else sorted(domains)),
        changes=_changes(governance, None if all_domains else sorted(domains)),
        worst_offenders=offenders[:OFFENDERS], unfit=unfit, at_risk=at_risk,
        stale=sorted(a for a in stored if a not in mesh.products and (all_domains or a.split(".", 1)[0] in domains)))


def _domains(mesh: Mesh, sector: str | None, domain: str | None) -> set[str]:
    """The domains the report covers; an unknown sector or domain is an error, not an empty report."""
    if domain is not None and domain not in mesh.domains:
        raise UsageError(f"no domain {domain!r} in the mesh — fix: one of {', '.join(sorted(mesh.domains))}")
    sectors = sorted({d.sector for d in mesh.domains.values()})
    if sector is not None and sector not in sectors:
        raise UsageError(f"no sector {sector!r} in the mesh — fix: one of {', '.join(sectors)}")
    chosen = {name for name, d in mesh.domains.items()
              if (domain is None or name == domain) and (sector is None or d.sector == sector)}
    if domain is not None and not chosen:
        raise UsageError(f"domain {domain} is in the {mesh.domains[domain].sector} sector, not {sector} — fix: "
                         "give --domain or --sector alone, or a domain of the sector")
    return chosen


def _title(mesh: Mesh, sector: str | None, domain: str | None) -> str:
    parts = [f"sector {sector}"] if sector else []
    parts += [f"domain {domain}"] if domain else []
    return f"Compliance report: {mesh.config.name}" + (f" ({', '.join(parts)})" if parts else "")


def _counts() -> dict[str, int]:
    return dict.fromkeys(COLUMNS, 0)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _days_left(deadline: Any, now: datetime) -> int | None:
    if not deadline:
        return None
    try:
        when = datetime.fromisoformat(str(deadline))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    return (when - now).days


def _domain_line(mesh: Mesh, name: str, counts: Counter[str]) -> DomainLine:
    spec = mesh.domains[name]
    total = sum(counts.values())
    full = _counts()
    full.update(counts)
    return DomainLine(domain=name, sector=spec.sector, kind=spec.kind, products=total, counts=full,
                      share_compliant=_share(full[COMPLIANT], total))


def _sector_lines(domains: list[DomainLine]) -> list[SectorLine]:
    """The domain lines added up per sector."""
    sectors: dict[str, SectorLine] = {}
    for line in domains:
        sector = sectors.setdefault(line["sector"], SectorLine(sector=line["sector"], domains=0, products=0,
                                                               counts=_counts(), share_compliant=None))
        sector["domains"] += 1
        sector["products"] += line["products"]
        for status, n in line["counts"].items():
            sector["counts"][status] = sector["counts"].get(status, 0) + n
    for sector in sectors.values():
        sector["share_compliant"] = _share(sector["counts"][COMPLIANT], sector["products"])
    return sorted(sectors.values(), key=lambda s: s["sector"])


def _by_policy(mesh: Mesh, governance: Governance, products: list[Product], now: datetime,
               failing: dict[str, set[str]], binding: dict[str, set[str]], findings: Counter[str],
               first: dict[str, dict[str, Any]]) -> list[PolicyLine]:
    """Every current policy that applies to some of the products (failed or not), and every policy their stored
    findings name (one changed or removed since, a platform gate)."""
    policies: list[Policy] = governance.policies(mesh)[0] if products else []
    lines: dict[str, PolicyLine] = {}
    for policy in policies:
        if policy.id in lines:
            continue  # a duplicate id: the loader reports it
        in_scope = sum(1 for p in products if policy.in_force(now) and policy.scope.matches(mesh, p))
        deadline = policy.deadline()
        lines[policy.id] = PolicyLine(
            policy=policy.id, title=policy.title, rule=policy.rule, version=policy.version, level=policy.level,
            owner=policy.owner, severity=policy.severity, deadline=deadline.isoformat() if deadline else None,
            in_scope=in_scope, failing=0, findings=0, binding=0, share_compliant=None)
    for policy_id, f in first.items():
        if policy_id not in lines:
            version = f.get("policy_version")
            lines[policy_id] = PolicyLine(
                policy=policy_id, title="", rule=str(f.get("rule") or ""),
                version=version if isinstance(version, int) else None, level=str(f.get("level") or ""),
                owner=None, severity=str(f.get("severity") or ""), deadline=f.get("deadline"), in_scope=None,
                failing=0, findings=0, binding=0, share_compliant=None)
    for line in lines.values():
        line["failing"] = len(failing.get(line["policy"], ()))
        line["findings"] = findings[line["policy"]]
        line["binding"] = len(binding.get(line["policy"], ()))
        if line["in_scope"]:
            line["share_compliant"] = _share(max(line["in_scope"] - line["failing"], 0), line["in_scope"])
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    shown = [x for x in lines.values() if x["in_scope"] or x["failing"]]  # not another sector's or domain's
    return sorted(shown, key=lambda x: (-x["failing"], -rank.get(x["severity"], -1), x["policy"]))


def _like_prefix(domain: str) -> str:
    """A LIKE pattern for the product addresses of a domain (`domain.%`), its wildcards escaped."""
    return domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"


def _trend(governance: Governance, domains: list[str] | None, runs: int = RUNS) -> list[RunLine]:
    """Products by status in each of the last `runs` stored runs (of the given domains' products), oldest first.

    Counted by the database (one grouped query over tm_status_history), whatever the number of products."""
    with governance.store.session() as session:
        recent = list(session.scalars(select(PolicyRunRow).order_by(PolicyRunRow.id.desc()).limit(runs)))
        if not recent:
            return []
        query = (select(StatusHistoryRow.run_id, StatusHistoryRow.status, func.count())
                 .where(StatusHistoryRow.run_id >= min(r.id for r in recent))
                 .group_by(StatusHistoryRow.run_id, StatusHistoryRow.status))
        if domains is not None:
            query = query.where(or_(*(StatusHistoryRow.product.like(_like_prefix(d), escape="\\") for d in domains)))
        counted: dict[int, dict[str, int]] = {}
        for run_id, status, n in session.execute(query).all():
            counts = counted.setdefault(run_id, dict.fromkeys(STATUSES, 0))
            counts[status] = counts.get(status, 0) + int(n)
        out = []
        for run in sorted(recent, key=lambda r: r.id):
            got = counted.get(run.id)
            if not got:
                continue  # the run evaluated none of the chosen products
            total = sum(got.values())
            out.append(RunLine(run=run.id, at=run.started_at.isoformat(), trigger=run.trigger, actor=run.actor,
                               products=total, counts=got, share_compliant=_share(got[COMPLIANT], total)))
        return out


def _changes(governance: Governance, domains: list[str] | None, limit: int = CHANGES) -> list[ChangeLine]:
    """The newest evaluations that changed a product's status (of the given domains' products), newest first.

    One query: each history row next to the product's row before it (LAG), kept where the status differs."""
    history = StatusHistoryRow
    before = func.lag(history.status).over(partition_by=history.product, order_by=history.id).label("before")
    rows = select(history.id, history.product, history.run_id, history.status, history.failing,
                  history.evaluated_at, before)
    if domains is not None:
        rows = rows.where(or_(*(history.product.like(_like_prefix(d), escape="\\") for d in domains)))
    lagged = rows.subquery()
    query = (select(lagged).where(lagged.c.before.is_not(None), lagged.c.before != lagged.c.status)
             .order_by(lagged.c.id.desc()).limit(limit))
    with governance.store.session() as session:
        return [ChangeLine(product=r.product, domain=r.product.split(".", 1)[0], run=r.run_id,
                           at=r.evaluated_at.isoformat(), before=r.before, after=r.status,
                           failing=[str(p) for p in r.failing or []])
                for r in session.execute(query)]


# -- Markdown -----------------------------------------------------------------------------------------------

def _pct(share: float | None) -> str:
    return NONE if share is None else f"{share * 100:.1f}%"


def _day(stamp: str | None) -> str:
    return (stamp or "")[:10]


def _reasons(reasons: list[str]) -> str:
    shown = "; ".join(reasons[:REASONS_SHOWN])
    return shown + (f" (+{len(reasons) - REASONS_SHOWN} more)" if len(reasons) > REASONS_SHOWN else "")


class Section(NamedTuple):
    """One table of the report, as both renderings lay it out."""

    anchor: str
    heading: str
    description: str  # what the table shows (the HTML table's caption)
    header: list[str]
    rows: list[list[str]]
    left_out: int  # rows not shown (long lists): the JSON has them all


def _sections(data: ComplianceReport) -> list[Section]:
    summary = [[status, str(data["totals"].get(status, 0)),
                _pct(_share(data["totals"].get(status, 0), data["products"]))] for status in COLUMNS]
    sectors = [[x["sector"], str(x["domains"]), str(x["products"]), *(str(x["counts"].get(s, 0)) for s in COLUMNS),
                _pct(x["share_compliant"])] for x in data["by_sector"]]
    domains = [[d["domain"], d["sector"], d["kind"], str(d["products"]),
                *(str(d["counts"].get(s, 0)) for s in COLUMNS), _pct(d["share_compliant"])]
               for d in data["by_domain"]]
    policies = [[p["policy"] + (f" v{p['version']}" if p["version"] else ""), p["title"],
                 p["level"] + (f" ({p['owner']})" if p["owner"] else ""),
                 p["severity"] + (f" (binding from {_day(p['deadline'])})" if p["deadline"] else ""),
                 NONE if p["in_scope"] is None else str(p["in_scope"]), str(p["failing"]), str(p["findings"]),
                 _pct(p["share_compliant"])] for p in data["by_policy"]]
    trend = [[str(r["run"]), r["at"][:16].replace("T", " "), r["trigger"], str(r["products"]),
              *(str(r["counts"].get(s, 0)) for s in STATUSES), _pct(r["share_compliant"])] for r in data["trend"]]
    changes = [[c["product"], str(c["run"]), c["at"][:16].replace("T", " "), c["before"], c["after"],
                ", ".join(c["failing"])] for c in data["changes"]]
    offenders = [[o["product"], o["status"], str(o["errors"]), str(o["warnings"]), str(o["info"]), str(o["findings"]),
                  ", ".join(o["policies"])] for o in data["worst_offenders"]]
    unfit = [[u["product"], _reasons(u["reasons"])] for u in data["unfit"]]
    risk = [[r["product"], _day(r["deadline"]), NONE if r["days_left"] is None else str(r["days_left"]),
             _reasons(r["reasons"])] for r in data["at_risk"]]
    return [
        Section("summary", "Products by status", "Products by governance status; the share is of all products "
                "covered.", ["status", "products", "share"], summary, 0),
        Section("sectors", "Compliance by sector", "Per sector: the products of its domains by status, and the share "
                "compliant.", ["sector", "domains", "products", *COLUMNS, "compliant share"], sectors, 0),
        Section("domains", "Compliance by domain", "Per domain: its products by status, and the share compliant "
                "(of all its products, evaluated or not).",
                ["domain", "sector", "kind", "products", *COLUMNS, "compliant share"], domains, 0),
        Section("policies", "Compliance by policy", "Per policy, most failed first: the products it applies to now, "
                "those its stored findings fail, and the findings.",
                ["policy", "title", "level", "severity", "in scope", "failing", "findings", "compliant share"],
                policies, 0),
        Section("trend", f"Trend over the last {len(data['trend'])} run(s)", "Per stored run, oldest first: the "
                "products it evaluated, by status.",
                ["run", "at (UTC)", "trigger", "products", *STATUSES, "compliant share"], trend, 0),
        Section("changes", "Status changes", f"The {CHANGES} newest evaluations that changed a product's status, "
                "newest first.", ["product", "run", "at (UTC)", "from", "to", "policies failing"], changes, 0),
        Section("offenders", "Worst offenders", f"The {OFFENDERS} products with the most error findings, then the "
                "most findings.", ["product", "status", "errors", "warnings", "info", "findings", "policies failed"],
                offenders, 0),
        Section("unfit", f"Unfit for consumption ({len(unfit)})", "Products failing an error policy past its grace "
                "period (or a platform gate), with the reasons.", ["product", "reasons"], unfit[:SHOWN],
                max(len(unfit) - SHOWN, 0)),
        Section("at-risk", f"At risk ({len(risk)})", "Products failing an error policy still in its grace period: "
                "fixed by the deadline, or unfit from then; soonest first.",
                ["product", "deadline", "days left", "reasons"], risk[:SHOWN], max(len(risk) - SHOWN, 0)),
    ]


def _empty(anchor: str) -> str:
    return {"trend": "No run has been recorded yet.", "offenders": "No product has findings.",
            "unfit": "No product is unfit for consumption.", "at-risk": "No product is at risk.",
            "policies": "No policy applies and no stored finding names one.",
            "changes": "No product has changed status.", "sectors": "No sector is covered.",
            "domains": "No domain is covered."}.get(anchor, "Nothing to show.")


def _intro(data: ComplianceReport) -> list[str]:
    lines = [f"{data['products']} product(s), {data['evaluated']} evaluated; "
             f"{_pct(data['share_compliant'])} compliant."]
    if not data["products"]:
        lines.append("No product is covered: the " + ("domain" if data["domain"] else "sector" if data["sector"]
                                                       else "mesh") + " has none yet.")
    elif data["last_evaluated_at"]:
        lines.append(f"From the statuses stored by the last runs (the latest evaluation: "
                     f"{data['last_evaluated_at'][:16].replace('T', ' ')} UTC); generated "
                     f"{data['generated_at'][:16].replace('T', ' ')} UTC.")
    else:
        lines.append("No product has a stored status yet: run `trustmesh policy apply` to evaluate them.")
    if data["totals"].get(NOT_EVALUATED):
        lines.append(f"{data['totals'][NOT_EVALUATED]} product(s) have no stored status (not evaluated).")
    if data["stale"]:
        lines.append(f"{len(data['stale'])} stored status(es) belong to products no longer in the mesh and are "
                     "left out.")
    return lines


def _md_cell(text: str) -> str:
    """One line, its pipes escaped and `<` written as an entity (Markdown renderers pass raw HTML through)."""
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;") or " "


def render_markdown(data: ComplianceReport) -> str:
    """The report as Markdown: a heading, a few lines of summary, then a table per section."""
    out = [f"# {_md_cell(data['title'])}", ""]
    out += [_md_cell(line) for line in _intro(data)]
    for s in _sections(data):
        out += ["", f"## {_md_cell(s.heading)}", ""]
        if not s.rows:
            out.append(_empty(s.anchor))
            continue
        out += [_md_cell(s.description), ""]
        out.append("| " + " | ".join(map(_md_cell, s.header)) + " |")
        out.append("|" + "|".join(" ---: " if _numeric(h) else " --- " for h in s.header) + "|")
        out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in s.rows]
        if s.left_out:
            out += ["", f"… and {s.left_out} more (`--format json` lists them all)."]
    return "\n".join(out) + "\n"


NUMERIC = {"products", "domains", "share", "in scope", "failing", "findings", "compliant share", "errors", "warnings", "info",
           "days left", "run", *COLUMNS}


def _numeric(header: str) -> bool:
    return header in NUMERIC


# -- HTML ---------------------------------------------------------------------------------------------------

FONT = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
STYLE = {
    "body": f"margin:0;padding:24px;background:#f4f5f7;color:#1f2328;{FONT};font-size:14px;line-height:1.45",
    "main": "max-width:1100px;margin:0 auto;background:#ffffff;padding:24px 28px;border:1px solid #d0d7de",
    "h1": "font-size:22px;margin:0 0 8px 0",
    "h2": "font-size:17px;margin:28px 0 8px 0;padding-bottom:4px;border-bottom:1px solid #d0d7de",
    "p": "margin:4px 0;color:#424a53",
    "table": "border-collapse:collapse;width:100%;margin:4px 0 8px 0",
    "caption": "text-align:left;font-size:12px;color:#57606a;padding:0 0 4px 0",
    "th": "text-align:left;background:#f6f8fa;border:1px solid #d0d7de;padding:6px 8px;font-weight:600",
    "td": "border:1px solid #d0d7de;padding:6px 8px;vertical-align:top",
    "num": "text-align:right;white-space:nowrap",
    "note": "margin:4px 0;color:#57606a;font-style:italic",
}
BADGE = {COMPLIANT: ("#dafbe1", "#116329"), AT_RISK: ("#fff8c5", "#7d4e00"), UNFIT: ("#ffebe9", "#a40e26"),
         NOT_EVALUATED: ("#eaeef2", "#424a53")}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _badge(status: str) -> str:
    background, colour = BADGE.get(status, BADGE[NOT_EVALUATED])
    return (f'<span style="background:{background};color:{colour};padding:1px 6px;border-radius:10px;'
            f'white-space:nowrap">{_e(status)}</span>')


def _cell(tag: str, header: str, value: str, extra: str = "") -> str:
    style = STYLE["th" if tag == "th" else "td"] + (";" + STYLE["num"] if _numeric(header) else "")
    content = _badge(value) if header == "status" and value in BADGE else _e(value)
    return f'<{tag}{extra} style="{style}">{content}</{tag}>'


def _html_table(s: Section) -> list[str]:
    out = [f'<table style="{STYLE["table"]}">', f'<caption style="{STYLE["caption"]}">{_e(s.description)}</caption>',
           "<thead><tr>" + "".join(f'<th scope="col" style="{STYLE["th"]}'
                                   f'{";" + STYLE["num"] if _numeric(h) else ""}">{_e(h)}</th>' for h in s.header)
           + "</tr></thead>", "<tbody>"]
    for row in s.rows:
        cells = [_cell("th", s.header[0], row[0], ' scope="row"')]
        cells += [_cell("td", h, v) for h, v in zip(s.header[1:], row[1:], strict=True)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return out


def render_html(data: ComplianceReport) -> str:
    """The report as one self-contained HTML page: inline styles only (mail clients drop <style> blocks), plain
    divs and tables for their layout engines, no scripts, every text escaped."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(data['title'])}</title>", "</head>", f'<body style="{STYLE["body"]}">',
           f'<div role="main" style="{STYLE["main"]}">', f'<h1 style="{STYLE["h1"]}">{_e(data["title"])}</h1>']
    out += [f'<p style="{STYLE["p"]}">{_e(line)}</p>' for line in _intro(data)]
    for s in _sections(data):
        out.append(f'<div role="region" aria-labelledby="h-{_e(s.anchor)}">')
        out.append(f'<h2 id="h-{_e(s.anchor)}" style="{STYLE["h2"]}">{_e(s.heading)}</h2>')
        if not s.rows:
            out.append(f'<p style="{STYLE["note"]}">{_e(_empty(s.anchor))}</p>')
        else:
            out += _html_table(s)
            if s.left_out:
                out.append(f'<p style="{STYLE["note"]}">{_e(f"… and {s.left_out} more (--format json lists them all).")}'
                           "</p>")
        out.append("</div>")
    out += ["</div>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
