"""k-anonymity of a relation over its quasi-identifiers, and the generalisation that would reach a k.

A relation is k-anonymous over quasi-identifiers Q when every combination of Q's values that occurs is
shared by at least k rows (its equivalence class): no one is singled out by what an attacker may know.
`k_anonymity` measures it; `suggest_generalisation` climbs a ladder of generalisations per column
(numbers: buckets of 5, 10, 20, 50; dates: year, then decade; strings such as postal codes: the first
2 characters, then the first; finally suppression of the column), greedily, one rung at a time, until
every class has k rows (or the rows still below k fit the row-suppression budget). Each step takes the
rung that leaves the fewest rows in classes below k (then the largest k, then the most classes kept);
a column is suppressed only when no other rung is left. Rungs the climb took that a later rung made
unnecessary are then stepped back down. Pure functions over a DuckDB connection and a SELECT.

The climb runs one GROUP BY per trial rung, so its cost grows with the rows and with the square of the
quasi-identifiers. A `Budget` bounds it: at most so many quasi-identifiers and rows, and a deadline that
`bounded` enforces inside DuckDB (interrupting a running query) and the climb checks between trials;
past any of them the work stops with `KanonTooCostly`, naming what to reduce.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb

from trustmesh.engines.duckdb import quote
from trustmesh.errors import TrustmeshError, UsageError

NUMBER_BUCKETS = (5, 10, 20, 50)
DEFAULT_K = 5
SMALLEST = 10
MAX_QUASI = 12
MAX_ROWS = 10_000_000
SAMPLE_HINT = "measure a sample (`--sql 'SELECT ... FROM ... USING SAMPLE 100000'`)"
_NUMBER = re.compile(r"U?(?:TINY|SMALL|BIG|HUGE)?INT(?:EGER)?|UHUGEINT|INT[1248]|DOUBLE|FLOAT|REAL|DECIMAL.*|NUMERIC.*")


@dataclass(frozen=True)
class Rung:
    """One generalisation of a column: what it does, and the SQL of it with `{c}` for the column.

    A number in buckets of 10 becomes its bucket's lower bound (37 becomes 30); a date, its year or decade.
    """

    label: str
    template: str

    def sql(self, column: str) -> str:
        return self.template.format(c=column)


SUPPRESS = Rung("suppressed (the column dropped)", "NULL")


class KanonTooCostly(TrustmeshError):
    """A k-anonymity measurement would take more time, memory, rows or quasi-identifiers than it may."""

    http_status = 422


@dataclass(frozen=True)
class Budget:
    """What one k-anonymity measurement may spend, from the moment the budget is made."""

    seconds: float = 30.0
    max_rows: int = MAX_ROWS
    max_quasi: int = MAX_QUASI
    memory: str | None = None  # DuckDB's memory limit, for the message (the connection is set by its opener)
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.started + self.seconds - time.monotonic()

    def check_quasi(self, quasi: Sequence[str]) -> None:
        if len(quasi) > self.max_quasi:
            raise KanonTooCostly(f"{len(quasi)} quasi-identifiers, more than the {self.max_quasi} a measurement may "
                                 "take (the search grows with their square) — fix: name only the columns an "
                                 f"attacker could know, at most {self.max_quasi}")

    def check_rows(self, rows: int) -> None:
        if rows > self.max_rows:
            raise KanonTooCostly(f"{rows:,} rows, more than the {self.max_rows:,} a measurement may read — fix: "
                                 f"{SAMPLE_HINT}")

    def check_time(self) -> None:
        if self.left() <= 0:
            raise self.timed_out()

    def timed_out(self) -> KanonTooCostly:
        return KanonTooCostly(f"the k-anonymity measurement ran longer than {self.seconds:g} s and was stopped — "
                              f"fix: name fewer quasi-identifiers (only what an attacker could know), or {SAMPLE_HINT}")


@contextmanager
def bounded(con: duckdb.DuckDBPyConnection, budget: Budget) -> Iterator[None]:
    """Run the block under `budget`: DuckDB is interrupted at its deadline, and running out of time or of
    the connection's memory becomes `KanonTooCostly`."""
    timer = threading.Timer(max(budget.left(), 0.0), con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except duckdb.InterruptException as exc:
        raise budget.timed_out() from exc
    except duckdb.OutOfMemoryException as exc:
        raise KanonTooCostly(f"the k-anonymity measurement needed more than {budget.memory or 'its'} memory and was "
                             f"stopped — fix: name fewer quasi-identifiers, or {SAMPLE_HINT}") from exc
    finally:
        timer.cancel()


def ladder(data_type: str, longest: int | None = None) -> list[Rung]:
    """The generalisations of a column of DuckDB type `data_type`, least to most; `longest` (the longest
    value as text) drops the prefixes that would change nothing."""
    t = data_type.upper()
    if _NUMBER.fullmatch(t):
        return [*(Rung(f"buckets of {b}", f"floor({{c}} / {b}) * {b}") for b in NUMBER_BUCKETS), SUPPRESS]
    if t == "DATE" or t.startswith("TIMESTAMP"):
        return [Rung("year", "year({c})"), Rung("decade (e.g. 1980 for 1980-1989)", "year({c}) // 10 * 10"), SUPPRESS]
    if t == "BOOLEAN":
        return [SUPPRESS]
    rungs = [Rung("first 2 characters", "left(CAST({c} AS VARCHAR), 2)"),
             Rung("first character", "left(CAST({c} AS VARCHAR), 1)")]
    if longest is not None:
        rungs = [r for r, keep in zip(rungs, (longest > 2, longest > 1), strict=True) if keep]
    return [*rungs, SUPPRESS]


def columns_of(con: duckdb.DuckDBPyConnection, relation_sql: str) -> dict[str, str]:
    """The relation's columns and their DuckDB types."""
    return {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM ({relation_sql}) AS __tm_rel").fetchall()}


def _check(con: duckdb.DuckDBPyConnection, relation_sql: str, quasi: Sequence[str], k: int,
           budget: Budget | None = None) -> dict[str, str]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k {k!r} — fix: a whole number of rows, at least 1 (commonly 3, 5 or 10)")
    if not quasi:
        raise UsageError("no quasi-identifiers — fix: name the columns an attacker could know, e.g. "
                         "--quasi age,postal_code,gender")
    twice = sorted({q for q in quasi if list(quasi).count(q) > 1})
    if twice:
        raise UsageError(f"quasi-identifier(s) {', '.join(twice)} named twice — fix: name each column once")
    types = columns_of(con, relation_sql)
    unknown = [q for q in quasi if q not in types]
    if unknown:
        raise UsageError(f"no column(s) {', '.join(unknown)} in the data — fix: pick quasi-identifiers from "
                         f"{', '.join(types)}")
    if budget is not None:
        budget.check_quasi(quasi)
        budget.check_time()
        total = con.execute(f"SELECT count(*) FROM ({relation_sql}) AS __tm_rel").fetchone()
        budget.check_rows(int(total[0]) if total else 0)
    return types


def k_anonymity(con: duckdb.DuckDBPyConnection, relation_sql: str, quasi: Sequence[str], k: int = DEFAULT_K, *,
                smallest: int = SMALLEST, weight: str | None = None, budget: Budget | None = None) -> dict[str, Any]:
    """How k-anonymous `relation_sql` (a SELECT) is over the quasi-identifiers `quasi`.

    Returns k (the smallest class; None for no rows), the rows and classes, the classes and rows below the
    target `k`, and the `smallest` smallest classes with their values (NULL is a value like any other).
    With `weight`, each row stands for that many people (an aggregate release's count column), and a
    class's size is the people it covers. With a `budget`, the quasi-identifiers and rows are checked first.
    """
    types = _check(con, relation_sql, [*quasi, weight] if weight else quasi, k, budget)
    if isinstance(smallest, bool) or not isinstance(smallest, int) or smallest < 0:
        raise UsageError(f"smallest {smallest!r} — fix: how many of the smallest classes to show, 0 or more")
    if weight and not _NUMBER.fullmatch(types[weight].upper()):
        raise UsageError(f"weight column {weight} is {types[weight]}, not a number — fix: name the column counting "
                         "the people each row stands for (e.g. people)")
    cols = ", ".join(quote(q) for q in quasi)
    shown = ", ".join(f"CAST({quote(q)} AS VARCHAR)" if "TIME ZONE" in types[q].upper() else quote(q) for q in quasi)
    size = f"sum({quote(weight)})" if weight else "count(*)"
    classes = f"SELECT {cols}, {size} AS __size FROM ({relation_sql}) AS __tm_rel GROUP BY {cols}"
    row = con.execute(f"SELECT count(*), min(__size), coalesce(sum(__size), 0), count(*) FILTER (WHERE __size < {k}), "
                      f"coalesce(sum(__size) FILTER (WHERE __size < {k}), 0) FROM ({classes}) AS c").fetchone()
    assert row is not None
    n_classes, k_min, rows, below, rows_below = (int(v) if v is not None else None for v in row)
    order = ", ".join(str(i) for i in range(1, len(quasi) + 1))
    small = con.execute(f"SELECT {shown}, __size FROM ({classes}) AS c ORDER BY __size, {order} "
                        f"LIMIT {int(smallest)}").fetchall()
    return {
        "quasi": list(quasi), "k_target": k, "k": k_min, "satisfied": k_min is None or k_min >= k,
        "rows": rows, "classes": n_classes, "classes_below_k": below, "rows_below_k": rows_below,
        "smallest_classes": [{"values": dict(zip(quasi, r[:-1], strict=True)), "size": int(r[-1])} for r in small],
    }


@dataclass(frozen=True)
class _State:
    k: int | None  # the smallest class
    classes: int
    rows_below: int  # rows in classes smaller than the target
    k_kept: int | None  # the smallest class once the rows below the target are suppressed


def suggest_generalisation(con: duckdb.DuckDBPyConnection, relation_sql: str, quasi: Sequence[str],
                           k: int = DEFAULT_K, *, max_suppression: float = 0.0,
                           budget: Budget | None = None) -> dict[str, Any]:
    """The generalisation (and row suppression, up to `max_suppression` of the rows) that makes `relation_sql`
    k-anonymous over `quasi`, found greedily up each column's `ladder`.

    Returns whether k was reached, the steps in the order taken (each with the k, classes and rows below k
    after it), the final generalisation per column with its SQL, the resulting k, and the rows suppressed.
    With a `budget`, its deadline is checked before every trial (run the call `bounded` to stop a trial too).
    """
    types = _check(con, relation_sql, quasi, k, budget)
    if not 0 <= max_suppression < 1:
        raise UsageError(f"max suppression {max_suppression!r} — fix: a share of the rows from 0 up to (not "
                         "including) 1, e.g. 0.01 for 1%")
    base = f"__tm_kanon_{uuid.uuid4().hex[:12]}"
    aliases = [f"g{i}" for i in range(len(quasi))]
    select = ", ".join(f"{quote(q)} AS {a}" for q, a in zip(quasi, aliases, strict=True))
    con.execute(f"CREATE TEMP TABLE {base} AS SELECT {select}, count(*) AS n FROM ({relation_sql}) AS __tm_rel "
                f"GROUP BY ALL")
    try:
        ladders = []
        for q, a in zip(quasi, aliases, strict=True):
            longest = con.execute(f"SELECT max(length(CAST({a} AS VARCHAR))) FROM {base}").fetchone()
            ladders.append(ladder(types[q], int(longest[0]) if longest and longest[0] is not None else 0))

        def evaluate(levels: list[int]) -> _State:
            if budget is not None:
                budget.check_time()
            exprs = ", ".join(f"{a if level == 0 else ladders[i][level - 1].sql(a)} AS {a}"
                              for i, (a, level) in enumerate(zip(aliases, levels, strict=True)))
            sizes = f"SELECT sum(n) AS s FROM (SELECT {exprs}, n FROM {base}) AS g GROUP BY {', '.join(aliases)}"
            row = con.execute(f"SELECT min(s), count(*), coalesce(sum(s) FILTER (WHERE s < {k}), 0), "
                              f"min(s) FILTER (WHERE s >= {k}) FROM ({sizes}) AS c").fetchone()
            assert row is not None
            return _State(None if row[0] is None else int(row[0]), int(row[1]), int(row[2]),
                          None if row[3] is None else int(row[3]))

        levels = [0] * len(quasi)
        state = start = evaluate(levels)
        total = con.execute(f"SELECT coalesce(sum(n), 0) FROM {base}").fetchone()
        rows = int(total[0]) if total else 0
        suppressible = math.floor(max_suppression * rows)

        def done(s: _State) -> bool:
            return s.rows_below <= suppressible and (s.rows_below < rows or rows == 0)

        path: list[int] = []  # the column generalised at each step of the climb
        while not done(state) and rows >= k:  # fewer rows than k: no generalisation reaches it
            trials = []
            for i in range(len(quasi)):
                if levels[i] < len(ladders[i]):
                    trial = [*levels[:i], levels[i] + 1, *levels[i + 1:]]
                    trials.append((ladders[i][levels[i]] is SUPPRESS, evaluate(trial), i))
            if not trials:
                break
            # Suppressing a column is the last resort; among the rest, the fewest rows below k, then the largest
            # k; then a rung that merges classes before one that changes nothing (yet), and of those the one
            # keeping the most classes (the least information lost).
            current = state.classes
            _, state, chosen = min(trials, key=lambda t: (t[0], t[1].rows_below, -(t[1].k or 0),
                                                          t[1].classes == current, -t[1].classes, t[2]))
            levels[chosen] += 1
            path.append(chosen)
        if done(state) and path:
            levels, state = _relax(levels, state, evaluate, done)
        steps, replay = [], [0] * len(quasi)
        for i in path:  # the climb again, without the rungs relaxed afterwards
            if replay[i] < levels[i]:
                replay[i] += 1
                after = evaluate(replay)
                rung = ladders[i][replay[i] - 1]
                steps.append({"column": quasi[i], "generalisation": rung.label,
                              "sql": f"{rung.sql(quote(quasi[i]))} AS {quote(quasi[i])}",
                              "k": after.k, "classes": after.classes, "rows_below_k": after.rows_below})
        reached = done(state)
        return {
            "quasi": list(quasi), "k_target": k, "max_suppression": max_suppression, "reached": reached,
            "k_before": start.k, "k": (state.k_kept if reached else state.k), "k_without_suppression": state.k,
            "rows": rows, "classes": state.classes, "rows_suppressed": state.rows_below if reached else 0,
            "rows_below_k": state.rows_below, "steps": steps,
            "generalisation": {q: {"generalisation": ladders[i][levels[i] - 1].label if levels[i] else "none",
                                   "sql": (f"{ladders[i][levels[i] - 1].sql(quote(q))} AS {quote(q)}" if levels[i]
                                           else quote(q))}
                               for i, q in enumerate(quasi)},
        }
    finally:
        con.execute(f"DROP TABLE IF EXISTS {base}")


def _relax(levels: list[int], state: _State, evaluate: Callable[[list[int]], _State],
           done: Callable[[_State], bool]) -> tuple[list[int], _State]:
    """Step each column back down its ladder while k stays reached: a greedy climb can take rungs that a
    later one made unnecessary."""
    changed = True
    while changed:
        changed = False
        for i in range(len(levels)):
            while levels[i] > 0:
                trial = [*levels[:i], levels[i] - 1, *levels[i + 1:]]
                relaxed = evaluate(trial)
                if not done(relaxed):
                    break
                levels, state, changed = trial, relaxed, True
    return levels, state
