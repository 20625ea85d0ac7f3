"""Freshness from a contract's `slaProperties`: how old the served version may be before it is stale."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from trustmesh.errors import Problem

_SECONDS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "mo": 2592000, "month": 2592000, "months": 2592000,
    "y": 31536000, "yr": 31536000, "year": 31536000, "years": 31536000,
}
TIMED = ("latency", "frequency", "retention")


def duration(value: Any, unit: Any) -> timedelta | None:
    """`1`, `d` → one day; None when the unit or value is not understood."""
    seconds = _SECONDS.get(str(unit).strip().lower()) if unit is not None else None
    if seconds is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return timedelta(seconds=float(value) * seconds)


def sla_problems(sla: list[dict[str, Any]], file: str, dataset: str) -> list[Problem]:
    """Timed SLA properties need a number and a known unit."""
    problems = []
    for item in sla:
        prop = str(item.get("property", ""))
        if prop.lower() not in TIMED:
            continue
        where = f"slaProperties[{prop}]"
        if item.get("unit") is None or str(item["unit"]).strip().lower() not in _SECONDS:
            problems.append(Problem(file, f"{prop} of {dataset} has unit {item.get('unit')!r}, which is not known", where,
                                    fix="use s, m, h, d, w, mo or y (or their names: minutes, hours, days, ...)"))
        elif duration(item.get("value"), item.get("unit")) is None:
            problems.append(Problem(file, f"{prop} of {dataset} must be a number (got {item.get('value')!r})", where,
                                    fix=f"write e.g. `value: 1` with `unit: {item.get('unit')}`"))
    return problems


def freshness_window(sla: list[dict[str, Any]]) -> tuple[str, timedelta] | None:
    """The promise to judge freshness by: `frequency` (how often it is refreshed), else `latency`."""
    by_name = {str(i.get("property", "")).lower(): i for i in sla}
    for prop in ("frequency", "latency"):
        item = by_name.get(prop)
        if item is not None:
            window = duration(item.get("value"), item.get("unit"))
            if window is not None:
                return f"{prop} {item.get('value')} {item.get('unit')}", window
    return None


def freshness(sla: list[dict[str, Any]], published_at: datetime | None, now: datetime) -> dict[str, Any]:
    """Whether the served version is within its SLA; a dataset without a timed SLA is never stale."""
    window = freshness_window(sla)
    if window is None:
        return {"sla": None, "stale": False, "age_hours": _hours(now - published_at) if published_at else None}
    promise, limit = window
    if published_at is None:
        return {"sla": promise, "stale": True, "age_hours": None}
    age = now - published_at
    return {"sla": promise, "stale": age > limit, "age_hours": _hours(age), "due_at": (published_at + limit).isoformat()}


def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)
