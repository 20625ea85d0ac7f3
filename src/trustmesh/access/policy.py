"""Access decisions in Cedar: principals, datasets and columns as entities, grants as policies.

Three kinds of policy decide every read:

- global `forbid` policies (built in, plus the mesh's own `governance/*.cedar`): no grant overrides them;
- role `permit` policies: a domain's people and products read their own domain's data;
- one `permit` per active grant (and one more for the columns it unmasks), named after the grant.

Every policy carries an `@id`, so a decision names the policy or grant that made it. A column is
`allow` (in the clear), `mask` (readable, but only masked) or `deny` (absent).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trustmesh.access.model import PRODUCT, DatasetInfo, Directory, Principal
from trustmesh.errors import Problem, TrustmeshError

NS = "Trustmesh"
READ, UNMASK = "read", "readUnmasked"
GLOBAL_POLICIES = """
@id("global:clearance")
@description("Nobody reads data classified above their clearance; no grant overrides this.")
forbid (principal is Trustmesh::Person, action, resource)
when { resource has level && (!(principal has clearance) || principal.clearance < resource.level) };

"""
ROLE_POLICIES = """
@id("role:domain-member")
@description("A domain's people and products read its data; personal data masked unless a custodian.")
permit (principal, action == Trustmesh::Action::"read", resource)
when { resource has domain && principal in resource.domain };

@id("role:domain-custodian")
@description("A domain's data owners, stewards, product owners and products read its personal data in the clear.")
permit (principal, action == Trustmesh::Action::"readUnmasked", resource)
when { resource has custodians && principal in resource.custodians };
"""


def _uid(kind: str, id: str) -> dict[str, str]:
    return {"type": f"{NS}::{kind}", "id": id}


def _ref(kind: str, id: str) -> str:
    return f'{NS}::{kind}::{json.dumps(id)}'


def principal_ref(principal: Principal) -> str:
    return _ref("Product" if principal.kind == PRODUCT else "Person", principal.id)


class PolicyFailed(TrustmeshError):
    """A Cedar policy errored on a request: the decision fails closed."""

    http_status = 500


@dataclass(frozen=True)
class GrantTerms:
    """What a grant allows, as the authorizer needs it (a GrantRow or one being considered)."""

    id: str  # e.g. grant-7
    principal: str
    dataset: str
    columns: tuple[str, ...] | None
    unmask: tuple[str, ...]
    expires_at: datetime
    row_filter: str | None = None  # a predicate over the dataset's columns; None: every row


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """Microseconds since the epoch, exactly: a grant holds until its expiry instant, not a rounded second."""
    return (at - EPOCH) // timedelta(microseconds=1)


def grant_policies(grant: GrantTerms, principal: Principal) -> str:
    who = principal_ref(principal)
    until = micros(grant.expires_at)
    if grant.columns is None:
        scope = f"resource in {_ref('Dataset', grant.dataset)}"
    else:
        cols = ", ".join(_ref("Column", f"{grant.dataset}.{c}") for c in grant.columns)
        scope = f"(resource == {_ref('Dataset', grant.dataset)} || resource in [{cols}])"
    text = (f'@id("{grant.id}")\npermit (principal == {who}, action == {NS}::Action::"{READ}", resource)\n'
            f"when {{ {scope} && context.now < {until} }};\n")
    if grant.unmask:
        cols = ", ".join(_ref("Column", f"{grant.dataset}.{c}") for c in grant.unmask)
        text += (f'@id("{grant.id}:unmask")\npermit (principal == {who}, action == {NS}::Action::"{UNMASK}", '
                 f"resource)\nwhen {{ resource in [{cols}] && context.now < {until} }};\n")
    return text


def mesh_policy_files(root: Path) -> list[Path]:
    """The mesh's global Cedar policies: `governance/*.cedar` (forbids bind everyone)."""
    folder = root / "governance"
    return sorted(folder.glob("*.cedar")) if folder.is_dir() else []


def level_policy_files(root: Path) -> list[tuple[Path, str]]:
    """Sector and domain Cedar policies: `domains/<d>/policies/*.cedar`, with the domain that owns each."""
    return [(p, p.parent.parent.name) for p in sorted(root.glob("domains/*/policies/*.cedar"))]


