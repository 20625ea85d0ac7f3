"""What every command group shares: the error handling, and the --mesh and --json options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from trustmesh.cli.render import error_console
from trustmesh.errors import FAIL_ON, TrustmeshError, UsageError
from trustmesh.service import MESH_ENV


class TrustmeshGroup(typer.core.TyperGroup):
    """trustmesh's own errors become one message and exit 1 (2 for bad usage)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TrustmeshError as exc:
            error_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            ctx.exit(exc.exit_code)


def typer_app(help: str, **kwargs: Any) -> typer.Typer:
    """A command group with trustmesh's conventions: `-h`, errors as messages, help that teaches."""
    return typer.Typer(cls=TrustmeshGroup, help=help, no_args_is_help=True, rich_markup_mode="markdown",
                       context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False,
                       **kwargs)


MeshOpt = Annotated[Path | None, typer.Option("--mesh", help=f"The mesh folder (default: ${MESH_ENV}, or the current folder).",
                                              show_default=False)]
FailOnOpt = Annotated[str, typer.Option("--fail-on", help="Exit 1 on errors (the default), or on warnings too "
                                                         "with `--fail-on warning`.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def fail_on_option(value: str) -> str:
    """A checked `--fail-on` value."""
    if value not in FAIL_ON:
        raise UsageError(f"--fail-on {value!r} — fix: one of {', '.join(FAIL_ON)}")
    return value
