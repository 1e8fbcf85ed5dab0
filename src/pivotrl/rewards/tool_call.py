"""`tool_call`: the comparison NVIDIA's pivot datasets were profiled and trained with.

Reproduces NeMo Gym's `single_step_tool_use_with_argument_comparison` verifier (the reward of
NVIDIA's tool-use and function-calling pivot datasets) on parsed actions, reward for reward and
reason for reason: the reason names are
that verifier's `StepRewardCategory` members in lower case.

- Expected message: any text with no call scores 1 (the text is not compared).
- Expected call(s): same function name; arguments decoded from JSON and compared recursively:
  `isinstance(actual, type(expected))` (so `True` passes for an expected int, `1` fails for an
  expected float), same object keys, lists of equal length in order, floats within a tolerance,
  strings with fewer than two words on either side equal exactly, otherwise lower-cased
  whitespace word multisets with `overlap / (len_a + len_b) >= threshold` (identical strings
  score 0.5), other scalars equal.
- Several calls: every expected call needs a distinct matching generated call (maximum bipartite
  matching, any order). The number of calls only matters with `parallel_tool_call_rewarding`,
  where `allow_subset` / `allow_superset` gate the count and the mode is `binary_strict`,
  `fractional` or `f1`.

Where a message is expected, any message pays (NeMo Gym's rule, kept by default for parity): a
final answer that says "I cannot help with that." is paid like the right one. `message_check` (a
verifier name, or `{"name": ..., **options}`, e.g. `{"name": "string_similarity", "threshold": 0.6}`
or a `judge`) then decides message turns instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pivotrl.data.types import Action, ToolCall
from pivotrl.rewards.base import Score, build_verifier, register_verifier
from pivotrl.rewards.parse import parse_action

MODES = ("binary_strict", "fractional", "f1")


@register_verifier("tool_call")
class ToolCallVerifier:
    def __init__(self, word_count_similarity_threshold: float = 0.1,
                 floating_point_comparison_threshold: float = 1e-6,
                 parallel_tool_call_rewarding: bool = False, allow_subset: bool = False,
                 allow_superset: bool = False, parallel_tool_call_reward_mode: str = "binary_strict",
                 message_check: Any = None):
        if parallel_tool_call_reward_mode not in MODES:
            raise ValueError(f"parallel_tool_call_reward_mode must be one of {MODES}")
        self.word_threshold = float(word_count_similarity_threshold)
        self.float_tol = float(floating_point_comparison_threshold)
        self.parallel = bool(parallel_tool_call_rewarding)
        self.allow_subset, self.allow_superset = bool(allow_subset), bool(allow_superset)
        self.mode = parallel_tool_call_reward_mode
        self.message_check = build_verifier(message_check) if message_check else None

    def score(self, completion: Any, state) -> Score:
        s = self.compare(state.reference, parse_action(completion, state.tools))
        if self.message_check is not None and s.reason == "expected_chat_message_found":
            return self.message_check.score(completion, state)
        return s

    def compare(self, expected: Action, actual: Action) -> Score:
        if actual.kind == "none":
            return Score(0.0, "no_action_found")
        if expected.kind == "message":
            if actual.kind == "message":
                return Score(1.0, "expected_chat_message_found")
            return Score(0.0, "no_expected_chat_message")
        if actual.kind == "message":
            return Score(0.0, "no_expected_tool_call")
        return self.compare_calls(list(expected.calls), list(actual.calls))

    def compare_calls(self, expected: list[ToolCall], actual: list[ToolCall]) -> Score:
        n_exp, n_act = len(expected), len(actual)
        if n_exp == 1 and n_act == 1:
            return self.compare_call(expected[0], actual[0])
        if not self._count_admissible(n_exp, n_act):
            return Score(0.0, "function_call_batch_length_different")
        candidates, failures = [], []
        for e in expected:
            matches, failure = [], "unexpected_tool"
            for j, a in enumerate(actual):
                s = self.compare_call(e, a)
                if s.reward == 1.0:
                    matches.append(j)
                elif failure == "unexpected_tool":
                    failure = s.reason  # the first near miss past the tool name explains it best
            candidates.append(matches)
            failures.append(failure)
        matching = maximum_matching(candidates)
        reward = self._reward(len(matching), n_exp, n_act)
        if reward == 1.0:
            return Score(1.0, "expected_tool_call" if n_exp == 1 else "expected_tool_call_batch")
        matched = set(matching.values())
        unmatched = [i for i in range(n_exp) if i not in matched]
        if not unmatched or len(matched) == n_act:
            return Score(reward, "function_call_batch_length_different")
        return Score(reward, failures[unmatched[0]])

    def _count_admissible(self, n_exp: int, n_act: int) -> bool:
        if n_exp == n_act or not self.parallel:
            return True
        return self.allow_subset if n_act < n_exp else self.allow_superset

    def _reward(self, matched: int, n_exp: int, n_act: int) -> float:
        if not self.parallel:
            return 1.0 if matched == n_exp else 0.0
        if self.mode == "f1":
            total = n_exp + n_act
            return 2 * matched / total if total else 0.0
        required = min(n_exp, n_act) if self.allow_subset else n_exp
        if self.mode == "fractional":
            return matched / required if required else 0.0
        return 1.0 if matched == required else 0.0

    def compare_call(self, expected: ToolCall, actual: ToolCall) -> Score:
        if expected.name != actual.name:
            return Score(0.0, "unexpected_tool")
        if actual.malformed:
            return Score(0.0, "arguments_decode_error")
        ok, reason = self.compare_values(expected.arguments, actual.arguments)
        return Score(1.0, "expected_tool_call") if ok else Score(0.0, reason)

    def compare_values(self, exp: Any, act: Any) -> tuple[bool, str]:
        if not isinstance(act, type(exp)):
            return False, "argument_value_type_different"
        if isinstance(exp, dict):
            if set(exp) != set(act):
                return False, "argument_object_keys_different"
            for k, v in exp.items():
                ok, reason = self.compare_values(v, act[k])
                if not ok:
                    return ok, reason
            return True, ""
        if isinstance(exp, list):
            if len(exp) != len(act):
                return False, "argument_list_length_different"
            for e, a in zip(exp, act):
                ok, reason = self.compare_values(e, a)
                if not ok:
                    return ok, reason
            return True, ""
        if isinstance(exp, float):
            return (abs(act - exp) < self.float_tol), "argument_value_different"
        if isinstance(exp, str):
            ew, aw = Counter(exp.strip().lower().split()), Counter(act.strip().lower().split())
            ne, na = ew.total(), aw.total()
            if ne < 2 or na < 2:
                return exp == act, "argument_value_different"
            return ((ew & aw).total() / (ne + na) >= self.word_threshold), "argument_value_different"
        return exp == act, "argument_value_different"


def maximum_matching(candidates: list[list[int]]) -> dict[int, int]:
    """Maximum bipartite matching (Kuhn's augmenting paths), generated index -> expected index.

    Written here rather than taken from scipy/networkx because the reason reported for a partial
    match depends on which expected calls end up unmatched, and that depends on the visiting
    order: most-constrained expected calls first, candidates in generation order, as upstream.
    """
    owner: dict[int, int] = {}

    def augment(e: int, seen: set[int]) -> bool:
        for a in candidates[e]:
            if a in seen:
                continue
            seen.add(a)
            if a not in owner or augment(owner[a], seen):
                owner[a] = e
                return True
        return False

    for e in sorted(range(len(candidates)), key=lambda i: len(candidates[i])):
        augment(e, set())
    return owner