def scoped_forbids(text: str, attribute: str, value: Any) -> str:
    """A sector's or domain's Cedar policies, confined to its own data: each must be a `forbid` (a lower level
    only tightens), and gets a condition that the resource's `sector`/`domain` is its own."""
    import cedarpy

    document = json.loads(cedarpy.policies_to_json_str(text))
    if document.get("templates"):
        raise ValueError("templates are not allowed here; write plain forbid policies")
    for pid, policy in document["staticPolicies"].items():
        name = policy.get("annotations", {}).get("id", pid)
        if policy.get("effect") != "forbid":
            raise ValueError(f"{name} is a permit: a sector or domain may only forbid (grants and roles permit)")
        target = {"Value": value}
        policy.setdefault("conditions", []).append({"kind": "when", "body": {"&&": {
            "left": {"has": {"left": {"Var": "resource"}, "attr": attribute}},
            "right": {"==": {"left": {".": {"left": {"Var": "resource"}, "attr": attribute}}, "right": target}}}}})
    return str(cedarpy.PolicySet.from_json_str(json.dumps(document))) + "\n"


def level_policies(root: Path, domains: dict[str, Any]) -> str:
    """Every sector and domain Cedar file, scoped: a Trusted Centre's to its sector, a domain's to itself."""
    text = ""
    for path, owner in level_policy_files(root):
        domain = domains.get(owner)
        if domain is None:
            continue
        if domain.kind == "trusted-centre":
            text += scoped_forbids(path.read_text(), "sector", domain.sector)
        else:
            text += scoped_forbids(path.read_text(), "domain", {"__entity": _uid("Domain", owner)})
    return text


def check_policy_files(root: Path, domains: dict[str, Any] | None = None) -> list[Problem]:
    """Parse errors in the mesh's Cedar files (and permits at the lower levels), as validation problems."""
    import cedarpy

    problems = []
    for path in mesh_policy_files(root):
        try:
            cedarpy.PolicySet.from_str(path.read_text())
        except ValueError as exc:
            problems.append(Problem(str(path.relative_to(root)), f"not a valid Cedar policy set: {exc}",
                                    fix="see https://docs.cedarpolicy.com/policies/syntax-policy.html"))
    for path, owner in level_policy_files(root):
        rel = str(path.relative_to(root))
        if domains is not None and owner not in domains:
            problems.append(Problem(rel, f"no domain {owner}", fix="keep Cedar files under an existing domain"))
            continue
        try:
            scoped_forbids(path.read_text(), "domain", "x")
        except ValueError as exc:
            problems.append(Problem(rel, f"not a valid sector or domain access policy: {exc}",
                                    fix="only forbid policies, in Cedar syntax; they apply to the level's own data"))
    return problems


@dataclass
class Decision:
    """allow / deny / mask, with the policies (or grants) that decided and a sentence saying why."""

    principal: str
    dataset: str
    column: str | None
    outcome: str
    policies: list[str]
    reason: str
    columns: dict[str, str] = field(default_factory=dict)  # for a dataset: each column's outcome

    @property
    def allowed(self) -> bool:
        return self.outcome != "deny"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"principal": self.principal, "dataset": self.dataset, "column": self.column,
                                "decision": self.outcome, "policies": self.policies, "reason": self.reason}
        if self.column is None:
            data["columns"] = self.columns
        return data


