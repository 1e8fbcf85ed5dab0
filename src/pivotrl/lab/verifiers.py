"""Functional verifiers for the lab's four domains. They need the task a state came from (its
database, files or documents), which lab states carry in `meta["trajectory_meta"]["task"]`, and
they judge an action by what it does in the domain's real environment, brought to the state by
replaying the context's tool calls:

- a tool call is right when it has the same effect as the demonstrated call: the same output and
  the same environment state after it (orders, files). Identifiers (names, zips, order ids,
  document ids) therefore count exactly, and any surface form that does the same is accepted;
- `lab_terminal` also accepts the reference command up to flag order and combined flags, and, for
  a question about a value, an output that shows the asked `key=value` fact as the reference's does
  (`cat f` and `grep key f` both do);
- `lab_search` accepts a `search` whose results (the top 3 the tool shows) list the document the
  demonstrated query ranks first: what the episode needs, since the next turn opens it from the list;
- a final message is right when the environment's own success test passes with it (what the task
  checks: the order and its status named, the answer given, the tests passing).

`pivotrl lab audit` measures how often these verdicts agree with the episode's outcome.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

from pivotrl import sandbox
from pivotrl.errors import DataError
from pivotrl.lab.domains import IN_DOMAIN, LONG_HORIZON
from pivotrl.lab.domains.base import get_domain, replay, task_of
from pivotrl.lab.domains.terminal import shows_fact
from pivotrl.rewards import get_verifier
from pivotrl.rewards.base import Score, register_verifier
from pivotrl.rewards.parse import parse_action
from pivotrl.rewards.shell import canonical_command


def lab_verifier_options() -> dict:
    """The lab's functional verifier as a `dispatch` config: each domain's own verifier."""
    return {"default": "tool_call", "by_domain": {
        name: {"name": get_domain(name).verifier, **get_domain(name).verifier_options} for name in IN_DOMAIN + LONG_HORIZON}}


def lab_verifier():
    """The lab's functional verifier, as profiling, the gate and the audit score actions."""
    return get_verifier("dispatch", **lab_verifier_options())


def lab_domain(task: dict):
    """The lab domain a task belongs to, or None (a state from elsewhere)."""
    try:
        return get_domain(task["domain"]) if isinstance(task.get("domain"), str) else None
    except DataError:
        return None


def close(env) -> None:
    cleanup = getattr(env, "_cleanup", None)
    if cleanup:
        cleanup()


class _NotReplayable(Exception):
    """The task or context (data, not model output) cannot be replayed."""


def _replayed(domain, task: dict, context):
    """The environment at the state; `_NotReplayable` when the state's task or context cannot be
    replayed, which `score` turns into 0 with a reason: a malformed state never crashes a run."""
    try:
        return replay(domain, task, context)
    except sandbox.SandboxUnavailable:
        raise
    except Exception as exc:
        raise _NotReplayable from exc


