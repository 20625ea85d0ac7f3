"""The platform's key store for keyed pseudonyms: never in the mesh repo, never in the metastore.

Embedded mode keeps keys in a file only its owner can read (`.trustmesh/keys.json` under the mesh, mode
0600, created on first use). Server mode points `TRUSTMESH_KEYS_FILE` at a mounted secret, or gives a
key directly as `TRUSTMESH_KEY_<ID>` (hex), e.g. `TRUSTMESH_KEY_LINKAGE_ACTIVE_COMMUTING`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import threading
from pathlib import Path

from trustmesh.errors import TrustmeshError

KEYS_FILE_ENV = "TRUSTMESH_KEYS_FILE"
KEY_ENV_PREFIX = "TRUSTMESH_KEY_"
_ID = re.compile(r"^[a-z0-9][a-z0-9:._-]{0,199}$")


class KeyStoreError(TrustmeshError):
    http_status = 500


def env_name(key_id: str) -> str:
    return KEY_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", key_id.upper())


class KeyStore:
    """Named 256-bit keys; a missing key is generated once and kept (unless the store is read-only)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(os.environ.get(KEYS_FILE_ENV) or path)
        self.create = create and not os.environ.get(KEYS_FILE_ENV)
        self._lock = threading.Lock()

    def key(self, key_id: str) -> bytes:
        if not _ID.match(key_id):
            raise KeyStoreError(f"key id {key_id!r} is not valid: lower case letters, digits, ':', '.', '_', '-'")
        from_env = os.environ.get(env_name(key_id))
        if from_env:
            try:
                return bytes.fromhex(from_env)
            except ValueError as exc:
                raise KeyStoreError(f"{env_name(key_id)} is not hex — fix: 64 hex characters") from exc
        with self._lock:
            keys = self._read()
            if key_id not in keys:
                if not self.create:
                    raise KeyStoreError(f"no key {key_id!r} in {self.path} — fix: add it, or set {env_name(key_id)}")
                keys[key_id] = secrets.token_hex(32)
                self._write(keys)
            return bytes.fromhex(keys[key_id])

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise KeyStoreError(f"{self.path} can be read by others (mode {oct(mode)}) — fix: chmod 600 {self.path}")
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise KeyStoreError(f"cannot read the key store {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise KeyStoreError(f"{self.path} is not a JSON object of key id → hex key")
        return {str(k): str(v) for k, v in data.items()}

    def _write(self, keys: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(keys, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
