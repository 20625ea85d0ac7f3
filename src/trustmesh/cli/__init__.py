"""The `trustmesh` command: thin commands over the service layer, with --json for scripts."""

from __future__ import annotations

import sys

from trustmesh.cli.app import app
from trustmesh.errors import TrustmeshError


def main() -> None:
    """Entry point: run the CLI; our own errors become a message and exit 1 (2 for bad usage)."""
    from trustmesh.cli.render import error_console

    try:
        app(standalone_mode=False)
    except TrustmeshError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


__all__ = ["app", "main"]
