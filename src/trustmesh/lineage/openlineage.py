"""OpenLineage run events for a product build, built and sent with openlineage-python (JSONL file or HTTP).

A build emits START, then COMPLETE or FAIL, for the job `trustmesh://<mesh>` / `<product address>`. Outputs carry
their schema, column lineage, documentation, ownership, published version and, as an output facet, the quality
assertions of the run. openlineage-python takes ~0.6 s to import, so it is imported only when an event is built.

    event = run_events(mesh_name="nyc", product=product, run_id=str(uuid4()), started_at=start, finished_at=end,
                       status="COMPLETE", inputs=inputs, outputs=[(dataset, lineage, report, 3)],
                       sql_by_dataset={dataset.address: sql}, error=None, producer=PRODUCER)
    LineageEmitter(default_events_path(warehouse)).emit(event)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

from trustmesh.descriptors import Column, InputPort, OutputDataset, Product
from trustmesh.errors import TrustmeshError, UsageError
from trustmesh.lineage.model import DatasetLineage

if TYPE_CHECKING:
    from openlineage.client import event_v2 as ev
    from openlineage.client.client import Event
    from openlineage.client.facet_v2 import DatasetFacet, JobFacet, OutputDatasetFacet, RunFacet
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq
    from openlineage.client.transport import Transport

    from trustmesh.quality.run import CheckResult, QualityReport

Status = Literal["START", "COMPLETE", "FAIL"]
# An output of the run: the dataset, its lineage, its quality report, and the version it was published as.
OutputRun = tuple[OutputDataset, DatasetLineage | None, "QualityReport | None", int | None]
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}


def mesh_namespace(mesh_name: str) -> str:
    """The OpenLineage namespace of a mesh's jobs and datasets."""
    return f"trustmesh://{mesh_name}"


def default_events_path(warehouse: Path) -> Path:
    """Where events are written unless configured: `openlineage/events.jsonl` beside the warehouse."""
    return warehouse.parent / "openlineage" / "events.jsonl"


@dataclass(frozen=True)
class LineageInput:
    """A dataset a run read, named as OpenLineage names it, with the references (port, address) lineage uses."""

    namespace: str
    name: str
    columns: tuple[Column, ...] = ()
    refs: tuple[str, ...] = ()
    version: str | None = None

    @classmethod
    def for_port(cls, mesh_name: str, product: Product, port: InputPort, *,
                 columns: Sequence[Column] | Mapping[str, str] = (), version: str | None = None) -> LineageInput:
        """Name a port's dataset: a product's by its address, a file by its absolute path, a table by its server."""
        known = (tuple(Column(name=n, logical_type="", physical_type=t) for n, t in columns.items())
                 if isinstance(columns, Mapping) else tuple(columns))
        source = port.source
        if source.type == "product" and source.address:
            return cls(mesh_namespace(mesh_name), source.address, known, (port.name, source.address), version)
        if source.type == "file":
            return cls("file", _file_name(product.folder, source.path or ""), known, (port.name,), version)
        namespace, name = _table_name(source.url_env, source.table or port.name)
        return cls(namespace, name, known, (port.name,), version)


def _file_name(folder: Path, pattern: str) -> str:
    """OpenLineage's name of a local file (namespace `file`): its absolute path; for a glob, the folder of the matches."""
    plain = itertools.takewhile(lambda part: not any(ch in part for ch in "*?["), Path(pattern).parts)
    return str(folder.joinpath(*plain).resolve())


def _table_name(url_env: str | None, table: str) -> tuple[str, str]:
    """OpenLineage's name of a table: `postgres://host:port` and `database.schema.table`, never the credentials."""
    url = urlsplit(os.environ.get(url_env or "", ""))
    scheme = url.scheme.split("+")[0]
    scheme = {"postgresql": "postgres"}.get(scheme, scheme)
    if not scheme:
        return "database", table  # the URL is not set here; the server cannot be named
    port = url.port or DEFAULT_PORTS.get(scheme)
    host = f"{url.hostname}:{port}" if url.hostname and port else (url.hostname or "")
    return f"{scheme}://{host}", ".".join(p for p in (url.path.strip("/"), table) if p)


