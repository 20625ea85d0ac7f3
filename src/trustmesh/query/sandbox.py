"""Query workers: each governed query's DuckDB database lives in a child process under a hard memory cap.

DuckDB's `memory_limit` governs its buffer manager (hash tables, sorts, what it spills), not the values a
function builds: `lpad('x', 2000000000, 'y')`, or `repeat(s, n)` over a vector of 2,048 rows, allocate
outside it, and a single query could take a server's memory with them. So a query's connection is a
worker process whose data segment the operating system caps (`RLIMIT_DATA`, Linux): an allocation past
the cap fails inside the worker, DuckDB reports it as out of memory, and the server's own memory is
untouched. A timeout kills the worker outright, even inside a function DuckDB cannot interrupt.

A worker is told SQL and nothing else. It starts with an empty environment (no credential of the server
reaches it) and asks the server for a pseudonymisation key by id when a query first needs one. Messages
are JSON for control and Arrow IPC for data; nothing a worker sends is unpickled, and no message may be
larger than the result cap allows. Idle workers are kept for the next query (starting one costs ~0.4 s)
and retired when a query left them large.

On platforms without `RLIMIT_DATA` the worker runs with DuckDB's own memory limit only.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

HEADER = struct.Struct(">cI")  # kind, payload length
OVERHEAD = 512 * 2**20  # a worker's interpreter, DuckDB and Arrow, and one batch being encoded, above the caps
RETIRE_DATA = 320 * 2**20  # a worker whose data segment stays larger after a query is stopped, not reused
SPARE = 1  # workers started ahead of need
MAX_IDLE = 4  # workers kept for reuse per memory cap
STARTUP_S = 60.0

# Message kinds. Server → worker: Q request (JSON), K a key (bytes) or X a refusal (JSON).
# Worker → server: R reply (JSON), S schema / B batch (Arrow IPC), E end of a stream (JSON),
# k a key request (JSON), X an error (JSON).


class WorkerLost(Exception):
    """The worker process ended, or stopped answering, while a query was using it."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ResultTooLarge(Exception):
    """The result passed its byte cap; `bytes` and `rows` are what was produced up to then."""

    def __init__(self, produced: int, rows: int) -> None:
        super().__init__(f"the result passed its cap at {produced:,} bytes ({rows:,} rows)")
        self.bytes = produced
        self.rows = rows


def _write(stream: IO[bytes], lock: threading.Lock, kind: bytes, payload: bytes) -> None:
    with lock:
        stream.write(HEADER.pack(kind, len(payload)) + payload)
        stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- the server's side --------------------------------------------------------------------------------------


