"""`exact`: the ablation baseline. Reward 1 only for the demonstration's exact spelling: same
tool names in the same order with the same arguments in the same key order, or the same text."""

from __future__ import annotations

import json
from typing import Any

from pivotrl.data.types import Action
from pivotrl.rewards.base import Score, register_verifier
from pivotrl.rewards.parse import parse_action


def canonical_text(action: Action) -> str:
    if action.kind == "tool_calls":
        # json.dumps keeps key order and distinguishes 1 from 1.0: an exact comparison.
        return "\n".join(f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})" for c in action.calls)
    return action.text.strip()


@register_verifier("exact")
class ExactMatchVerifier:
    def score(self, completion: Any, state) -> Score:
        action = parse_action(completion, state.tools)
        if action.kind == "none":
            return Score(0.0, "no_action")
        if any(c.malformed for c in action.calls):
            return Score(0.0, "bad_json")
        same = action.kind == state.reference.kind and canonical_text(action) == canonical_text(state.reference)
        return Score(1.0, "match") if same else Score(0.0, "different")