def run_events(*, mesh_name: str, product: Product, run_id: str, started_at: datetime, finished_at: datetime | None,
               status: Status, inputs: Sequence[LineageInput], outputs: Sequence[OutputRun],
               sql_by_dataset: Mapping[str, str], error: str | None, producer: str,
               datasets: Mapping[str, tuple[str, str]] | None = None, dialect: str | None = None) -> dict[str, Any]:
    """One OpenLineage 2-0-2 RunEvent for a product build, as a JSON-able dict."""
    from openlineage.client import event_v2 as ev
    from openlineage.client.facet_v2 import error_message_run
    from openlineage.client.serde import Serde

    moment = started_at if status == "START" else finished_at
    if moment is None:
        raise UsageError(f"a {status} lineage event needs finished_at: pass the time the build ended")
    namespace = mesh_namespace(mesh_name)
    # A lineage reference (port name or address) → (namespace, name): the inputs' refs, the outputs' addresses,
    # then `datasets`; any other reference is taken to be an address in the mesh.
    names = {ref: (i.namespace, i.name) for i in inputs for ref in i.refs}
    names |= {o.address: (namespace, o.address) for o, *_ in outputs}
    names |= dict(datasets or {})
    run_facets: dict[str, RunFacet] = {}
    if status == "FAIL":
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error or "the build failed", programmingLanguage="python", producer=producer)
    event = ev.RunEvent(
        eventType=ev.RunState(status), eventTime=_utc(moment), producer=producer,
        run=ev.Run(runId=run_id, facets=run_facets or None),
        job=ev.Job(namespace=namespace, name=product.address,
                   facets=_job_facets(product, outputs, sql_by_dataset, dialect, producer) or None),
        inputs=[_input(i, producer) for i in inputs],
        outputs=[_output(product, out, names, namespace, producer) for out in outputs],
    )
    return Serde.to_dict(event)


def _utc(moment: datetime) -> str:
    """RFC 3339 in UTC (`2026-05-01T09:30:00.000Z`); a naive time is taken to be UTC already."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _job_facets(product: Product, outputs: Sequence[OutputRun], sql_by_dataset: Mapping[str, str],
                dialect: str | None, producer: str) -> dict[str, JobFacet]:
    """The job's SQL (every output's, in order, each headed by its address when several), purpose and team."""
    from openlineage.client.facet_v2 import documentation_job, ownership_job, sql_job

    facets: dict[str, JobFacet] = {}
    queries = [(o.address, sql_by_dataset.get(o.address) or sql_by_dataset.get(o.name) or "") for o, *_ in outputs]
    queries = [(address, sql.strip().rstrip(";").strip()) for address, sql in queries if sql.strip()]
    if queries:
        query = ";\n".join(f"-- {a}\n{sql}" if len(queries) > 1 else sql for a, sql in queries)
        facets["sql"] = sql_job.SQLJobFacet(query=query, dialect=dialect, producer=producer)
    purpose = str(product.description.get("purpose") or "").strip()
    if purpose:
        facets["documentation"] = documentation_job.DocumentationJobFacet(description=purpose, producer=producer)
    owners = [ownership_job.Owner(name=n, type=t) for n, t in _members(product.team)]
    if owners:
        facets["ownership"] = ownership_job.OwnershipJobFacet(owners=owners, producer=producer)
    return facets


def _members(team: Any) -> list[tuple[str, str | None]]:
    """(username, role) of each member of an ODPS/ODCS `team`: an object with `members`, or a list of them."""
    members = team.get("members") if isinstance(team, dict) else team
    return [(str(m["username"]), str(m["role"]) if m.get("role") else None)
            for m in members or [] if isinstance(m, dict) and m.get("username")]


def _input(dataset: LineageInput, producer: str) -> ev.InputDataset:
    """An input dataset with its schema and version facets when they are known."""
    from openlineage.client import event_v2 as ev
    from openlineage.client.facet_v2 import dataset_version_dataset

    facets: dict[str, DatasetFacet] = {}
    if dataset.columns:
        facets["schema"] = _schema(dataset.columns, producer)
    if dataset.version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=dataset.version, producer=producer)
    return ev.InputDataset(namespace=dataset.namespace, name=dataset.name, facets=facets or None, inputFacets=None)


def _output(product: Product, out: OutputRun, names: Mapping[str, tuple[str, str]], namespace: str,
            producer: str) -> ev.OutputDataset:
    """An output dataset: contract schema, column lineage, purpose, owners, version; quality as an output facet."""
    from openlineage.client import event_v2 as ev
    from openlineage.client.facet_v2 import dataset_version_dataset, documentation_dataset, ownership_dataset

    dataset, lineage, report, version = out
    contract = dataset.contract
    facets: dict[str, DatasetFacet] = {}
    if contract is not None:
        facets["schema"] = _schema(contract.columns, producer)
    if lineage is not None:
        facets["columnLineage"] = _column_lineage(lineage, names, namespace, producer)
    purpose = str((contract.description if contract else {}).get("purpose") or dataset.description or "").strip()
    if purpose:
        facets["documentation"] = documentation_dataset.DocumentationDatasetFacet(description=purpose, producer=producer)
    team = contract.document.get("team") if contract is not None else None
    owners = [ownership_dataset.Owner(name=n, type=t) for n, t in _members(team or product.team)]
    if owners:
        facets["ownership"] = ownership_dataset.OwnershipDatasetFacet(owners=owners, producer=producer)
    if version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=str(version), producer=producer)
    output_facets: dict[str, OutputDatasetFacet] = {}
    if report is not None:
        # The 1-1-0 facet extends InputDatasetFacet; OutputDatasetFacet has the same shape (BaseFacet), and the
        # assertions belong to this run's output, so they sit in `outputFacets`.
        output_facets["dataQualityAssertions"] = cast("OutputDatasetFacet", _assertions(report, producer))
    return ev.OutputDataset(namespace=namespace, name=dataset.address, facets=facets or None,
                            outputFacets=output_facets or None)


def _schema(columns: Sequence[Column], producer: str) -> DatasetFacet:
    """The schema facet: name, type (physical, else logical), description and position of each column."""
    from openlineage.client.facet_v2 import schema_dataset as sd

    return sd.SchemaDatasetFacet(fields=[
        sd.SchemaDatasetFacetFields(name=c.name, type=c.physical_type or c.logical_type or None,
                                    description=c.description or None, ordinal_position=i, fields=None)
        for i, c in enumerate(columns, start=1)], producer=producer)


def _column_lineage(lineage: DatasetLineage, names: Mapping[str, tuple[str, str]], namespace: str,
                    producer: str) -> DatasetFacet:
    """The column lineage facet: each output column's input fields, with their DIRECT/INDIRECT transformations."""
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    fields = {}
    for name, column in lineage.columns.items():
        inputs = []
        for ref, transformations in sorted(column.inputs.items(), key=lambda kv: (kv[0].dataset, kv[0].column)):
            input_namespace, input_name = names.get(ref.dataset, (namespace, ref.dataset))
            inputs.append(cl.InputField(namespace=input_namespace, name=input_name, field=ref.column, transformations=[
                cl.Transformation(type=t.type, subtype=t.subtype, masking=t.masking)
                for t in sorted(transformations, key=lambda t: (t.type, t.subtype, t.masking))]))
        fields[name] = cl.Fields(inputFields=inputs)
    return cl.ColumnLineageDatasetFacet(fields=fields, dataset=None, producer=producer)