class Worker:
    """One worker process, used by one query at a time."""

    def __init__(self, cap: int) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        home = tempfile.gettempdir()
        # Arrow's default allocator (mimalloc) reserves 1 GiB of address space up front, which the data cap
        # would count; the system allocator reserves what it uses.
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home, "PYTHONPATH": path,
               "ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "4"}
        self.cap = cap
        # stderr is read only if the worker fails to start; once started it writes nothing there.
        self.proc = subprocess.Popen([sys.executable, "-s", "-m", "trustmesh.query.sandbox", str(cap)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=home, env=env, bufsize=0)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout
        self._lock = threading.Lock()
        self.killed = False

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.killed

    def kill(self) -> None:
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()

    def prepare(self, settings: list[str], keyed_function: str) -> None:
        """Have the worker open a database with these settings ahead of the query that will use it."""
        self.send(b"Q", json.dumps({"op": "prepare", "settings": settings, "keyed": keyed_function}).encode())
        kind, payload = self.receive(2**20, time.monotonic() + STARTUP_S)
        if kind != b"R":
            raise WorkerLost(f"the worker could not prepare a database: {payload[:300]!r}")

    def retire(self) -> None:
        """Stop the process and let go of its pipes."""
        self.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def send(self, kind: bytes, payload: bytes) -> None:
        try:
            _write(self._in, self._lock, kind, payload)
        except (BrokenPipeError, OSError) as exc:
            raise WorkerLost(self._ended()) from exc

    def receive(self, limit: int, deadline: float | None) -> tuple[bytes, bytes]:
        header = self._read(HEADER.size, deadline)
        kind, length = HEADER.unpack(header)
        if length > limit:
            self.kill()
            raise WorkerLost(f"the worker sent a {length:,}-byte message, more than the {limit:,} allowed")
        return kind, self._read(length, deadline)

    def _read(self, n: int, deadline: float | None) -> bytes:
        chunks, left = [], n
        fd = self._out.fileno()
        while left:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                    self.kill()
                    raise WorkerLost("the worker did not answer in time", timed_out=True)
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise WorkerLost(self._ended())
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _ended(self) -> str:
        if self.killed:
            return "the worker was stopped"
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the worker stopped answering"
        if code < 0:
            return f"the worker was killed by signal {-code}"
        said = self.proc.stderr.read()[-600:].decode(errors="replace").strip() if self.proc.stderr else ""
        return f"the worker exited with code {code}" + (f": {said}" if said else "")


class WorkerConnection:
    """A DuckDB connection in a worker process, answering the calls the gateway makes: `execute` (then
    `fetchall`/`fetchone`), `fetch` for the result, `interrupt` (which stops the worker) and `close`."""

    def __init__(self, pool: WorkerPool, worker: Worker, key: Callable[[str], bytes], max_message: int,
                 call_timeout_s: float) -> None:
        self._pool = pool
        self._worker = worker
        self._key = key
        self._max_message = max_message
        self._call_timeout_s = call_timeout_s
        self._rows: list[tuple[Any, ...]] = []
        self._clean = True  # False while a stream is open or after anything went wrong
        self._interrupted = False
        self._key_error: Exception | None = None
        self._closed = False

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return int(self._worker.proc.pid)

    def open(self, settings: list[str], keyed_function: str) -> None:
        """A fresh in-memory database in the worker, `settings` (SQL statements) applied, the keyed-hash
        function registered under `keyed_function`. A new worker may still be starting: it has `STARTUP_S`."""
        self._call({"op": "open", "settings": settings, "keyed": keyed_function},
                   timeout_s=max(self._call_timeout_s, STARTUP_S))

    def execute(self, sql: str, params: list[Any] | None = None) -> WorkerConnection:
        reply = self._call({"op": "execute", "sql": sql, "params": params or []})
        self._rows = [tuple(row) for row in reply["rows"]]
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetch(self, sql: str, *, batch_rows: int, max_rows: int, max_bytes: int) -> Any:
        """The result as an Arrow table of at least `max_rows` rows when there are that many (its last batch
        may go past); raises `ResultTooLarge` as soon as the batches pass `max_bytes`."""
        import pyarrow as pa

        self._clean = False
        self._request({"op": "stream", "sql": sql, "batch_rows": batch_rows, "max_rows": max_rows,
                       "max_bytes": max_bytes})
        deadline = time.monotonic() + self._call_timeout_s + 5  # a backstop: the gateway's own timer comes first
        schema: Any = None
        batches: list[Any] = []
        produced = rows = 0
        while True:
            kind, payload = self._next(deadline)
            if kind == b"S" and schema is None:
                schema = pa.ipc.read_schema(pa.py_buffer(payload))
            elif kind == b"B" and schema is not None:
                batch = pa.ipc.read_record_batch(pa.py_buffer(payload), schema)
                produced += batch.nbytes
                rows += batch.num_rows
                if produced > max_bytes:  # the worker checks first; this holds even if it did not
                    raise ResultTooLarge(produced, rows)
                batches.append(batch)
            elif kind == b"E" and schema is not None:
                self._clean = True
                return pa.Table.from_batches(batches, schema=schema)
            else:
                raise WorkerLost(f"unexpected message {kind!r} from the worker")

    def interrupt(self) -> None:
        """Stop the query now: the worker is killed, whatever it is doing."""
        self._interrupted = True
        self._worker.kill()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.release(self._worker, reusable=self._clean and not self._interrupted and self._end())

    def _end(self) -> bool:
        try:
            reply = self._call({"op": "close"})
        except Exception:
            return False
        return int(reply.get("data", RETIRE_DATA)) < RETIRE_DATA

    def _call(self, request: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        self._request(request)
        kind, payload = self._next(time.monotonic() + (timeout_s or self._call_timeout_s))
        if kind != b"R":
            self._clean = False
            raise WorkerLost(f"unexpected message {kind!r} from the worker")
        reply: dict[str, Any] = json.loads(payload)
        return reply

    def _request(self, request: dict[str, Any]) -> None:
        try:
            self._worker.send(b"Q", json.dumps(request).encode())
        except WorkerLost as exc:
            raise self._lost(exc) from exc

    def _next(self, deadline: float | None) -> tuple[bytes, bytes]:
        """The worker's next message other than a key request (those are answered here)."""
        while True:
            try:
                kind, payload = self._worker.receive(self._max_message, deadline)
            except WorkerLost as exc:
                raise self._lost(exc) from exc
            if kind == b"k":
                try:
                    self._answer_key(json.loads(payload)["id"])
                except WorkerLost as exc:
                    raise self._lost(exc) from exc
                continue
            if kind == b"X":  # the request ended in an error; the worker waits for the next one
                self._clean = True
                raise self._error(json.loads(payload))
            return kind, payload

    def _answer_key(self, key_id: str) -> None:
        try:
            secret = self._key(str(key_id))
        except Exception as exc:
            self._key_error = exc
            self._worker.send(b"X", json.dumps({"message": str(exc)}).encode())
            return
        self._worker.send(b"K", secret)

    def _error(self, error: dict[str, Any]) -> Exception:
        import duckdb

        if self._key_error is not None:
            return self._key_error
        name, message = str(error.get("type", "")), str(error.get("message", ""))
        if name == "ResultTooLarge":
            return ResultTooLarge(int(error.get("bytes", 0)), int(error.get("rows", 0)))
        if name in ("MemoryError", "ArrowMemoryError") or message.startswith("Out of Memory Error"):
            return duckdb.OutOfMemoryException(message)
        cls = getattr(duckdb, name, None)
        if isinstance(cls, type) and issubclass(cls, duckdb.Error):
            return cls(message)
        return duckdb.Error(f"{name}: {message}")

    def _lost(self, exc: WorkerLost) -> Exception:
        import duckdb

        self._clean = False
        if self._interrupted or exc.timed_out:
            return duckdb.InterruptException("the query was stopped")
        if not self._worker.killed and self._worker.proc.poll() == -9:  # killed from outside: the system's OOM killer
            return duckdb.OutOfMemoryException(f"Out of Memory Error: {exc}")
        return exc


class WorkerPool:
    """The workers of one memory cap: idle ones for reuse, and one started ahead of need."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        self._starting = 0
        self._taken = 0

    def connect(self, settings: list[str], key: Callable[[str], bytes], keyed_function: str, *,
                max_message: int, call_timeout_s: float) -> WorkerConnection:
        """A connection in an idle worker (or a new one), opened with `settings`; see `WorkerConnection.open`."""
        worker = self._take(settings, keyed_function)
        connection = WorkerConnection(self, worker, key, max_message, call_timeout_s)
        try:
            connection.open(settings, keyed_function)
        except BaseException:
            worker.retire()
            raise
        return connection

    def warm(self) -> None:
        """Start a worker now, when none is idle or starting, so that its interpreter loads while the caller
        decides what the query may read (a one-shot command's only worker starts that much earlier)."""
        with self._lock:
            if self._idle or self._starting:
                return
            self._idle.append(Worker(self.cap))

    def release(self, worker: Worker, *, reusable: bool) -> None:
        with self._lock:
            if reusable and worker.alive() and len(self._idle) < MAX_IDLE:
                self._idle.append(worker)
                return
        worker.retire()

    def _take(self, settings: list[str], keyed_function: str) -> Worker:
        found: Worker | None = None
        with self._lock:
            while self._idle and found is None:
                candidate = self._idle.pop(0)  # the longest idle: its next database is ready
                found = candidate if candidate.alive() else None
            # A process's first query starts no spare: a one-shot command (the CLI) would never use it.
            self._taken += 1
            spare = self._taken > 1 and len(self._idle) + self._starting < SPARE
            if spare:
                self._starting += 1
        if spare:
            threading.Thread(target=self._start_spare, args=(settings, keyed_function), name="trustmesh-query-worker",
                             daemon=True).start()
        return found if found is not None else Worker(self.cap)

    def _start_spare(self, settings: list[str], keyed_function: str) -> None:
        worker = None
        try:
            worker = Worker(self.cap)
            worker.prepare(settings, keyed_function)
        except (OSError, WorkerLost):
            if worker is not None:
                worker.retire()
            return
        finally:
            with self._lock:
                self._starting -= 1
        self.release(worker, reusable=True)


_POOLS: dict[int, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def pool(cap: int) -> WorkerPool:
    """The process's pool of workers capped at `cap` bytes, shared by every gateway in the process."""
    with _POOLS_LOCK:
        if cap not in _POOLS:
            _POOLS[cap] = WorkerPool(cap)
        return _POOLS[cap]


# -- the worker's side --------------------------------------------------------------------------------------


def _limit_memory(cap: int) -> None:
    import resource

    limit = getattr(resource, "RLIMIT_DATA", None)
    if limit is not None and sys.platform.startswith("linux"):
        resource.setrlimit(limit, (cap, cap))


def _data_size() -> int:
    """The process's data segment (what RLIMIT_DATA counts), in bytes; 0 where /proc cannot tell."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _Serving:
    """The worker's loop: one request at a time; a keyed-hash call asks the server for its key."""

    def __init__(self, inbox: IO[bytes], outbox: IO[bytes]) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.lock = threading.Lock()
        self.keys: dict[str, bytes] = {}
        self.key_lock = threading.Lock()
        self.con: Any = None
        self.last: tuple[tuple[str, ...], str] | None = None  # the settings and keyed function last opened
        self.ready: tuple[tuple[tuple[str, ...], str], Any] | None = None  # a database opened ahead, for them

    def send(self, kind: bytes, payload: bytes) -> None:
        _write(self.outbox, self.lock, kind, payload)

    def reply(self, body: dict[str, Any]) -> None:
        self.send(b"R", json.dumps(body, default=str).encode())

    def key(self, key_id: str) -> bytes:
        with self.key_lock:
            if key_id not in self.keys:
                self.send(b"k", json.dumps({"id": key_id}).encode())
                kind, length = HEADER.unpack(_read_exact(self.inbox, HEADER.size))
                payload = _read_exact(self.inbox, length)
                if kind != b"K":
                    raise LookupError(json.loads(payload).get("message", "the key was refused"))
                self.keys[key_id] = payload
            return self.keys[key_id]

    def serve(self) -> None:
        while True:
            try:
                _, length = HEADER.unpack(_read_exact(self.inbox, HEADER.size))
                request = json.loads(_read_exact(self.inbox, length))
            except EOFError:
                return
            try:
                getattr(self, "op_" + str(request["op"]))(request)
            except ResultTooLarge as exc:
                self.send(b"X", json.dumps({"type": "ResultTooLarge", "bytes": exc.bytes, "rows": exc.rows}).encode())
            except Exception as exc:
                self.send(b"X", json.dumps({"type": type(exc).__name__, "message": str(exc)[:4000]}).encode())

    def _new(self, wanted: tuple[tuple[str, ...], str]) -> Any:
        import duckdb

        from trustmesh.privacy.masking import register_keyed_functions

        con = duckdb.connect(":memory:")
        for statement in wanted[0]:
            con.execute(statement)
        register_keyed_functions(con, self.key, wanted[1])
        return con

    def op_prepare(self, request: dict[str, Any]) -> None:
        """Open the next query's database ahead of it (opening one costs ~10 ms)."""
        self.last = (tuple(request["settings"]), str(request["keyed"]))
        self.ready = (self.last, self._new(self.last))
        self.reply({})

    def op_open(self, request: dict[str, Any]) -> None:
        wanted = (tuple(request["settings"]), str(request["keyed"]))
        self.keys.clear()
        ready, self.ready = self.ready, None
        if ready is not None and ready[0] == wanted:
            self.con = ready[1]
        else:
            if ready is not None:
                ready[1].close()
            self.con = self._new(wanted)
        self.last = wanted
        self.reply({})

    def op_execute(self, request: dict[str, Any]) -> None:
        rows = self.con.execute(request["sql"], request["params"] or None).fetchall()
        self.reply({"rows": [list(r) for r in rows]})

    def op_stream(self, request: dict[str, Any]) -> None:
        reader = self.con.sql(request["sql"]).to_arrow_reader(int(request["batch_rows"]))
        try:
            self.send(b"S", reader.schema.serialize().to_pybytes())
            produced = rows = 0
            for batch in reader:
                produced += batch.nbytes
                if produced > int(request["max_bytes"]):
                    raise ResultTooLarge(produced, rows + batch.num_rows)
                self.send(b"B", batch.serialize().to_pybytes())
                rows += batch.num_rows
                if rows >= int(request["max_rows"]):
                    break
        finally:
            reader.close()
        self.send(b"E", json.dumps({"rows": rows, "bytes": produced}).encode())

    def op_close(self, request: dict[str, Any]) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        self.keys.clear()
        self.reply({"data": _data_size()})
        if self.last is not None:  # the next query most likely wants the same settings
            self.ready = (self.last, self._new(self.last))


def main() -> None:
    _limit_memory(int(sys.argv[1]))
    import duckdb  # noqa: F401 - loaded before serving, so a broken installation shows on stderr
    import pyarrow  # noqa: F401

    import trustmesh.privacy.masking  # noqa: F401

    # The protocol gets its own descriptors; anything else writing to stdin/stdout/stderr goes nowhere.
    inbox = os.fdopen(os.dup(0), "rb", buffering=0)
    outbox = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    _Serving(inbox, outbox).serve()


if __name__ == "__main__":
    main()
