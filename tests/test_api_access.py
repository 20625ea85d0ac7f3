"""The access API over HTTP: API tokens and OIDC JWTs, the request journey, the audit routes, the OpenAPI document."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from meshfactory import person
from sqlalchemy import select, text
from typer.testing import CliRunner

from trustmesh.cli import app as cli_app
from trustmesh.errors import Conflict, Forbidden, InvalidMesh, NotFound, UsageError
from trustmesh.metastore.schema import ApiTokenRow
from trustmesh.service import Workspace
from trustmesh.web.app import create_app

ITEMS = "alpha.shop-dp.items"
AUDITOR = "audie"
ISSUER = "https://id.example.gov.sg"
AUDIENCE = "trustmesh"
ME = "/api/v1/me"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRUSTMESH_USER", "TRUSTMESH_SERVER", "TRUSTMESH_TOKEN", "TRUSTMESH_MESH", "TRUSTMESH_METASTORE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mesh_files(files: dict[str, Any]) -> dict[str, Any]:
    """The base mesh, an auditor, and alpha-analyst: a plain developer of alpha (no custodian role)."""
    files["mesh.yaml"]["people"].append(person(AUDITOR, "auditor"))
    files["domains/alpha/domain.yaml"]["people"].append(person("alpha-analyst", "developer"))
    return files


@pytest.fixture
def ws(make_mesh: Any, mesh_files: dict[str, Any]) -> Workspace:
    workspace: Workspace = make_mesh(mesh_files)
    return workspace


@pytest.fixture
def client(ws: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(ws)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def own_token(ws: Workspace, who: str, days: int = 30) -> str:
    token, _ = ws.tokens.issue(who, who, name="tests", days=days)
    return token


def refusals(ws: Workspace) -> list[dict[str, Any]]:
    return ws.audit.log("gdo", type="auth.refused", limit=None)


def assert_401(response: Any, *words: str) -> str:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    for word in words:
        assert word in error, error
    return str(error)


# -- API tokens ---------------------------------------------------------------------------------------------


def test_token_is_returned_once_and_stored_only_as_its_hash(ws: Workspace, client: TestClient) -> None:
    token, info = ws.tokens.issue("alpha-dev", "alpha-dev", name="laptop", days=30)
    assert token.startswith("tmk_") and len(token) > 40
    assert info["principal"] == "alpha-dev" and info["created_by"] == "alpha-dev" and info["state"] == "active"
    assert info["name"] == "laptop" and info["id"].startswith("tok-") and "token" not in info
    expires = datetime.fromisoformat(info["expires_at"]) - datetime.fromisoformat(info["created_at"])
    assert expires == timedelta(days=30)

    with ws.store.engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(text("SELECT * FROM tm_api_tokens"))]
        everything = " ".join(str(v) for r in c.execute(text("SELECT * FROM tm_audit")) for v in r)
    assert len(rows) == 1
    assert rows[0]["hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in str(v) or token[4:] in str(v) for v in rows[0].values())
    assert token[4:] not in everything  # nor in the audit trail
    created = ws.audit.log(AUDITOR, type="token.created")
    assert [(e["actor"], e["subject"], e["details"]["token"]) for e in created] == [("alpha-dev", "alpha-dev",
                                                                                    info["id"])]

    me = client.get(ME, headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == "alpha-dev"
    assert set(me.json()["roles"]) == {"alpha/developer", "alpha/data-product-owner"}
    with ws.store.session() as s:
        row = s.scalars(select(ApiTokenRow)).one()
        assert row.last_used_at is not None
    assert ws.tokens.list("alpha-dev")[0]["last_used_at"] is not None


def test_only_the_person_or_a_governance_admin_manages_tokens(ws: Workspace) -> None:
    with pytest.raises(Forbidden, match="alpha-dev may not manage beta-dev's tokens"):
        ws.tokens.issue("alpha-dev", "beta-dev")
    with pytest.raises(Forbidden, match="may not manage"):
        ws.tokens.issue(AUDITOR, "alpha-dev")  # an auditor reads the trail, it does not make tokens
    _, info = ws.tokens.issue("gdo", "beta-dev", name="nightly job", days=7)
    assert (info["principal"], info["created_by"]) == ("beta-dev", "gdo")
    assert [t["id"] for t in ws.tokens.list("beta-dev")] == [info["id"]]
    assert [t["id"] for t in ws.tokens.list("gdo", "beta-dev")] == [info["id"]]
    with pytest.raises(Forbidden):
        ws.tokens.list("alpha-dev", "beta-dev")
    with pytest.raises(Forbidden):
        ws.tokens.revoke("alpha-dev", info["id"])
    with pytest.raises(NotFound):
        ws.tokens.issue("gdo", "nobody")
    with pytest.raises(NotFound):
        ws.tokens.issue("gdo", "alpha.shop-dp")  # a product has no tokens
    for days in (0, 366, True):
        with pytest.raises(UsageError, match="1 to 365 days"):
            ws.tokens.issue("alpha-dev", "alpha-dev", days=days)
    with pytest.raises(UsageError, match="not a token id"):
        ws.tokens.revoke("gdo", "tok-x")


def test_missing_garbage_unknown_and_revoked_tokens_are_refused(ws: Workspace, client: TestClient) -> None:
    assert_401(client.get(ME), "no bearer token")
    assert_401(client.get(ME, headers={"Authorization": "Basic YWxwaGE6c2VjcmV0"}), "no bearer token")
    assert_401(client.get("/api/v1/access/inbox"), "no bearer token")

    before = len(refusals(ws))
    cases = [
        ("garbage", "is not a trustmesh API token (no OIDC issuer is configured)"),
        ("a.b.c", "is not a trustmesh API token"),
        ("tmk_" + "x" * 43, "unknown API token"),
    ]
    for token, says in cases:
        error = assert_401(client.get(ME, headers=bearer(token)), says)
        newest = refusals(ws)[0]
        assert (newest["actor"], newest["subject"], newest["details"]["reason"]) == ("anonymous", "api", error)
        assert token not in json.dumps(newest)
    assert len(refusals(ws)) == before + len(cases)

    token, info = ws.tokens.issue("beta-dev", "beta-dev", days=30)
    assert client.get(ME, headers=bearer(token)).status_code == 200
    revoked = ws.tokens.revoke("beta-dev", info["id"])
    assert revoked["state"] == "revoked"
    error = assert_401(client.get(ME, headers=bearer(token)), f"API token {info['id']} was revoked")
    assert refusals(ws)[0]["details"]["reason"] == error
    assert len(refusals(ws)) == before + len(cases) + 1
    assert ws.audit.log(AUDITOR, type="token.revoked")[0]["details"] == {"token": info["id"]}
    with pytest.raises(Conflict, match="already revoked"):
        ws.tokens.revoke("gdo", info["id"])


def test_expired_token_is_refused(ws: Workspace) -> None:
    now = [datetime.now(UTC)]
    timed = Workspace.open(ws.root, clock=lambda: now[0])
    try:
        token, info = timed.tokens.issue("alpha-steward", "alpha-steward", days=1)
        with TestClient(create_app(timed)) as c:
            assert c.get(ME, headers=bearer(token)).json()["id"] == "alpha-steward"
            now[0] += timedelta(hours=23)
            assert c.get(ME, headers=bearer(token)).status_code == 200
            now[0] += timedelta(days=1)
            error = assert_401(c.get(ME, headers=bearer(token)), f"API token {info['id']} expired on")
        assert [t["state"] for t in timed.tokens.list("alpha-steward")] == ["expired"]
        refused = refusals(timed)[0]
        assert refused["details"]["reason"] == error
        assert datetime.fromisoformat(refused["at"].replace("Z", "+00:00")) == now[0]
        assert timed.audit.verify()["ok"] is True
    finally:
        timed.close()


def test_cli_tokens_work_over_http(ws: Workspace, client: TestClient) -> None:
    root = str(ws.root)
    made = runner.invoke(cli_app, ["user", "token", "alpha-dev", "--name", "laptop", "--as", "alpha-dev", "--json",
                                   "--mesh", root])
    assert made.exit_code == 0, made.output
    issued = json.loads(made.stdout)
    assert issued["token"].startswith("tmk_")
    assert client.get(ME, headers=bearer(issued["token"])).json()["id"] == "alpha-dev"
    listed = runner.invoke(cli_app, ["user", "tokens", "--as", "alpha-dev", "--json", "--mesh", root])
    assert listed.exit_code == 0 and issued["token"] not in listed.stdout
    assert [t["id"] for t in json.loads(listed.stdout)] == [issued["id"]]
    other = runner.invoke(cli_app, ["user", "token", "beta-dev", "--as", "alpha-dev", "--mesh", root])
    assert other.exit_code == 1 and "may not manage beta-dev's tokens" in other.output
    gone = runner.invoke(cli_app, ["user", "revoke-token", issued["id"], "--as", "alpha-dev", "--mesh", root])
    assert gone.exit_code == 0 and "revoked" in gone.output
    assert_401(client.get(ME, headers=bearer(issued["token"])), "was revoked")
    shown = runner.invoke(cli_app, ["user", "show", "alpha-dev", "--json", "--mesh", root])
    assert json.loads(shown.stdout)["email"] == "alpha-dev@example.gov.sg"


# -- the journey over HTTP -------------------------------------------------------------------------------


def test_request_approve_explain_revoke_and_audit_over_http(ws: Workspace, client: TestClient) -> None:
    t = {who: own_token(ws, who) for who in ("beta-dev", "alpha-steward", "alpha-owner", "alpha-dev",
                                             "alpha-analyst", "beta-steward", AUDITOR)}
    body = {"dataset": ITEMS, "purpose": "Weekly sales dashboard for the beta team",
            "purpose_category": "statistics", "days": 30}
    made = client.post("/api/v1/access/requests", json=body, headers=bearer(t["beta-dev"]))
    assert made.status_code == 201, made.text
    req = made.json()
    assert (req["id"], req["state"], req["requester"], req["principal"]) == ("req-2", "pending", "beta-dev",
                                                                            "beta-dev")
    assert "alpha-steward" in req["awaiting"]
    bad_body = client.post("/api/v1/access/requests", json={**body, "surprise": 1}, headers=bearer(t["beta-dev"]))
    assert bad_body.status_code == 422
    dup = client.post("/api/v1/access/requests", json=body, headers=bearer(t["beta-dev"]))
    assert dup.status_code == 409 and "still pending" in dup.json()["error"]

    inbox = client.get("/api/v1/access/inbox", headers=bearer(t["alpha-steward"]))
    assert inbox.status_code == 200
    assert [r["id"] for r in inbox.json()["requests"]] == ["req-2"]
    assert client.get("/api/v1/access/inbox", headers=bearer(t["beta-dev"])).json()["requests"] == []
    mine = client.get("/api/v1/access/mine", headers=bearer(t["beta-dev"])).json()
    assert "req-2" in [r["id"] for r in mine["requests"]]

    approve = "/api/v1/access/requests/{}/approve"
    own = client.post(approve.format("req-2"), json={"note": "looks fine"}, headers=bearer(t["beta-dev"]))
    assert own.status_code == 403 and "nobody decides their own request" in own.json()["error"]
    ok = client.post(approve.format("req-2"), json={"note": "fits the purpose"}, headers=bearer(t["alpha-steward"]))
    assert ok.status_code == 200, ok.text
    assert ok.json()["state"] == "approved" and ok.json()["grant"] == "grant-2"
    again = client.post(approve.format("req-2"), json={}, headers=bearer(t["alpha-owner"]))
    assert again.status_code == 409 and "req-2 is approved" in again.json()["error"]
    missing = client.post(approve.format("req-99"), json={}, headers=bearer(t["alpha-steward"]))
    assert missing.status_code == 404 and "no request req-99" in missing.json()["error"]
    malformed = client.post(approve.format("req-abc"), json={}, headers=bearer(t["alpha-steward"]))
    assert malformed.status_code == 400 and "'req-abc' is not a req id" in malformed.json()["error"]
    assert client.get("/api/v1/access/requests/req-abc", headers=bearer(t["beta-dev"])).status_code == 400
    assert client.get("/api/v1/access/requests/2", headers=bearer(t["beta-dev"])).json()["grant"] == "grant-2"

    explain = "/api/v1/access/explain"
    query = {"principal": "beta-dev", "dataset": ITEMS}
    allowed = client.get(explain, params=query, headers=bearer(t["beta-dev"]))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["decision"] == "allow" and "grant-2" in allowed.json()["policies"]
    for who in ("alpha-owner", "alpha-steward", "alpha-dev", AUDITOR):  # custodians of alpha, and the auditor
        assert client.get(explain, params=query, headers=bearer(t[who])).status_code == 200, who
    for who in ("alpha-analyst", "beta-steward"):  # a plain developer of alpha; another domain's steward
        refused = client.get(explain, params=query, headers=bearer(t[who]))
        assert refused.status_code == 403, who
        assert f"{who} may not ask what beta-dev may read" in refused.json()["error"]

    revoke = client.post("/api/v1/access/grants/grant-2/revoke", json={"reason": "dashboard retired"},
                         headers=bearer(t["alpha-steward"]))
    assert revoke.status_code == 200, revoke.text
    assert (revoke.json()["state"], revoke.json()["revoked_by"]) == ("revoked", "alpha-steward")
    denied = client.get(explain, params=query, headers=bearer(t["beta-dev"])).json()
    assert denied["decision"] == "deny" and "grant-2" not in denied["policies"]

    # The audit routes: auditors read, anyone verifies.
    log = client.get("/api/v1/audit", headers=bearer(t[AUDITOR]))
    assert log.status_code == 200
    entries = log.json()
    assert [e["seq"] for e in entries] == sorted((e["seq"] for e in entries), reverse=True)
    journey = [(e["type"], e["actor"]) for e in reversed(entries)
               if e["seq"] > 3 and e["type"] not in ("token.created", "access.refused")]
    assert journey == [("access.requested", "beta-dev"), ("access.approved", "alpha-steward"),
                       ("grant.created", "alpha-steward"), ("grant.revoked", "alpha-steward")]
    refused = {(e["actor"], e["subject"]): e["details"]["reason"] for e in entries if e["type"] == "access.refused"}
    assert "nobody decides their own request" in refused["beta-dev", "req-2"]
    assert "only a pending request can be decided" in refused["alpha-owner", "req-2"]
    assert "no request req-99" in refused["alpha-steward", "req-99"]
    only = client.get("/api/v1/audit", params={"type": "grant.", "actor": "alpha-steward", "limit": 1},
                      headers=bearer(t[AUDITOR])).json()
    assert [e["type"] for e in only] == ["grant.revoked"]
    recent = client.get("/api/v1/audit", params={"since": "1h"}, headers=bearer(t[AUDITOR])).json()
    assert len(recent) == len(entries)
    assert client.get("/api/v1/audit", params={"since": "garbage"}, headers=bearer(t[AUDITOR])).status_code == 400
    forbidden = client.get("/api/v1/audit", headers=bearer(t["beta-dev"]))
    assert forbidden.status_code == 403 and "auditor" in forbidden.json()["error"]

    verified = client.get("/api/v1/audit/verify", headers=bearer(t["beta-dev"]))
    assert verified.status_code == 200
    assert verified.json()["ok"] is True and verified.json()["entries"] == len(entries)
    assert verified.json()["head"] == entries[0]["hash"]
    again_ok = client.get("/api/v1/audit/verify", params={"expect_head": verified.json()["head"]},
                          headers=bearer(t["beta-dev"]))
    assert again_ok.json()["ok"] is True

    exported = client.get("/api/v1/audit/export", headers=bearer(t[AUDITOR]))
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(entries) + 1))
    assert lines == sorted(entries, key=lambda e: e["seq"])
    assert client.get("/api/v1/audit/export", headers=bearer(t["beta-dev"])).status_code == 403
    assert_401(client.get("/api/v1/audit/verify"), "no bearer token")


# -- OIDC ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("issuer", "other")}


@pytest.fixture
def oidc_ws(make_mesh: Any, mesh_files: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]) -> Workspace:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(keys["issuer"].public_key(), as_dict=True)
    mesh_files["jwks.json"] = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    mesh_files["mesh.yaml"]["platform"] = {"oidc": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": "jwks.json"}}
    workspace: Workspace = make_mesh(mesh_files, grants=False)
    return workspace


def signed(key: Any, *, kid: str | None = "k1", algorithm: str = "RS256", drop: tuple[str, ...] = (),
           **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "sub": "alpha-steward",
               "email": "alpha-steward@example.gov.sg", **claims}
    for name in drop:
        payload.pop(name)
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(alg: str, secret: bytes | None = None, **claims: Any) -> str:
    """A token written by hand: `none`, or HMAC keyed with the issuer's public key (algorithm confusion)."""
    now = int(time.time())
    head = _b64({"alg": alg, "typ": "JWT", "kid": "k1"})
    body = _b64({"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "sub": "alpha-steward", **claims})
    signature = b"" if secret is None else hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_oidc_token_names_the_person(oidc_ws: Workspace, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    with TestClient(create_app(oidc_ws)) as c:
        me = c.get(ME, headers=bearer(signed(keys["issuer"])))
        assert me.status_code == 200, me.text
        assert me.json()["id"] == "alpha-steward" and me.json()["email"] == "alpha-steward@example.gov.sg"
        no_kid = c.get(ME, headers=bearer(signed(keys["issuer"], kid=None, sub="beta-dev")))
        assert no_kid.status_code == 200 and no_kid.json()["id"] == "beta-dev"
        inbox = c.get("/api/v1/access/inbox", headers=bearer(signed(keys["issuer"])))
        assert inbox.status_code == 200 and inbox.json()["principal"] == "alpha-steward"
        api_token = own_token(oidc_ws, "alpha-dev")  # API tokens still work beside OIDC
        assert c.get(ME, headers=bearer(api_token)).json()["id"] == "alpha-dev"


def test_oidc_names_a_person_by_sub_not_by_a_name_they_can_change(oidc_ws: Workspace,
                                                                   keys: dict[str, rsa.RSAPrivateKey]) -> None:
    """preferred_username and email are the user's to change (and not unique at many issuers): a token whose
    preferred_username is a person's id, but whose sub is someone else's opaque id, names nobody."""
    issuer = keys["issuer"]
    with TestClient(create_app(oidc_ws)) as c:
        impostor = signed(issuer, sub="00u1f2ab3cD", preferred_username="alpha-steward", email="alpha-steward")
        assert_401(c.get(ME, headers=bearer(impostor)), "sub claim '00u1f2ab3cD' is not the id of a person")
        # one field only: a sub that is a person's email is not that person
        by_email = signed(issuer, sub="alpha-steward@example.gov.sg")
        assert_401(c.get(ME, headers=bearer(by_email)), "is not the id of a person of this mesh")
        assert c.get(ME, headers=bearer(signed(issuer, sub="alpha-steward",
                                               preferred_username="beta-dev"))).json()["id"] == "alpha-steward"


def test_oidc_claim_can_name_another_immutable_claim_but_never_a_mutable_one(
        make_mesh: Any, mesh_files: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]) -> None:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(keys["issuer"].public_key(), as_dict=True)
    mesh_files["jwks.json"] = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    settings = {"issuer": ISSUER, "audience": AUDIENCE, "jwks": "jwks.json", "claim": "trustmesh_id"}
    mesh_files["mesh.yaml"]["platform"] = {"oidc": settings}
    ws = make_mesh(mesh_files, grants=False)
    with TestClient(create_app(ws)) as c:
        named = signed(keys["issuer"], sub="00u1f2ab3cD", trustmesh_id="beta-dev")
        assert c.get(ME, headers=bearer(named)).json()["id"] == "beta-dev"
        assert_401(c.get(ME, headers=bearer(signed(keys["issuer"], sub="beta-dev"))), 'missing the "trustmesh_id"')
    for mutable in ("preferred_username", "email"):
        mesh_files["mesh.yaml"]["platform"] = {"oidc": {**settings, "claim": mutable}}
        with pytest.raises(InvalidMesh) as refused:
            make_mesh(mesh_files, grants=False).config  # noqa: B018 - loading the settings is the test
        assert f"claim {mutable} names a person by a value users can change" in str(refused.value)
        assert "use sub" in str(refused.value)


def test_a_session_from_an_id_token_ends_when_the_token_does(oidc_ws: Workspace,
                                                             keys: dict[str, rsa.RSAPrivateKey]) -> None:
    now = [datetime.now(UTC)]
    timed = Workspace.open(oidc_ws.root, clock=lambda: now[0])
    try:
        with TestClient(create_app(timed), follow_redirects=False) as c:
            form = re.search(r'name="csrf" value="([0-9a-f]+)"', c.get("/login").text)
            assert form
            pasted = c.post("/login", data={"token": signed(keys["issuer"]), "csrf": form.group(1)})
            assert pasted.status_code == 303 and 0 < int(re.findall(r"Max-Age=(\d+)", pasted.headers["set-cookie"])[0]) <= 300
            assert c.get("/access").status_code == 200
            now[0] += timedelta(minutes=6)  # the ID token lived five minutes
            ended = c.get("/access")
            assert ended.status_code == 303 and ended.headers["location"].endswith("&ended=1")
    finally:
        timed.close()


def test_bad_oidc_tokens_are_refused(oidc_ws: Workspace, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    issuer, other = keys["issuer"], keys["other"]
    public_pem = issuer.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    cases = {
        "wrong audience": (signed(issuer, aud="someone-else"), "audience"),
        "wrong issuer": (signed(issuer, iss="https://evil.example.com"), "issuer"),
        "expired": (signed(issuer, exp=int(time.time()) - 120), "expired"),
        "no expiry": (signed(issuer, drop=("exp",)), "exp"),
        "wrong key, same kid": (signed(other), "Signature verification failed"),
        "unknown kid": (signed(issuer, kid="k9"), "key id 'k9' is not in the issuer's key set"),
        "none algorithm": (unsigned("none"), "alg"),
        "HS256 keyed with the public key": (unsigned("HS256", public_pem), "alg"),
        "not a person": (signed(issuer, sub="mallory"), "sub claim 'mallory' is not the id of a person of this mesh"),
        "no claim": (signed(issuer, drop=("sub",)), 'missing the "sub" claim'),
        "not a JWT": ("eyJhbGciOiJSUzI1NiJ9.bad.sig", "the JWT was refused"),
    }
    before = len(refusals(oidc_ws))
    with TestClient(create_app(oidc_ws)) as c:
        for name, (token, says) in cases.items():
            response = c.get(ME, headers=bearer(token))
            assert response.status_code == 401, (name, response.text)
            assert response.headers["www-authenticate"] == "Bearer", name
            assert says.lower() in response.json()["error"].lower(), (name, response.json())
    reasons = [e["details"]["reason"] for e in refusals(oidc_ws)]
    assert len(reasons) == before + len(cases)
    assert oidc_ws.audit.verify()["ok"] is True


# -- the OpenAPI document -----------------------------------------------------------------------------------


def test_openapi_lists_the_access_routes_behind_bearer(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["type"] == "http" and schemes["HTTPBearer"]["scheme"] == "bearer"
    routes = {
        "/api/v1/me": ["get"],
        "/api/v1/access/requests": ["get", "post"],
        "/api/v1/access/inbox": ["get"],
        "/api/v1/access/mine": ["get"],
        "/api/v1/access/requests/{request_id}": ["get"],
        "/api/v1/access/requests/{request_id}/approve": ["post"],
        "/api/v1/access/requests/{request_id}/reject": ["post"],
        "/api/v1/access/requests/{request_id}/withdraw": ["post"],
        "/api/v1/access/grants/{grant_id}/revoke": ["post"],
        "/api/v1/access/explain": ["get"],
        "/api/v1/audit": ["get"],
        "/api/v1/audit/verify": ["get"],
        "/api/v1/audit/export": ["get"],
    }
    for path, methods in routes.items():
        assert path in doc["paths"], path
        for method in methods:
            operation = doc["paths"][path][method]
            assert operation["security"] == [{"HTTPBearer": []}], (path, method)
    created = doc["paths"]["/api/v1/access/requests"]["post"]
    assert "201" in created["responses"]
    assert "application/x-ndjson" in doc["paths"]["/api/v1/audit/export"]["get"]["responses"]["200"]["content"]


# -- OIDC sign-in in the browser (authorization code flow, against an issuer on loopback) ------------------------


@pytest.fixture(scope="module")
def issuer(keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[str]:
    """A minimal OIDC issuer on a free loopback port: its token endpoint answers a code with an ID token whose
    nonce is the code (so a test chooses the nonce), and refuses the code `refused`."""
    import socket
    import threading

    import uvicorn
    from fastapi import FastAPI, Form
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/token")
    def token(code: str = Form(), client_id: str = Form(), grant_type: str = Form()) -> JSONResponse:
        if code == "refused" or client_id != "trustmesh-ui" or grant_type != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"id_token": signed(keys["issuer"], nonce=code), "token_type": "Bearer"})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def flow_client(make_mesh: Any, mesh_files: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey],
                issuer: str) -> Iterator[TestClient]:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(keys["issuer"].public_key(), as_dict=True)
    mesh_files["jwks.json"] = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    mesh_files["mesh.yaml"]["platform"] = {"oidc": {
        "issuer": ISSUER, "audience": AUDIENCE, "jwks": "jwks.json",
        "authorizationEndpoint": f"{issuer}/authorize", "tokenEndpoint": f"{issuer}/token", "clientId": "trustmesh-ui"}}
    with TestClient(create_app(make_mesh(mesh_files, grants=False)), follow_redirects=False) as c:
        yield c


def _start(c: TestClient, next_url: str = "/inbox") -> dict[str, str]:
    page = c.get("/login", params={"next": next_url})
    assert "Sign in with https://id.example.gov.sg" in page.text
    go = c.get("/login/oidc", params={"next": next_url})
    assert go.status_code == 303 and go.headers["location"].startswith("http://127.0.0.1:")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(go.headers["location"]).query))
    assert query["client_id"] == "trustmesh-ui" and query["response_type"] == "code"
    assert query["redirect_uri"] == "http://testserver/login/oidc/callback" and "openid" in query["scope"]
    return query


