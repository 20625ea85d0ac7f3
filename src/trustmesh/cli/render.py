"""Terminal output: tables, problem lists, JSON, and the build's progress display."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from trustmesh.build import ProductResult
from trustmesh.errors import Problem

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_problems(problems: list[Problem]) -> None:
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        console.print(f"[{colour}]{p.severity}[/] [bold]{escape(p.location())}[/]: {escape(p.message)}")
        if p.fix:
            console.print(f"    [dim]fix:[/] {escape(p.fix)}")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    widest = max((len(str(r[0])) for r in rows if r), default=0)
    for i, c in enumerate(columns):
        # Names and addresses stay whole where the terminal has room: they are what the next command takes.
        t.add_column(c, no_wrap=i == 0 and widest <= console.width * 0.45, overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else escape(str(v)) for v in r])
    return t


STATUS_STYLE = {"published": "green", "skipped": "dim", "failed": "red", "blocked": "yellow"}


class BuildProgress:
    """A Rich progress bar per product while the build runs."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[step]}"), TimeElapsedColumn(),
                                 console=error_console, disable=not enabled, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BuildProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def started(self, address: str, steps: int) -> None:
        self.tasks[address] = self.progress.add_task(address, total=steps, step="")

    def step(self, address: str, what: str) -> None:
        self.progress.update(self.tasks[address], advance=1, step=what)

    def finished(self, result: ProductResult) -> None:
        task = self.tasks[result.address]
        style = STATUS_STYLE.get(result.status, "")
        self.progress.update(task, completed=self.progress.tasks[task].total or 1,
                             step=f"[{style}]{result.status}[/]")
