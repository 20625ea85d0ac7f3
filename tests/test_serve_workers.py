"""`trustmesh serve --workers N` on a PostgreSQL metastore: every worker answers, on the same metastore."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from meshfactory import free_port

TRUSTMESH = Path(sys.executable).with_name("trustmesh")


def _wait_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"the server exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not answer within a minute")


@pytest.mark.postgres
@pytest.mark.slow
def test_several_workers_serve_one_postgresql_metastore(make_mesh: Any, postgres_url: str) -> None:
    ws = make_mesh(metastore_url=postgres_url)
    assert ws.build().ok
    token, _ = ws.tokens.issue("alpha-dev", "alpha-dev", name="workers test", days=1)
    port = free_port()
    env = {**os.environ, "TRUSTMESH_METASTORE_URL": postgres_url}
    proc = subprocess.Popen([str(TRUSTMESH), "serve", "--mesh", str(ws.root), "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc)
        seen: set[int] = set()
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:  # fresh connections land on either worker
            health = httpx.get(f"{base}/api/v1/health", timeout=5).json()
            assert health["metastore"] == "postgresql"
            seen.add(health["worker"])
        assert len(seen) == 2, f"only worker(s) {seen} answered"

        def datasets(_: int) -> list[str]:
            response = httpx.get(f"{base}/api/v1/datasets", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert response.status_code == 200, response.text
            return sorted(p["address"] for p in response.json())

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(datasets, range(32)))
        assert answers[0] and all(a == answers[0] for a in answers)

        # A token revoked through one worker is refused by every worker: nothing is cached per process.
        ws.tokens.revoke("alpha-dev", ws.tokens.list("alpha-dev")[0]["id"])
        for _ in range(8):
            assert httpx.get(f"{base}/api/v1/datasets", headers={"Authorization": f"Bearer {token}"},
                             timeout=5).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_zero_workers_is_refused(make_mesh: Any) -> None:
    ws = make_mesh(grants=False)
    done = subprocess.run([str(TRUSTMESH), "serve", "--mesh", str(ws.root), "--workers", "0"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2
    assert "--workers" in done.stderr and "greater than or equal to 1" in done.stderr
