"""`swe_pivot`: the reward of NVIDIA's SWE pivots (`nvidia/Nemotron-RL-Agentic-SWE-Pivot-v1`), as
NeMo Gym's `swe_pivot` resources server computes it, rule for rule and failure code for failure code
(`reason` is the server's `failure_reason`: `none` when the action passes).

Layered, cheapest first, no judge; the first call of the completion against the expected call:
- level 0, tool: the same name (any case), or two names of one category (edit, bash, search,
  read, finish, think, planning; NVIDIA's table of agent-framework tool names, snake or CamelCase);
  unknown names match only themselves -> `tool_name_mismatch`;
- level 1, target (`enable_target_match`) -> `target_mismatch`: edits need the same editor
  sub-command, the same file by its last two path components and, for views, a range covering 80%
  of the expected one; shell commands the same verb, a shared path (last three components) when both
  name paths, and a similarity of at least 0.3; searches and reads the same path (last three);
- level 2, arguments (`enable_argument_similarity`): `difflib` similarity on at most 2,000
  characters (edits: the worse of old and new text; shell: the command); binary mode pays 1 from
  `similarity_full_credit` (0.8) on, continuous mode 0.5 to 1 between `similarity_threshold` (0.4)
  and 0.8 -> below, `similarity_below_threshold`;
- level 4, continuous mode only (`enable_diff_size_shaping`): an edit of N characters keeps
  `1 - diff_size_alpha * min(N / 500, 1)` of its reward.
An expected action that is not one function call is `expected_action_invalid`; a completion with no
call is `model_output_invalid` (a Responses output is read as the server reads it: its first
`function_call` item, never call blocks written in message text); anything that breaks on the way is
`unknown_error`, reward 0.
"""

from __future__ import annotations

import json
import re
from difflib import SequenceMatcher
from typing import Any

from pivotrl.rewards.base import Score, register_verifier
from pivotrl.rewards.parse import parse_action

CATEGORIES = {
    "edit": ["str_replace_editor", "text_editor", "file_editor", "code_editor", "edit_file", "modify_file",
             "update_file", "file_edit", "edit", "modify", "apply_patch", "patch_file", "apply_diff", "apply_changes",
             "write", "write_file", "save_file", "create_file"],
    "bash": ["execute_bash", "run_bash", "bash_exec", "shell_run", "shell", "bash", "terminal", "shell_command",
             "shell_cmd", "run_shell_cmd", "exec_command", "exec_cmd"],
    "search": ["grep", "search_text", "find_pattern", "text_search", "glob", "find_files", "file_glob", "match_files",
               "grep_files", "search_files", "find_in_files", "code_search", "list_dir", "ls", "show_dir", "ls_dir",
               "list_directory"],
    "read": ["read", "read_file", "view_file", "cat_file", "view", "file_view", "inspect", "show_file",
             "read_file_content"],
    "finish": ["finish", "submit"],
    "think": ["think"],
    "planning": ["task_tracker", "todo_tracker", "plan_tracker", "todo_read", "todo_write", "update_plan", "list_tasks",
                 "update_tasks", "read_todos", "write_todos", "edit_plan", "modify_plan"],
}
# snake_case and CamelCase spellings, looked up lower-cased; a later category wins a shared name
# ("view" is a read tool), as in NVIDIA's table.
CATEGORY_OF = {spelling.lower(): cat for cat, names in CATEGORIES.items() for name in names
               for spelling in (name, "".join(w.capitalize() for w in name.split("_")))}
MAX_CHARS = 2000          # difflib is quadratic: compare at most this much of each side
BASH_FLOOR = 0.3          # level 1: a shell command at least this similar (no verb-only matches)
FULL_EDIT_SIZE = 500      # level 4: an edit this long takes the whole penalty
PATH_IN_COMMAND = re.compile(r"""(?:^|[\s='"(])((?:/[\w._-]+)+|\.\.?/[\w._/-]+|[\w._-]+/[\w._/-]+)""")


def tool_category(name: str) -> str:
    return CATEGORY_OF.get(name.lower(), "unknown")


def similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, a[:MAX_CHARS], b[:MAX_CHARS]).ratio()


def path_tail(path: str, parts: int = 3) -> str:
    """The last `parts` components: the same file under another repository root."""
    return "/".join(path.strip("/").split("/")[-parts:])


def _first(args, keys) -> str:
    return next((str(args[k]).strip() for k in keys if k in args), "")


def file_of(args) -> str:
    return _first(args, ("path", "file", "file_path", "filename", "file_name"))


def command_of(args) -> str:
    return _first(args, ("command", "cmd"))


def verb_of(command: str) -> str:
    words = command.split()
    return words[0].rsplit("/", 1)[-1] if words else ""


def paths_in(command: str) -> list[str]:
    return [p for p in PATH_IN_COMMAND.findall(command) if not p.startswith("--") and len(p) > 2]


def edit_text(args) -> str:
    if "new_str" in args:
        return f"{args.get('old_str', '')}\n{args['new_str']}"
    for key in ("patch", "diff"):
        if key in args:
            return str(args[key])
    if "content" in args or "file_text" in args:
        return str(args.get("content", args.get("file_text", "")))
    return ""


def view_range(raw) -> tuple[int, int] | None:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if isinstance(raw, list) and len(raw) == 2:
        try:
            return int(raw[0]), int(raw[1])
        except (TypeError, ValueError):
            return None
    return None


