"""Terminal output shared by the two command-line apps, `pivotrl` (cli.py) and `pivotrl lab`
(lab/cli.py): one rich console and the plain tables both print."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def rows_table(title: str, rows, columns=("", "count")) -> Table:
    """A table of `rows` under `columns`: the first column left-aligned (labels), the rest right."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t
