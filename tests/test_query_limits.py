"""What one query, one principal and one k-anonymity measurement may use: result bytes, memory, time, places.

A token holder must not be able to take the server's memory or time from everyone else: a result is capped
in bytes (not only rows), a query's memory is capped in its worker process (not only inside DuckDB's buffer
manager), a timeout stops even a function DuckDB cannot interrupt, one principal runs only a few queries at
once, and k-anonymity runs under the same timeout with a bound on its quasi-identifiers and rows. The audit
keeps the whole statement, so padding cannot hide it. The last test runs the attacks against a real server
while another person queries it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from meshfactory import (
    METASTORE_TIER,
    base_files,
    column,
    free_port,
    governed_demo,
    grant_product_inputs,
    write_files,
)
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.privacy.kanon import KanonTooCostly
from trustmesh.query.gateway import Limits, QueryTimeout, QueryTooLarge
from trustmesh.query.guard import QueryRefused
from trustmesh.query.running import RUNNING, QueryBusy
from trustmesh.service import Workspace

pytestmark = pytest.mark.skipif(METASTORE_TIER == "postgresql", reason="what a query may use does not depend on the "
                                "metastore; these run once, on SQLite")

SHOP = "domains/alpha/products/shop-dp"
Q = 'alpha."shop-dp".items'
WIDE = "SELECT repeat('x', 1000000) AS s FROM range(500)"  # 500 rows, 500 MB: far under the row limit
HUGE_VALUE = "SELECT length(repeat('ab', 400000000)) AS n"  # one row, one 800 MB value
HUGER_VALUE = "SELECT length(repeat('ab', 1000000000)) AS n"  # 2 GB: past the default worker's cap
TRUSTMESH = Path(sys.executable).with_name("trustmesh")


def nric_files() -> dict[str, Any]:
    """The base mesh with an NRIC on each item."""
    files = base_files()
    lines = files[f"{SHOP}/data/items.csv"].splitlines()
    nrics = ["S1234567D", "T1234567J", "F1234567N"]
    files[f"{SHOP}/data/items.csv"] = lines[0] + ",nric\n" + "".join(
        f"{line},{nric}\n" for line, nric in zip(lines[1:], nrics, strict=True))
    files[f"{SHOP}/sql/items.sql"] = "SELECT item_id, name, price, sold_on, nric FROM raw_items\n"
    files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"].append(column(
        "nric", "string", classification="official-closed", customProperties=[
            {"property": "piiType", "value": "nric"}, {"property": "sensitivity", "value": "sensitive-normal"}]))
    return files


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = write_files(tmp_path_factory.mktemp("limits") / "mesh", nric_files())
    ws = Workspace.open(root)
    grant_product_inputs(ws)
    assert ws.build().ok
    yield ws
    ws.close()


@pytest.fixture
def limited(mesh: Workspace) -> Iterator[Callable[..., Workspace]]:
    """limited(**limits) → the module's mesh, opened again with these query limits."""
    opened: list[Workspace] = []

    def make(**limits: Any) -> Workspace:
        ws = Workspace.open(mesh.root)
        ws.gateway.limits = Limits(**limits)
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


def last_query(ws: Workspace) -> dict[str, Any]:
    entry: dict[str, Any] = ws.audit.log("gdo", type="query.", limit=1)[0]
    return entry


class PeakMemory:
    """This process's resident memory, sampled every 5 ms while the block runs: how far it rose."""

    def __init__(self) -> None:
        self.start = self.peak = _rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- finding: results capped by rows, not bytes -------------------------------------------------------------


def test_a_wide_result_is_refused_by_its_bytes_not_its_rows(mesh: Workspace) -> None:
    with PeakMemory() as memory, pytest.raises(QueryTooLarge) as info:
        mesh.query("alpha-dev", WIDE)
    message = str(info.value)
    assert "larger than 64 MiB" in message and "fix:" in message and "--limit" in message
    assert info.value.http_status == 413
    assert memory.rise_mb < 200, f"this process grew by {memory.rise_mb:.0f} MB for a refused result"
    entry = last_query(mesh)
    assert entry["type"] == "query.refused" and entry["details"]["reason"] == message
    # under the cap the same shape of query runs, and the audit says how many bytes it returned
    result = mesh.query("alpha-dev", "SELECT repeat('x', 1000) AS s FROM range(5000)")
    assert result.table.num_rows == 5000 and not result.truncated
    assert last_query(mesh)["details"]["bytes"] == result.table.nbytes > 5_000_000


