"""Signed checkpoints of the audit chain, kept outside the metastore, so that the metastore cannot vouch for itself.

The hash chain shows that its entries agree with one another; someone who can write to the metastore can
still cut entries off the end and move the head back, rewrite an entry and re-hash every later one, or
append entries of their own. So every transaction that appends to the chain, once committed, signs a
line with an Ed25519 key the metastore never holds: the entries it appended (`first` to `seq`) and the
hash of the last. The line goes to a log file that can live on another machine or volume, written under
an exclusive `flock` with one `write` and an `fsync`, and names the SHA-256 of the line before it (read
from the file's tail, never the whole log), so a line removed, reordered or inserted is found.

`vouch` reads the log back, checking each line's signature and link, and compares it with the chain: each
signed hash must still be the chain's at its sequence number (a rewrite re-hashes it), the chain must
reach every signed entry (a cut-off end), and every entry since the log began must be one a signed line
appended (an entry added straight to the metastore is in none). An operator with the key can `accept`
the chain as it is, which lets go of what a restored, older backup no longer holds.

Key: `TRUSTMESH_AUDIT_KEY_FILE` (PEM: the private key where changes are made, the public key alone is
enough to verify), else `.trustmesh/audit-key.pem` in the mesh, made on first use (mode 0600).
Log: `TRUSTMESH_AUDIT_LOG`, else `.trustmesh/audit-checkpoints.jsonl`.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustmesh.errors import TrustmeshError

KEY_FILE_ENV = "TRUSTMESH_AUDIT_KEY_FILE"
LOG_ENV = "TRUSTMESH_AUDIT_LOG"
FORMAT = 1
GENESIS = "0" * 64
MAX_REASON = 500  # an acceptance's reason, so that a line stays one small write
TAIL = 16384  # bytes read from the log's end to find its last line (lines are < 1 KB)
BATCH = 1000  # lines compared with the chain per query
IN_FLIGHT_S = 2.0  # how long `vouch` waits for the line of an entry committed just before it looked

Kind = Literal["checkpoint", "accept"]
Lookup = Callable[[list[int]], dict[int, str]]  # sequence numbers → the chain's hashes of those that exist


class AuditAnchorError(TrustmeshError):
    """The checkpoint key or log cannot be used: the change that needed them is not made."""

    http_status = 503


@dataclass(frozen=True)
class Checkpoint:
    """One signed line: entries `first` to `seq` were appended, and `seq` had `hash`, at `at`.

    An `accept` line (an operator's) vouches for the whole chain up to `seq` and lets go of the lines
    before it that signed later entries."""

    line: int
    kind: Kind
    first: int
    seq: int
    hash: str
    at: str
    reason: str = ""


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _line_hash(raw: bytes | None) -> str:
    return GENESIS if raw is None else hashlib.sha256(raw).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class AuditAnchor:
    """The checkpoint key and log of one mesh; the key is read (or made) on first use, the log per line."""

    def __init__(self, key_path: Path, log_path: Path, *, create_key: bool = True) -> None:
        self.key_path = key_path
        self.log_path = log_path
        self.create_key = create_key
        self._signer: Ed25519PrivateKey | None = None
        self._public: Ed25519PublicKey | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_mesh(cls, root: Path) -> AuditAnchor:
        """$TRUSTMESH_AUDIT_KEY_FILE and $TRUSTMESH_AUDIT_LOG, else both under the mesh's `.trustmesh/`."""
        state = root / ".trustmesh"
        key = os.environ.get(KEY_FILE_ENV)
        return cls(Path(key) if key else state / "audit-key.pem",
                   Path(os.environ.get(LOG_ENV) or state / "audit-checkpoints.jsonl"), create_key=not key)

    # -- the key --------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return str(self.key_path) if self.create_key else f"{self.key_path} (${KEY_FILE_ENV})"

    def has_key(self) -> bool:
        return self.key_path.exists()

    def public_key(self) -> Ed25519PublicKey:
        """The key that checks signatures: from the private key, or a public key file alone (an auditor's)."""
        with self._lock:
            if self._public is None:
                self._load(create=False)
            assert self._public is not None
            return self._public

    def signer(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._signer is None:
                self._load(create=self.create_key)
            if self._signer is None:
                raise AuditAnchorError(
                    f"{self._where()} holds only a public key, so this process cannot sign audit checkpoints — fix: "
                    f"point {KEY_FILE_ENV} at the private key where changes are made (servers, builders); a public "
                    "key alone is for verifying")
            return self._signer

    def _load(self, *, create: bool) -> None:
        if not self.key_path.exists():
            if not create:
                raise AuditAnchorError(f"there is no audit checkpoint key at {self._where()} — fix: restore the key "
                                       f"file from its backup, or set {KEY_FILE_ENV} to where it is kept")
            if self.size():  # lines signed by a key that is gone: a new one would only hide that
                raise AuditAnchorError(
                    f"the audit checkpoint log {self.log_path} has lines but its key {self.key_path} is missing — fix: "
                    "restore the key from its backup; or, to start over with a new key, move the log aside (keep it "
                    "with the old public key) and run `trustmesh audit checkpoint`")
            self._make_key()
        try:
            data = self.key_path.read_bytes()
        except OSError as exc:
            raise AuditAnchorError(f"cannot read the audit checkpoint key {self._where()}: {exc.strerror} — fix: "
                                   "give this process read access to it") from exc
        key: Any = None
        for load in (lambda: serialization.load_pem_private_key(data, password=None),
                     lambda: serialization.load_pem_public_key(data)):
            with contextlib.suppress(ValueError, TypeError):
                key = load()
                break
        if not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
            raise AuditAnchorError(f"{self._where()} is not a PEM Ed25519 key — fix: point {KEY_FILE_ENV} at the key "
                                   "trustmesh made, or make one with `openssl genpkey -algorithm ed25519`")
        if isinstance(key, Ed25519PublicKey):
            self._public = key
            return
        mode = stat.S_IMODE(self.key_path.stat().st_mode)
        if mode & 0o077:
            raise AuditAnchorError(f"the audit checkpoint key {self.key_path} can be read by others (mode {oct(mode)}) "
                                   f"— fix: chmod 600 {self.key_path}")
        self._signer, self._public = key, key.public_key()

    def _make_key(self) -> None:
        """A new key, written whole before it appears: of two processes making one at once, the first link wins."""
        pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.key_path.with_name(f".{self.key_path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process made one first: use theirs
                os.link(tmp, self.key_path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- writing ----------------------------------------------------------------------------------------------

    def ready(self) -> None:
        """Before a change commits: the key signs and the log can be appended to, or the change is not made."""
        self.signer()
        try:
            if self.log_path.exists():
                os.close(os.open(self.log_path, os.O_WRONLY | os.O_APPEND))
            else:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                if not os.access(self.log_path.parent, os.W_OK | os.X_OK):
                    raise PermissionError(errno.EACCES, "Permission denied")
        except OSError as exc:
            raise AuditAnchorError(f"cannot append to the audit checkpoint log {self.log_path}: {exc.strerror} — fix: "
                                   f"give this process write access to it, or set {LOG_ENV} to a writable place "
                                   "outside the metastore") from exc

    def record(self, first: int, seq: int, digest: str) -> None:
        """After a commit: sign that it appended entries `first` to `seq`, the last with hash `digest`."""
        self._append({"kind": "checkpoint", "first": first, "seq": seq, "hash": digest})

    def accept(self, seq: int, digest: str, reason: str) -> None:
        """Vouch for the chain as it is, up to `seq` (an operator's act): lines signed before that vouch for
        later entries (a restored backup no longer holds them) are let go."""
        if not reason.strip() or len(reason) > MAX_REASON:
            raise AuditAnchorError(f"accepting the audit chain needs a reason of 1 to {MAX_REASON} characters — fix: "
                                   "say why, e.g. --reason 'restored the 2026-03-01 dump after a disk failure'")
        self._append({"kind": "accept", "seq": seq, "hash": digest, "reason": reason.strip()})

    def _append(self, fields: dict[str, Any]) -> None:
        signer = self.signer()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: excludes other processes and this one's threads
            last, torn = _tail(fd)
            payload = {"v": FORMAT, **fields, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                       "prev": _line_hash(last), "key": key_id(signer.public_key())}
            signature = base64.b64encode(signer.sign(_canonical(payload))).decode()
            data = (b"\n" if torn else b"") + _canonical({**payload, "sig": signature}) + b"\n"
            written = 0
            while written < len(data):  # one write in practice; O_APPEND puts each at the end
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)  # and with it the lock

    # -- reading ----------------------------------------------------------------------------------------------

    def size(self) -> int:
        """The log's length now: what `vouch` reads, so that a line is never newer than the chain it is checked with."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def reader(self) -> LogReader:
        return LogReader(self.log_path, self.public_key())


class LogReader:
    """The log's lines in order, each checked (format, link to the line before, key, signature) once."""

    def __init__(self, path: Path, public: Ed25519PublicKey) -> None:
        self.path = path
        self.public = public
        self.key = key_id(public)
        self.offset = 0  # bytes read so far
        self.lines = 0
        self.problem = ""  # the first line that failed its check, and why; nothing after it is read
        self._prev: bytes | None = None

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, until: int) -> Iterator[Checkpoint]:
        """The lines from where the last read stopped up to byte `until` (only whole lines)."""
        if self.problem or self.offset >= until:
            return
        try:
            fh = self.path.open("rb")
        except OSError as exc:
            raise AuditAnchorError(f"cannot read the audit checkpoint log {self.path}: {exc.strerror} — fix: give "
                                   "this process read access to it") from exc
        with fh:
            fh.seek(self.offset)
            while self.offset < until:
                raw = fh.readline(until - self.offset)
                if not raw.endswith(b"\n"):  # the last line is still being written: it is read next time
                    return
                self.offset += len(raw)
                self.lines += 1
                checked = _check_line(raw, self._prev, self.public, self.key)
                if isinstance(checked, str):
                    self.problem = f"line {self.lines} {checked}"
                    return
                self._prev = raw[:-1]
                yield Checkpoint(self.lines, checked["kind"], checked.get("first", 1), checked["seq"], checked["hash"],
                                 checked["at"], checked.get("reason", ""))


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


_FIELDS = {"checkpoint": {"v", "kind", "first", "seq", "hash", "at", "prev", "key", "sig"},
           "accept": {"v", "kind", "seq", "hash", "at", "prev", "key", "sig", "reason"}}


def _well_formed(data: dict[str, Any]) -> bool:
    kind = data.get("kind")
    if not isinstance(kind, str) or data.keys() != _FIELDS.get(kind) or data["v"] != FORMAT:
        return False
    numbers = [data["seq"], data["first"]] if kind == "checkpoint" else [data["seq"]]
    return (all(type(n) is int and n >= 0 for n in numbers) and numbers[-1] <= numbers[0]
            and all(isinstance(data[k], str) for k in ("hash", "at", "prev", "key", "sig"))
            and isinstance(data.get("reason", ""), str))


def _check_line(raw: bytes, prev: bytes | None, public: Ed25519PublicKey, expected_key: str) -> dict[str, Any] | str:
    """The line's fields, or what is wrong with it."""
    data = _parse(raw[:-1])
    if data is None or not _well_formed(data):
        return "is not a signed checkpoint: it was edited or damaged"
    if data["prev"] != _line_hash(prev):
        before = "the start of the log" if prev is None else "the line before it"
        return f"does not follow {before}: lines were removed, inserted or reordered before it"
    if data["key"] != expected_key:
        return (f"was signed with another key (id {data['key']}; this mesh's audit key is {expected_key}): it was "
                "forged, or the key was replaced")
    try:
        public.verify(base64.b64decode(data["sig"], validate=True), _canonical({k: v for k, v in data.items()
                                                                                if k != "sig"}))
    except (InvalidSignature, ValueError):
        return "has a signature that does not match its content: it was edited or forged without the audit key"
    return data


def _tail(fd: int) -> tuple[bytes | None, bool]:
    """The last line (without its line end), and whether the file ends mid-line (a write cut short, which the
    next line must not run into)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, False
    chunk = os.pread(fd, min(size, TAIL), max(0, size - TAIL))
    torn = not chunk.endswith(b"\n")
    return (chunk if torn else chunk[:-1]).rsplit(b"\n", 1)[-1], torn


# -- comparing the log with the chain -----------------------------------------------------------------------------


class Coverage:
    """Sorted, disjoint, merged ranges of sequence numbers; lines come nearly in order, so it stays short."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []

    def add(self, lo: int, hi: int) -> None:
        if lo > hi:
            return
        ranges = self.ranges
        i = len(ranges)
        while i and ranges[i - 1][0] > lo:
            i -= 1
        if i and ranges[i - 1][1] >= lo - 1:  # touches the one before
            i -= 1
            ranges[i][1] = max(ranges[i][1], hi)
        else:
            ranges.insert(i, [lo, hi])
        while i + 1 < len(ranges) and ranges[i + 1][0] <= ranges[i][1] + 1:
            ranges[i][1] = max(ranges[i][1], ranges.pop(i + 1)[1])

    def gaps(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges within lo..hi that no added range covers."""
        found, at = [], lo
        for a, b in self.ranges:
            if b < at:
                continue
            if a > hi:
                break
            if a > at:
                found.append((at, a - 1))
            at = b + 1
        if at <= hi:
            found.append((at, hi))
        return found


@dataclass
class Vouching:
    """What the signed lines say about a chain of `entries` entries (internally sound, checked before)."""

    lines: int = 0
    problem: str = ""  # a line that failed its check
    rewritten: Checkpoint | None = None  # the lowest signed entry whose hash the chain no longer has
    beyond: Checkpoint | None = None  # the highest signed entry the chain no longer reaches
    anchored: int = 0  # the highest signed entry the chain still has
    start: int | None = None  # the first entry a line vouches for: those before it predate the log
    unsigned: list[tuple[int, int]] = field(default_factory=list)  # entries since `start` no line appended
    accepted: list[tuple[Checkpoint, int]] = field(default_factory=list)  # with the highest entry signed before it


def vouch(reader: LogReader, until: int, entries: int, lookup: Lookup, *, accept_at: tuple[int, str] | None = None,
          wait: float = IN_FLIGHT_S) -> Vouching:
    """Compare the log's first `until` bytes with a chain of `entries` entries.

    A line whose hash the chain has at its sequence number vouches for the entries it appended; one that
    the chain contradicts (another hash, or beyond its end) is a rewrite or a cut, unless a later
    acceptance let it go. Entries no line vouches for may be in flight (committed, their line not yet
    written): the log is read again for up to `wait` seconds before they count as unsigned.
    `accept_at` (seq, hash) reads the log as if an acceptance of the chain as it is came last.
    """
    result, covered = Vouching(), Coverage()
    contradicted: list[Checkpoint] = []  # in log order
    signed = 0  # the highest entry signed since the last acceptance

    def take(lines: Iterable[Checkpoint], late: bool) -> None:
        nonlocal contradicted, signed
        batch = list(lines)
        hashes = lookup(sorted({p.seq for p in batch if p.seq > 0}))
        hashes[0] = GENESIS
        for point in batch:
            if point.kind == "accept":
                result.accepted.append((point, signed))
                contradicted = [p for p in contradicted if p.seq <= point.seq]
                signed = point.seq
            else:
                signed = max(signed, point.seq)
            if hashes.get(point.seq) == point.hash:
                covered.add(point.first if point.kind == "checkpoint" else 1, point.seq)
                result.anchored = max(result.anchored, point.seq)
                result.start = min(result.start or point.first, point.first)
            elif not late or point.seq in hashes:  # a late line beyond the chain read is for an entry added since
                contradicted.append(point)

    def read(until: int, late: bool = False) -> None:
        batch: list[Checkpoint] = []
        for point in reader.read(until):
            batch.append(point)
            if len(batch) == BATCH:
                take(batch, late)
                batch = []
        take(batch, late)

    read(until)
    if accept_at is not None:
        take([Checkpoint(reader.lines + 1, "accept", 1, accept_at[0], accept_at[1], "")], False)
    deadline = time.monotonic() + wait
    while (result.start is not None and not reader.problem and not contradicted and covered.gaps(result.start, entries)
           and time.monotonic() < deadline):
        time.sleep(0.05)
        read(reader.size(), late=True)
    result.lines, result.problem = reader.lines, reader.problem
    result.rewritten = min((p for p in contradicted if p.seq <= entries), key=lambda p: p.seq, default=None)
    result.beyond = max((p for p in contradicted if p.seq > entries), key=lambda p: p.seq, default=None)
    result.unsigned = covered.gaps(result.start, entries) if result.start is not None else []
    return result