def _assertions(report: QualityReport, producer: str) -> dq.DataQualityAssertionsDatasetFacet:
    """The data quality assertions facet: one assertion per check, with its verdict, expectation and value."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    return dq.DataQualityAssertionsDatasetFacet(assertions=[_assertion(r) for r in report.results], producer=producer)


def _assertion(result: CheckResult) -> dq.Assertion:
    """One check as an assertion; `warning` becomes OpenLineage's `warn`, failing samples are never sent."""
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    from trustmesh.quality.rules import _num

    rule = result.rule
    is_sql = rule.metric == "sql" and bool(rule.query)
    params = {"rule": rule.id, "source": rule.source, "dimension": rule.dimension, "unit": rule.unit,
              "operator": rule.operator, "threshold": list(rule.threshold), "error": result.error}
    return dq.Assertion(
        assertion=rule.metric, success=result.passed, column=rule.column,
        severity={"warning": "warn"}.get(rule.severity, rule.severity), name=rule.name,
        description=rule.description or None, expected=rule.expectation(),
        actual=None if result.value is None else _num(result.value),
        content=rule.query if is_sql else None, contentType="sql" if is_sql else None,
        params={k: v for k, v in params.items() if v is not None})


class LineageNotSent(TrustmeshError, ConnectionError):
    """Lineage events could not be written or posted."""

    http_status = 503


class LineageEmitter:
    """Sends events through openlineage-python: appended to one JSONL file, or posted to an HTTP endpoint."""

    def __init__(self, path: Path | str | None = None, *, url: str | None = None, endpoint: str = "api/v1/lineage",
                 api_key: str | None = None, timeout: float = 5.0) -> None:
        if (path is None) == (url is None):
            raise UsageError("LineageEmitter needs a file path or an HTTP url, exactly one of them")
        self.target = str(path if path is not None else url)
        self._path = Path(path) if path is not None else None
        self._http = (str(url), endpoint, api_key, timeout)

    @cached_property
    def transport(self) -> Transport:
        """The client's transport, made on first use: a build with nothing to report never loads the client."""
        if self._path is not None:
            return _file_transport(self._path)
        return _http_transport(*self._http)

    def emit(self, event: Mapping[str, Any]) -> None:
        """Send one event from `run_events`; the client's `Serde` serialises it (a plain dict as it is)."""
        try:
            self.transport.emit(cast("Event", dict(event)))
        except Exception as exc:  # the transports raise RuntimeError, OSError or requests' errors
            raise LineageNotSent(f"lineage event not sent to {self.target}: {exc}; check that it is writable "
                                 "or reachable, or configure another lineage target") from exc

    def close(self) -> None:
        """Release the transport's connections (if it was ever opened)."""
        if "transport" in self.__dict__:
            self.transport.close()


def _file_transport(path: Path) -> Transport:
    """openlineage-python's FileTransport in append mode: every event one line of the same file."""
    from openlineage.client.transport.file import FileConfig, FileTransport

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileTransport(FileConfig(log_file_path=str(path), append=True))


def _http_transport(url: str, endpoint: str, api_key: str | None, timeout: float) -> Transport:
    """openlineage-python's HttpTransport, with a bearer API key when one is given."""
    from openlineage.client.transport import http

    auth = http.ApiKeyTokenProvider({"apiKey": api_key}) if api_key else http.TokenProvider({})
    return http.HttpTransport(http.HttpConfig(url=url, endpoint=endpoint, timeout=timeout, auth=auth))
