"""Reading a profile back, whoever wrote it: every record checked against the columns that
`profile_states` writes, each problem a `DataError` naming the file, the row and the column.

A profile is the pipeline's most expensive artifact (hours of sampling) and is read again by
select, report, info, convert, train and the lab; it is also often written by other tools (NeMo Gym
rows with profiling columns, a user's own scripts). So every command reads it here, and nothing
downstream meets a string where a reward should be. `PROFILE_COLUMNS` is the schema the docs state.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pivotrl.errors import DataError
from pivotrl.pivots.state import State


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of CHECKS' keys
    required: bool
    help: str


PROFILE_COLUMNS = (
    Column("state", "state", True, "the state, as JSON text (or an object) in the states layout of `pivotrl extract`"),
    Column("rewards", "numbers", True, "the K verifier rewards, one per sample ([] for a skipped state)"),
    Column("state_id", "string", False, "the state's id (default: the id inside `state`)"),
    Column("reward_mean", "number", False, "mean of `rewards` (default: computed from them)"),
    Column("reward_var", "number", False, "population variance of `rewards` (default: computed)"),
    Column("reward_std", "number", False, "its square root (default: computed)"),
    Column("skipped", "reason", False, "why the state was not sampled (e.g. prompt_too_long); '' or false if it was"),
    Column("n_truncated", "count", False, "samples cut by max_tokens, each scored 0 (default 0)"),
    Column("reasons", "strings", False, "the verifier's reason for each reward"),
    Column("trajectory_id", "string", False, "the trajectory the state comes from"),
    Column("domain", "string", False, "the state's domain"),
    Column("turn_index", "integer", False, "which assistant turn of its trajectory"),
    Column("num_turns", "integer", False, "assistant turns in its trajectory (-1 if unknown)"),
    Column("k", "count", False, "samples asked for"),
    Column("prompt_tokens", "count", False, "tokens of the rendered prompt"),
    Column("completion_tokens", "counts", False, "tokens of each sample"),
    Column("num_unique_actions", "count", False, "distinct normalised actions among the samples"),
    Column("model", "string", False, "the reference policy that sampled"),
    Column("verifier", "string", False, "the verifier that scored"),
    Column("seconds", "number", False, "this state's share of its batch's wall-clock"),
    Column("samples", "strings", False, "the sampled texts (with keep_samples)"),
)


def summarise(rewards: list[float]) -> dict:
    n = len(rewards)
    mean = sum(rewards) / n if n else float("nan")
    var = sum((r - mean) ** 2 for r in rewards) / n if n else float("nan")  # population variance, as in the paper
    return {"reward_mean": mean, "reward_var": var, "reward_std": math.sqrt(var) if n else float("nan")}


def schema_table() -> str:
    """`PROFILE_COLUMNS` as the markdown table docs/guides/data.md states (a test keeps the two equal)."""
    rows = ["| column | type | required | meaning |", "| --- | --- | --- | --- |"]
    rows += [f"| `{c.name}` | {'state' if c.type == 'state' else CHECKS[c.type][1]} | {'yes' if c.required else ''} "
             f"| {c.help} |" for c in PROFILE_COLUMNS]
    return "\n".join(rows)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_count(v) -> bool:
    # parquet written through pandas stores integer columns with nulls as floats: 3.0 is a count
    return _is_number(v) and not (isinstance(v, float) and not v.is_integer()) and v >= 0


CHECKS = {  # type -> (test, what the message says it must be)
    "number": (_is_number, "a number"),
    "integer": (lambda v: _is_number(v) and float(v).is_integer(), "an integer"),
    "count": (_is_count, "an integer >= 0"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "reason": (lambda v: isinstance(v, (str, bool)), "a string (the reason) or a boolean"),
    "numbers": (lambda v: isinstance(v, list) and all(map(_is_number, v)), "a list of numbers"),
    "counts": (lambda v: isinstance(v, list) and all(map(_is_count, v)), "a list of integers >= 0"),
    "strings": (lambda v: isinstance(v, list) and all(x is None or isinstance(x, str) for x in v),
                "a list of strings"),
}


def _describe(value) -> str:
    if isinstance(value, list):
        bad = next((x for x in value if not _is_number(x)), None)
        inner = f" (an item is {type(bad).__name__}: {bad!r:.40})" if value else ""
        return f"a list{inner}"
    return f"{type(value).__name__} {value!r:.40}"


def check_record(row) -> dict:
    """One profile record, checked and with its derived columns filled in (state_id, the reward
    statistics, skipped, n_truncated); a DataError naming the column otherwise."""
    return checked_record(row)[0]


def checked_record(row) -> tuple[dict, State]:
    """`check_record`'s record and the state it holds, parsed once (a caller that needs the state
    does not parse its JSON again)."""
    from pivotrl.pivots.load import state_from_row

    if not isinstance(row, dict):
        raise DataError(f"expected an object (a profile record), got {type(row).__name__}")
    missing = [c.name for c in PROFILE_COLUMNS if c.required and row.get(c.name) is None]
    if missing:
        raise DataError(f"column {' and '.join(repr(m) for m in missing)} missing or null: not a profile record "
                        f"(one needs {' and '.join(c.name for c in PROFILE_COLUMNS if c.required)})")
    for col in PROFILE_COLUMNS:
        value = row.get(col.name)
        if value is None or col.type == "state":
            continue
        test, must = CHECKS[col.type]
        if not test(value):
            raise DataError(f"column {col.name!r} must be {must}, got {_describe(value)}")
    state = row["state"]
    if isinstance(state, str):
        try:
            state = json.loads(state)
        except (ValueError, RecursionError):
            raise DataError("column 'state' is not JSON text of a state") from None
    if not isinstance(state, dict):
        raise DataError(f"column 'state' must be a state (JSON text of an object), got {_describe(row['state'])}")
    try:
        parsed = state_from_row(state)
    except DataError as exc:
        raise DataError(f"column 'state': {exc.reason}") from None
    rewards = row["rewards"]
    n = len(rewards)
    for name in ("reasons", "completion_tokens", "samples"):
        if row.get(name) is not None and len(row[name]) != n:
            raise DataError(f"column {name!r} has {len(row[name])} items for {n} rewards")
    if (row.get("n_truncated") or 0) > n:
        raise DataError(f"column 'n_truncated' is {row['n_truncated']}, more than the {n} rewards")
    out = {**row, "state": row["state"] if isinstance(row["state"], str) else json.dumps(state, ensure_ascii=False)}
    if out.get("state_id") is None:
        out["state_id"] = parsed.id
    for key, value in summarise([float(r) for r in rewards]).items():
        if out.get(key) is None:
            out[key] = value
    out["skipped"] = out.get("skipped") or ""
    out["n_truncated"] = int(out.get("n_truncated") or 0)
    return out, parsed


def iter_rows(path: Path, *, journal: bool = False, skipped: Counter | None = None) -> Iterator[tuple[dict, object]]:
    """(where, row) for each row of a profile file (parquet or JSONL), `where` being the DataError
    keywords that locate it. A file that is not what its name says is one DataError; in a journal
    (`journal=True`) a torn last line, the one being written when a job died, is left out."""
    if not path.exists():
        raise DataError("file not found", file=str(path))
    if path.is_dir():
        raise DataError("is a folder; expected a profile file (.parquet or .jsonl)", file=str(path))
    from pivotrl.artifacts import iter_jsonl, iter_parquet

    if path.suffix == ".parquet":
        for where, row in iter_parquet(path):
            yield {"record": where}, row
        return

    lines = iter_jsonl(path, skipped)
    if journal:
        lines = _without_torn_tail(path, lines)
    for lineno, row in lines:
        yield {"line": lineno}, row


def _without_torn_tail(path: Path, lines):
    """The lines of a journal less a torn last one: bad JSON on the last line of a file that does
    not end in a newline is the append a crash cut short (`append_jsonl` cuts it off next time)."""
    try:
        yield from lines
    except DataError as exc:
        data = path.read_bytes()
        if data.endswith(b"\n") or exc.line != data.count(b"\n") + 1:
            raise


def read_rows(path: str | Path, convert, *, skip_invalid: bool = False, skipped: Counter | None = None,
              journal: bool = False) -> list:
    """`convert(row)` for every row of a profile file; a DataError it raises is located (file, line
    or row) or, with `skip_invalid`, counted in `skipped` by reason and the row left out."""
    path = Path(path)
    skipped = skipped if skipped is not None else Counter()
    out = []
    for where, row in iter_rows(path, journal=journal, skipped=skipped if skip_invalid else None):
        try:
            out.append(convert(row))
        except DataError as exc:
            if not skip_invalid:
                raise DataError(exc.reason, file=str(path), **where) from None
            skipped[exc.reason] += 1
    return out


def read_profile(path: str | Path, *, skip_invalid: bool = False, skipped: Counter | None = None,
                 journal: bool = False) -> list[dict]:
    """Every record of a profile, checked (`check_record`). NeMo Gym rows are not records:
    `pivotrl.pivots.select.load_candidates` reads both."""
    return read_rows(path, check_record, skip_invalid=skip_invalid, skipped=skipped, journal=journal)
