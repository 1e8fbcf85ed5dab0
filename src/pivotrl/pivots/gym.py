"""NeMo Gym rows <-> states: the format of NVIDIA's released pivot datasets.

A row is `{"responses_create_params": {"input": [...items], "tools": [...], ...sampling},
"expected_action": {...}, "agent_ref": {...}, ...profiling columns, "trajectory_id", ...}`.
See the dataset cards of `nvidia/Nemotron-RL-Agentic-*-Pivot-v1` and NeMo Gym's
Responses API agents. A row is already a state: we render its Responses `input` items to chat
messages (as NeMo-RL does) for the policy's chat template.

Round trip: the row's own `input` items, its other request parameters and every extra column are
kept in `state.meta["gym"]`, so rows -> states -> rows gives back every field the format defines;
reasoning items, which chat messages cannot hold, survive that way too. A state made from a
trajectory has no such record, and its items are built from its messages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pivotrl.data.loaders import to_openai_tool
from pivotrl.data.types import Action, ToolCall
from pivotrl.errors import DataError
from pivotrl.pivots.state import State, state_id

DEFAULT_AGENT = "single_step_tool_use_with_argument_comparison_agent"
PROFILE_COLUMNS = ("rewards", "reward_mean", "reward_std", "reward_var", "pass_rate",
                   "pass_rate_total", "pass_rate_passed", "num_unique_actions")


def is_gym_row(row: dict) -> bool:
    return isinstance(row, dict) and "responses_create_params" in row


def gym_row_to_state(row: dict, domain: str | None = None) -> State:
    """A state from one row. Every release's layout: `expected_action`, or the Terminal pivots'
    `expected_answer` (the Terminus JSON the agent should write, a message); the trajectory from
    `trajectory_id`, or `metadata.source_trajectory_uid` (Terminal pivots), so held-out data is
    split by source trajectory, never by row; the turn from `pivot_agent_turn_index` when given."""
    rcp = row.get("responses_create_params")
    if not isinstance(rcp, dict) or not isinstance(rcp.get("input"), list):
        raise DataError("'responses_create_params.input' must be a list of Responses items")
    metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    if "expected_action" in row:
        reference = expected_to_action(row["expected_action"])
    elif isinstance(row.get("expected_answer"), str) and row["expected_answer"]:
        reference = expected_answer_to_action(row["expected_answer"])
    elif isinstance(metadata.get("expected_action"), dict):  # the servers look there too
        reference = expected_to_action(metadata["expected_action"])
    elif metadata.get("expected_answer") is not None:
        # read as text, as terminus_judge reads it (an object there is not JSON text, and fails there too)
        reference = expected_answer_to_action(str(metadata["expected_answer"]))
    elif isinstance(row.get("expected_answer"), str):  # empty: terminus_judge scores every action 0 here too
        reference = Action.message("")
    else:
        raise DataError("NeMo Gym row without 'expected_action' or 'expected_answer' (top level or in 'metadata')")
    items = rcp["input"]
    context = items_to_messages(items)
    tools = [to_openai_tool(t) for t in rcp.get("tools") or []]
    turn = sum(m["role"] == "assistant" for m in context)
    if isinstance(row.get("pivot_agent_turn_index"), int):
        turn = row["pivot_agent_turn_index"]
    tid = row.get("trajectory_id", metadata.get("source_trajectory_uid"))
    if tid is None:
        tid = "row-" + hashlib.sha1(json.dumps(items, sort_keys=True).encode()).hexdigest()[:12]
    gym = {"params": {k: v for k, v in rcp.items() if k not in ("input", "tools")},
           "input": items, "tools": rcp.get("tools"),
           "expected_action": row.get("expected_action"),
           "extra": {k: v for k, v in row.items() if k not in ("responses_create_params", "expected_action")}}
    meta_info = row.get("meta_info") if isinstance(row.get("meta_info"), dict) else {}
    dom = domain or row.get("domain") or meta_info.get("domain") or _agent_domain(row)
    return State(state_id(str(tid), turn), str(tid), turn, -1, context, tools, reference,
                 str(dom), {"gym": gym})


def _agent_domain(row: dict) -> str:
    ref = row.get("agent_ref")
    name = ref.get("name", "") if isinstance(ref, dict) else ""
    for key in ("swe", "terminal", "search"):
        if key in name:
            return key
    return "tooluse"


def state_to_gym_row(state: State, agent_name: str = DEFAULT_AGENT) -> dict:
    gym = state.meta.get("gym") or {}
    expected = action_to_expected(state.reference)
    # Keep the original spelling (key order, number formats) when the action is unchanged.
    if gym.get("expected_action") is not None and expected_to_action(gym["expected_action"]) == state.reference:
        expected = gym["expected_action"]
    rcp: dict[str, Any] = {"input": gym["input"] if "input" in gym else messages_to_items(state.context)}
    tools = gym.get("tools") if "tools" in gym else [_flat_tool(t) for t in state.tools]
    if tools is not None:
        rcp["tools"] = tools
    rcp.update(gym.get("params", {}))
    row: dict[str, Any] = {"responses_create_params": rcp}
    extra = dict(gym.get("extra", {}))
    md = extra.get("metadata") if isinstance(extra.get("metadata"), dict) else {}
    own_reference = "expected_answer" in extra or "expected_answer" in md or "expected_action" in md
    if gym.get("expected_action") is not None or not own_reference:
        row["expected_action"] = expected  # a row with its reference elsewhere (Terminal pivots) keeps only that
    if "gym" not in state.meta:  # a row read from a file keeps its own layout (no agent or id column added)
        extra.setdefault("agent_ref", {"type": "responses_api_agents", "name": agent_name})
        extra.setdefault("trajectory_id", state.trajectory_id)
        extra.setdefault("meta_info", {"turn_index": state.turn_index, "num_turns": state.num_turns,
                                       "domain": state.domain, "state_id": state.id})
    row.update(extra)
    row.update({k: v for k, v in (state.meta.get("profile") or {}).items() if k in PROFILE_COLUMNS})
    return row


def _flat_tool(tool: dict) -> dict:
    fn = tool.get("function")
    return {"type": "function", **fn} if isinstance(fn, dict) else tool


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def items_to_messages(items: list) -> list[dict]:
    """Responses `input` items -> chat messages (function_call -> assistant tool_calls,
    function_call_output -> tool message, reasoning dropped), as NeMo-RL renders them."""
    msgs: list[dict] = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise DataError(f"input item {i} is not an object")
        # Parquet/Arrow fills absent keys with None: treat None like absent.
        typ = it.get("type") or "message"
        if typ == "message":
            role = it.get("role")
            if role not in ("system", "developer", "user", "assistant"):
                raise DataError(f"input item {i}: unknown role {role!r}")
            msgs.append({"role": role, "content": _text(it.get("content"))})
        elif typ == "function_call":
            call = {"id": it.get("call_id") or f"call_{i}", "type": "function",
                    "function": {"name": it.get("name") or "", "arguments": it.get("arguments") or "{}"}}
            prev = msgs[-1] if msgs else None
            if prev is not None and prev["role"] == "assistant":
                prev.setdefault("tool_calls", []).append(call)
            else:
                msgs.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif typ == "function_call_output":
            out = it.get("output") or ""
            msgs.append({"role": "tool", "tool_call_id": it.get("call_id"),
                         "content": out if isinstance(out, str) else json.dumps(out)})
        elif typ == "reasoning":
            continue
        else:
            raise DataError(f"input item {i}: unknown item type {typ!r}")
    return msgs


def messages_to_items(messages: list[dict]) -> list[dict]:
    items: list[dict] = []
    for m in messages:
        role = m["role"]
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": m.get("tool_call_id"),
                          "output": _text(m.get("content"))})
            continue
        text = _text(m.get("content"))
        if text or not m.get("tool_calls"):
            items.append({"role": role, "content": text})
        for k, c in enumerate(m.get("tool_calls") or []):
            fn = c.get("function", c)
            args = fn.get("arguments", {})
            items.append({"type": "function_call", "call_id": c.get("id") or f"call_{len(items)}_{k}",
                          "name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)})
    return items


def expected_to_action(expected: Any) -> Action:
    if isinstance(expected, str):  # some exports store the column as a JSON string
        try:
            expected = json.loads(expected)
        except ValueError:
            raise DataError("'expected_action' is a string but not JSON") from None
    if not isinstance(expected, dict):
        raise DataError("'expected_action' must be an object")
    typ = expected.get("type")
    if typ == "message":
        return Action.message(_text(expected.get("content")))
    if typ in ("function_call", "function_call_batch"):
        calls = expected.get("calls", []) if typ == "function_call_batch" else [expected]
        out = []
        for c in calls:
            call = ToolCall.from_arguments(c.get("name", ""), c.get("arguments", "{}"))
            if call.malformed or not isinstance(call.arguments, dict):
                raise DataError(f"expected_action arguments of {c.get('name')!r} are not a JSON object")
            out.append(call)
        if not out:
            raise DataError("'function_call_batch' without calls")
        return Action.tool_calls(out)
    raise DataError(f"unknown expected_action type {typ!r}")


def is_rollout(row: dict) -> bool:
    """A NeMo Gym rollout: a row with the policy's Responses API `response` (and its recorded `reward`)."""
    return is_gym_row(row) and isinstance(row.get("response"), dict)


def expected_answer_to_action(answer: str) -> Action:
    """`expected_answer`: a function call given as JSON (some exports), else the text the agent
    should write (Terminal pivots: the Terminus JSON action)."""
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("type") in ("function_call", "function_call_batch"):
        return expected_to_action(parsed)
    return Action.message(answer)


def action_to_expected(action: Action) -> dict:
    if action.kind == "tool_calls":
        calls = [{"type": "function_call", "name": c.name, "arguments": c.arguments_json} for c in action.calls]
        return calls[0] if len(calls) == 1 else {"type": "function_call_batch", "calls": calls}
    return {"type": "message", "content": action.text}

