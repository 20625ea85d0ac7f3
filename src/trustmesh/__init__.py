"""trustmesh: a self-serve data mesh platform for trusted data sharing.

`trustmesh.connect(mesh_or_url)` opens governed queries from Python (see `trustmesh.sdk`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"


def connect(target: Any, *, as_: str | None = None, token: str | None = None) -> Any:
    """Governed queries from Python: `trustmesh.connect("demo-mesh", as_="irfan").sql("SELECT ...").df()`.

    The SDK is imported on first use (by name, so the package root depends on nothing above it).
    """
    return import_module("trustmesh.sdk").connect(target, as_=as_, token=token)
