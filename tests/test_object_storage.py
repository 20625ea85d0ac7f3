"""A warehouse on S3-compatible object storage: moto's S3 server on 127.0.0.1 plays the bucket.

Builds publish their data files and Iceberg metadata as objects; every reader (a downstream build, the
catalog, the governed query gateway, a second machine with an empty cache) gets them through the local read
cache; bad settings and an unreachable store are clear errors that publish nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from meshfactory import ITEMS_CSV, base_files, free_port, write_files
from test_query import ITEMS, Q_ITEMS, grant, nric_files

from trustmesh.errors import InvalidMesh, StorageUnavailable
from trustmesh.query.guard import QueryRefused
from trustmesh.service import Workspace
from trustmesh.standards import ODCS, schema_errors

pytest.importorskip("moto.server", reason="moto[server] is not installed: `pip install -e '.[dev]'` to test an S3 "
                                          "warehouse")

DAILY = "beta.stats-dp.daily_sales"
PREFIX = "mesh"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 in server mode, in its own process, for the whole session."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto's S3 server did not start on {endpoint}")
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("TRUSTMESH_METASTORE_URL", "TRUSTMESH_USER", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh bucket for one test."""
    name = f"mesh-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str) -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def on_s3(files: dict[str, Any], endpoint: str, bucket: str) -> dict[str, Any]:
    files["mesh.yaml"]["platform"] = {"warehouse": f"s3://{bucket}/{PREFIX}", "objectStorage": {"endpoint": endpoint}}
    return files


@pytest.fixture
def s3_mesh(make_mesh: Any, s3_endpoint: str, bucket: str) -> Workspace:
    """The test mesh (alpha.shop-dp → beta.stats-dp) on the bucket, built."""
    ws: Workspace = make_mesh(on_s3(base_files(), s3_endpoint, bucket))
    result = ws.build()
    assert result.ok, [r.to_dict() for r in result.products]
    return ws


def parquet_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.parquet")) if folder.exists() else []


def clone(ws: Workspace, target: Path) -> Workspace:
    """The mesh folder as a fresh git clone has it (no .trustmesh/), on the same metastore and bucket."""
    shutil.copytree(ws.root, target, ignore=shutil.ignore_patterns(".trustmesh"))
    return Workspace.open(target, metastore_url=ws.metastore_url)


def set_platform(ws: Workspace, **platform: Any) -> None:
    """Rewrite mesh.yaml's platform block (keeping its metastore), as an operator would edit it."""
    path = ws.root / "mesh.yaml"
    doc = yaml.safe_load(path.read_text())
    keep = {k: v for k, v in doc.get("platform", {}).items() if k == "metastore"}
    doc["platform"] = {**keep, **platform}
    write_files(ws.root, {"mesh.yaml": doc})


# -- (a) publishing puts data and metadata in the bucket ---------------------------------------------------


def test_builds_publish_data_files_and_iceberg_metadata_as_objects(s3_mesh: Workspace, s3_endpoint: str,
                                                                   bucket: str) -> None:
    keys = objects(s3_endpoint, bucket)
    for dataset in ("alpha/shop-dp/items", "alpha/shop-dp/cheap_items", "beta/stats-dp/daily_sales"):
        data = [k for k in keys if k.startswith(f"{PREFIX}/data/{dataset}/") and k.endswith(".parquet")]
        assert len(data) == 1, (dataset, keys)
    assert [k for k in keys if k.endswith(".metadata.json")], keys  # the Iceberg tables live in the bucket too
    assert [k for k in keys if "/metadata/" in k and k.endswith(".avro")], keys  # manifests and manifest lists
    assert all(k.startswith(f"{PREFIX}/") for k in keys)

    local = s3_mesh.warehouse
    assert local == s3_mesh.root / ".trustmesh" / "warehouse"
    assert parquet_under(local / "data") == []  # staged candidates moved into the read cache once uploaded
    cached = {p.relative_to(local / "cache" / bucket).as_posix() for p in parquet_under(local / "cache")}
    assert cached == {k for k in keys if k.startswith(f"{PREFIX}/data/")}
    assert not [p for p in (local / "cache").rglob("*") if p.name.endswith(".part")]
    assert not list(local.rglob("*.metadata.json"))  # no Iceberg metadata on the local disk

    table = s3_mesh.iceberg().load_table(("alpha", "shop-dp", "items"))
    assert table.location().startswith(f"s3://{bucket}/{PREFIX}/")
    planned = [t.file.file_path for t in table.scan().plan_files()]
    assert planned == [f"s3://{bucket}/{k}" for k in keys if k.startswith(f"{PREFIX}/data/alpha/shop-dp/items/")]
    assert s3_mesh.catalog.read(ITEMS).num_rows == 3


