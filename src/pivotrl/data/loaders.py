"""Load agent trajectories from OpenAI chat JSONL, ShareGPT JSONL, or a Hugging Face dataset.

Every record is normalised to a `Trajectory` in OpenAI chat form and validated; a bad record is
a `DataError` naming the file and line (or dataset row), or, with `skip_invalid=True`, is skipped
and counted by reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivotrl.artifacts import iter_dataset_rows, iter_jsonl
from pivotrl.data.types import Trajectory, tool_name
from pivotrl.errors import DataError

ROLES = {"system", "developer", "user", "assistant", "tool"}
FORMATS = ("auto", "openai", "sharegpt", "hf")

_SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "model": "assistant", "function_call": "assistant", "tool_call": "assistant",
    "observation": "tool", "tool": "tool", "function": "tool", "tool_response": "tool",
}


class InvalidRecord(Exception):
    """A record-level problem; `kind` is the short reason that --skip-invalid counts."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class TrajectorySet:
    """Loaded trajectories plus what was skipped and why (with --skip-invalid)."""

    trajectories: list[Trajectory]
    skipped: Counter = field(default_factory=Counter)
    source: str = ""

    def __iter__(self):
        return iter(self.trajectories)

    def __len__(self):
        return len(self.trajectories)

    def __getitem__(self, i):
        return self.trajectories[i]


def load_trajectories(path: str | Path, format: str = "auto", *, skip_invalid: bool = False,
                      domain: str | None = None) -> TrajectorySet:
    """Load and validate trajectories. `format`: auto, openai, sharegpt or hf (dataset dir/parquet)."""
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}", file=str(path))
    path = Path(path)
    out: list[Trajectory] = []
    skipped: Counter = Counter()
    for where, record in _iter_records(path, format, skipped if skip_invalid else None):
        try:
            out.append(normalise_record(record, format, domain))
        except InvalidRecord as exc:
            if not skip_invalid:
                raise DataError(f"{exc} (use --skip-invalid to skip such records)", file=str(path),
                                line=where if isinstance(where, int) else None,
                                record=where if isinstance(where, str) else None) from None
            skipped[exc.kind] += 1
    if not out:
        why = f" ({sum(skipped.values())} invalid records skipped: {dict(skipped)})" if skipped else ""
        raise DataError(f"no trajectories in this file{why}", file=str(path))
    return TrajectorySet(out, skipped, str(path))


def _iter_records(path: Path, format: str, skipped: Counter | None = None) -> Iterator[tuple[int | str, Any]]:
    if format == "hf" or path.is_dir() or path.suffix == ".parquet":
        yield from iter_dataset_rows(path)
    else:
        yield from iter_jsonl(path, skipped)


def normalise_record(record: Any, format: str = "auto", domain: str | None = None) -> Trajectory:
    """One input record (OpenAI or ShareGPT layout) -> a validated Trajectory."""
    if not isinstance(record, dict):
        raise InvalidRecord("bad_record", f"expected a JSON object, got {type(record).__name__}")
    if format == "sharegpt" or (format in ("auto", "hf") and "conversations" in record):
        messages, tools = _from_sharegpt(record)
    elif "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list):
            raise InvalidRecord("bad_record", "'messages' must be a list")
        messages = [_normalise_message(m, i) for i, m in enumerate(messages)]
        tools = _normalise_tools(record.get("tools"))
    elif "responses_create_params" in record:
        raise InvalidRecord("bad_record", "this is a NeMo Gym row (a state, not a trajectory): "
                            "load it with load_states, or use it directly with profile/select")
    else:
        raise InvalidRecord("bad_record", "no 'messages' (OpenAI) or 'conversations' (ShareGPT) field")
    validate_messages(messages, tools)
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    tid = record.get("id", record.get("trajectory_id"))
    if tid is None:
        digest = hashlib.sha1(json.dumps(messages, sort_keys=True, default=str).encode()).hexdigest()
        tid = f"traj-{digest[:12]}"
    return Trajectory(str(tid), messages, tools, str(domain or record.get("domain") or "default"), meta)


def _normalise_message(m: Any, i: int) -> dict:
    if not isinstance(m, dict):
        raise InvalidRecord("bad_record", f"message {i} is not an object")
    role = m.get("role")
    if role not in ROLES:
        raise InvalidRecord("unknown_role", f"message {i}: unknown role {role!r} "
                            f"(expected one of {', '.join(sorted(ROLES))})")
    m = dict(m)
    if isinstance(m.get("content"), list):  # content parts -> plain text, as chat templates expect
        m["content"] = "".join(p.get("text", "") for p in m["content"] if isinstance(p, dict))
    if m.get("content") is None:
        m["content"] = ""
    return m


