"""One error tree for trustmesh: every message names where, what, and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the mesh: where it is, what is wrong, and how to fix it."""

    file: str
    message: str
    path: str = ""
    line: int | None = None
    fix: str = ""
    severity: str = "error"

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f": {self.path}"
        return where

    def __str__(self) -> str:
        text = f"{self.location()}: {self.message}"
        if self.fix:
            text += f" — fix: {self.fix}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
            "severity": self.severity,
        }


FAIL_ON = ("error", "warning")


def fails(severity: str, fail_on: str = "error") -> bool:
    """Whether a problem, finding or check of this severity fails a command run with `--fail-on fail_on`:
    errors always, warnings only when asked (as dbt and datacontract-cli do), information never."""
    return severity == "error" or (severity == "warning" and fail_on == "warning")


class TrustmeshError(Exception):
    """Root of every error trustmesh raises on purpose."""

    exit_code = 1
    http_status = 400


class UsageError(TrustmeshError, ValueError):
    """The command was called wrongly (bad selector, bad address, bad option)."""

    exit_code = 2
    http_status = 400


class NotFound(TrustmeshError, LookupError):
    """A domain, product, dataset or version that does not exist."""

    http_status = 404


class InvalidMesh(TrustmeshError, ValueError):
    """The mesh repo has problems; carries all of them, not just the first."""

    http_status = 422

    def __init__(self, problems: list[Problem], headline: str = "the mesh is not valid") -> None:
        self.problems = problems
        count = len([p for p in problems if p.severity == "error"])
        lines = [f"{headline}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


class BuildFailed(TrustmeshError):
    """A product could not be built; nothing of it was published."""

    def __init__(self, product: str, message: str, problems: list[Problem] | None = None) -> None:
        self.product = product
        self.problems = problems or []
        detail = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(f"{product}: {message}{detail}")


class Unauthenticated(TrustmeshError, PermissionError):
    """No identity, or a forged, expired or revoked token."""

    http_status = 401


class Forbidden(TrustmeshError, PermissionError):
    """The principal is known but may not do this (decide another domain's request, read the audit log...)."""

    http_status = 403


class Conflict(TrustmeshError):
    """The thing changed state first: already decided, withdrawn, expired, or decided at the same instant."""

    http_status = 409


class MetastoreUnavailable(TrustmeshError, ConnectionError):
    """The metastore database cannot be reached or opened."""

    http_status = 503


class StorageUnavailable(TrustmeshError, ConnectionError):
    """The warehouse's object storage cannot be used: no credentials, no answer, no such bucket, a failed transfer."""

    http_status = 503


@dataclass
class ProblemList:
    """Collects problems while validating, so all of them are reported at once."""

    items: list[Problem] = field(default_factory=list)

    def add(
        self,
        file: str | Path,
        message: str,
        *,
        path: str = "",
        line: int | None = None,
        fix: str = "",
        severity: str = "error",
    ) -> None:
        self.items.append(Problem(str(file), message, path, line, fix, severity))

    def extend(self, problems: list[Problem]) -> None:
        self.items.extend(problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]

    def raise_if_any(self, headline: str = "the mesh is not valid") -> None:
        if self.errors:
            raise InvalidMesh(self.items, headline)
