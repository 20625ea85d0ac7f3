"""`trustmesh access …`, `trustmesh audit …` and `trustmesh user …`: the request workflow, the audit trail, tokens.

Each command acts as a person: `--as PERSON` or $TRUSTMESH_USER on the local mesh (embedded mode), or the
owner of $TRUSTMESH_TOKEN on a server (`--server URL` or $TRUSTMESH_SERVER).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from trustmesh.access.trail import parse_since
from trustmesh.cli.common import JsonOpt, MeshOpt, typer_app
from trustmesh.cli.render import console, print_json, table
from trustmesh.client import SERVER_ENV, RemoteAccess, Server
from trustmesh.errors import UsageError
from trustmesh.service import USER_ENV, Workspace

access_app = typer_app(
    "Ask for data, decide requests, and see who may read what.\n\n"
    "A request names a dataset, a purpose and a duration; the dataset's domain stewards (and, for "
    "confidential, sensitive-high or unmasked personal data, its data owners too) approve it, and the grant "
    "follows at once. Grants expire on their own and can be revoked.\n\n"
    "Example journey: `trustmesh access request health.activity-dp.participants --purpose '...' "
    "--purpose-category research --days 30 --as irfan`, then `trustmesh access list --inbox --as nurul`, "
    "`trustmesh access approve req-1 --as nurul`, `trustmesh access explain irfan health.activity-dp.participants`."
)
audit_app = typer_app("The tamper-evident audit trail: every request, decision, grant, build and publish.")
user_app = typer_app("People and their API tokens for the server (`Authorization: Bearer <token>`).")

AsOpt = Annotated[str | None, typer.Option("--as", help=f"Act as this person (default: ${USER_ENV}).",
                                           show_default=False)]
ServerOpt = Annotated[str | None, typer.Option(
    "--server", help=f"Use a trustmesh server at this URL instead of the local mesh (default: ${SERVER_ENV}); "
                     "the token comes from $TRUSTMESH_TOKEN.", show_default=False)]


def _actor(as_: str | None) -> str:
    actor = as_ or os.environ.get(USER_ENV)
    if not actor:
        raise UsageError(f"who is acting? — fix: add --as PERSON, or export {USER_ENV}=PERSON (a person id from "
                         "mesh.yaml or a domain.yaml)")
    return actor


class LocalAccess:
    """The local mesh's workflow, acting as one person: the same methods as `RemoteAccess`."""

    def __init__(self, ws: Workspace, actor: str) -> None:
        self.ws, self.actor = ws, actor

    def request(self, address: str, **kw: Any) -> dict[str, Any]:
        return self.ws.access.request(self.actor, address, **kw)

    def overview(self, view: str, state: str | None = None) -> dict[str, Any]:
        return self.ws.access.overview(self.actor, view, state)

    def show(self, request: str) -> dict[str, Any]:
        return self.ws.access.show(self.actor, request)

    def approve(self, request: str, note: str = "") -> dict[str, Any]:
        return self.ws.access.approve(self.actor, request, note)

    def reject(self, request: str, reason: str) -> dict[str, Any]:
        return self.ws.access.reject(self.actor, request, reason)

    def withdraw(self, request: str) -> dict[str, Any]:
        return self.ws.access.withdraw(self.actor, request)

    def revoke(self, grant: str, reason: str) -> dict[str, Any]:
        return self.ws.access.revoke(self.actor, grant, reason)

    def explain(self, principal: str, address: str, column: str | None = None) -> dict[str, Any]:
        return self.ws.access.explain(principal, address, column).to_dict()

    def audit_log(self, **filters: Any) -> list[dict[str, Any]]:
        return self.ws.audit.log(self.actor, **filters)

    def audit_verify(self, expect_head: str | None = None) -> dict[str, Any]:
        return self.ws.audit.verify(expect_head)

    def audit_export(self) -> Iterator[str]:
        return self.ws.audit.export(self.actor)