def _normalise_tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else []
        except ValueError:
            raise InvalidRecord("bad_tools", "'tools' is a string but not valid JSON") from None
    if not isinstance(tools, list):
        raise InvalidRecord("bad_tools", "'tools' must be a list of tool schemas")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or tool_name(t) is None:
            raise InvalidRecord("bad_tools", f"tool {i} has no name")
        out.append(to_openai_tool(t))
    return out


def to_openai_tool(tool: dict) -> dict:
    """Flat `{"type", "name", "parameters", ...}` (Responses API, ShareGPT) -> OpenAI chat form."""
    if isinstance(tool.get("function"), dict):
        return tool
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}


def _from_sharegpt(record: dict) -> tuple[list[dict], list[dict]]:
    turns = record.get("conversations", record.get("messages"))
    if not isinstance(turns, list):
        raise InvalidRecord("bad_record", "'conversations' must be a list")
    tools = _normalise_tools(record.get("tools"))
    messages: list[dict] = []
    if isinstance(record.get("system"), str) and record["system"]:
        messages.append({"role": "system", "content": record["system"]})
    pending: list[str] = []  # ids of calls still waiting for an observation
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise InvalidRecord("bad_record", f"turn {i} is not an object")
        src = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content", ""))
        role = _SHAREGPT_ROLES.get(src)
        if role is None:
            raise InvalidRecord("unknown_role", f"turn {i}: unknown role {src!r} (expected one of "
                                f"{', '.join(sorted(_SHAREGPT_ROLES))})")
        if src in ("function_call", "tool_call"):
            try:
                calls = json.loads(value) if isinstance(value, str) else value
            except ValueError:
                raise InvalidRecord("malformed_arguments", f"turn {i}: function call is not valid JSON") from None
            calls = calls if isinstance(calls, list) else [calls]
            tool_calls = []
            for k, c in enumerate(calls):
                if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                    raise InvalidRecord("malformed_arguments", f"turn {i}: function call without a name")
                args = c.get("arguments", {})
                tool_calls.append({"id": f"call_{i}_{k}", "type": "function", "function": {
                    "name": c["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}})
            pending = [tc["id"] for tc in tool_calls]
            messages.append({"role": "assistant", "content": "", "tool_calls": tool_calls})
        elif role == "tool":
            if not pending:
                raise InvalidRecord("tool_result_without_call", f"turn {i}: observation without a preceding function call")
            text = value if isinstance(value, str) else json.dumps(value)
            messages.append({"role": "tool", "tool_call_id": pending.pop(0), "content": text})
        else:
            messages.append({"role": role, "content": value if isinstance(value, str) else json.dumps(value)})
    return messages, tools


def validate_messages(messages: list[dict], tools: list[dict]) -> None:
    """Raise InvalidRecord for what would make a wrong training state."""
    names = {tool_name(t) for t in tools}
    open_calls: list[str | None] = []  # call ids of the last assistant turn not yet answered
    n_assistant = 0
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "assistant":
            n_assistant += 1
            calls = m.get("tool_calls") or []
            if not isinstance(calls, list):
                raise InvalidRecord("bad_record", f"message {i}: 'tool_calls' must be a list")
            open_calls = []
            for k, c in enumerate(calls):
                fn = c.get("function", c) if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise InvalidRecord("bad_record", f"message {i}: tool call {k} has no function name")
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except ValueError as exc:
                        raise InvalidRecord("malformed_arguments", f"message {i}: arguments of "
                                            f"{fn['name']!r} are not valid JSON ({exc})") from None
                if not isinstance(args, dict):
                    raise InvalidRecord("malformed_arguments", f"message {i}: arguments of "
                                        f"{fn['name']!r} must be a JSON object")
                if fn["name"] not in names:
                    raise InvalidRecord("missing_tool_schema", f"message {i}: call to {fn['name']!r} "
                                        f"but no tool schema of that name in 'tools'")
                open_calls.append(c.get("id"))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not open_calls or (call_id is not None and any(open_calls) and call_id not in open_calls):
                raise InvalidRecord("tool_result_without_call", f"message {i}: tool result "
                                    f"{'for ' + repr(call_id) + ' ' if call_id else ''}without a matching call")
            open_calls.remove(call_id if call_id in open_calls else open_calls[0])
        else:
            open_calls = []
    if n_assistant == 0:
        raise InvalidRecord("no_assistant_turn", "no assistant message: nothing to learn from")