def test_an_exported_contract_points_at_the_bucket_not_the_cache(s3_mesh: Workspace, s3_endpoint: str,
                                                                   bucket: str) -> None:
    exported = s3_mesh.export_contract(ITEMS)
    [server] = exported.document["servers"]
    [key] = [k for k in objects(s3_endpoint, bucket) if k.startswith(f"{PREFIX}/data/alpha/shop-dp/items/")]
    assert server["type"] == "s3" and server["format"] == "parquet" and server["endpointUrl"] == s3_endpoint
    assert server["location"] == f"s3://{bucket}/{key}" and exported.data_files == [server["location"]]
    assert schema_errors(ODCS, exported.document) == []


# -- (b) a downstream product reads the upstream snapshot from the bucket -----------------------------------


def test_a_downstream_product_builds_from_the_upstream_s3_snapshot(make_mesh: Any, s3_endpoint: str,
                                                                   bucket: str) -> None:
    ws: Workspace = make_mesh(on_s3(base_files(), s3_endpoint, bucket))
    assert ws.build("alpha.shop-dp").ok
    shutil.rmtree(ws.warehouse / "cache")  # the upstream file is now only in the bucket
    result = ws.build("beta.stats-dp")
    assert result.ok, [r.to_dict() for r in result.products]
    assert [r.status for r in result.products] == ["published"]
    upstream = [k for k in objects(s3_endpoint, bucket) if k.startswith(f"{PREFIX}/data/alpha/shop-dp/items/")]
    assert [p.relative_to(ws.warehouse / "cache" / bucket).as_posix()
            for p in parquet_under(ws.warehouse / "cache" / bucket / PREFIX / "data" / "alpha")] == upstream
    daily = ws.catalog.read(DAILY).to_pylist()
    assert sorted((str(r["sold_on"]), r["items"], r["revenue"]) for r in daily) == [
        ("2024-01-01", 1, 1.5), ("2024-01-02", 2, 2.5)]


# -- (c) the governed query gateway over an S3-built mesh ---------------------------------------------------


def test_the_gateway_masks_an_s3_mesh_exactly_as_a_local_one(make_mesh: Any, s3_endpoint: str, bucket: str) -> None:
    answers = {}
    for where, files in (("local", nric_files()), ("s3", on_s3(nric_files(), s3_endpoint, bucket))):
        ws: Workspace = make_mesh(files)
        assert ws.build().ok
        grant(ws, "beta-dev", columns=["item_id", "price", "nric"], unmask=["nric"], rows="price < 1.8")
        grant(ws, "beta-dev", columns=["item_id", "nric"], rows="price >= 1.8")
        result = ws.query("beta-dev", Q_ITEMS)
        answers[where] = (result.table.to_pylist(), result.masked, result.row_filters, result.withheld)
        with pytest.raises(QueryRefused, match="holds no active grant"):
            ws.query("beta-steward", Q_ITEMS)  # a consumer without a grant
    assert answers["s3"] == answers["local"]
    assert answers["s3"][0] == [
        {"item_id": 1, "price": 1.5, "nric": "S1234567D"},
        {"item_id": 2, "price": None, "nric": "*****567J"},
        {"item_id": 3, "price": 0.5, "nric": "F1234567N"},
    ]
    assert f"{ITEMS}.nric" in answers["s3"][1]


# -- (d) another machine: an empty cache fills from the bucket ----------------------------------------------


def test_a_fresh_clone_with_an_empty_cache_reads_the_same_rows(s3_mesh: Workspace, tmp_path: Path,
                                                               bucket: str) -> None:
    expected = s3_mesh.catalog.read(ITEMS).to_pylist()
    grant(s3_mesh, "beta-dev", columns=["item_id", "name"])
    other = clone(s3_mesh, tmp_path / "elsewhere")
    try:
        assert not (other.warehouse / "cache").exists()
        assert other.catalog.read(ITEMS).to_pylist() == expected
        assert other.query("beta-dev", Q_ITEMS).table.to_pylist() == [
            {"item_id": r["item_id"], "name": r["name"]} for r in expected]
        cached = parquet_under(other.warehouse / "cache" / bucket / PREFIX / "data" / "alpha" / "shop-dp" / "items")
        assert len(cached) == 1
        assert cached[0].read_bytes() == parquet_under(
            s3_mesh.warehouse / "cache" / bucket / PREFIX / "data" / "alpha" / "shop-dp" / "items")[0].read_bytes()
    finally:
        other.close()


