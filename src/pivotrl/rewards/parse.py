"""Turn raw model output into an `Action`. The one parser shared by every verifier, the profiler
and the trainer, so that all of them agree on what a completion did.

Understood forms:
- text, with an optional reasoning block (`<think>...</think>`; only the text after it counts),
  holding Hermes/Qwen `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks or
  Qwen3-Coder `<function=name><parameter=k>v</parameter></function>` blocks;
- an OpenAI assistant message (`{"content": ..., "tool_calls": [...]}`);
- a list of chat messages (TRL's conversational completions): the assistant ones are joined;
- a Responses API `output` (a list of typed items, or the response holding it), as NeMo Gym's
  servers receive it: there the model server has already parsed the text, so `function_call` items
  are the calls and message text is a message, never searched for call blocks (NeMo Gym's
  `extract_action`: calls first, else the first `output_text` of the first assistant message,
  empty text included).
Never raises on any input: what cannot be read becomes a malformed call or no action.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pivotrl.data.types import Action, ToolCall, find_tool, tool_parameters

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
MAX_CHARS = 200_000  # longer output is cut: no real action is that long, and parsing stays cheap

_FUNCTION_RE = re.compile(r"<function=([^>\n]{1,200})>(.*?)(?:</function>|\Z)", re.S)
_PARAM_RE = re.compile(r"<parameter=([^>\n]{1,200})>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.S)
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"\\]{1,200})"')


def parse_action(completion: Any, tools: list[dict] | None = None) -> Action:
    """Parse a completion (text, OpenAI message or list of messages) into an Action."""
    try:
        return _parse(completion, tools or [])
    except (RecursionError, MemoryError, TypeError, ValueError, AttributeError):
        return Action("none")


def _parse(completion: Any, tools: list[dict]) -> Action:
    if isinstance(completion, (bytes, bytearray)):
        completion = bytes(completion).decode("utf-8", errors="replace")
    items = response_items(completion)
    if items is not None:
        return _from_response_items(items)
    if isinstance(completion, list):
        msgs = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        if len(msgs) == 1:
            return _parse(msgs[0], tools)
        text = "".join(m.get("content") or "" for m in msgs if isinstance(m.get("content"), str))
        calls = [c for m in msgs for c in (m.get("tool_calls") or [])]
        return _parse({"content": text, "tool_calls": calls}, tools)
    if isinstance(completion, dict):
        content = completion.get("content")
        content = content if isinstance(content, str) else _content_text(content)
        action = parse_text(content, tools)
        api_calls = [_openai_call(c) for c in completion.get("tool_calls") or []]
        reasoning = completion.get("reasoning_content") or action.reasoning
        if api_calls:
            return Action.tool_calls(list(api_calls) + list(action.calls), action.text, reasoning)
        return Action(action.kind, action.calls, action.text, reasoning)
    if completion is None:
        return Action("none")
    return parse_text(str(completion), tools)


def opens_reasoning(prompt: str) -> bool:
    """Whether a rendered prompt leaves a reasoning block open: the chat templates of thinking models
    (Qwen3-*-Thinking-2507, QwQ, DeepSeek-R1 distills) end the prompt with `<think>`, so the
    completion starts inside the reasoning and has no opening tag of its own."""
    return isinstance(prompt, str) and prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


def as_turn(prompt: str, completion: Any) -> Any:
    """The completion as the whole assistant turn: with the reasoning block the prompt opened put
    back, so that text cut off mid-reasoning reads as no action (not as a message) and the reasoning
    is stripped alike in profiling, training rewards and evaluation."""
    if isinstance(completion, str) and opens_reasoning(prompt) and not completion.lstrip().startswith(THINK_OPEN):
        return THINK_OPEN + completion
    return completion


def response_items(completion: Any) -> list[dict] | None:
    """The output items of a Responses API response (or the `output` list itself); None otherwise.
    Chat messages have a `role` and no `type`; every Responses output item has a `type`."""
    if isinstance(completion, dict) and isinstance(completion.get("output"), list) and "role" not in completion:
        completion = completion["output"]
    if isinstance(completion, list) and completion and all(isinstance(i, dict) and "type" in i for i in completion):
        return completion
    return None


def _from_response_items(items: list[dict]) -> Action:
    calls, text = [], None
    for item in items:
        if item.get("type") == "function_call":
            name = item.get("name")
            calls.append(ToolCall.from_arguments(name if isinstance(name, str) else "", item.get("arguments", "")))
        elif item.get("type") == "message" and item.get("role", "assistant") == "assistant" and text is None:
            content = item.get("content")
            if isinstance(content, str):
                text = content
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    text = part["text"]
                    break
    if calls:
        return Action.tool_calls(calls, text or "")
    return Action.message(text) if text is not None else Action("none")


def parse_text(text: str, tools: list[dict] | None = None) -> Action:
    """Parse generated text: reasoning first, then tool-call blocks, else a message."""
    text = text[:MAX_CHARS]
    reasoning = ""
    if THINK_CLOSE in text:
        reasoning, text = text.split(THINK_CLOSE, 1)
        reasoning = reasoning.replace(THINK_OPEN, "", 1).strip()
    elif text.lstrip().startswith(THINK_OPEN):
        # Still thinking when generation stopped: no action was taken.
        return Action("none", reasoning=text.strip()[len(THINK_OPEN):].strip())

    calls: list[ToolCall] = []
    visible: list[str] = []
    pos = 0
    while True:
        start = text.find(CALL_OPEN, pos)
        if start < 0:
            visible.append(text[pos:])
            break
        visible.append(text[pos:start])
        end = text.find(CALL_CLOSE, start)
        body = text[start + len(CALL_OPEN): end if end >= 0 else len(text)]
        calls.extend(_parse_call_block(body, tools or []))
        if end < 0:
            break
        pos = end + len(CALL_CLOSE)
    rest = "".join(visible)
    # Qwen3-Coder models sometimes emit <function=...> without the <tool_call> wrapper.
    if not calls and "<function=" in rest:
        calls = _parse_xml_functions(rest, tools or [])
        rest = _FUNCTION_RE.sub("", rest)
    rest = rest.strip()
    if calls:
        return Action.tool_calls(calls, rest, reasoning)
    if rest:
        return Action.message(rest, reasoning)
    return Action("none", reasoning=reasoning)


def _parse_call_block(body: str, tools: list[dict]) -> list[ToolCall]:
    body = body.strip()
    if body.startswith("<function="):
        return _parse_xml_functions(body, tools)
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        m = _NAME_RE.search(body)
        return [ToolCall(m.group(1) if m else "", None, raw_arguments=body, malformed=True)]
    objs = obj if isinstance(obj, list) else [obj]
    calls = []
    for o in objs:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            calls.append(ToolCall("", None, raw_arguments=body, malformed=True))
            continue
        args = o.get("arguments", o.get("parameters", {}))
        calls.append(ToolCall.from_arguments(o["name"], args))
    return calls


def _parse_xml_functions(text: str, tools: list[dict]) -> list[ToolCall]:
    calls = []
    for fm in _FUNCTION_RE.finditer(text):
        name = fm.group(1).strip()
        tool = find_tool(tools, name)
        props = tool_parameters(tool).get("properties", {}) if tool else {}
        args: dict[str, Any] = {}
        for pm in _PARAM_RE.finditer(fm.group(2)):
            key = pm.group(1).strip()
            args[key] = _typed_xml_value(pm.group(2), props.get(key, {}))
        calls.append(ToolCall(name, args))
    return calls


def _typed_xml_value(raw: str, schema: dict) -> Any:
    """Qwen3-Coder writes every value as text; the tool schema says what type it was."""
    value = raw[1:] if raw.startswith("\n") else raw
    value = value[:-1] if value.endswith("\n") else value
    types = schema.get("type", "string") if isinstance(schema, dict) else "string"
    types = types if isinstance(types, list) else [types]
    if types and all(t == "string" for t in types):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        if "boolean" in types and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value


def _openai_call(call: Any) -> ToolCall:
    if not isinstance(call, dict):
        return ToolCall("", None, raw_arguments=str(call)[:1000], malformed=True)
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return ToolCall("", None, raw_arguments=json.dumps(call, default=str)[:1000], malformed=True)
    return ToolCall.from_arguments(fn["name"], fn.get("arguments", {}))


def _content_text(content: Any) -> str:
    """Text of a content-part list (`[{"type": "text"|"output_text", "text": ...}]`)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "" if content is None else str(content)
