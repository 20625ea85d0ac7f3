"""Who may declare whom: every person is declared once, by the one file trusted with them.

A domain's `domain.yaml` declares that domain's people and their roles in it, and nothing more. Only
`mesh.yaml`, the global governance office's file, declares mesh-wide people (governance admins, auditors)
and sets anyone's clearance or agency: a domain that could redeclare a person could say who signs in under
their id, and one that could set clearance or agency could lend its people data above their station.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from trustmesh.descriptors.models import DOMAIN_ROLES, MESH_ROLES, Mesh, Person
from trustmesh.errors import Problem
from trustmesh.yamlfile import YamlDocument

MESH_FILE = "mesh.yaml"
# What only the governance office sets for a person: their clearance, and the agency that row filters bind.
GOVERNED_ATTRIBUTES = ("agency", "clearance")


@dataclass(frozen=True)
class Declaration:
    """One entry under `people:` in mesh.yaml (domain None) or in a domain's domain.yaml."""

    person: Person
    index: int  # its position under `people:`
    domain: str | None
    file: str

    def where(self, docs: dict[str, YamlDocument] | None) -> str:
        doc = (docs or {}).get(self.file)
        line = doc.line_of(["people", self.index]) if doc is not None else None
        return f"{self.file}, line {line}" if line else self.file


def declarations(mesh: Mesh) -> list[Declaration]:
    """Every person entry of the mesh: mesh.yaml's first, then each domain's in name order."""
    out = [Declaration(p, i, None, MESH_FILE) for i, p in enumerate(mesh.config.people)]
    for name in sorted(mesh.domains):
        out += [Declaration(p, i, name, f"domains/{name}/domain.yaml")
                for i, p in enumerate(mesh.domains[name].people)]
    return out


def _problem(decl: Declaration, where: Sequence[str | int], message: str, fix: str,
             docs: dict[str, YamlDocument] | None) -> Problem:
    doc = (docs or {}).get(decl.file)
    if doc is not None:
        return doc.problem(["people", decl.index, *where], message, fix)
    path = f"people[{decl.person.id}]" + "".join(f".{key}" for key in where)
    return Problem(decl.file, message, path, None, fix)


def trust_problems(decls: Sequence[Declaration], docs: dict[str, YamlDocument] | None = None) -> list[Problem]:
    """A person declared twice (by id or by email), or a domain reaching past its own people.

    An id is who signs in and decides, so a second entry would let another file say who that is; an email is
    where owners and approvers are reached (letter case aside). A domain may give its people only roles in
    itself; clearance and agency are the governance office's.
    """
    problems: list[Problem] = []
    by_id: dict[str, Declaration] = {}
    by_email: dict[str, Declaration] = {}
    for decl in decls:
        person = decl.person
        first = by_id.setdefault(person.id, decl)
        if first is not decl:
            problems.append(_problem(
                decl, ["id"], f"person {person.id!r} is already declared in {first.where(docs)}: a person is "
                "declared once in the whole mesh", "remove this entry if it is the same person (a domain declares "
                "only its own people), or give this person an id of their own", docs))
        email = (person.email or "").strip().casefold()
        if email and first is decl:
            owner = by_email.setdefault(email, decl)
            if owner is not decl:
                problems.append(_problem(
                    decl, ["email"], f"email {person.email!r} is already {owner.person.id}'s, declared in "
                    f"{owner.where(docs)}: consumers and approvers who write to it would reach the wrong person",
                    "give each person their own email address", docs))
        if decl.domain is None:
            continue
        if person.clearance is not None:
            problems.append(_problem(
                decl, ["clearance"], f"a domain cannot set a person's clearance ({person.id}: {person.clearance})",
                f"remove `clearance:` here and ask the governance office to set it in mesh.yaml under "
                f"`access.clearances` ({person.id}: {person.clearance}); until then the mesh's "
                "access.defaultClearance applies", docs))
        for key in GOVERNED_ATTRIBUTES:
            if key in person.attributes:
                setting = "agencies" if key == "agency" else "clearances"
                problems.append(_problem(
                    decl, ["attributes", key], f"a domain cannot set a person's {key} ({person.id}: "
                    f"{person.attributes[key]!r})", f"remove it here and ask the governance office to set it in "
                    f"mesh.yaml under `access.{setting}`; a domain's people belong to the domain's agency", docs))
        for i, role in enumerate(person.roles):
            if role in MESH_ROLES:
                problems.append(_problem(
                    decl, ["roles", i], f"{role} is a mesh-wide role, which a domain cannot give",
                    "remove it; the governance office names governance admins and auditors in mesh.yaml, "
                    "among the people declared there", docs))
            elif role not in DOMAIN_ROLES:
                problems.append(_problem(decl, ["roles", i], f"unknown role {role!r} for {person.id}",
                                         f"use one of {', '.join(DOMAIN_ROLES)}", docs))
    return problems


