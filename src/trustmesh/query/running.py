"""How many governed queries run at once in one server process: in all, and per principal.

Each running query holds a worker process with its own memory cap, so the bound on running queries is
what bounds the process's memory: at most `total` times the per-query cap. One principal may hold only
`per_principal` of those places, so a principal sending many heavy queries leaves room for everyone else;
past that bound a query is refused at once with a message naming the wait, not queued. When every place
is taken, a query waits a little for one (`wait_s`), then is refused the same way.

The counts are per process: a server started with `--workers N` allows N times as many.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from trustmesh.errors import TrustmeshError


class QueryBusy(TrustmeshError):
    """Too many queries are running: the principal's own, or the server's."""

    http_status = 429


class RunningQueries:
    """The places for running queries in this process; `place(principal)` holds one while a query runs."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._total = 0
        self._by: Counter[str] = Counter()

    def running(self, principal: str | None = None) -> int:
        """How many queries run now, of `principal` or in all."""
        with self._changed:
            return self._by[principal] if principal is not None else self._total

    @contextmanager
    def place(self, principal: str, *, per_principal: int, total: int, wait_s: float) -> Iterator[None]:
        """Hold one of `total` places, and one of the principal's `per_principal`, for the block's duration."""
        deadline = time.monotonic() + wait_s
        with self._changed:
            while True:
                mine = self._by[principal]
                if mine >= per_principal:
                    raise QueryBusy(f"{principal} already has {mine} quer{'y' if mine == 1 else 'ies'} running, the "
                                    "most one principal may run at once — fix: wait for one to finish, then send "
                                    "this one again")
                if self._total < total:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueryBusy(f"the server is running {self._total} quer{'y' if self._total == 1 else 'ies'}, "
                                    f"its most at once, and none finished within {wait_s:g} s — fix: send the query "
                                    "again in a few seconds")
                self._changed.wait(left)
            self._total += 1
            self._by[principal] += 1
        try:
            yield
        finally:
            with self._changed:
                self._total -= 1
                self._by[principal] -= 1
                if not self._by[principal]:
                    del self._by[principal]
                self._changed.notify_all()


RUNNING = RunningQueries()  # one per process: the memory these places bound is the process's
