"""Functional verifiers for the lab's terminal, code and search actions. They need the task (its
files or documents), which lab states carry in `meta["trajectory_meta"]["task"]`.

- `lab_terminal`: a `run` command is right when it is the reference command up to flag order
  and combined flags, or when, executed in a fresh copy of the task folder through the same
  restricted shell, it leaves the same files and prints the same output, or, for a question
  about a value, both outputs show the asked `key=value` fact (`cat f` and `grep key f` both do).
- `lab_code`: an `edit` is right when applying it to the task's files gives the same file as the
  reference edit; other calls compare as in `tool_call`.
Final messages: for answer tasks the answer must be in the text; otherwise any message.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pivotrl import sandbox
from pivotrl.rewards.base import Score, register_verifier, state_meta
from pivotrl.rewards.parse import parse_action
from pivotrl.rewards.shell import canonical_command
from pivotrl.rewards.tool_call import ToolCallVerifier


def task_of(state) -> dict:
    """The lab task a state came from; {} when the state carries none (or something else there)."""
    meta = state_meta(state)
    traj = meta.get("trajectory_meta") if isinstance(meta.get("trajectory_meta"), dict) else {}
    for task in (traj.get("task"), meta.get("task")):
        if isinstance(task, dict):
            return task
    return {}


def _common(action, state, task: dict) -> Score | None:
    """What every lab verifier decides the same way: no action, a message turn, a message instead
    of a call. None: compare the calls."""
    if action.kind == "none":
        return Score(0.0, "no_action")
    if state.reference.kind == "message":
        return _message_score(action, task)
    if action.kind != "tool_calls":
        return Score(0.0, "message_instead_of_call")
    return None


def _message_score(action, task: dict) -> Score:
    if action.kind != "message":
        return Score(0.0, "call_instead_of_message")
    answer = task.get("answer")
    if answer and task.get("kind", "value") != "create":
        words = action.text.replace(".", " ").split()
        return Score(1.0, "answer_found") if str(answer) in words else Score(0.0, "answer_missing")
    return Score(1.0, "message")


class _LabVerifier:
    """The steps every lab verifier shares: parse the completion, decide what `_common` decides,
    then `compare` the first call with the reference's first call."""

    answer_in_messages = True  # a final message must name the task's answer, when it has one

    def score(self, completion: Any, state) -> Score:
        action, task = parse_action(completion, state.tools), task_of(state)
        decided = _common(action, state, task if self.answer_in_messages else {})
        if decided is not None:
            return decided
        return self.compare(state.reference.calls[0], action.calls[0], task)

    def compare(self, want, got, task: dict) -> Score:
        raise NotImplementedError


@register_verifier("lab_terminal")
class TerminalVerifier(_LabVerifier):
    """The lab terminal's `run`: the same command up to flags, or the same effect in a sandboxed copy of the task folder."""

    def __init__(self, execute: bool = True):
        self.execute = execute
        self._cache: dict[str, Any] = {}
        if execute:
            sandbox.require_sandbox()

    def compare(self, want, got, task: dict) -> Score:
        if got.name != want.name or not isinstance(got.arguments, dict) or not isinstance(got.arguments.get("command"), str):
            return Score(0.0, "wrong_call")
        ref_cmd, cmd = want.arguments.get("command", ""), got.arguments["command"]
        if canonical_command(cmd) is not None and canonical_command(cmd) == canonical_command(ref_cmd):
            return Score(1.0, "same_command")
        if not self.execute or not isinstance(task.get("files"), dict) or not task["files"]:
            return Score(0.0, "different_command")
        (ref_out, ref_tree), (out, tree) = self._effect(task["files"], ref_cmd), self._effect(task["files"], cmd)
        fact = f"{task['key_name']}={task['answer']}" if task.get("key_name") else None
        informs = fact is not None and fact in ref_out and fact in out
        same = ref_tree == tree and (ref_out == out or informs)
        return Score(1.0, "same_effect") if same else Score(0.0, "different_effect")

    def _effect(self, files: dict, command: str):
        from pivotrl.lab.domains.terminal import materialize
        from pivotrl.lab.restricted_shell import RestrictedShell

        key = hashlib.sha1(repr((sorted(files.items()), command)).encode()).hexdigest()
        if key not in self._cache:
            with sandbox.task_folder(prefix="pivotrl-verify-") as root:
                materialize(root, files)
                out = RestrictedShell(root).run(command)
                tree = [entry for entry in sandbox.snapshot(root) if entry[1] != "dir"]
            self._cache[key] = (out, tree)
        return self._cache[key]


@register_verifier("lab_code")
class CodeVerifier(_LabVerifier):
    """The lab code domain's calls: an `edit` that gives the same file, other calls as in `tool_call`."""

    answer_in_messages = False  # a code task ends when its tests pass, not with an answer

    def __init__(self):
        self.calls = ToolCallVerifier(word_count_similarity_threshold=0.1)

    def compare(self, want, got, task: dict) -> Score:
        if want.name == "edit" and got.name == "edit":
            files = task.get("files") or {}
            ref_file, new_file = _apply(files, want.arguments), _apply(files, got.arguments)
            if new_file is not None and new_file == ref_file:
                return Score(1.0, "same_edit")
            return Score(0.0, "different_edit")
        return self.calls.compare_calls([want], [got])


def _apply(files: dict, args: Any) -> tuple | None:
    """(path, new text) after an edit, or None if the edit does not apply."""
    if not isinstance(args, dict) or not all(isinstance(args.get(k), str) for k in ("path", "old", "new")):
        return None
    text = files.get(args["path"])
    if text is None or not args["old"] or args["old"] not in text:
        return None
    return args["path"], text.replace(args["old"], args["new"], 1)


@register_verifier("lab_search")
class SearchVerifier(_LabVerifier):
    """`search` calls are equivalent when the task's BM25 index ranks the same document first for
    both queries; `open` calls need the same document id; the final answer must name the answer."""

    def __init__(self):
        self.calls = ToolCallVerifier(word_count_similarity_threshold=0.1)
        self._envs: dict[str, Any] = {}

    def _top(self, task: dict, query: str) -> str:
        from pivotrl.lab.domains.search import SearchEnv

        key = hashlib.sha1(repr(sorted(task["docs"].items())).encode()).hexdigest()
        if key not in self._envs:
            env = SearchEnv()
            env.reset(docs=task["docs"], answer=task.get("answer", ""))
            self._envs[key] = env
        return self._envs[key].search(query).split("\n")[0].split(":")[0]

    def compare(self, want, got, task: dict) -> Score:
        if want.name == "search" and got.name == "search" and task.get("docs"):
            q = got.arguments.get("query") if isinstance(got.arguments, dict) else None
            if not isinstance(q, str) or not q.strip():
                return Score(0.0, "bad_query")
            same = self._top(task, q) == self._top(task, want.arguments["query"])
            return Score(1.0, "same_top_result") if same else Score(0.0, "different_top_result")
        return self.calls.compare_calls([want], [got])
