"""Reading a states file, whichever layout it holds: our states JSONL, or NeMo Gym rows (JSONL,
parquet or a saved Hugging Face dataset) such as NVIDIA's released pivots. Above both `state` and
`gym`, so neither imports the other back."""

from __future__ import annotations

from pathlib import Path

from pivotrl.artifacts import iter_dataset_rows, iter_jsonl
from pivotrl.errors import DataError
from pivotrl.pivots.gym import gym_row_to_state, is_gym_row
from pivotrl.pivots.state import State


def load_states(path: str | Path) -> list[State]:
    """Read a states file: our JSONL, or NeMo Gym rows (JSONL or parquet) such as NVIDIA's pivots."""
    path = Path(path)
    rows = _iter_rows(path)
    states: list[State] = []
    seen: dict[str, int] = {}
    for where, row in rows:
        line = where if isinstance(where, int) else None
        rec = where if isinstance(where, str) else None
        try:
            s = state_from_row(row)
        except DataError as exc:
            raise DataError(exc.reason, file=str(path), line=line, record=rec) from None
        # Two rows from the same trajectory turn (e.g. re-sampled pivots) keep distinct ids.
        if s.id in seen:
            seen[s.id] += 1
            s.id = f"{s.id}-{seen[s.id]}"
        else:
            seen[s.id] = 0
        states.append(s)
    if not states:
        raise DataError("no states in this file", file=str(path))
    return states


def state_from_row(row) -> State:
    """A state from one row, ours or a NeMo Gym row; a DataError (without a location) otherwise."""
    if not isinstance(row, dict):
        raise DataError("expected a JSON object")
    try:
        state = gym_row_to_state(row) if is_gym_row(row) else State.from_dict(row)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"not a state record ({type(exc).__name__}: {exc}); expected our states "
                        "JSONL or NeMo Gym rows") from None
    if not isinstance(state.context, list) or not all(isinstance(m, dict) for m in state.context):
        raise DataError("'context' must be a list of message objects")
    if not isinstance(state.tools, list):
        raise DataError("'tools' must be a list of tool schemas")
    return state


def _iter_rows(path: Path):
    if path.is_dir() or path.suffix == ".parquet":
        return iter_dataset_rows(path)
    return iter_jsonl(path)
