"""The access and query pages in-process, signed in with the session cookie: request, decide, withdraw, query and
download, and every bad input on the way (each a clear page, nothing half-done)."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from meshfactory import governed_demo

from trustmesh.service import Workspace
from trustmesh.web.app import create_app

PARTICIPANTS = "health.activity-dp.participants"
MASKED_NRIC = re.compile(r"^\*{5}\d{3}[A-Z]$")
SQL = 'SELECT participant_id, nric, gender FROM health."activity-dp".participants ORDER BY participant_id'


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = governed_demo(tmp_path_factory.mktemp("pages") / "demo-mesh")
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def app(demo: Workspace) -> Any:
    return create_app(demo)


def sign_in(client: TestClient, token: str) -> Any:
    """Post the sign-in form from the sign-in page, with the CSRF value it carries (and the cookie it set)."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/login").text)
    assert found, "the sign-in form carries a CSRF value"
    return client.post("/login", data={"token": token, "csrf": found.group(1)})


class Browser:
    """A signed-in person's client: the session cookie, and the CSRF value their pages carry."""

    def __init__(self, app: Any, ws: Workspace, person: str) -> None:
        self.client = TestClient(app, follow_redirects=False)
        token, _ = ws.tokens.issue(person, person, name="page tests", days=1)
        assert sign_in(self.client, token).status_code == 303
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', self.client.get("/access").text)
        assert found
        self.csrf = found.group(1)

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, **kw)

    def post(self, url: str, data: dict[str, Any], csrf: bool = True) -> Any:
        return self.client.post(url, data={**({"csrf": self.csrf} if csrf else {}), **data})


@pytest.fixture(scope="module")
def people(app: Any, demo: Workspace) -> dict[str, Browser]:
    return {p: Browser(app, demo, p) for p in ("jiahui", "nurul", "sharon", "amirah", "irfan", "huimin")}


def ask(b: Browser, **changes: Any) -> Any:
    form = {"dataset": PARTICIPANTS, "columns": ["participant_id", "nric", "gender"],
            "purpose": "Linking participants to commuting patterns for the active-mobility study",
            "purpose_category": "research", "days": "30", **changes}
    return b.post("/access/requests", {k: v for k, v in form.items() if v is not None})


def request_id(response: Any) -> str:
    assert response.status_code == 303, response.text
    found = re.search(r"id=(req-\d+)", response.headers["location"])
    assert found, response.headers["location"]
    return found.group(1)


def test_request_approve_twice_then_query_masked(people: dict[str, Browser], demo: Workspace) -> None:
    sent = ask(people["jiahui"])
    rid = request_id(sent)
    mine = people["jiahui"].get(sent.headers["location"]).text
    assert f"Request {rid} sent" in mine and "Level 1 of 2" in mine
    assert people["jiahui"].get("/access.json").json() == demo.access.overview("jiahui", "mine")

    assert rid not in people["amirah"].get("/inbox").text  # commuter's steward: not health's request
    refused = people["amirah"].post(f"/inbox/{rid}/approve", {"note": "not mine"})
    assert refused.status_code == 403 and "amirah" in refused.text
    assert demo.access.show("gdo-admin", rid)["approvals"] == []  # nothing half-done

    inbox = people["nurul"].get("/inbox")
    assert rid in inbox.text and "Approve level 1 of 2" in inbox.text
    assert rid in {r["id"] for r in people["nurul"].get("/inbox.json").json()["requests"]}
    first = people["nurul"].post(f"/inbox/{rid}/approve", {"note": "purpose fits"})
    assert first.headers["location"] == f"/inbox?done=approved&id={rid}"
    assert f"You approved {rid}." in people["nurul"].get(first.headers["location"]).text
    again = people["nurul"].post(f"/inbox/{rid}/approve", {"note": "twice"})
    assert again.status_code in (403, 409)
    second = people["sharon"].post(f"/inbox/{rid}/approve", {"note": ""})
    assert second.headers["location"] == f"/inbox?done=granted&id={rid}"
    assert demo.access.show("gdo-admin", rid)["state"] == "approved"

    page = people["jiahui"].post("/query", {"sql": SQL, "limit": "50"})
    assert page.status_code == 200
    cells = re.findall(r'<td class="masked-col">([^<]*)</td>', page.text)
    assert len(cells) == 50 and all(MASKED_NRIC.match(c) for c in cells), cells[:3]
    assert "character masking: last 3 digits and check letter" in page.text


