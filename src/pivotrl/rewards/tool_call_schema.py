"""`tool_call_schema`: tool calls compared through the tool's JSON schema.

Stricter than `tool_call` where it matters, looser where it is safe:
- values are coerced by their schema type first (`"3"` -> 3, `"true"` -> True, `3.0` -> 3 for
  an integer, JSON text for an array or object), then the call is validated against the schema
  (jsonschema): a call the tool would reject scores 0 (`schema_invalid`);
- an optional argument equal to the schema default counts as absent;
- enum strings compare after case and whitespace normalisation;
- identifiers (strings without spaces) must be equal; free text (strings with spaces) compares
  by rapidfuzz similarity against `text_threshold` (0-100);
- numbers compare by value (`1 == 1.0`);
- parallel calls compare as a multiset: same count, each expected call matched by a distinct
  generated call, in any order.
Messages: any text scores 1 where text was expected (as `tool_call`); layer a text verifier via
`dispatch` to compare the text itself.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jsonschema
from rapidfuzz import fuzz

from pivotrl.data.types import Action, ToolCall, find_tool, tool_parameters
from pivotrl.rewards.base import Score, build_verifier, register_verifier
from pivotrl.rewards.parse import parse_action
from pivotrl.rewards.tool_call import maximum_matching

_SPACE = re.compile(r"\s+")


def _norm(s: str) -> str:
    return _SPACE.sub(" ", s.strip().lower())


@register_verifier("tool_call_schema")
class SchemaToolCallVerifier:
    def __init__(self, text_threshold: float = 85.0, validate: bool = True, message_check: Any = None):
        """`message_check`: a verifier for message turns (as `tool_call`'s); without it any message pays."""
        self.text_threshold = float(text_threshold)
        self.validate = validate
        self.message_check = build_verifier(message_check) if message_check else None

    def score(self, completion: Any, state) -> Score:
        actual = parse_action(completion, state.tools)
        expected: Action = state.reference
        if actual.kind == "none":
            return Score(0.0, "no_action")
        if expected.kind == "message":
            if actual.kind != "message":
                return Score(0.0, "call_instead_of_message")
            return self.message_check.score(completion, state) if self.message_check else Score(1.0, "any_message")
        if actual.kind == "message":
            return Score(0.0, "message_instead_of_call")
        if len(actual.calls) != len(expected.calls):
            return Score(0.0, "call_count_different")
        candidates, reasons = [], []
        for e in expected.calls:
            row, first = [], None
            for j, a in enumerate(actual.calls):
                s = self.compare_call(e, a, state.tools)
                if s.reward == 1.0:
                    row.append(j)
                elif first is None or first == "wrong_tool":
                    first = s.reason
            candidates.append(row)
            reasons.append(first or "wrong_tool")
        matching = maximum_matching(candidates)
        if len(matching) == len(expected.calls):
            return Score(1.0, "match")
        matched = set(matching.values())
        return Score(0.0, next(reasons[i] for i in range(len(expected.calls)) if i not in matched))

    def compare_call(self, expected: ToolCall, actual: ToolCall, tools: list[dict]) -> Score:
        if expected.name != actual.name:
            return Score(0.0, "wrong_tool")
        if actual.malformed or not isinstance(actual.arguments, dict):
            return Score(0.0, "bad_json")
        tool = find_tool(tools, expected.name)
        schema = tool_parameters(tool) if tool else {}
        got = canonical_arguments(actual.arguments, schema)
        if self.validate and schema:
            try:
                jsonschema.validate(got, schema)
            except jsonschema.ValidationError:
                return Score(0.0, "schema_invalid")
            except jsonschema.SchemaError:
                pass  # a broken tool schema is the dataset's problem, not the completion's
        want = canonical_arguments(expected.arguments, schema)
        if set(want) != set(got):
            return Score(0.0, "wrong_arguments")
        props = schema.get("properties", {}) if isinstance(schema.get("properties"), dict) else {}
        for key, value in want.items():
            if not self.values_equal(value, got[key], props.get(key, {})):
                return Score(0.0, "wrong_value")
        return Score(1.0, "match")

    def values_equal(self, a: Any, b: Any, schema: dict) -> bool:
        schema = schema if isinstance(schema, dict) else {}
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
        if isinstance(a, str) and isinstance(b, str):
            if "enum" in schema or " " not in a.strip():
                return _norm(a) == _norm(b) if "enum" in schema else a.strip() == b.strip()
            return fuzz.ratio(_norm(a), _norm(b)) >= self.text_threshold
        if isinstance(a, list) and isinstance(b, list):
            item = schema.get("items", {})
            return len(a) == len(b) and all(self.values_equal(x, y, item) for x, y in zip(a, b))
        if isinstance(a, dict) and isinstance(b, dict):
            props = schema.get("properties", {}) if isinstance(schema.get("properties"), dict) else {}
            return set(a) == set(b) and all(self.values_equal(a[k], b[k], props.get(k, {})) for k in a)
        return a == b


def canonical_arguments(args: dict, schema: dict) -> dict:
    """Coerce each value to its schema type and drop optional arguments equal to their default."""
    props = schema.get("properties", {}) if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required", []) or [])
    out = {}
    for key, value in args.items():
        spec = props.get(key, {}) if isinstance(props.get(key), dict) else {}
        value = coerce(value, spec)
        if key not in required and "default" in spec and value == coerce(spec["default"], spec):
            continue
        out[key] = value
    return out


def coerce(value: Any, spec: dict) -> Any:
    """Best-effort conversion of `value` to the JSON-schema type in `spec`; unchanged if it fails."""
    types = spec.get("type")
    types = types if isinstance(types, list) else [types] if types else []
    if isinstance(value, str):
        text = value.strip()
        enum = spec.get("enum")
        if isinstance(enum, list):  # " Business " -> "business": the member it normalises to
            hit = next((m for m in enum if isinstance(m, str) and _norm(m) == _norm(value)), None)
            if hit is not None:
                return hit
        if "integer" in types and re.fullmatch(r"[+-]?\d+(\.0*)?", text):
            return int(float(text)) if "." in text else int(text)
        if "number" in types:
            try:
                num = float(text)
                if math.isfinite(num):
                    return int(num) if num.is_integer() and "." not in text and "e" not in text.lower() else num
            except ValueError:
                pass
        if "boolean" in types and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if ("array" in types or "object" in types) and text[:1] in "[{":
            try:
                return coerce(json.loads(text), spec)
            except (ValueError, RecursionError):
                return value
        return value
    if isinstance(value, float) and "integer" in types and value.is_integer():
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and types == ["string"]:
        return str(value)
    if isinstance(value, list) and isinstance(spec.get("items"), dict):
        return [coerce(v, spec["items"]) for v in value]
    if isinstance(value, dict) and isinstance(spec.get("properties"), dict):
        return canonical_arguments(value, spec)
    return value