# -- (e) time travel --------------------------------------------------------------------------------------


def test_an_older_version_stays_readable_after_a_rebuild(s3_mesh: Workspace, tmp_path: Path) -> None:
    shop = s3_mesh.root / "domains/alpha/products/shop-dp"
    (shop / "data/items.csv").write_text(ITEMS_CSV + "4,fig,3.0,2024-01-03\n")
    assert s3_mesh.build("alpha.shop-dp").ok
    assert [v["version"] for v in s3_mesh.catalog.versions(ITEMS)] == [2, 1]
    assert s3_mesh.catalog.read(ITEMS).num_rows == 4
    assert s3_mesh.catalog.read(ITEMS, 1).num_rows == 3
    other = clone(s3_mesh, tmp_path / "elsewhere")  # and on a machine that never had version 1 cached
    try:
        assert [r["name"] for r in other.catalog.read(ITEMS, 1).to_pylist()] == ["apple", "pear", "plum"]
        assert other.catalog.read(ITEMS).num_rows == 4
    finally:
        other.close()


# -- (f) bad settings and an unreachable store --------------------------------------------------------------


@pytest.mark.parametrize(("platform", "match"), [
    ({"warehouse": "s3://"}, r"warehouse s3:// names no bucket .*fix: write it as s3://bucket/prefix"),
    ({"warehouse": "s3:///mesh"}, r"names no bucket"),
    ({"warehouse": "gs://bucket/mesh"}, r"uses gs://, which is not supported .*fix: use a local folder path, or "
                                        r"s3://bucket/prefix"),
    ({"warehouse": "s3://bucket/mesh", "objectStorage": {"endpoint": "127.0.0.1:9000"}},
     r"endpoint 127.0.0.1:9000 is not an http\(s\) URL .*fix: write it as http://host:port"),
    ({"warehouse": "s3://bucket/mesh", "objectStorage": {"secretKey": "hunter2"}}, r"unknown key 'secretKey'"),
    ({"objectStorage": {"endpoint": "http://127.0.0.1:9000"}}, r"objectStorage is set but the warehouse"),
])
def test_bad_storage_settings_are_mesh_problems(make_mesh: Any, platform: dict[str, Any], match: str) -> None:
    files = base_files()
    files["mesh.yaml"]["platform"] = platform
    ws: Workspace = make_mesh(files)
    with pytest.raises(InvalidMesh, match=match):
        ws.build()
    assert any(p.path.startswith("platform") for p in ws.validate())


def unreachable(endpoint: str, bucket: str) -> dict[str, Any]:
    return {"warehouse": f"s3://{bucket}/{PREFIX}", "objectStorage": {"endpoint": f"http://127.0.0.1:{free_port()}"}}


def no_such_bucket(endpoint: str, bucket: str) -> dict[str, Any]:
    return {"warehouse": f"s3://{bucket}-gone/{PREFIX}", "objectStorage": {"endpoint": endpoint}}


def other_variables(endpoint: str, bucket: str) -> dict[str, Any]:
    return {"warehouse": f"s3://{bucket}/{PREFIX}",
            "objectStorage": {"endpoint": endpoint, "accessKeyEnv": "MESH_S3_KEY", "secretKeyEnv": "MESH_S3_SECRET"}}


