"""OpenLineage run events for every product build: START, then COMPLETE or FAIL, to a JSONL file or a server."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trustmesh import __version__
from trustmesh.descriptors import Mesh, Product
from trustmesh.lineage.openlineage import LineageEmitter, LineageInput, LineageNotSent, run_events
from trustmesh.metastore.schema import utcnow

PRODUCER = f"https://github.com/trustmesh/trustmesh/tree/{__version__}"


@dataclass
class ProductRun:
    """One product's build as OpenLineage sees it: a run id and when it started."""

    product: Product
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_at: datetime = field(default_factory=utcnow)


class RunEvents:
    """Sends a build's events; a lineage server that cannot be reached never fails the build, it is reported.

    Events go out in order from a thread of their own, so neither the transport (the OpenLineage client, loaded
    on first use) nor a slow server holds up the build; `wait` returns once every event is sent or reported.
    """

    def __init__(self, mesh: Mesh, emitter: LineageEmitter | None) -> None:
        self.mesh = mesh
        self.emitter = emitter
        self.lock = threading.Lock()
        self.problems: list[str] = []
        self._sender: ThreadPoolExecutor | None = None

    def wait(self) -> None:
        """Return when every event sent so far is out (or its failure is in `problems`)."""
        with self.lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.shutdown(wait=True)

    def start(self, product: Product) -> ProductRun:
        run = ProductRun(product)
        self._send(run, "START", [], None)
        return run

    def complete(self, run: ProductRun, outputs: list[tuple[Any, Any, Any, int | None]]) -> None:
        self._send(run, "COMPLETE", outputs, None)

    def fail(self, run: ProductRun, error: str) -> None:
        self._send(run, "FAIL", [], error)

    def _send(self, run: ProductRun, status: str, outputs: list[tuple[Any, Any, Any, int | None]],
              error: str | None) -> None:
        if self.emitter is None:
            return
        finished_at = None if status == "START" else utcnow()
        with self.lock:
            if self._sender is None:
                self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustmesh-lineage")
            self._sender.submit(self._emit, self.emitter, run, status, list(outputs), error, finished_at)

    def _emit(self, emitter: LineageEmitter, run: ProductRun, status: str,
              outputs: list[tuple[Any, Any, Any, int | None]], error: str | None, finished_at: datetime | None) -> None:
        """Make the event (the OpenLineage client's models) and send it, on the sender's thread."""
        product = run.product
        try:
            event = self._event(run, status, outputs, error, finished_at)
            emitter.emit(event)
        except LineageNotSent as exc:
            with self.lock:
                self.problems.append(f"{product.address}: OpenLineage {status} event not sent: {exc}")
        except Exception as exc:  # a thread's error would otherwise vanish: the build reports it
            with self.lock:
                self.problems.append(f"{product.address}: OpenLineage {status} event not made: "
                                     f"{type(exc).__name__}: {exc}")

    def _event(self, run: ProductRun, status: str, outputs: list[tuple[Any, Any, Any, int | None]],
               error: str | None, finished_at: datetime | None) -> dict[str, Any]:
        product = run.product
        return run_events(
            mesh_name=self.mesh.config.name, product=product, run_id=run.run_id, started_at=run.started_at,
            finished_at=finished_at, status=status,  # type: ignore[arg-type]
            inputs=[LineageInput.for_port(self.mesh.config.name, product, port) for port in product.inputs],
            outputs=outputs, sql_by_dataset={o.address: o.sql or "" for o in product.outputs}, error=error,
            producer=PRODUCER, dialect="duckdb",
        )
