"""`terminus`: the reward of NVIDIA's Terminal pivots (`nvidia/Nemotron-RL-Agentic-Terminal-Pivot-v1`),
as NeMo Gym's `terminus_judge` resources server computes it; `reason` is its `failure_reason`.

An action is a JSON object in a Terminus harness's format, named by the row (`metadata.harness`):
`terminus_2` = `{"analysis", "plan", "commands": [{"keystrokes", "duration"}], "task_complete"?}`,
`terminus_1` = `{"state_analysis", "explanation", "commands": [{"keystrokes", "is_blocking",
"timeout_sec"}], "is_task_complete"}`, no other keys. In the server's order:
- the row's `expected_answer` (or `metadata.expected_answer`) must be non-empty JSON of an object
  -> `expected_answer_invalid`;
- the text of every assistant message, joined by newlines, must be non-empty, and the part after
  its last `</think>` a JSON object -> `model_output_invalid`;
- the harness must be known -> `unknown_harness`; the reference must validate against its schema ->
  `expected_answer_invalid`; the candidate too -> `schema_check_failed`;
- a reference that completes the task needs a candidate that does (a candidate may complete where
  the reference does not) -> `task_complete_check_failed`;
- with `enable_string_similarity`, the keystrokes of all commands, joined by `separator` (nothing,
  as the server does), must reach a `difflib.SequenceMatcher` ratio of `string_similarity_threshold`
  (the row's top-level `threshold` wins; two empty command lists are identical, one empty is 0)
  -> pass (`none`); below it `string_similarity_below_threshold`, unless a judge is on;
- with a `judge` (a callable prompt -> reply, or `module:callable`; with `judge_system_message` it
  gets the chat messages instead of the prompt), it is asked whether the two are equivalent; the
  verdict is the *last* label within the reply's final 200 characters, else the first anywhere
  (`judge_equal_label` / `judge_not_equal_label`, `[[A=B]]` / `[[A!=B]]`); no label is
  `judge_parsing_failed`, a no `judge_not_equivalent`; with `check_twice_swap` it is asked again
  with the two swapped: no label there is `judge_swap_parsing_failed` (0), a no pays
  `reward_if_swap_fails` (which may be negative, e.g. -1.0);
- with neither similarity nor judge, passing the checks above pays 1.
Anything else that breaks during the comparison is `unknown_error`, reward 0.

Our defaults are the server's string-only configuration (`terminus_judge_string_only.yaml`:
similarity on at 0.9, no judge). A state made from a trajectory rather than a NeMo Gym row has its
harness inferred from the reference's keys (`infer_harness`, on for such states; the server itself
would answer `unknown_harness`).
"""

from __future__ import annotations

import json
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, Callable

import jsonschema

from pivotrl.rewards.base import Score, call_with_timeout, gym_extra, register_verifier, state_meta

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
VERDICT_TAIL = 200  # the server looks for the final verdict in the reply's last 200 characters first
DEFAULT_TEMPLATE = """You grade terminal agents. Decide whether the candidate's keystrokes are functionally \
equivalent to the GOLD keystrokes in this state (the analysis and explanation may help). If their task-complete \
flags differ, they are not equivalent. Give your reason first, then end with exactly one of:
[[A=B]] they are equivalent
[[A!=B]] they are not equivalent

GOLD:
{expected_answer}

CANDIDATE:
{generated_answer}"""


def _part_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def assistant_text(completion: Any) -> str:
    """The text the server reads: every assistant message's text parts, joined by newlines, stripped.
    A completion is plain text, an assistant message, chat messages or Responses output items."""
    if isinstance(completion, dict) and isinstance(completion.get("output"), list) and "role" not in completion:
        completion = completion["output"]  # a whole Responses API response
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list):
        texts = [t for item in completion if isinstance(item, dict) and item.get("role", "assistant") == "assistant"
                 and item.get("type", "message") == "message" for t in _part_texts(item.get("content"))]
    else:
        texts = [completion] if isinstance(completion, str) else []
    return "\n".join(texts).strip()


