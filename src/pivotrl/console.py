"""Terminal output shared by the two command-line apps, `pivotrl` (cli.py) and `pivotrl lab`
(lab/cli.py): one rich console and the plain tables both print."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.table import Table


def _width() -> int | None:
    """The terminal's width; off a terminal (a log file, CI) rich would use 80 columns and wrap every
    table into unreadable lines: wide enough for the widest table instead (COLUMNS still wins)."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return None
    return 240


console = Console(width=_width())


def rows_table(title: str, rows, columns=("", "count")) -> Table:
    """A table of `rows` under `columns`: the first column left-aligned (labels), the rest right."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def add_examples(typer_app, examples: dict) -> None:
    """Each command's example (`examples[name]`) appended to its --help, printed as written (`\\b`)."""
    for info in typer_app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        if name in examples:
            info.callback.__doc__ = f"{(info.callback.__doc__ or '').rstrip()}\n\nExample:\n\n\b\n  {examples[name]}"