def test_the_request_form_keeps_what_was_typed_and_says_what_is_wrong(people: dict[str, Browser],
                                                                      demo: Workspace) -> None:
    before = len(demo.access.overview("gdo-admin", "all")["requests"])
    cases = [({"purpose": "short"}, "at least 10 characters"),
             ({"days": "soon"}, "not a number of days"),
             ({"days": "99999"}, "from 1 to"),
             ({"columns": None}, "no columns chosen"),
             ({"unmask": ["gender"]}, "gender is not personal data"),
             ({"purpose_category": "curiosity"}, "is not one of this mesh"),
             ({"rows": "1; DROP TABLE x"}, "")]
    for change, words in cases:
        response = ask(people["huimin"], **change)
        assert response.status_code in (400, 403, 409, 422), (change, response.status_code)
        assert 'role="alert"' in response.text and words in response.text, (change, response.text[-3000:])
        kept = change.get("purpose") or "Linking participants to commuting patterns"
        assert kept in response.text  # what was typed stays in the form
    assert len(demo.access.overview("gdo-admin", "all")["requests"]) == before


def test_forms_need_the_sessions_csrf_value(people: dict[str, Browser], demo: Workspace) -> None:
    before = len(demo.access.overview("gdo-admin", "all")["requests"])
    assert people["jiahui"].post("/access/requests", {"dataset": PARTICIPANTS, "purpose": "x" * 20},
                                 csrf=False).status_code == 403
    assert people["jiahui"].post("/query", {"sql": SQL}, csrf=False).status_code == 403
    forged = people["jiahui"].post("/inbox/req-1/approve", {"csrf": people["irfan"].csrf})  # someone else's value
    assert forged.status_code == 403
    assert len(demo.access.overview("gdo-admin", "all")["requests"]) == before


def test_reject_needs_a_reason_and_withdraw_is_the_requesters(people: dict[str, Browser], demo: Workspace) -> None:
    rid = request_id(ask(people["huimin"], columns=["participant_id", "gender"], purpose="Counting participants by "
                         "gender for the annual programme report"))
    assert people["nurul"].post(f"/inbox/{rid}/reject", {"reason": ""}).status_code == 400
    assert people["irfan"].post(f"/access/requests/{rid}/withdraw", {}).status_code == 403
    done = people["huimin"].post(f"/access/requests/{rid}/withdraw", {})
    assert done.headers["location"] == f"/access?done=withdrawn&id={rid}"
    assert demo.access.show("gdo-admin", rid)["state"] == "withdrawn"
    other = request_id(ask(people["huimin"], columns=["participant_id", "gender"], purpose="Counting participants "
                           "by gender for the annual programme report, again"))
    rejected = people["nurul"].post(f"/inbox/{other}/reject", {"reason": "the annual report has its own product"})
    assert rejected.headers["location"] == f"/inbox?done=rejected&id={other}"
    assert "the annual report has its own product" in people["huimin"].get("/access").text


def test_flash_messages_come_from_known_codes_only(people: dict[str, Browser]) -> None:
    page = people["huimin"].get("/access", params={"done": "requested", "id": "<script>x</script>"}).text
    assert "<script>x" not in page and "Request the request sent" in page
    assert "flash" not in people["huimin"].get("/access", params={"done": "hacked"}).text.split("<main")[1][:200]


def test_the_query_page_lists_what_its_reader_may_read(people: dict[str, Browser], demo: Workspace) -> None:
    listed = people["irfan"].get("/query.json").json()["datasets"]
    participants = next(d for d in listed if d["address"] == PARTICIPANTS)
    outcomes = {c["name"]: c["outcome"] for c in participants["columns"]}
    assert outcomes["nric"] == "mask" and "full_name" not in outcomes  # not granted: not listed
    assert "commuter.trips-dp.commuters" not in {d["address"] for d in listed}
    page = html.unescape(people["irfan"].get("/query").text)
    assert 'health."activity-dp".participants' in page  # the editor starts with a query that runs