def role_problems(decls: Sequence[Declaration], docs: dict[str, YamlDocument] | None = None) -> list[Problem]:
    """mesh.yaml gives mesh-wide roles only: a domain role there would belong to no domain."""
    problems = []
    for decl in decls:
        if decl.domain is not None:
            continue
        for i, role in enumerate(decl.person.roles):
            if role in DOMAIN_ROLES:
                problems.append(_problem(
                    decl, ["roles", i], f"{role} is a domain role, and mesh.yaml belongs to no domain",
                    f"declare {decl.person.id} in that domain's domain.yaml with `roles: [{role}]`, and not here "
                    f"(mesh.yaml gives {', '.join(MESH_ROLES)})", docs))
            elif role not in MESH_ROLES:
                problems.append(_problem(decl, ["roles", i], f"unknown role {role!r} for {decl.person.id}",
                                         f"use one of {', '.join(MESH_ROLES)}", docs))
    return problems


def settings_problems(mesh: Mesh, decls: Sequence[Declaration], doc: YamlDocument | None = None) -> list[Problem]:
    """`access.clearances` and `access.agencies` name people declared in a domain.yaml, with levels of the scheme."""
    problems: list[Problem] = []
    in_mesh = {d.person.id for d in decls if d.domain is None}
    in_domains = {d.person.id: d for d in decls if d.domain is not None}
    levels = mesh.config.governance.classification.levels
    settings = mesh.config.access
    for key, values in (("clearances", settings.clearances), ("agencies", settings.agencies)):
        single = "clearance" if key == "clearances" else "agency"
        for pid, value in values.items():
            where: list[str | int] = ["access", key, pid]
            if pid in in_mesh:
                message = f"access.{key} names {pid}, who is declared in mesh.yaml"
                fix = f"set `{single}` on {pid}'s own entry under `people:`" if key == "clearances" else \
                    f"set `attributes: {{agency: {value}}}` on {pid}'s own entry under `people:`"
            elif pid not in in_domains:
                close = difflib.get_close_matches(pid, list(in_domains), n=1)
                message = f"access.{key} names {pid!r}, who is not declared in any domain.yaml"
                fix = f"did you mean {close[0]!r}?" if close else "name a person declared under `people:` in a " \
                    "domain.yaml, or remove the entry"
            elif key == "clearances" and value not in levels:
                message = f"{pid}'s clearance {value!r} is not a classification level"
                fix = f"use one of {', '.join(levels)}"
            else:
                continue
            if doc is not None:
                problems.append(doc.problem(where, message, fix))
            else:
                problems.append(Problem(MESH_FILE, message, f"access.{key}.{pid}", None, fix))
    return problems


def clearance(mesh: Mesh, decl: Declaration) -> str | None:
    """The person's IM8 clearance as governance set it; None: the mesh's default clearance."""
    if decl.domain is None:
        return decl.person.clearance
    return mesh.config.access.clearances.get(decl.person.id)


def agency(mesh: Mesh, decl: Declaration) -> str | None:
    """The agency a person reads as (row filters bind it): their domain's, unless governance says otherwise."""
    if decl.domain is None:
        value = decl.person.attributes.get("agency")
        return str(value) if value is not None else None
    return mesh.config.access.agencies.get(decl.person.id, decl.domain)