def test_oidc_sign_in_by_authorization_code(flow_client: TestClient) -> None:
    query = _start(flow_client)
    back = flow_client.get("/login/oidc/callback", params={"code": query["nonce"], "state": query["state"]})
    assert back.status_code == 303 and back.headers["location"] == "/inbox", back.text
    page = flow_client.get("/inbox")
    assert page.status_code == 200 and "Signed in as" in page.text and "alpha-steward" in page.text


@pytest.mark.parametrize("case", ["state", "nonce", "refused", "issuer-error", "no-flow"])
def test_oidc_sign_in_refuses_what_is_not_its_own(flow_client: TestClient, case: str) -> None:
    query = _start(flow_client)
    params = {"code": query["nonce"], "state": query["state"]}
    if case == "state":
        params["state"] = "forged"
    elif case == "nonce":
        params["code"] = "someone-elses-nonce"
    elif case == "refused":
        params["code"] = "refused"
    elif case == "issuer-error":
        params = {"error": "access_denied"}
    else:
        flow_client.cookies.clear()
    back = flow_client.get("/login/oidc/callback", params=params)
    assert back.status_code == 401 and "OIDC sign-in failed" in back.text, back.text
    assert "trustmesh_session" not in back.headers.get("set-cookie", "")
    assert flow_client.get("/inbox").status_code == 303  # not signed in


def test_oidc_sign_in_needs_the_issuers_endpoints(oidc_ws: Workspace) -> None:
    with TestClient(create_app(oidc_ws), follow_redirects=False) as c:
        assert "Sign in with" not in c.get("/login").text
        refused = c.get("/login/oidc")
        assert refused.status_code == 401 and "authorizationEndpoint" in refused.text
