"""`terminus`: the reward of NVIDIA's Terminal pivots (`nvidia/Nemotron-RL-Agentic-Terminal-Pivot-v1`),
as NeMo Gym's `terminus_judge` resources server computes it; `reason` is its `failure_reason`.

An action is a JSON object in a Terminus harness's format, named by the row (`metadata.harness`):
`terminus_2` = `{"analysis", "plan", "commands": [{"keystrokes", "duration"}], "task_complete"?}`,
`terminus_1` = `{"state_analysis", "explanation", "commands": [{"keystrokes", "is_blocking",
"timeout_sec"}], "is_task_complete"}`, no other keys. In order:
- the text after the last `</think>` and the reference must both be JSON (no code fences) ->
  `json_parsing_failed`; an unknown harness -> `unknown_harness`; the candidate must validate
  against the harness's schema -> `schema_check_failed`;
- the completion flags (`task_complete` or `is_task_complete`, absent = false) must be *equal* ->
  `task_complete_check_failed`;
- the keystrokes of all commands, joined by `separator` (a space, as the server's code does today; its
  published example rollouts were scored with them joined by nothing: `separator=""` reproduces
  their recorded similarity scores), must reach a `difflib.SequenceMatcher` ratio of
  `threshold` against the reference's (0.9 as in the server's string-only config; a row's own
  `threshold` wins; two empty command lists are identical, one empty is 0) -> pass (`none`);
- below it, `command_correctness_failed`, unless a `judge` (a callable prompt -> reply, or
  `module:callable`) is given: it is asked whether the two are equivalent (labels `[[A=B]]` /
  `[[A!=B]]`, whichever comes first in the reply), and with `check_twice_swap` asked again with the
  two swapped; a yes (twice) pays 1, a no `judge_evaluation_failed` (`reward_if_swap_fails` when
  only the swapped call says no). Anything that breaks on the way is `unknown_error`.
A row with no harness (a state made from trajectories) has it inferred from the reference's keys
(`infer_harness`, on by default; the server itself would answer `unknown_harness`).
"""

from __future__ import annotations

import json
from difflib import SequenceMatcher
from typing import Any, Callable

import jsonschema

from pivotrl.rewards.base import Score, gym_extra, register_verifier, state_meta

_COMMANDS = {"type": "array"}
SCHEMAS = {
    "terminus_2": {
        "type": "object", "additionalProperties": False, "required": ["analysis", "plan", "commands"],
        "properties": {"analysis": {"type": "string"}, "plan": {"type": "string"}, "task_complete": {"type": "boolean"},
                       "commands": {**_COMMANDS, "items": {
                           "type": "object", "additionalProperties": False, "required": ["keystrokes"],
                           "properties": {"keystrokes": {"type": "string"}, "duration": {"type": "number"}}}}},
    },
    "terminus_1": {
        "type": "object", "additionalProperties": False,
        "required": ["state_analysis", "explanation", "commands", "is_task_complete"],
        "properties": {"state_analysis": {"type": "string"}, "explanation": {"type": "string"},
                       "is_task_complete": {"type": "boolean"},
                       "commands": {**_COMMANDS, "items": {
                           "type": "object", "additionalProperties": False,
                           "required": ["keystrokes", "is_blocking", "timeout_sec"],
                           "properties": {"keystrokes": {"type": "string"}, "is_blocking": {"type": "boolean"},
                                          "timeout_sec": {"type": "number"}}}}},
    },
}
VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in SCHEMAS.items()}
EQUAL, NOT_EQUAL = "[[A=B]]", "[[A!=B]]"
DEFAULT_TEMPLATE = """You grade terminal agents. Decide whether the candidate's keystrokes are functionally \
equivalent to the GOLD keystrokes in this state (the analysis and explanation may help). If their task-complete \
flags differ, they are not equivalent. Give your reason first, then end with exactly one of:
[[A=B]] they are equivalent
[[A!=B]] they are not equivalent

GOLD:
{expected_answer}

CANDIDATE:
{generated_answer}"""


def final_text(completion: Any) -> str:
    """The text the server grades: the last assistant message's text, after the last `</think>`."""
    if isinstance(completion, list):  # chat messages or Responses output items
        for item in reversed(completion):
            if isinstance(item, dict) and item.get("role") == "assistant":
                completion = item.get("content", "")
                break
        else:
            completion = ""
    if isinstance(completion, dict):
        completion = completion.get("content", "")
    if isinstance(completion, list):  # content parts
        completion = "\n".join(p["text"] for p in completion if isinstance(p, dict) and isinstance(p.get("text"), str))
    text = completion.strip() if isinstance(completion, str) else ""
    return text.split("</think>")[-1].strip() if "</think>" in text else text