def test_a_refused_query_says_why_and_shows_nothing(people: dict[str, Browser], demo: Workspace) -> None:
    for sql, words in [('SELECT * FROM commuter."trips-dp".commuters', "commuter.trips-dp.commuters"),
                       ("SELECT * FROM read_csv('/etc/passwd')", ""),
                       ("DROP TABLE x", "only read queries")]:
        page = people["irfan"].post("/query", {"sql": sql})
        assert page.status_code in (400, 403), (sql, page.status_code)
        assert "Refused:" in page.text and words in page.text and 'data-testid="result"' not in page.text
        assert "root:x:0" not in page.text
    assert people["irfan"].post("/query", {"sql": SQL, "limit": "0"}).status_code == 400
    assert demo.audit.log("priya", by="irfan", type="query.refused", limit=5)


def test_downloads_are_masked_and_audited(people: dict[str, Browser], demo: Workspace) -> None:
    csv = people["irfan"].post("/query/download", {"sql": SQL, "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"].startswith('attachment; filename="')
    lines = csv.text.splitlines()
    assert lines[0] == '"participant_id","nric","gender"' and len(lines) == 3001
    assert all(MASKED_NRIC.match(line.split(",")[1].strip('"')) for line in lines[1:])
    parquet = people["irfan"].post("/query/download", {"sql": SQL, "format": "parquet"})
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == 3000 and all(MASKED_NRIC.match(v) for v in table.column("nric").to_pylist())
    assert people["irfan"].post("/query/download", {"sql": SQL, "format": "xlsx"}).status_code == 400
    clear = people["huimin"].post("/query/download", {"sql": SQL, "format": "parquet"})
    assert clear.status_code == 200 and not MASKED_NRIC.match(pq.read_table(io.BytesIO(clear.content))
                                                               .column("nric")[0].as_py())
    runs = demo.audit.log("priya", by="irfan", type="query.run", limit=5)
    assert runs and runs[0]["details"]["sql"] == SQL


def test_pages_without_a_session_go_to_sign_in(app: Any) -> None:
    anonymous = TestClient(app, follow_redirects=False)
    for url in ("/access", "/inbox", "/query", f"/request?dataset={PARTICIPANTS}"):
        response = anonymous.get(url)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    assert anonymous.post("/query", data={"sql": SQL}).status_code == 303


def test_the_demo_gives_tokens_to_sign_in_with(demo: Workspace, app: Any) -> None:
    from trustmesh.demo.access import SIGN_IN, TOKENS_FILE, demo_tokens

    tokens = demo_tokens(demo)
    assert set(tokens) == {p for p, _ in SIGN_IN}
    path = Path(demo.root) / ".trustmesh" / TOKENS_FILE
    assert path.stat().st_mode & 0o077 == 0  # only its owner may read it
    assert demo_tokens(demo) == tokens  # reused while they work
    client = TestClient(app, follow_redirects=False)
    assert sign_in(client, tokens["priya"]).status_code == 303
    assert "Priya Nair" in client.get("/").text


def test_the_product_page_names_its_consumers_to_its_domain_only(people: dict[str, Browser], demo: Workspace) -> None:
    """Its domain's people (nurul, health's steward) see who holds grants on each dataset and who queried it
    lately — whom a change would reach; a consumer from another domain (irfan) sees neither."""
    assert people["irfan"].post("/query", {"sql": SQL}).status_code == 200
    own = html.unescape(people["nurul"].get("/products/health.activity-dp").text)
    section = own[own.index('id="consumers-participants"'):own.index('id="versions-participants"')]
    assert "irfan" in section and "huimin" in section and "grant-" in section
    queried = section[section.index('data-testid="queried-by-participants"'):]
    assert "irfan" in queried
    other = html.unescape(people["irfan"].get("/products/health.activity-dp").text)
    assert 'id="consumers-participants"' not in other and "huimin" not in other
