"""A config dataclass's fields as users read them: the `--help` of the config-driven commands and
the docs' config reference are both written from here, so the two never disagree."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING


@dataclasses.dataclass
class FieldDoc:
    name: str
    type: str
    default: str
    help: str


def _type_name(tp) -> str:
    if isinstance(tp, str):  # postponed annotations, as written
        return tp.replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _default(f: dataclasses.Field) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    return repr(value) if isinstance(value, str) else str(value)


def field_docs(cls, own_only_of=None) -> list[FieldDoc]:
    """Every field of `cls` (name, type, default, help), or with `own_only_of` (a base class) only
    those the base does not have: pivotrl's own, apart from TRL's."""
    base = {f.name for f in dataclasses.fields(own_only_of)} if own_only_of else set()
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve here: its text is shown
        hints = {}
    docs = [FieldDoc(f.name, _type_name(hints.get(f.name, f.type)), _default(f), f.metadata.get("help", ""))
            for f in dataclasses.fields(cls) if f.name not in base]
    own = list(vars(cls).get("__annotations__", {}))  # the class's own fields first (model, pivots, ...)
    return sorted(docs, key=lambda d: own.index(d.name) if d.name in own else len(own))


def changed_defaults(cls, base) -> list[FieldDoc]:
    """The fields of `base` (TRL's config) whose default `cls` changes (a recipe)."""
    theirs = {f.name: _default(f) for f in dataclasses.fields(base)}
    return [d for d in field_docs(cls) if d.name in theirs and theirs[d.name] != d.default]


def help_block(docs: list[FieldDoc]) -> str:
    """One line a field, for click's help (`\\b`: printed as written, not rewrapped)."""
    lines = ["\b"]
    for d in docs:
        lines.append(f"  {d.name} ({d.type}, default {d.default})" + (f": {d.help}" if d.help else ""))
    return "\n".join(lines)


def markdown_table(docs: list[FieldDoc]) -> str:
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for d in docs:
        cells = [f"`{d.name}`", d.type, f"`{d.default}`", d.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows)