class _LabVerifier:
    """The steps every lab verifier shares: parse the completion; a message is judged by the task's
    own check; a call by `compare` with the reference's first call (default: the same effect)."""

    def __init__(self):
        self._effects: OrderedDict[str, tuple] = OrderedDict()  # small LRU: a state's K samples share its reference

    def score(self, completion: Any, state) -> Score:
        action, task = parse_action(completion, state.tools), task_of(state)
        if action.kind == "none":
            return Score(0.0, "no_action")
        if state.reference.kind == "message":
            if action.kind != "message":
                return Score(0.0, "call_instead_of_message")
            return self.judge_message(action.text, state, task)
        if action.kind != "tool_calls":
            return Score(0.0, "message_instead_of_call")
        try:
            return self.compare(state.reference.calls[0], action.calls[0], task, state)
        except _NotReplayable:
            return Score(0.0, "task_does_not_replay")

    def judge_message(self, text: str, state, task: dict) -> Score:
        domain = lab_domain(task)
        if domain is None:  # no task to check against: any message ends the episode
            return Score(1.0, "message")
        try:
            env = _replayed(domain, task, state.context)
        except _NotReplayable:
            return Score(0.0, "task_does_not_replay")
        try:
            env.final_message = text
            ok = env.get_reward() == 1.0
        except Exception:  # a broken check is a failed check, never a crash
            ok = False
        finally:
            close(env)
        return Score(1.0, "task_check_passed") if ok else Score(0.0, "task_check_failed")

    def compare(self, want, got, task: dict, state) -> Score:
        if got.malformed or got.name != want.name:
            return Score(0.0, "wrong_call")
        if lab_domain(task) is None:
            return Score(0.0, "no_task")
        same = self.effect(task, state, want.name, want.arguments) == self.effect(task, state, got.name, got.arguments)
        return Score(1.0, "same_effect") if same else Score(0.0, "different_effect")

    def effect(self, task: dict, state, name: str, arguments: Any) -> tuple:
        """(output, environment state) after the call, from the state's context; memoised.
        Raises `_NotReplayable` (scored by `score`) when the state cannot be replayed."""
        from pivotrl.eval.episodes import call_tool

        key = hashlib.sha1(json.dumps([task.get("id"), state.context, name, arguments], sort_keys=True,
                                      default=str).encode()).hexdigest()
        if key in self._effects:
            self._effects.move_to_end(key)
            return self._effects[key]
        env = _replayed(lab_domain(task), task, state.context)
        try:
            out = call_tool(env, name, arguments)
            after = env._state() if hasattr(env, "_state") else None
        finally:
            close(env)
        self._effects[key] = (out, after)
        while len(self._effects) > 256:
            self._effects.popitem(last=False)
        return out, after


@register_verifier("lab_store")
class StoreVerifier(_LabVerifier):
    """The store's calls: the same output and the same orders after the call."""


@register_verifier("lab_terminal")
class TerminalVerifier(_LabVerifier):
    """The lab terminal's `run`: the same command up to flags, or the same effect in a sandboxed
    copy of the task folder (`execute=False`: the same command only)."""

    def __init__(self, execute: bool = True):
        super().__init__()
        self.execute = execute
        if execute:
            sandbox.require_sandbox()

    def compare(self, want, got, task: dict, state) -> Score:
        if got.name != want.name or not isinstance(got.arguments, dict) or not isinstance(got.arguments.get("command"), str):
            return Score(0.0, "wrong_call")
        ref_cmd, cmd = want.arguments.get("command", ""), got.arguments["command"]
        if canonical_command(cmd) is not None and canonical_command(cmd) == canonical_command(ref_cmd):
            return Score(1.0, "same_command")
        if not self.execute or lab_domain(task) is None:
            return Score(0.0, "different_command")
        (ref_out, ref_tree), (out, tree) = (self.effect(task, state, want.name, want.arguments),
                                            self.effect(task, state, got.name, got.arguments))
        fact = f"{task['key_name']}={task['answer']}" if task.get("key_name") else None
        informs = fact is not None and shows_fact(ref_out, fact) and shows_fact(out, fact)
        same = ref_tree == tree and (ref_out == out or informs)
        return Score(1.0, "same_effect") if same else Score(0.0, "different_effect")


@register_verifier("lab_code")
class CodeVerifier(_LabVerifier):
    """The code domain's calls: the same output and the same files after the call (an `edit` that
    gives the same file, a `view` of the same file, `run_tests`)."""


@register_verifier("lab_search")
class SearchVerifier(_LabVerifier):
    """A `search` is right when its results list the document the reference query ranks first (the
    one the expert opens next); other calls need the same effect (`open` the same document)."""

    def compare(self, want, got, task: dict, state) -> Score:
        if want.name == "search" and got.name == "search" and lab_domain(task) is not None:
            q = got.arguments.get("query") if isinstance(got.arguments, dict) else None
            if not isinstance(q, str) or not q.strip():
                return Score(0.0, "bad_query")
            listed = [line.split(": ", 1)[0] for line in self.effect(task, state, "search", {"query": q})[0].splitlines()
                      if ": " in line]
            ref = self.effect(task, state, "search", want.arguments)[0].splitlines()
            ref_top = ref[0].split(": ", 1)[0] if ref and ": " in ref[0] else None
            return Score(1.0, "finds_the_document") if ref_top in listed else Score(0.0, "misses_the_document")
        return super().compare(want, got, task, state)
