"""A mesh folder moved, copied or restored to another path keeps reading (and writing) its own warehouse.

Iceberg names every file by its absolute location: a table's metadata JSON holds its location and its
snapshots' manifest lists, a manifest list its manifests, a manifest its data files, and the catalog row its
metadata file. A local warehouse's tables therefore name the folder they were written in. Rather than
rewrite all of that when a folder moves, the tables keep their names and the warehouse maps them:

- the *earlier roots* are the warehouse folders this metastore's tables were created in, read from the
  catalog's rows (`<root>/<namespace>/<table>/metadata/<file>`); every one that is not today's folder is
  where the mesh used to be;
- `RelocatedFileIO` opens a location under an earlier root at the same place under today's root, while the
  location itself (what pyiceberg writes into new metadata) stays as the table names it;
- a table names a file added to it under the root it was created at (`Relocation.named_by`), so all of one
  table's metadata keeps one root however often the folder moves, and the earlier roots stay enough.

A copy whose original still exists reads only its own files; a bucket (`s3://`) never moves with the folder,
so a remote warehouse is left as it is. The module imports pyiceberg: load it only where Iceberg is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlparse

from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.typedef import EMPTY_DICT, Properties

FILE_IO = "trustmesh.metastore.relocation.RelocatedFileIO"  # pyiceberg's py-io-impl for a local warehouse
ROOT = "trustmesh.warehouse"  # catalog property: today's warehouse folder (an absolute path)
EARLIER = "trustmesh.earlier-warehouses"  # catalog property: JSON list of the folders the tables name instead
LOCAL_SCHEME = "file://"


def is_local(location: str) -> bool:
    """A location on this machine's file system: a file:// URI or a plain absolute path (not s3:// and the like)."""
    return location.startswith(LOCAL_SCHEME) or "://" not in location


def local_path(location: str) -> str:
    """The path a local location means: a file:// URI's path, percent-decoded (older warehouses were named by
    URIs, `file:///home/me/my%20mesh/...`), or a plain path as it is."""
    if location.startswith(LOCAL_SCHEME):
        return unquote(urlparse(location).path)
    return location


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class Relocation:
    """Today's warehouse folder and the earlier ones this metastore's tables still name (absolute paths)."""

    root: str
    earlier: tuple[str, ...] = ()

    def current(self, location: str) -> str:
        """Where a file a table names is today: under today's folder when the name is under an earlier one.

        A name under today's folder (or not local) is returned as it is, so a mesh that never moved opens
        exactly what it opened before."""
        if not self.earlier or not is_local(location):
            return location
        path = local_path(location)
        if _under(path, self.root):
            return location
        for old in sorted(self.earlier, key=len, reverse=True):
            if _under(path, old):
                return self.root.rstrip("/") + path[len(old.rstrip("/")):]
        return location

    def named_by(self, table_location: str, identifier: tuple[str, ...], path: str) -> str:
        """`path`, a file under today's folder, as the table at `table_location` names it: under its own root.

        A table created before the folder moved names all its files under the root it was created at, so
        mapping that root (one of the earlier ones) is enough to find every file of every snapshot."""
        table_root = table_root_of(local_path(table_location), identifier) if is_local(table_location) else None
        if table_root is None or table_root not in self.earlier or not _under(path, self.root):
            return path
        return table_root + path[len(self.root.rstrip("/")):]

    def properties(self) -> dict[str, str]:
        """The catalog properties that make its FileIO (and so every table it loads) relocate."""
        return {"py-io-impl": FILE_IO, ROOT: self.root, EARLIER: json.dumps(sorted(self.earlier))}

    @classmethod
    def of(cls, properties: Properties | dict[str, Any]) -> Relocation | None:
        """The relocation a catalog's (or FileIO's) properties describe; None for a remote warehouse."""
        root = properties.get(ROOT)
        return _relocation(str(root), str(properties.get(EARLIER) or "[]")) if root else None


@lru_cache(maxsize=64)
def _relocation(root: str, earlier: str) -> Relocation:
    return Relocation(root, tuple(json.loads(earlier)))


def table_root_of(location: str, identifier: tuple[str, ...]) -> str | None:
    """The warehouse root a trustmesh table lives under: its location is `<root>/<namespace>/<table>`.

    Also accepts a metadata file's location (`<table location>/metadata/<file>`). None for a table laid out
    otherwise (not created by trustmesh), which is then never relocated."""
    location = location.rstrip("/")
    head, sep, _ = location.rpartition("/metadata/")
    if sep:
        location = head
    suffix = f"/{'.'.join(identifier[:-1])}/{identifier[-1]}"
    return location[: -len(suffix)] if location.endswith(suffix) else None


def earlier_roots(tables: Iterable[tuple[str, str, str | None]], root: str) -> tuple[str, ...]:
    """The local warehouse folders the catalog's tables (namespace, name, metadata location) name, other than
    `root` (today's): where this mesh was when it created them."""
    found = set()
    for namespace, name, metadata_location in tables:
        if not metadata_location or not is_local(metadata_location):
            continue
        table_root = table_root_of(local_path(metadata_location), (*namespace.split("."), name))
        if table_root is not None and table_root.rstrip("/") != root.rstrip("/"):
            found.add(table_root)
    return tuple(sorted(found))


class RelocatedFileIO(PyArrowFileIO):
    """PyArrow's FileIO that opens a file named under an earlier warehouse root at its place under today's.

    Only the path opened changes: the file keeps the location it was asked for, which is what pyiceberg
    records in the metadata it writes (a new manifest's path in the manifest list), so a table never
    mixes roots."""

    @staticmethod
    def parse_location(location: str, properties: Properties = EMPTY_DICT) -> tuple[str, str, str]:
        relocation = Relocation.of(properties)
        moved = relocation.current(location) if relocation is not None else location
        return PyArrowFileIO.parse_location(moved, properties)
