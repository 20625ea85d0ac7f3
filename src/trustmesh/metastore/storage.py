"""Where published data lives: a local work folder, and, for an `s3://bucket/prefix` warehouse, the bucket.

The local folder always exists: candidates are staged there, bronze landings, quarantine and the OpenLineage
file stay there. When the warehouse is remote, a published candidate is uploaded under the same relative key
(`data/<domain>/<product>/<dataset>/...`) and its local copy moves into the read cache
(`<local>/cache/<bucket>/<key>`); a reader maps a snapshot's `s3://` data files to cached copies, downloading
each object once. Data files of a snapshot never change, so a cached copy, once complete, is trusted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmesh.descriptors.models import ObjectStorage, Platform
from trustmesh.errors import StorageUnavailable

if TYPE_CHECKING:
    from pyarrow.fs import S3FileSystem

REMOTE_PREFIX = "s3://"
LOCAL_DEFAULT = ".trustmesh/warehouse"  # the local work folder of a remote warehouse, beside the mesh
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 60.0


class Warehouse:
    """The warehouse of one mesh: `local` (a folder) and, when remote, `remote` (`s3://bucket/prefix`)."""

    def __init__(self, local: Path, remote: str | None = None, settings: ObjectStorage | None = None) -> None:
        self.local = local
        self.remote = remote.rstrip("/") if remote else None
        self.settings = settings or ObjectStorage.model_validate({})
        bucket, _, prefix = (self.remote or "").removeprefix(REMOTE_PREFIX).partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._fs: S3FileSystem | None = None
        self._checked = False
        self._lock = threading.Lock()

    @classmethod
    def from_platform(cls, platform: Platform, root: Path) -> Warehouse:
        """mesh.yaml's `platform.warehouse` (a folder, relative to the mesh, or s3://) and `objectStorage`."""
        if platform.warehouse.startswith(REMOTE_PREFIX):
            return cls(root / LOCAL_DEFAULT, platform.warehouse, platform.object_storage)
        path = Path(platform.warehouse)
        return cls(path if path.is_absolute() else root / path)

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    @property
    def cache(self) -> Path:
        """Local copies of remote data files, by bucket and key; safe to delete while nothing reads."""
        return self.local / "cache"

    @property
    def location(self) -> str:
        """Where Iceberg keeps table data and metadata: the bucket root, or the local folder's absolute path.

        A plain path, not a file:// URI: pyiceberg opens a URI's path without decoding it, so a folder named
        with a space or a non-ASCII letter (`my%20mesh`) put the metadata in another folder, outside the mesh."""
        return self.remote or str(self.local.resolve())

    def iceberg_properties(self) -> dict[str, str]:
        """pyiceberg FileIO settings (PyArrowFileIO) for the bucket; nothing for a local warehouse."""
        if not self.is_remote:
            return {}
        access, secret = self._credentials()
        props = {"s3.region": self.settings.region, "s3.access-key-id": access, "s3.secret-access-key": secret,
                 "s3.connect-timeout": str(CONNECT_TIMEOUT_S), "s3.request-timeout": str(REQUEST_TIMEOUT_S)}
        if self.settings.endpoint:
            props["s3.endpoint"] = self.settings.endpoint
        return props

    def check(self) -> None:
        """That the bucket answers and exists (once per process); raises StorageUnavailable naming the fix."""
        if not self.is_remote or self._checked:
            return
        from pyarrow.fs import FileType

        fs = self._filesystem()
        try:
            info = fs.get_file_info(self.bucket)
        except OSError as exc:
            raise StorageUnavailable(
                f"the object store {self._where()} does not answer for {self.remote}: {_brief(exc)} — fix: check that "
                "it runs and that platform.objectStorage.endpoint in mesh.yaml names it, and that "
                f"${self.settings.access_key_env} / ${self.settings.secret_key_env} hold valid keys") from exc
        if info.type == FileType.NotFound:
            endpoint = f" --endpoint-url {self.settings.endpoint}" if self.settings.endpoint else ""
            raise StorageUnavailable(
                f"the bucket {self.bucket!r} does not exist at {self._where()} — fix: create it (e.g. `aws s3 mb "
                f"s3://{self.bucket}{endpoint}`), or correct platform.warehouse in mesh.yaml")
        self._checked = True

    def publish(self, files: list[str]) -> list[str]:
        """A finished candidate's files as the warehouse stores them: local paths as they are, or uploaded.

        Remote: each file goes to the bucket under its key relative to the local folder, then moves into the
        read cache (the first read is free). Returns the s3:// URIs, in order.
        """
        if not self.is_remote:
            return files
        uris = []
        with self.errors("uploading a candidate"):
            fs = self._filesystem()
            for name in files:
                key = self._key(Path(name).resolve().relative_to(self.local.resolve()).as_posix())
                with open(name, "rb") as source, fs.open_output_stream(f"{self.bucket}/{key}") as sink:
                    shutil.copyfileobj(source, sink, 8 << 20)
                cached = self._cached(key)
                cached.parent.mkdir(parents=True, exist_ok=True)
                os.replace(name, cached)
                uris.append(f"{REMOTE_PREFIX}{self.bucket}/{key}")
        return uris

    def recorded(self, stored: list[str]) -> list[str]:
        """Published files as the metastore records them: s3:// URIs as they are; a local file by its key in
        the warehouse folder (`data/<domain>/...`, the key a bucket would use), which stays true when the mesh
        folder is moved or copied. A file outside the folder keeps its absolute path."""
        if self.is_remote:
            return stored
        local = self.local.resolve()
        out = []
        for name in stored:
            path = Path(name).resolve()
            out.append(path.relative_to(local).as_posix() if path.is_relative_to(local) else name)
        return out

    def readable(self, recorded: list[str]) -> list[str] | None:
        """A version's files as the metastore records them (`recorded`), as paths DuckDB can read, without
        opening Iceberg: keys under today's warehouse folder, s3:// objects from the read cache. None for a
        version recorded by absolute paths (before keys) outside today's folder — a moved mesh's, whose files
        Iceberg must plan."""
        if self.is_remote:
            with self.errors("reading published files"):
                return self.local_files(recorded)
        local = self.local.resolve()
        out = []
        for name in recorded:
            path = local / name.removeprefix("file://")  # a relative key joins; an absolute path stays itself
            if path.is_absolute() and not (path.is_relative_to(local) and path.exists()):
                return None
            out.append(str(path))
        return out

    def local_files(self, uris: list[str]) -> list[str]:
        """Paths DuckDB can read for a snapshot's data files: local ones as they are, s3:// ones from the cache."""
        out = []
        for uri in uris:
            if not uri.startswith(REMOTE_PREFIX):
                out.append(uri.removeprefix("file://"))
                continue
            bucket, _, key = uri.removeprefix(REMOTE_PREFIX).partition("/")
            target = self._cached(key, bucket)
            if not target.exists():
                self._download(bucket, key, target)
            out.append(str(target))
        return out

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn the object store's failures while `doing` into StorageUnavailable (after checking the bucket)."""
        self.check()
        try:
            yield
        except OSError as exc:
            if not self.is_remote or isinstance(exc, StorageUnavailable):
                raise
            raise StorageUnavailable(
                f"the object store {self._where()} failed while {doing} ({self.remote}): {_brief(exc)} — fix: check "
                "that it runs and answers, the keys' permissions on the bucket, and that nothing deleted the "
                "warehouse's objects; then run the command again") from exc

    def _download(self, bucket: str, key: str, target: Path) -> None:
        """One object into the cache: written under a temporary name, then renamed, so a half file is never seen."""
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with (self.errors(f"downloading s3://{bucket}/{key}"),
                  self._filesystem().open_input_stream(f"{bucket}/{key}") as source, open(part, "wb") as sink):
                shutil.copyfileobj(source, sink, 8 << 20)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _cached(self, key: str, bucket: str | None = None) -> Path:
        target = (self.cache / (bucket or self.bucket) / key).resolve()
        if not target.is_relative_to(self.cache.resolve()):
            raise StorageUnavailable(f"the object key {key!r} leaves the read cache — fix: the Iceberg metadata "
                                     "names a file outside the warehouse; restore it from a backup")
        return target

    def _where(self) -> str:
        return self.settings.endpoint or f"AWS S3 ({self.settings.region})"

    def _credentials(self) -> tuple[str, str]:
        names = (self.settings.access_key_env, self.settings.secret_key_env)
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise StorageUnavailable(
                f"the warehouse {self.remote} needs object-store credentials, and {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set — fix: export {names[0]} and {names[1]} (the access "
                "key and the secret key), or name the variables that hold them in platform.objectStorage "
                "(accessKeyEnv, secretKeyEnv); keys never go in mesh.yaml")
        return os.environ[names[0]], os.environ[names[1]]

    def _filesystem(self) -> S3FileSystem:
        with self._lock:
            if self._fs is None:
                from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem

                access, secret = self._credentials()
                options: dict[str, Any] = {}
                endpoint = self.settings.endpoint
                if endpoint:
                    scheme, _, host = endpoint.partition("://")
                    options = {"endpoint_override": host.rstrip("/"), "scheme": scheme}
                self._fs = S3FileSystem(access_key=access, secret_key=secret, region=self.settings.region,
                                        connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
                                        retry_strategy=AwsStandardS3RetryStrategy(max_attempts=2), **options)
            return self._fs


def _brief(exc: BaseException) -> str:
    """The store's own words, on one line and short (no stack trace, no request ids)."""
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")