def after_thinking(text: str) -> str:
    return text.split("</think>")[-1].strip() if "</think>" in text else text


def final_text(completion: Any) -> str:
    """The text the server grades: `assistant_text` after its last `</think>`."""
    return after_thinking(assistant_text(completion))


def keystrokes(action: dict) -> list[str]:
    return [c.get("keystrokes", "") for c in action.get("commands", []) if "keystrokes" in c]


def command_similarity(expected: dict, got: dict, separator: str = "") -> float:
    want, have = keystrokes(expected), keystrokes(got)
    if not want and not have:
        return 1.0
    if not want or not have:
        return 0.0
    return SequenceMatcher(None, separator.join(want), separator.join(have)).ratio()


def completion_respected(expected: dict, got: dict) -> bool:
    """Only a reference that completes the task binds: the candidate must complete it too."""
    for flag in ("task_complete", "is_task_complete"):
        if expected.get(flag):
            return bool(got.get(flag))
    return True


def infer_harness(expected: Any) -> str | None:
    if isinstance(expected, dict):
        if "state_analysis" in expected or "is_task_complete" in expected:
            return "terminus_1"
        if "analysis" in expected or "plan" in expected:
            return "terminus_2"
    return None


def parse_verdict(reply: Any, equal: str = EQUAL, not_equal: str = NOT_EQUAL) -> bool | None:
    """The judge's verdict as the server reads it: the later label within the last 200 characters,
    else the earlier one anywhere; None when the reply has neither."""
    text = reply if isinstance(reply, str) else ""
    if not text:
        return None
    tail = text[-VERDICT_TAIL:]
    eq, neq = tail.rfind(equal), tail.rfind(not_equal)
    if eq >= 0 or neq >= 0:
        return eq >= 0 and (neq < 0 or eq > neq)
    eq, neq = text.find(equal), text.find(not_equal)
    if eq >= 0 and (neq < 0 or eq < neq):
        return True
    return False if neq >= 0 else None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