def same_tool(got_name: str, got_cat: str, want_name: str, want_cat: str) -> bool:
    return got_name.lower() == want_name.lower() or (got_cat == want_cat != "unknown")


def same_target(got_cat: str, got, want_cat: str, want) -> bool:
    if got_cat == want_cat == "edit":
        got_sub, want_sub = str(got.get("command", "")), str(want.get("command", ""))
        if got_sub and want_sub and got_sub != want_sub:
            return False
        got_file, want_file = file_of(got), file_of(want)
        if got_file and want_file and path_tail(got_file, 2) != path_tail(want_file, 2):
            return False
        if got_sub == want_sub == "view":
            got_range, want_range = view_range(got.get("view_range")), view_range(want.get("view_range"))
            if got_range and want_range:  # no range views the whole file, which covers any range
                overlap = max(0, min(got_range[1], want_range[1]) - max(got_range[0], want_range[0]))
                if overlap / max(1, want_range[1] - want_range[0]) < 0.8:
                    return False
        return True
    if got_cat == want_cat == "bash":
        got_cmd, want_cmd = command_of(got), command_of(want)
        got_verb, want_verb = verb_of(got_cmd), verb_of(want_cmd)
        if got_verb and want_verb and got_verb != want_verb:
            return False
        got_tails = {path_tail(p.rstrip("/")) for p in paths_in(got_cmd)} - {""}
        want_tails = {path_tail(p.rstrip("/")) for p in paths_in(want_cmd)} - {""}
        if got_tails and want_tails and not got_tails & want_tails:
            return False
        return not (got_cmd and want_cmd and similarity(got_cmd, want_cmd) < BASH_FLOOR)
    if got_cat in ("search", "read") and want_cat in ("search", "read"):
        got_file, want_file = file_of(got), file_of(want)
        return not (got_file and want_file) or path_tail(got_file) == path_tail(want_file)
    return True


def argument_similarity(got_cat: str, got, want_cat: str, want) -> float:
    if got_cat == want_cat == "edit":
        got_old, want_old = str(got.get("old_str", "")), str(want.get("old_str", ""))
        got_new, want_new = str(got.get("new_str", "")), str(want.get("new_str", ""))
        if (got_old or got_new) and (want_old or want_new):  # str_replace: the place and the fix, each

            def part(a: str, b: str) -> float:
                return similarity(a, b) if a and b else float(a == b)

            return min(part(got_old, want_old), part(got_new, want_new))
        got_text, want_text = edit_text(got), edit_text(want)
        if got_text and want_text:
            return similarity(got_text, want_text)
        return 0.0 if bool(got_text) != bool(want_text) else 1.0
    if got_cat == want_cat == "bash":
        got_cmd, want_cmd = command_of(got), command_of(want)
        return similarity(got_cmd, want_cmd) if got_cmd and want_cmd else 1.0
    return 1.0


def _arguments(call) -> Any:
    """A call's arguments as the server sees them: the decoded JSON value, whatever it is (`null`, a
    string or a list make the comparison break, `unknown_error`, as they do there), {} for text that
    is not JSON."""
    return {} if call.malformed else call.arguments


@register_verifier("swe_pivot")
class SwePivotVerifier:
    def __init__(self, reward_mode: str = "binary", enable_target_match: bool = True,
                 enable_argument_similarity: bool = True, similarity_threshold: float = 0.4,
                 similarity_full_credit: float = 0.8, enable_diff_size_shaping: bool = True,
                 diff_size_alpha: float = 0.1):
        if reward_mode not in ("binary", "continuous"):
            raise ValueError(f"reward_mode must be binary or continuous, not {reward_mode!r}")
        self.reward_mode, self.target, self.arguments = reward_mode, enable_target_match, enable_argument_similarity
        self.threshold, self.full_credit = float(similarity_threshold), float(similarity_full_credit)
        self.shaping, self.alpha = enable_diff_size_shaping, float(diff_size_alpha)

    def score(self, completion: Any, state) -> Score:
        reference = state.reference
        if reference.kind != "tool_calls" or not reference.calls:
            return Score(0.0, "expected_action_invalid")
        action = parse_action(completion, state.tools)
        if action.kind != "tool_calls" or not action.calls:
            return Score(0.0, "model_output_invalid")
        try:
            return self._compare(action.calls[0], reference.calls[0])
        except Exception:  # noqa: BLE001 - the server scores any breakage 0 as unknown_error
            return Score(0.0, "unknown_error")

    def _compare(self, got_call, want_call) -> Score:
        got, want = _arguments(got_call), _arguments(want_call)
        got_cat, want_cat = tool_category(got_call.name), tool_category(want_call.name)
        if not same_tool(got_call.name, got_cat, want_call.name, want_cat):
            return Score(0.0, "tool_name_mismatch")
        if self.target and not same_target(got_cat, got, want_cat, want):
            return Score(0.0, "target_mismatch")
        reward = 1.0
        if self.arguments:
            sim = argument_similarity(got_cat, got, want_cat, want)
            if sim >= self.full_credit:
                reward = 1.0
            elif self.reward_mode == "continuous" and sim >= self.threshold:
                reward = 0.5 + 0.5 * (sim - self.threshold) / (self.full_credit - self.threshold)
            else:
                return Score(0.0, "similarity_below_threshold")
        if self.shaping and self.reward_mode == "continuous" and got_cat == "edit":
            text = edit_text(got)
            reward *= 1.0 - self.alpha * min(len(text) / FULL_EDIT_SIZE, 1.0)
        return Score(reward, "none")
