"""`terminus`: terminal actions in the Terminus harness JSON format (as in NVIDIA's
`Nemotron-RL-Agentic-Terminal-Pivot-v1` rows).

An action is a JSON object `{"analysis", "plan", "commands": [{"keystrokes", "duration"}],
"task_complete"}`. The candidate must validate against that schema; if the reference marks the
task complete the candidate must too; and the concatenated keystrokes must reach a
`difflib.SequenceMatcher` ratio of `threshold` (0.9; a row's own `threshold` overrides it).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import jsonschema

from pivotrl.rewards.base import Score, gym_extra, register_verifier, state_meta
from pivotrl.rewards.parse import parse_action

TERMINUS_SCHEMA = {
    "type": "object",
    "properties": {
        "analysis": {"type": "string"},
        "plan": {"type": "string"},
        "commands": {"type": "array", "items": {
            "type": "object",
            "properties": {"keystrokes": {"type": "string"}, "duration": {"type": "number"}},
            "required": ["keystrokes"]}},
        "task_complete": {"type": "boolean"},
    },
    "required": ["commands"],
}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_VALIDATOR = jsonschema.Draft202012Validator(TERMINUS_SCHEMA)
MAX_KEYSTROKES = 20_000  # SequenceMatcher is quadratic: longer input is cut before comparing


def parse_terminus(text: str) -> dict | None:
    text = text.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and _VALIDATOR.is_valid(obj) else None


def keystrokes(action: dict) -> str:
    return "".join(c["keystrokes"] for c in action["commands"])


@register_verifier("terminus")
class TerminusVerifier:
    def __init__(self, threshold: float = 0.9):
        self.threshold = float(threshold)

    def score(self, completion: Any, state) -> Score:
        ref = parse_terminus(state.reference.text)
        if ref is None:
            return Score(0.0, "bad_reference")
        action = parse_action(completion, state.tools)
        if action.kind == "none":
            return Score(0.0, "no_action")
        cand = parse_terminus(action.text)
        if cand is None:
            return Score(0.0, "schema_invalid")
        if ref.get("task_complete") is True and cand.get("task_complete") is not True:
            return Score(0.0, "not_complete")
        threshold = _row_threshold(state, self.threshold)
        a, b = keystrokes(ref)[:MAX_KEYSTROKES], keystrokes(cand)[:MAX_KEYSTROKES]
        ratio = difflib.SequenceMatcher(None, a, b).ratio()
        return Score(1.0, "match") if ratio >= threshold else Score(0.0, "keystrokes_different")


def _row_threshold(state, default: float) -> float:
    for src in (state_meta(state), gym_extra(state)):
        if isinstance(src.get("threshold"), (int, float)) and not isinstance(src["threshold"], bool):
            return float(src["threshold"])
    return default