def keystrokes(action: dict) -> list[str]:
    return [c.get("keystrokes", "") for c in action.get("commands", []) if "keystrokes" in c]


def command_similarity(expected: dict, got: dict, separator: str = " ") -> float:
    want, have = keystrokes(expected), keystrokes(got)
    if not want and not have:
        return 1.0
    if not want or not have:
        return 0.0
    return SequenceMatcher(None, separator.join(want), separator.join(have)).ratio()


def complete(action: dict) -> bool:
    return bool(action.get("task_complete") or action.get("is_task_complete") or False)


def infer_harness(expected: Any) -> str | None:
    if isinstance(expected, dict):
        if "state_analysis" in expected or "is_task_complete" in expected:
            return "terminus_1"
        if "analysis" in expected or "plan" in expected:
            return "terminus_2"
    return None


def verdict(reply: Any) -> bool:
    """Equal when `[[A=B]]` appears before any `[[A!=B]]` (no label: not equal)."""
    text = reply if isinstance(reply, str) else ""
    eq, neq = text.find(EQUAL), text.find(NOT_EQUAL)
    return eq >= 0 and (neq < 0 or eq < neq)


@register_verifier("terminus")
class TerminusVerifier:
    def __init__(self, threshold: float = 0.9, enable_string_similarity: bool = True, harness: str | None = None,
                 infer_harness: bool = True, judge: Callable[[str], str] | str | None = None,
                 judge_prompt_template: str = DEFAULT_TEMPLATE, check_twice_swap: bool = False,
                 reward_if_swap_fails: float = 0.0, separator: str = " "):
        if isinstance(judge, str):
            import importlib

            module, _, attr = judge.partition(":")
            judge = getattr(importlib.import_module(module), attr)
        self.threshold, self.string_similarity = threshold, enable_string_similarity
        self.harness, self.infer = harness, infer_harness
        self.judge, self.template = judge, judge_prompt_template
        self.swap, self.swap_fail_reward = check_twice_swap, float(reward_if_swap_fails)
        self.separator = separator
        self.judge_calls = 0

    def _row(self, state, key: str):
        """A row field: top-level columns and `metadata` of a NeMo Gym row, or the state's own meta."""
        for src in (gym_extra(state), state_meta(state)):
            if key in src:
                return src[key]
            md = src.get("metadata")
            if isinstance(md, dict) and key in md:
                return md[key]
        return None

    def score(self, completion: Any, state) -> Score:
        expected_text = state.reference.text if state.reference.kind == "message" else ""
        text = final_text(completion)
        try:
            expected, got = json.loads(expected_text), json.loads(text)
        except (ValueError, RecursionError):
            return Score(0.0, "json_parsing_failed")
        try:
            return self._grade(expected, got, expected_text, text, state)
        except Exception:  # noqa: BLE001 - as the server: whatever breaks scores 0
            return Score(0.0, "unknown_error")

    def _grade(self, expected, got, expected_text: str, text: str, state) -> Score:
        # (JSON that is not an object fails the schema, as it does upstream)
        harness = self.harness or self._row(state, "harness") or (infer_harness(expected) if self.infer else None)
        if harness not in VALIDATORS:
            return Score(0.0, "unknown_harness")
        if not VALIDATORS[harness].is_valid(got):
            return Score(0.0, "schema_check_failed")
        if complete(expected) != complete(got):
            return Score(0.0, "task_complete_check_failed")
        if self.string_similarity:
            row_threshold = self._row(state, "threshold")
            threshold = row_threshold if row_threshold is not None else self.threshold
            if threshold is None:
                raise ValueError("a string similarity threshold is needed")
            if command_similarity(expected, got, self.separator) >= float(threshold):
                return Score(1.0, "none")
        if self.judge is None:  # string-only mode
            return Score(0.0, "command_correctness_failed")
        if not self._equal(expected_text, text):
            return Score(0.0, "judge_evaluation_failed")
        if self.swap and not self._equal(text, expected_text):
            return Score(self.swap_fail_reward, "judge_evaluation_failed")
        return Score(1.0, "none")

    def _equal(self, expected: str, generated: str) -> bool:
        self.judge_calls += 1
        return verdict(self.judge(self.template.format(expected_answer=expected, generated_answer=generated)))