@register_verifier("terminus")
class TerminusVerifier:
    def __init__(self, string_similarity_threshold: float = 0.9, enable_string_similarity: bool = True,
                 judge: Callable[[Any], str] | str | None = None, judge_prompt_template: str = DEFAULT_TEMPLATE,
                 judge_prompt_template_fpath: str | None = None, judge_system_message: str | None = None,
                 judge_equal_label: str = EQUAL, judge_not_equal_label: str = NOT_EQUAL,
                 check_twice_swap: bool = False, reward_if_swap_fails: float = 0.0, separator: str = "",
                 harness: str | None = None, infer_harness: bool | None = None, threshold: float | None = None,
                 judge_timeout_s: float | None = 300.0):
        """`threshold` is the older name of `string_similarity_threshold`. `judge_prompt_template_fpath`:
        a template file (NeMo Gym's own, e.g. `prompt_templates/terminus_prompt.txt`), read and
        stripped as the server reads it. `infer_harness`: None infers it only for states that did not
        come from a NeMo Gym row."""
        if isinstance(judge, str):
            import importlib

            module, _, attr = judge.partition(":")
            judge = getattr(importlib.import_module(module), attr)
        if judge_prompt_template_fpath:
            judge_prompt_template = Path(judge_prompt_template_fpath).read_text().strip()
        self.threshold = float(threshold if threshold is not None else string_similarity_threshold)
        self.string_similarity = enable_string_similarity
        self.harness, self.infer = harness, infer_harness
        self.judge, self.template, self.system = judge, judge_prompt_template, judge_system_message
        self.judge_timeout_s = judge_timeout_s  # ours: a judge with no reply this long scores 0 (never hangs a run)
        self.labels = (judge_equal_label, judge_not_equal_label)
        self.swap, self.swap_fail_reward = check_twice_swap, float(reward_if_swap_fails)
        self.separator = separator
        self.judge_calls = 0

    def score(self, completion: Any, state) -> Score:
        expected_text = expected_answer(state)
        if not expected_text:
            return Score(0.0, "expected_answer_invalid")
        generated = assistant_text(completion)
        if not generated:
            return Score(0.0, "model_output_invalid")
        text = after_thinking(generated)
        expected = _json(expected_text)
        if not isinstance(expected, dict):
            return Score(0.0, "expected_answer_invalid")
        got = _json(text)
        if not isinstance(got, dict):
            return Score(0.0, "model_output_invalid")
        harness = self._harness(state, expected)
        if harness not in VALIDATORS:
            return Score(0.0, "unknown_harness")
        if not VALIDATORS[harness].is_valid(expected):
            return Score(0.0, "expected_answer_invalid")
        if not VALIDATORS[harness].is_valid(got):
            return Score(0.0, "schema_check_failed")
        if not completion_respected(expected, got):
            return Score(0.0, "task_complete_check_failed")
        try:
            return self._compare(expected, got, expected_text, text, state)
        except Exception:  # noqa: BLE001 - as the server: what breaks in the comparison scores 0
            return Score(0.0, "unknown_error")

    def _harness(self, state, expected: dict) -> str | None:
        """The server reads `metadata.harness` of the row; a state made from a trajectory may carry it
        in its meta (or have it inferred from the reference's keys)."""
        if self.harness:
            return self.harness
        from_row = "gym" in state_meta(state)
        src = gym_extra(state) if from_row else state_meta(state)
        md = src.get("metadata")
        harness = md.get("harness") if isinstance(md, dict) else None
        if harness is None and not from_row:
            harness = src.get("harness")
        infer = self.infer if self.infer is not None else not from_row
        return harness if harness is not None or not infer else infer_harness(expected)

    def _compare(self, expected: dict, got: dict, expected_text: str, text: str, state) -> Score:
        if self.string_similarity:
            row = gym_extra(state) if "gym" in state_meta(state) else state_meta(state)
            threshold = row.get("threshold")
            threshold = self.threshold if threshold is None else float(threshold)
            if command_similarity(expected, got, self.separator) >= threshold:
                return Score(1.0, "none")
            if self.judge is None:
                return Score(0.0, "string_similarity_below_threshold")
        elif self.judge is None:  # neither similarity nor judge: the checks above decide
            return Score(1.0, "none")
        first = self._ask(expected_text, text)
        if first is None:
            return Score(0.0, "judge_parsing_failed")
        if not first:
            return Score(0.0, "judge_not_equivalent")
        if not self.swap:
            return Score(1.0, "none")
        second = self._ask(text, expected_text)
        if second is None:
            return Score(0.0, "judge_swap_parsing_failed")
        return Score(1.0, "none") if second else Score(self.swap_fail_reward, "judge_not_equivalent")

    def _ask(self, expected: str, generated: str) -> bool | None:
        self.judge_calls += 1
        prompt = self.template.format(expected_answer=expected, generated_answer=generated)
        if self.system:
            prompt = [{"role": "system", "content": self.system}, {"role": "user", "content": prompt}]
        # a hung judge raises TimeoutError here: `unknown_error`, 0, like any failure of the comparison
        return parse_verdict(call_with_timeout(self.judge, prompt, self.judge_timeout_s), *self.labels)


def expected_answer(state) -> str | None:
    """The reference the server grades against: a row's `expected_answer`, else its
    `metadata.expected_answer` (as text, as the server reads it); a state made from a trajectory
    has its message reference."""
    if "gym" in state_meta(state):
        row = gym_extra(state)
        if row.get("expected_answer"):
            return str(row["expected_answer"])
        md = row.get("metadata")
        found = md.get("expected_answer") if isinstance(md, dict) else None
        return None if found is None else str(found)
    reference = state.reference
    return reference.text if reference.kind == "message" else None
