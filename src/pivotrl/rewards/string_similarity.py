"""`string_similarity`: rapidfuzz similarity of the candidate's text (or one argument) to the reference."""

from __future__ import annotations

from typing import Any

from rapidfuzz import fuzz

from pivotrl.rewards.base import Score, register_verifier
from pivotrl.rewards.parse import parse_action

SCORERS = {"ratio": fuzz.ratio, "token_sort_ratio": fuzz.token_sort_ratio,
           "token_set_ratio": fuzz.token_set_ratio, "partial_ratio": fuzz.partial_ratio}


@register_verifier("string_similarity")
class StringSimilarityVerifier:
    """`argument=None` compares message text; `argument="query"` compares that argument of the
    (first) call, after checking the tool name. `threshold` in [0, 1]: reward 1 at or above it, else
    0; `graded=True` returns the similarity itself."""

    def __init__(self, threshold: float = 0.8, graded: bool = False, argument: str | None = None,
                 scorer: str = "token_sort_ratio", lowercase: bool = True):
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {sorted(SCORERS)}")
        self.threshold, self.graded, self.argument = float(threshold), graded, argument
        self.scorer, self.lowercase = SCORERS[scorer], lowercase

    def similarity(self, a: str, b: str) -> float:
        if self.lowercase:
            a, b = a.lower(), b.lower()
        return self.scorer(a.strip(), b.strip()) / 100.0

    def score(self, completion: Any, state) -> Score:
        action = parse_action(completion, state.tools)
        if action.kind == "none":
            return Score(0.0, "no_action")
        ref = state.reference
        if self.argument is None:
            if action.kind != "message":
                return Score(0.0, "call_instead_of_message")
            a, b = ref.text, action.text
        else:
            if not ref.calls or not action.calls:
                return Score(0.0, "no_call")
            if action.calls[0].name != ref.calls[0].name:
                return Score(0.0, "wrong_tool")
            args = action.calls[0].arguments
            a = (ref.calls[0].arguments or {}).get(self.argument)
            b = args.get(self.argument) if isinstance(args, dict) else None
            if not isinstance(a, str) or not isinstance(b, str):
                return Score(0.0, "missing_argument")
        sim = self.similarity(a, b)
        if self.graded:
            return Score(sim, "graded")
        return Score(1.0, "match") if sim >= self.threshold else Score(0.0, "text_different")