def _client(mesh: Path | None, as_: str | None, server: str | None, *, needs_actor: bool = True) -> Any:
    server = server or os.environ.get(SERVER_ENV)
    if server:
        if as_:
            raise UsageError("--as is for the local mesh; on a server you act as your token's owner — fix: drop --as")
        return RemoteAccess(Server(server))
    return LocalAccess(Workspace.open(mesh), _actor(as_) if needs_actor else "")


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",")]


def _cols(value: list[str] | None) -> str:
    return "all" if value is None else ", ".join(value)


def _day(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") if stamp else ""


def print_request(r: dict[str, Any]) -> None:
    done = sum(1 for a in r["approvals"] if a["decision"] == "approve")
    console.print(f"[bold]{r['id']}[/] {r['state']}: {r['principal']} → {r['dataset']} "
                  f"(columns: {_cols(r['columns'])}" + (f"; unmask: {', '.join(r['unmask'])}" if r["unmask"] else "")
                  + (f"; rows: {r['rows']}" if r.get("rows") else "")
                  + f") for {r['days']} days", markup=True, highlight=False)
    console.print(f"  purpose ({r['purpose_category']}): {r['purpose']}", markup=False)
    console.print(f"  approvals: {done}/{r['levels']}" + "".join(
        f"; level {a['level']} {a['decision']}d by {a['approver']}" + (f" ({a['note']})" if a["note"] else "")
        for a in r["approvals"]), markup=False)
    if r["awaiting"]:
        console.print(f"  waiting for: {', '.join(r['awaiting'])}", markup=False)
    if r["grant"]:
        console.print(f"  granted: {r['grant']}", markup=False)
    if r["reason"]:
        console.print(f"  reason: {r['reason']}", markup=False)


@access_app.command("request")
def request(
    address: Annotated[str, typer.Argument(help="The dataset, e.g. health.activity-dp.participants.")],
    purpose: Annotated[str, typer.Option(help="What the data is for, in a sentence the steward can judge.")],
    purpose_category: Annotated[str, typer.Option(help="research, policy-analysis, statistics, operations, "
                                                       "service-delivery, audit-and-compliance or product-input "
                                                       "(or the mesh's own list).")],
    days: Annotated[int, typer.Option(help="How long the grant should last, in days (1 to the mesh's maximum).")],
    columns: Annotated[str | None, typer.Option(help="Only these columns, comma-separated (default: all).")] = None,
    unmask: Annotated[str | None, typer.Option(help="Personal-data columns to see in the clear, comma-separated; "
                                                    "needs two approvals.")] = None,
    for_product: Annotated[str | None, typer.Option("--for", help="Ask on behalf of a product of your domain that "
                                                                  "reads this dataset, e.g. transport-tc.punctuality-dp.")] = None,
    rows: Annotated[str | None, typer.Option(help="Only rows matching this condition over the dataset's columns, "
                                                  "e.g. \"origin = 'JFK' AND month IN (1, 2)\".")] = None,
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Ask for access to a dataset; the request waits in its domain's stewards' inbox.

    Example: `trustmesh access request bts.flights-dp.flights --purpose 'Punctuality report for the Ministry'
    --purpose-category policy-analysis --days 30 --as irfan`
    """
    result = _client(mesh, as_, server).request(
        address, purpose=purpose, purpose_category=purpose_category, days=days, columns=_split(columns),
        unmask=_split(unmask), for_product=for_product, rows=rows)
    if json:
        print_json(result)
        return
    print_request(result)
    console.print(f"next: {', '.join(result['awaiting'])} decide with `trustmesh access approve {result['id']}`",
                  markup=False)


@access_app.command("list")
def list_(
    inbox: Annotated[bool, typer.Option("--inbox", help="Requests waiting for your decision.")] = False,
    mine: Annotated[bool, typer.Option("--mine", help="Your requests and grants, and your products' (the default).")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every request and grant (governance admins and auditors).")] = False,
    state: Annotated[str | None, typer.Option(help="Only this state: pending, approved, rejected, withdrawn, "
                                                   "expired; for grants active, expired, revoked.")] = None,
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """List requests and grants: your inbox, your own, or all.

    Examples: `trustmesh access list --inbox --as grace`, `trustmesh access list --mine --as irfan --json`
    """
    if inbox + mine + all_ > 1:
        raise UsageError("pick one of --inbox, --mine and --all")
    view = "inbox" if inbox else "all" if all_ else "mine"
    result = _client(mesh, as_, server).overview(view, state)
    if json:
        print_json(result)
        return
    console.print(table(f"requests ({view})", ["id", "state", "principal", "dataset", "columns", "unmask", "purpose",
                                               "approvals", "waiting for", "created"],
                        [[r["id"], r["state"], r["principal"], r["dataset"], _cols(r["columns"]), ", ".join(r["unmask"]),
                          r["purpose_category"], f"{sum(a['decision'] == 'approve' for a in r['approvals'])}/{r['levels']}",
                          ", ".join(r["awaiting"]), _day(r["created_at"])] for r in result["requests"]]))
    for notice in result.get("notices", []):
        console.print(f"[yellow]{notice['product']} is {notice['status']}[/]"
                      + (f" (deadline {notice['deadline'][:10]})" if notice.get("deadline") else "") + ": "
                      + "; ".join(notice["reasons"]), highlight=False)
    if view != "inbox":
        console.print(table("grants", ["id", "state", "principal", "dataset", "columns", "unmask", "expires", "approvers"],
                            [[g["id"], g["state"], g["principal"], g["dataset"], _cols(g["columns"]),
                              ", ".join(g["unmask"]), _day(g["expires_at"]), ", ".join(g["approvers"])]
                             for g in result["grants"]]))


@access_app.command("show")
def show(
    request_id: Annotated[str, typer.Argument(help="The request, e.g. req-7.")],
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """One request in full: purpose, approvals so far, who it waits for, its grant."""
    result = _client(mesh, as_, server).show(request_id)
    print_json(result) if json else print_request(result)


@access_app.command("approve")
def approve(
    request_id: Annotated[str, typer.Argument(help="The request, e.g. req-7.")],
    note: Annotated[str, typer.Option(help="A note for the requester and the audit trail.")] = "",
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Approve a request at its next level; the last approval creates the grant at once.

    Example: `trustmesh access approve req-7 --note 'purpose fits' --as nurul`
    """
    result = _client(mesh, as_, server).approve(request_id, note)
    print_json(result) if json else print_request(result)


@access_app.command("reject")
def reject(
    request_id: Annotated[str, typer.Argument(help="The request, e.g. req-7.")],
    reason: Annotated[str, typer.Option(help="Why, so the requester knows what to change.")],
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Reject a request (at any level); it cannot be decided again.

    Example: `trustmesh access reject req-7 --reason 'ask for the aggregate instead' --as nurul`
    """
    result = _client(mesh, as_, server).reject(request_id, reason)
    print_json(result) if json else print_request(result)


@access_app.command("withdraw")
def withdraw(
    request_id: Annotated[str, typer.Argument(help="Your pending request, e.g. req-7.")],
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Withdraw your own pending request."""
    result = _client(mesh, as_, server).withdraw(request_id)
    print_json(result) if json else print_request(result)


@access_app.command("revoke")
def revoke(
    grant_id: Annotated[str, typer.Argument(help="The grant, e.g. grant-3.")],
    reason: Annotated[str, typer.Option(help="Why, recorded for the grantee and the auditors.")],
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Revoke a grant; it stops working on the next read.

    Example: `trustmesh access revoke grant-3 --reason 'study finished' --as sharon`
    """
    result = _client(mesh, as_, server).revoke(grant_id, reason)
    if json:
        print_json(result)
    else:
        console.print(f"{result['id']} {result['state']}: {result['principal']} on {result['dataset']}", markup=False)


@access_app.command("explain")
def explain(
    principal: Annotated[str, typer.Argument(help="A person id or a product address.")],
    address: Annotated[str, typer.Argument(help="The dataset.")],
    column: Annotated[str | None, typer.Option(help="Only this column.")] = None,
    server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """May PRINCIPAL read ADDRESS? allow, deny or mask per column, naming the policy or grant that decided.

    Example: `trustmesh access explain irfan health.activity-dp.participants --column nric`
    """
    result = _client(mesh, None, server, needs_actor=False).explain(principal, address, column)
    if json:
        print_json(result)
        return
    console.print(f"[bold]{result['decision'].upper()}[/]: {result['reason']}", highlight=False)
    if result.get("columns"):
        console.print(table(None, ["column", "decision"], [[c, v] for c, v in result["columns"].items()]))


# -- audit ------------------------------------------------------------------------------------------------


@audit_app.command("log")
def audit_log(
    actor: Annotated[str | None, typer.Option(help="Only entries by this actor.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject (and what is under it: `bts` covers bts.*).")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Only this event type, or a prefix: `access.`, `grant.`.")] = None,
    since: Annotated[str | None, typer.Option(help="Only since then: 7d, 12h or an ISO date.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 200,
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Audit entries, newest first (auditors and governance admins).

    Example: `trustmesh audit log --type access. --since 7d --as priya`
    """
    filters: dict[str, Any] = {"subject": subject, "type": type, "limit": limit}
    client = _client(mesh, as_, server)
    if isinstance(client, RemoteAccess):
        entries = client.audit_log(actor=actor, since=since, **filters)
    else:
        entries = client.audit_log(by=actor, since=parse_since(since), **filters)
    if json:
        print_json(entries)
        return
    console.print(table(None, ["seq", "at", "type", "actor", "subject", "details"],
                        [[e["seq"], _day(e["at"]), e["type"], e["actor"], e["subject"], _short(e["details"])]
                         for e in entries]))


def _short(details: dict[str, Any], width: int = 90) -> str:
    text = ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, [], {}, ""))
    return text if len(text) <= width else text[: width - 1] + "…"


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[str | None, typer.Option(help="The head hash recorded earlier (e.g. printed by the last "
                                                         "verify): also detects a rewrite of the whole chain.")] = None,
    server: ServerOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Recompute the hash chain and check it against its signed checkpoints; exit 1 and say what is wrong if
    anything was edited, deleted, inserted, reordered, cut off the end or rewritten and re-hashed.

    The checkpoints are signed with a key the metastore does not hold ($TRUSTMESH_AUDIT_KEY_FILE, else
    .trustmesh/audit-key.pem) into a log outside it ($TRUSTMESH_AUDIT_LOG, else
    .trustmesh/audit-checkpoints.jsonl).

    Example: `trustmesh audit verify`
    """
    result = _client(mesh, None, server, needs_actor=False).audit_verify(expect_head)
    print_verification(result, json)
    if not result["ok"]:
        raise typer.Exit(1)


def print_verification(result: dict[str, Any], json: bool) -> None:
    if json:
        print_json(result)
        return
    if result["ok"]:
        console.print(f"[green]verified[/]: {result['entries']} entries, head {result['head']}")
        if result.get("anchored"):
            console.print(f"  {result['checkpoints']} signed checkpoints; the newest vouches for entries 1 to "
                          f"{result['anchored']}", highlight=False)
    else:
        console.print(f"[red]TAMPERED[/]: {result['problem']}", highlight=False)
    for note in result.get("notes", []):
        console.print(f"  note: {note}", markup=False, highlight=False)


@audit_app.command("checkpoint")
def audit_checkpoint(
    accept: Annotated[bool, typer.Option(
        "--accept", help="Vouch for the chain as it is although its signed checkpoints do not (a governance admin, "
                         "with --reason): after restoring a metastore backup older than the newest checkpoint, or "
                         "for entries committed by a process that could not write the checkpoint log.")] = False,
    reason: Annotated[str, typer.Option(help="Why the chain is accepted, e.g. which backup was restored.")] = "",
    as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Sign the audit chain's head into the checkpoint log, if the chain verifies.

    Every change signs its own checkpoint; run this to start the log of a metastore older than it, or,
    with --accept, to vouch for a chain its checkpoints no longer vouch for. A rewritten entry is never
    accepted. It runs where the checkpoint key is, not through a server.

    Example: `trustmesh audit checkpoint --accept --reason 'restored the 2026-03-01 dump' --as gdo-admin`
    """
    if accept and not reason.strip():
        raise UsageError("--accept needs --reason — fix: say why, e.g. which backup was restored")
    actor = _actor(as_) if accept else as_
    result = Workspace.open(mesh).audit.checkpoint(actor, accept=accept, reason=reason)
    print_verification(result, json)
    if not result["ok"]:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", help="jsonl (one entry per line, with its hashes).")] = "jsonl",
    output: Annotated[Path | None, typer.Option(help="Write to this file (default: standard output).")] = None,
    as_: AsOpt = None, server: ServerOpt = None, mesh: MeshOpt = None,
) -> None:
    """Every entry, oldest first, for an external archive (auditors and governance admins).

    Example: `trustmesh audit export --format jsonl --output audit.jsonl --as priya`
    """
    if format != "jsonl":
        raise UsageError(f"--format {format!r} — fix: jsonl")
    lines = _client(mesh, as_, server).audit_export()
    if output is None:
        for line in lines:
            sys.stdout.write(line + "\n")
        return
    tmp = output.with_name(output.name + ".partial")
    count = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
            count += 1
    tmp.replace(output)
    console.print(f"wrote {count} entries to {output}", markup=False)


# -- users and tokens -------------------------------------------------------------------------------------


@user_app.command("token")
def user_token(
    person: Annotated[str, typer.Argument(help="Whose token (yourself, or anyone if you are a governance admin).")],
    name: Annotated[str, typer.Option(help="What the token is for, e.g. 'laptop' or 'nightly job'.")] = "",
    days: Annotated[int, typer.Option(help="Days until it expires (1 to 365).")] = 90,
    as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Create an API token; it is printed once and only its hash is kept.

    Example: `trustmesh user token irfan --name laptop --as irfan`, then
    `export TRUSTMESH_TOKEN=...; trustmesh access list --server http://127.0.0.1:8000`
    """
    token, info = Workspace.open(mesh).tokens.issue(_actor(as_), person, name=name, days=days)
    if json:
        print_json({"token": token, **info})
        return
    console.print(f"{info['id']} for {info['principal']}, expires {_day(info['expires_at'])}. "
                  "Keep it secret; it is not shown again:", markup=False)
    sys.stdout.write(token + "\n")


@user_app.command("tokens")
def user_tokens(
    person: Annotated[str | None, typer.Argument(help="Whose tokens (default: yours).")] = None,
    as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """List a person's API tokens (never the tokens themselves)."""
    items = Workspace.open(mesh).tokens.list(_actor(as_), person)
    if json:
        print_json(items)
        return
    console.print(table(None, ["id", "name", "state", "created", "expires", "last used"],
                        [[t["id"], t["name"], t["state"], _day(t["created_at"]), _day(t["expires_at"]),
                          _day(t["last_used_at"])] for t in items]))


@user_app.command("revoke-token")
def user_revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id, e.g. tok-3.")],
    as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Revoke an API token; the server refuses it from the next request."""
    info = Workspace.open(mesh).tokens.revoke(_actor(as_), token_id)
    print_json(info) if json else console.print(f"{info['id']} revoked", markup=False)


@user_app.command("show")
def user_show(
    person: Annotated[str | None, typer.Argument(help="A person id (default: you).")] = None,
    as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """A person as access control sees them: agency, clearance, roles."""
    ws = Workspace.open(mesh)
    found = ws.access.principal(person or _actor(as_)).to_dict()
    if json:
        print_json(found)
        return
    console.print(f"[bold]{found['id']}[/] {found['name']} <{found['email']}>, {found['kind']} of "
                  f"{found['domain'] or 'the mesh'}; clearance {found['clearance'] or 'mesh default'}; roles: "
                  f"{', '.join(found['roles']) or 'none'}", highlight=False)