@pytest.mark.parametrize(("settings", "unset", "match"), [
    (None, "AWS_SECRET_ACCESS_KEY", r"AWS_SECRET_ACCESS_KEY is not set — fix: export AWS_ACCESS_KEY_ID and "
                                    r"AWS_SECRET_ACCESS_KEY"),
    (other_variables, None, r"MESH_S3_KEY and MESH_S3_SECRET are not set .*accessKeyEnv, secretKeyEnv"),
    (unreachable, None, r"the object store http://127.0.0.1:\d+ does not answer .*fix: check that it runs and that "
                        r"platform.objectStorage.endpoint"),
    (no_such_bucket, None, r"the bucket 'mesh-\w+-gone' does not exist at http://127.0.0.1:\d+ — fix: create it"),
], ids=["missing-credentials", "missing-named-variables", "endpoint-refuses", "no-such-bucket"])
def test_an_unusable_store_fails_the_build_and_the_previous_version_stays_served(
        s3_mesh: Workspace, s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch, settings: Any,
        unset: str | None, match: str) -> None:
    good = yaml.safe_load((s3_mesh.root / "mesh.yaml").read_text())["platform"]
    before = objects(s3_endpoint, bucket)
    shop = s3_mesh.root / "domains/alpha/products/shop-dp"
    (shop / "data/items.csv").write_text(ITEMS_CSV + "4,fig,3.0,2024-01-03\n")  # a rebuild would publish v2
    if settings is not None:
        set_platform(s3_mesh, **settings(s3_endpoint, bucket))
    if unset:
        monkeypatch.delenv(unset)
    broken = Workspace.open(s3_mesh.root)
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match=match) as raised:
            broken.build()
        assert time.monotonic() - started < 30
        assert "Traceback" not in str(raised.value) and "\n" not in str(raised.value)
    finally:
        broken.close()

    set_platform(s3_mesh, **{k: v for k, v in good.items() if k != "metastore"})
    if unset:
        monkeypatch.setenv(unset, "testing")
    again = Workspace.open(s3_mesh.root)
    try:
        assert [v["version"] for v in again.catalog.versions(ITEMS)] == [1]
        assert again.catalog.read(ITEMS).num_rows == 3
        assert objects(s3_endpoint, bucket) == before  # nothing was uploaded
    finally:
        again.close()


def test_an_object_deleted_from_the_bucket_is_a_clear_error(s3_mesh: Workspace, s3_endpoint: str, bucket: str,
                                                            tmp_path: Path) -> None:
    client = s3_client(s3_endpoint)
    for key in objects(s3_endpoint, bucket):
        if key.startswith(f"{PREFIX}/data/alpha/shop-dp/items/"):
            client.delete_object(Bucket=bucket, Key=key)
    other = clone(s3_mesh, tmp_path / "elsewhere")
    try:
        with pytest.raises(StorageUnavailable, match=r"failed while downloading s3://.*fix: check that it runs"):
            other.catalog.read(ITEMS)
        assert not [p for p in (other.warehouse / "cache").rglob("*") if p.is_file()]  # no half file left behind
    finally:
        other.close()


def test_a_local_warehouse_is_unchanged(make_mesh: Any) -> None:
    ws: Workspace = make_mesh(base_files())
    assert ws.build().ok
    assert not ws.storage.is_remote
    files = parquet_under(ws.warehouse / "data" / "alpha" / "shop-dp" / "items")
    assert len(files) == 1
    assert ws.catalog.version_files(ITEMS)[1] == [str(files[0])]
    assert not (ws.warehouse / "cache").exists()


# -- the Spark engine on a bucket ------------------------------------------------------------------------------


@pytest.mark.spark
def test_a_product_built_on_spark_publishes_to_the_bucket_and_feeds_one_on_duckdb(make_mesh: Any, s3_endpoint: str,
                                                                                 bucket: str) -> None:
    pytest.importorskip("pyspark", reason="the spark engine needs pyspark (pip install 'trustmesh[spark]')")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: Spark needs Java 17+")
    files = on_s3(base_files(), s3_endpoint, bucket)
    files["mesh.yaml"]["platform"]["spark"] = {"master": "local[2]"}
    files["domains/alpha/products/shop-dp/product.yaml"]["customProperties"].append(
        {"property": "engine", "value": "spark"})
    ws: Workspace = make_mesh(files)
    result = ws.build()
    assert result.ok, [r.to_dict() for r in result.products]
    spark_parts = [k for k in objects(s3_endpoint, bucket) if k.startswith(f"{PREFIX}/data/alpha/shop-dp/items/")]
    assert spark_parts and all(k.endswith(".parquet") and "/part-" in k for k in spark_parts)
    shutil.rmtree(ws.warehouse / "cache")
    assert sorted(r["item_id"] for r in clone(ws, ws.root.parent / "clone").catalog.read(
        "alpha.shop-dp.items").to_pylist()) == [1, 2, 3]
    daily = ws.catalog.read(DAILY).to_pylist()
    assert sorted((str(r["sold_on"]), r["items"], r["revenue"]) for r in daily) == [
        ("2024-01-01", 1, 1.5), ("2024-01-02", 2, 2.5)]
    [server] = ws.export_contract("alpha.shop-dp.items").document["servers"]  # the part file, or a glob of them
    folder = spark_parts[0].rsplit("/", 1)[0]
    assert folder.endswith(".parquet")  # the build's own folder of part files
    expected = f"s3://{bucket}/{spark_parts[0]}" if len(spark_parts) == 1 else f"s3://{bucket}/{folder}/*.parquet"
    assert server["location"] == expected
