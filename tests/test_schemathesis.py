"""Property tests of the REST API against its own OpenAPI document (schemathesis over the in-process ASGI app).

Every operation of /api/v1 is called with generated parameters and bodies, valid and invalid, as a governance
admin (the role that reaches the most code: audit, apply, scans). Each answer must not be a server error and must
match what the document promises: its status, content type, headers and body schema. Nothing is excluded:
state-changing POSTs (access requests and decisions, policy apply, scans) run too, on this module's own demo mesh;
what they cannot do they must refuse with a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from meshfactory import governed_demo
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from trustmesh.service import Workspace
from trustmesh.web.app import create_app

pytestmark = pytest.mark.schemathesis
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES = 15  # per operation: the whole run stays well under a minute on two cores


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = governed_demo(tmp_path_factory.mktemp("fuzz") / "mesh")
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def headers(demo: Workspace) -> dict[str, str]:
    token, _ = demo.tokens.issue("gdo-admin", "gdo-admin", name="schemathesis", days=30)
    return {"Authorization": f"Bearer {token}"}


# The document is the app's own: generating it touches no mesh, so the cases are known when the module is collected
# (a fixture-built schema needs pytest internals that pytest 9 removed); the calls go to the demo's app.
DOCUMENT = create_app(Workspace(Path(__file__).parent)).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def app(demo: Workspace) -> Any:
    application = create_app(demo)
    with TestClient(application) as client:  # the lifespan opens the metastore; the document is the same one
        assert client.get("/openapi.json").json() == DOCUMENT
    return application


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_keeps_its_promises(case: Any, app: Any, headers: dict[str, str]) -> None:
    case.call_and_validate(app=app, headers=headers, checks=CHECKS)
