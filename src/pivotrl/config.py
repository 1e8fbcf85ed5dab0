"""Config dataclasses filled from YAML and then from command-line flags (flags win).

One source of defaults: the dataclass. A YAML key that the dataclass lacks is an error naming the
file and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pivotrl.errors import DataError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    values: dict[str, Any] = {}
    if path:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"cannot read config: {exc}", file=str(path)) from None
        if not isinstance(loaded, dict):
            raise DataError("a config file must be a mapping of keys to values", file=str(path))
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DataError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}",
                        file=str(path) if path else None)
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    return cls(**{k: _coerce(k, v, types[k], path) for k, v in values.items()})


def _coerce(key: str, value: Any, type_name: str, path) -> Any:
    """Numbers by the field's type: YAML reads `1e-4` as a string, a flag `--max-steps 10` may come as text."""
    if value is None or isinstance(value, bool):
        return value
    try:
        if type_name.startswith("float") and isinstance(value, (str, int)):
            return float(value)
        if type_name.startswith("int") and isinstance(value, str):
            return int(value)
    except ValueError:
        raise DataError(f"{key}: expected a number, got {value!r}", file=str(path) if path else None) from None
    return value
