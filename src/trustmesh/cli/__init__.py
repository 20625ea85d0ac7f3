"""The `trustmesh` command: thin commands over the service layer, with --json for scripts."""

from __future__ import annotations

from trustmesh.cli.app import app


def main() -> None:
    """Entry point of the `trustmesh` script."""
    app()


__all__ = ["app", "main"]