def test_the_result_cap_is_a_limit_like_the_others(limited: Callable[..., Workspace]) -> None:
    ws = limited(max_result_bytes=2**20)
    with pytest.raises(QueryTooLarge, match=r"larger than 1 MiB"):
        ws.query("alpha-dev", "SELECT repeat('x', 1000) AS s FROM range(2000)")
    assert ws.query("alpha-dev", "SELECT repeat('x', 1000) AS s FROM range(500)").table.num_rows == 500


@pytest.mark.parametrize(("limits", "words"), [
    ({"memory": "lots"}, "query memory 'lots'"), ({"max_result_bytes": 0}, "max_result_bytes 0"),
    ({"max_running_per_principal": True}, "max_running_per_principal True"), ({"timeout_s": -1}, "timeout_s -1"),
])
def test_impossible_limits_are_refused(limits: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        Limits(**limits)
    assert "fix:" in str(info.value)


# -- finding: per-query memory ------------------------------------------------------------------------------


def test_one_huge_value_is_stopped_in_its_worker_not_in_the_server(limited: Callable[..., Workspace]) -> None:
    ws = limited(memory="256MB", max_result_bytes=8 * 2**20)
    with PeakMemory() as memory, pytest.raises(QueryTooLarge) as info:
        ws.query("alpha-dev", HUGE_VALUE)
    assert "needed more memory than the 256MB one query may use" in str(info.value)
    assert memory.rise_mb < 200, f"this process grew by {memory.rise_mb:.0f} MB for a value built elsewhere"
    assert last_query(ws)["type"] == "query.refused"
    # the next query gets a sound worker
    assert ws.query("alpha-dev", f"SELECT count(*) AS n FROM {Q}").table.to_pylist() == [{"n": 3}]


def test_a_worker_runs_capped_and_without_the_servers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from trustmesh.query import sandbox

    monkeypatch.setenv("TRUSTMESH_METASTORE_URL", "postgresql://trustmesh:hunter2@db/trustmesh")
    cap = 900 * 2**20 + 4096  # a pool of its own: its workers start now, with the variable set
    con = sandbox.pool(cap).connect(["SET threads = 1"], lambda key_id: b"k" * 32, "__tm_keyed",
                                    max_message=2**20, call_timeout_s=30)
    try:
        assert con.execute("SELECT 40 + ?", [2]).fetchall() == [(42,)]
        environment = Path(f"/proc/{con.pid}/environ").read_bytes()
        limits = Path(f"/proc/{con.pid}/limits").read_text()
    finally:
        con.close()
    assert b"hunter2" not in environment and b"TRUSTMESH" not in environment
    [data] = [line.split() for line in limits.splitlines() if line.startswith("Max data size")]
    assert data[3:5] == [str(cap), str(cap)], data


def test_the_timeout_stops_a_function_duckdb_cannot_interrupt(limited: Callable[..., Workspace]) -> None:
    ws = limited(timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"longer than 1 s"):
        ws.query("alpha-dev", "SELECT length(lpad('x', 600000000, 'y')) AS n")  # ~15 s of work in one call
    assert time.monotonic() - started < 6


# -- finding: concurrent queries per principal ---------------------------------------------------------------


def _running(ws: Workspace, who: str, sql: str) -> tuple[threading.Thread, list[BaseException]]:
    """Start `sql` as `who` in a thread; return once it holds its place."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            ws.query(who, sql)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 10
    while RUNNING.running(who) == 0:
        assert time.monotonic() < deadline and thread.is_alive(), errors
        time.sleep(0.01)
    return thread, errors


SLOW = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


def test_one_principal_runs_only_so_many_queries_at_once(limited: Callable[..., Workspace]) -> None:
    ws = limited(timeout_s=3.0, max_running_per_principal=1)
    thread, errors = _running(ws, "alpha-dev", SLOW)
    try:
        started = time.monotonic()
        with pytest.raises(QueryBusy) as info:
            ws.query("alpha-dev", "SELECT 1 AS one")
        assert time.monotonic() - started < 1, "the excess query is refused at once, not queued"
        assert info.value.http_status == 429
        assert "alpha-dev already has 1 query running" in str(info.value) and "fix: wait" in str(info.value)
        assert last_query(ws)["type"] == "query.refused"
        # someone else is not held up by alpha-dev's queries
        assert ws.query("beta-dev", "SELECT 1 AS one").table.to_pylist() == [{"one": 1}]
    finally:
        thread.join()
    assert isinstance(errors[0], QueryTimeout)
    assert ws.query("alpha-dev", "SELECT 1 AS one").table.num_rows == 1  # its place is free again


def test_when_every_place_is_taken_a_query_waits_briefly_then_is_refused(limited: Callable[..., Workspace]) -> None:
    ws = limited(timeout_s=3.0, max_running=1, queue_s=0.5)
    thread, _ = _running(ws, "alpha-dev", SLOW)
    try:
        with pytest.raises(QueryBusy, match=r"the server is running 1 query, its most at once"):
            ws.query("beta-dev", "SELECT 1 AS one")
    finally:
        thread.join()
    thread, _ = _running(ws, "alpha-dev", SLOW)
    started = time.monotonic()
    patient = limited(max_running=1, queue_s=30)
    assert patient.query("beta-dev", "SELECT 1 AS one").table.num_rows == 1  # once alpha-dev's query has stopped
    assert time.monotonic() - started > 1
    thread.join()


# -- finding: the audit keeps only the first 10,000 characters ------------------------------------------------


def test_a_long_comment_cannot_hide_the_statement_from_the_audit(mesh: Workspace) -> None:
    sql = "/* " + "quarterly report " * 600 + "*/ SELECT nric FROM " + Q
    assert len(sql) > 10_000
    result = mesh.query("alpha-dev", sql)
    details = last_query(mesh)["details"]
    assert details["sql"] == sql and details["sql"].endswith(f"SELECT nric FROM {Q}")
    assert details["sql_sha256"] == hashlib.sha256(sql.encode()).hexdigest() and details["sql_chars"] == len(sql)
    assert details["query"] == result.query_id and "sql_cut" not in details
    assert mesh.audit.verify()["ok"]


def test_a_query_too_long_to_run_keeps_its_end_and_its_hash(mesh: Workspace) -> None:
    sql = "/* " + "x" * 150_000 + " */ SELECT nric FROM " + Q
    with pytest.raises(QueryRefused, match="at most 100,000"):
        mesh.query("alpha-dev", sql)
    details = last_query(mesh)["details"]
    assert details["sql_cut"] is True and details["sql_chars"] == len(sql) and len(details["sql"]) < 5_000
    assert details["sql"].endswith(f"SELECT nric FROM {Q}") and "characters not kept" in details["sql"]
    assert details["sql_sha256"] == hashlib.sha256(sql.encode()).hexdigest()


# -- finding: k-anonymity without a budget -------------------------------------------------------------------


def _columns(n: int, rows: int) -> str:
    cols = ", ".join(f"(hash(r * {i + 7}) % {50 + 13 * i})::INTEGER AS c{i}" for i in range(n))
    return f"SELECT {cols} FROM range({rows}) t(r)"


def test_kanon_refuses_more_quasi_identifiers_than_it_may_take(mesh: Workspace) -> None:
    started = time.monotonic()
    with pytest.raises(KanonTooCostly) as info:
        mesh.privacy.kanon("alpha-dev", [f"c{i}" for i in range(16)], sql=_columns(16, 200_000))
    assert time.monotonic() - started < 2
    assert "16 quasi-identifiers, more than the 12" in str(info.value) and "fix:" in str(info.value)
    assert info.value.http_status == 422


def test_kanon_stops_at_the_query_timeout(limited: Callable[..., Workspace]) -> None:
    ws = limited(timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(KanonTooCostly) as info:
        ws.privacy.kanon("alpha-dev", [f"c{i}" for i in range(12)], sql=_columns(12, 200_000), k=5)
    assert time.monotonic() - started < 4, "the generalisation search ran past its deadline"
    assert "longer than 1 s" in str(info.value) and "USING SAMPLE" in str(info.value)


def test_kanon_refuses_more_rows_than_it_may_read_and_a_sample_fits(limited: Callable[..., Workspace]) -> None:
    ws = limited(kanon_max_rows=1_000)
    with pytest.raises(KanonTooCostly, match=r"2,000 rows, more than the 1,000 .*USING SAMPLE"):
        ws.privacy.kanon("alpha-dev", ["c0", "c1"], sql=_columns(2, 2_000))
    sampled = ws.privacy.kanon("alpha-dev", ["c0", "c1"], sql=_columns(2, 2_000) + " USING SAMPLE 500 ROWS")
    assert sampled.report["rows"] == 500


def test_kanon_on_a_dataset_is_bounded_too(limited: Callable[..., Workspace]) -> None:
    with pytest.raises(KanonTooCostly, match=r"3 rows, more than the 2"):
        limited(kanon_max_rows=2).privacy.kanon("alpha-steward", ["sold_on"], dataset="alpha.shop-dp.items")
    report = limited(kanon_max_rows=3).privacy.kanon("alpha-steward", ["sold_on"], dataset="alpha.shop-dp.items").report
    assert report["rows"] == 3


def test_kanon_cli_names_what_to_reduce(mesh: Workspace) -> None:
    result = CliRunner().invoke(app, ["privacy", "kanon", "--sql", _columns(13, 100), "--quasi",
                                      ",".join(f"c{i}" for i in range(13)), "--as", "alpha-dev", "--mesh",
                                      str(mesh.root)])
    assert result.exit_code == 1
    assert "13 quasi-identifiers, more than the 12" in result.output and "fix:" in result.output


# -- over HTTP ---------------------------------------------------------------------------------------------


def test_the_api_answers_413_and_429_as_problems(mesh: Workspace) -> None:
    from fastapi.testclient import TestClient

    from trustmesh.web.app import create_app

    token, _ = mesh.tokens.issue("alpha-dev", "alpha-dev", name="limits test", days=1)
    with TestClient(create_app(mesh), headers={"Authorization": f"Bearer {token}"}) as client:
        wide = client.post("/api/v1/query", json={"sql": WIDE})
        assert wide.status_code == 413 and wide.headers["content-type"].startswith("application/problem+json")
        assert "larger than 64 MiB" in wide.json()["detail"]
        mesh.gateway.limits = Limits(timeout_s=3.0, max_running_per_principal=1)
        try:
            thread, _ = _running(mesh, "alpha-dev", SLOW)
            busy = client.post("/api/v1/query", json={"sql": "SELECT 1 AS one"})
            thread.join()
        finally:
            mesh.gateway.limits = Limits()
        assert busy.status_code == 429 and "already has 1 query running" in busy.json()["detail"]
        many = client.post("/api/v1/privacy/kanon", json={"sql": _columns(13, 100),
                                                          "quasi": [f"c{i}" for i in range(13)]})
        assert many.status_code == 422 and "more than the 12" in many.json()["detail"]


# -- the attacks against a real server, while someone else uses it ------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, dict[str, str]]]:
    """`trustmesh serve` on the governed demo: its URL, its process id, and tokens by person."""
    ws = governed_demo(tmp_path_factory.mktemp("limits-server") / "mesh")
    tokens = {who: ws.tokens.issue(who, who, name="limits test", days=1)[0] for who in ("irfan", "jiahui")}
    root = ws.root
    ws.close()
    port = free_port()
    proc = subprocess.Popen([str(TRUSTMESH), "serve", "--mesh", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode()
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within a minute"
            time.sleep(0.2)
        yield base, proc.pid, tokens
    finally:
        proc.terminate()
        proc.wait(timeout=30)


NORMAL = 'SELECT gender, count(*) AS n FROM health."activity-dp".participants GROUP BY 1 ORDER BY 1'


@pytest.mark.slow
def test_the_server_stays_responsive_while_one_user_tries_each_attack(server: tuple[str, int, dict[str, str]]) -> None:
    base, pid, tokens = server

    def query(who: str, sql: str) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = httpx.post(f"{base}/api/v1/query", json={"sql": sql}, timeout=120,
                              headers={"Authorization": f"Bearer {tokens[who]}"})
        return response, time.monotonic() - started

    warm, _ = query("irfan", NORMAL)
    assert warm.status_code == 200, warm.text
    time.sleep(0.5)
    before = _rss(pid)
    peak = before
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, _rss(pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            attacks = [pool.submit(query, "jiahui", sql) for sql in (WIDE, HUGER_VALUE, WIDE)]
            time.sleep(0.05)
            normal, took = pool.submit(query, "irfan", NORMAL).result()
            answers = [a.result()[0] for a in attacks]
    finally:
        done.set()
        watcher.join()
    assert normal.status_code == 200, normal.text
    assert normal.json()["rows"] == warm.json()["rows"] and took < 20, f"the normal query took {took:.1f} s"
    assert [a.status_code for a in answers] == [413, 413, 413], [a.text[:300] for a in answers]
    assert "larger than 64 MiB" in answers[0].json()["detail"]
    assert "needed more memory" in answers[1].json()["detail"]
    rise = (peak - before) / 2**20
    assert rise < 300, f"the server grew by {rise:.0f} MB while refusing the attacks"
    # four places per person: the fifth of jiahui's concurrent queries is refused at once, irfan still runs
    slow = "SELECT count(*) AS n FROM range(1000000000) t(r) WHERE r % 7 = 3"
    with ThreadPoolExecutor(7) as pool:
        many = [pool.submit(query, "jiahui", slow) for _ in range(6)]
        time.sleep(1.0)
        normal, took = pool.submit(query, "irfan", NORMAL).result()
        statuses = sorted(m.result()[0].status_code for m in many)
    assert normal.status_code == 200 and took < 20, (normal.text, took)
    assert statuses.count(429) >= 2 and set(statuses) <= {200, 408, 429}, statuses
