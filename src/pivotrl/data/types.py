"""Core types: a tool call, an action (what one assistant turn does), a trajectory.

Messages stay in OpenAI chat form (`{"role", "content", "tool_calls", "tool_call_id"}`) whatever
the input format was, because that is what tokenizers' chat templates and TRL consume.
Tools stay in OpenAI form too: `{"type": "function", "function": {"name", "description",
"parameters"}}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

ActionKind = Literal["tool_calls", "message", "none"]


@dataclass(frozen=True)
class ToolCall:
    """One function call. `arguments` is the decoded JSON value (normally an object).

    `raw_arguments` keeps the string exactly as it was written, when it was given as a string, so
    that formats which carry strings (NeMo Gym rows, OpenAI messages) round-trip byte for byte and a
    verifier can tell malformed JSON (`malformed=True`, `arguments` None) from a real value.
    """

    name: str
    arguments: Any = field(default_factory=dict)
    raw_arguments: str | None = None
    malformed: bool = False

    @classmethod
    def from_arguments(cls, name: str, arguments: Any) -> ToolCall:
        """Build from a dict or a JSON string (as OpenAI and NeMo Gym carry it)."""
        if isinstance(arguments, str):
            try:
                return cls(name, json.loads(arguments), raw_arguments=arguments)
            except (ValueError, RecursionError):
                return cls(name, None, raw_arguments=arguments, malformed=True)
        return cls(name, {} if arguments is None else arguments)

    @property
    def arguments_json(self) -> str:
        if self.raw_arguments is not None:
            return self.raw_arguments
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self, call_id: str | None = None) -> dict:
        out = {"type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}
        if call_id is not None:
            out["id"] = call_id
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments_json}


@dataclass(frozen=True)
class Action:
    """What one assistant turn does: call tools (one or several in parallel), talk, or nothing.

    `text` is the visible text (after any reasoning block); `reasoning` is the `<think>` part.
    `kind == "none"` is a generation with neither a call nor text, e.g. it ran out of tokens
    while thinking: every verifier scores it 0.
    """

    kind: ActionKind
    calls: tuple[ToolCall, ...] = ()
    text: str = ""
    reasoning: str = ""

    @classmethod
    def message(cls, text: str, reasoning: str = "") -> Action:
        return cls("message", (), text, reasoning)

    @classmethod
    def tool_calls(cls, calls, text: str = "", reasoning: str = "") -> Action:
        return cls("tool_calls", tuple(calls), text, reasoning)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind}
        if self.calls:
            out["calls"] = [c.to_dict() for c in self.calls]
        if self.text:
            out["text"] = self.text
        if self.reasoning:
            out["reasoning"] = self.reasoning
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Action:
        calls = tuple(ToolCall.from_arguments(c["name"], c.get("arguments", {}))
                      for c in d.get("calls", []))
        return cls(d.get("kind", "tool_calls" if calls else "message"), calls,
                   d.get("text", ""), d.get("reasoning", ""))

    def to_message(self) -> dict:
        """The assistant chat message that performs this action."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            msg["tool_calls"] = [c.to_openai(f"call_{i}") for i, c in enumerate(self.calls)]
        return msg


@dataclass
class Trajectory:
    """One multi-turn agent episode in OpenAI chat form, with the tools it could call."""

    id: str
    messages: list[dict]
    tools: list[dict] = field(default_factory=list)
    domain: str = "default"
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"id": self.id, "messages": self.messages, "tools": self.tools, "domain": self.domain}
        if self.meta:
            out["meta"] = self.meta
        return out


def tool_name(tool: dict) -> str | None:
    """Name of a tool schema in OpenAI (`function.name`) or flat Responses (`name`) form."""
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = fn.get("name")
    return name if isinstance(name, str) else None


def tool_parameters(tool: dict) -> dict:
    fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    params = fn.get("parameters")
    return params if isinstance(params, dict) else {}


def find_tool(tools: list[dict], name: str) -> dict | None:
    return next((t for t in tools or [] if tool_name(t) == name), None)