class Authorizer:
    """Decides reads for one snapshot of the mesh's principals, datasets and active grants.

    The entity graph and the fixed policies are parsed once; each principal's grants are compiled
    into a policy set on first use and kept, so a decision costs one Cedar evaluation.
    """

    def __init__(self, directory: Directory, grants: Iterable[GrantTerms], extra_policies: str = "") -> None:
        import cedarpy

        self._cedar = cedarpy
        self.directory = directory
        self.grants: dict[tuple[str, str], list[GrantTerms]] = {}
        for g in grants:
            self.grants.setdefault((g.principal, g.dataset), []).append(g)
        self._by_principal: dict[str, list[GrantTerms]] = {}
        for (p, _), gs in self.grants.items():
            self._by_principal.setdefault(p, []).extend(gs)
        self._base_text = GLOBAL_POLICIES + extra_policies + ROLE_POLICIES
        # Parsed once per directory snapshot: the entity graph is the costly part (~30 µs per entity).
        cache = directory.cache
        if cache.get("policies", (None,))[0] != self._base_text:
            cache["policies"] = (self._base_text, cedarpy.PolicySet.from_str(self._base_text),
                                 _policy_meta(cedarpy, self._base_text))
        _, self._base, (self._base_ids, self.forbids, self.descriptions) = cache["policies"]
        self._cache = cache
        self._sets: dict[str, tuple[Any, list[str]]] = {}

    def _graph(self, columns: bool) -> Any:
        """The Cedar entities, parsed once per directory snapshot; without columns for dataset-level decisions
        (a mesh of 10,000 products has 200,000 columns: parsing them is most of the cost)."""
        key = "entities" if columns else "entities:datasets"
        found = self._cache.get(key)
        if found is None:
            found = self._cedar.Entities.from_json_str(json.dumps(self._entity_list(columns)))
            self._cache[key] = found
        return found

    def _entity_list(self, columns: bool = True) -> list[dict[str, Any]]:
        d = self.directory
        out: list[dict[str, Any]] = []
        domains = {ds.domain for ds in d.datasets.values()} | {dom for p in d.principals.values() for dom in p.member_of()}
        for name in sorted(domains):
            out.append({"uid": _uid("Domain", name), "attrs": {}, "parents": []})
            out.append({"uid": _uid("Group", f"{name}/custodians"), "attrs": {}, "parents": []})
        for p in d.principals.values():
            parents = [_uid("Domain", dom) for dom in sorted(p.member_of())]
            parents += [_uid("Group", f"{dom}/custodians") for dom in sorted(p.custodian_of())]
            roles = sorted(f"{dom}/{r}" if dom else r for r, dom in p.roles)
            if p.kind == PRODUCT:
                out.append({"uid": _uid("Product", p.id), "parents": parents, "attrs": {
                    "domain": p.domain or "", "agency": p.domain or "", "roles": roles}})
            else:
                out.append({"uid": _uid("Person", p.id), "parents": parents, "attrs": {
                    "clearance": d.clearance_rank(p), "agency": p.domain or "", "roles": roles}})
        for ds in d.datasets.values():
            domain = {"__entity": _uid("Domain", ds.domain)}
            custodians = {"__entity": _uid("Group", f"{ds.domain}/custodians")}
            sensitivities = d.sensitivities
            sector = d.mesh.domains[ds.domain].sector if ds.domain in d.mesh.domains else ""
            out.append({"uid": _uid("Dataset", ds.address), "parents": [], "attrs": {
                "domain": domain, "custodians": custodians, "level": d.rank(ds.classification(d.levels)),
                "sector": sector,
                "sensitivity": sensitivities.index(ds.sensitivity(sensitivities)),
                "personal": bool(ds.personal_columns)}})
            for col in ds.columns.values() if columns else ():
                out.append({"uid": _uid("Column", f"{ds.address}.{col.name}"), "parents": [_uid("Dataset", ds.address)],
                            "attrs": {"domain": domain, "custodians": custodians, "sector": sector,
                                      "level": d.rank(col.classification),
                                      "sensitivity": sensitivities.index(col.sensitivity)
                                      if col.sensitivity in sensitivities else 0,
                                      "personal": col.personal, "piiType": col.pii_type or ""}})
        return out

    def _policies(self, principal: Principal) -> tuple[Any, list[str]]:
        """The principal's policy set, and the @id of each policy in Cedar's positional order."""
        found = self._sets.get(principal.id)
        if found is None:
            grants = self._by_principal.get(principal.id, [])
            text = "".join(grant_policies(g, principal) for g in grants)
            ids = self._base_ids + [i for g in grants for i in ([g.id, f"{g.id}:unmask"] if g.unmask else [g.id])]
            found = (self._base.with_added_str(text) if text else self._base, ids)
            self._sets[principal.id] = found
        return found

    def _evaluate(self, principal: Principal, requests: list[dict[str, Any]],
                  columns: bool = True) -> list[tuple[bool, list[str]]]:
        policies, ids = self._policies(principal)
        entities = self._graph(columns)
        if len(requests) == 1:
            results = [self._cedar.is_authorized(requests[0], policies, entities)]
        else:
            results = self._cedar.is_authorized_batch(requests, policies, entities)
        out = []
        for r in results:
            if r.diagnostics.errors:  # a policy that cannot be evaluated must never let anything through
                raise PolicyFailed(f"an access policy could not be evaluated, so nothing is allowed: "
                                   f"{'; '.join(map(str, r.diagnostics.errors))} — fix: guard attributes with `has` "
                                   "in the mesh's governance/*.cedar policies")
            out.append((bool(r.allowed), [ids[int(p.removeprefix("policy"))] for p in r.diagnostics.reasons]))
        return out

    def _request(self, principal: Principal, action: str, resource: str, now: datetime) -> dict[str, Any]:
        context: dict[str, Any] = {"now": micros(now)}
        return {"principal": principal_ref(principal), "action": f'{NS}::Action::"{action}"', "resource": resource,
                "context": context}

    def decide(self, principal: Principal, dataset: DatasetInfo, now: datetime) -> Decision:
        """May the principal read the dataset at all? (One Cedar evaluation.)"""
        [(allowed, reasons)] = self._evaluate(principal, [self._request(principal, READ, _ref("Dataset", dataset.address),
                                                                         now)], columns=False)
        return self._decision(principal, dataset, None, allowed, reasons)

    def explain(self, principal: Principal, dataset: DatasetInfo, now: datetime, column: str | None = None) -> Decision:
        """The dataset decision with every column's outcome, or one column's: allow, mask or deny."""
        names = [column] if column else list(dataset.columns)
        requests = [self._request(principal, READ, _ref("Dataset", dataset.address), now)]
        for name in names:
            ref = _ref("Column", f"{dataset.address}.{name}")
            requests.append(self._request(principal, READ, ref, now))
            requests.append(self._request(principal, UNMASK, ref, now))
        results = self._evaluate(principal, requests)
        top = results[0]
        outcomes: dict[str, str] = {}
        why: dict[str, list[str]] = {}
        for i, name in enumerate(names):
            read, clear = results[1 + 2 * i], results[2 + 2 * i]
            personal = dataset.columns[name].personal
            if not (top[0] and read[0]):
                outcomes[name], why[name] = "deny", (read if top[0] else top)[1]
            elif personal and not clear[0]:
                outcomes[name] = "mask"
                why[name] = read[1] + [r for r in clear[1] if r in self.forbids]
            else:
                outcomes[name] = "allow"
                why[name] = clear[1] if personal else read[1]
        if column:
            decision = self._decision(principal, dataset, column, outcomes[column] != "deny", why[column],
                                      outcome=outcomes[column])
            return decision
        decision = self._decision(principal, dataset, None, top[0], top[1])
        decision.columns = outcomes
        if decision.allowed and any(v == "mask" for v in outcomes.values()):
            decision.outcome = "mask"
            masked = [c for c, v in outcomes.items() if v == "mask"]
            decision.reason += f"; {', '.join(masked)} masked (personal data not unmasked for {principal.id})"
        return decision

    def _decision(self, principal: Principal, dataset: DatasetInfo, column: str | None, allowed: bool,
                  reasons: list[str], outcome: str | None = None) -> Decision:
        outcome = outcome or ("allow" if allowed else "deny")
        what = f"{dataset.address}.{column}" if column else dataset.address
        forbids = [r for r in reasons if r in self.forbids]
        if not allowed and forbids:
            reason = f"{principal.id} may not read {what}: " + "; ".join(
                f"{r} — {self.descriptions.get(r, 'a global rule')}" for r in forbids)
        elif not allowed:
            reason = (f"{principal.id} holds no active grant or role that covers {what} (Cedar denies by default)")
        else:
            reason = f"{principal.id} may read {what}" + (" masked" if outcome == "mask" else "") + \
                     f" by {', '.join(reasons) or 'a role'}"
        return Decision(principal.id, dataset.address, column, outcome, sorted(set(reasons)), reason)


def _policy_meta(cedarpy: Any, text: str) -> tuple[list[str], set[str], dict[str, str]]:
    """Each policy's @id in the positional order Cedar numbers them (policy0, policy1, …), the ids of the
    `forbid`s, and each @id's @description."""
    parsed = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    ids, forbids, descriptions = [], set(), {}
    for i in range(len(parsed)):
        policy = parsed[f"policy{i}"]
        notes = policy.get("annotations", {})
        pid = notes.get("id", f"policy{i}")
        ids.append(pid)
        if policy.get("effect") == "forbid":
            forbids.add(pid)
        if "description" in notes:
            descriptions[pid] = notes["description"]
    return ids, forbids, descriptions
