"""`shell`: two shell commands are equivalent when they parse to the same programs with the same
arguments, up to flag order and combined short flags (`ls -la` == `ls -a -l`).

With `execute=True` both commands also run, each in its own throwaway copy of `workdir` (or the
state's `meta["workdir"]`), and their exit status, stdout and resulting files are compared. The
candidate is model output, so both run only inside `pivotrl.sandbox` (bubblewrap: the copy is
the only folder it can see or write, no network, time and resource limits); without bubblewrap,
`execute=True` is refused when the verifier is built. A state's `meta["workdir"]` is data, and data
does not choose what the host exposes: it is used only inside `workdir_root`, a folder the caller
names (none by default), and a state whose folder lies elsewhere is refused before any work
(`check`) and scores 0 (`workdir_refused`).
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from pivotrl import sandbox
from pivotrl.errors import DataError
from pivotrl.rewards.base import Score, register_verifier, state_meta
from pivotrl.rewards.parse import parse_action

_OPERATOR_CHARS = set("|&;<>()")
MAX_COMMAND_CHARS = 16_384


def canonical_command(command: str) -> tuple | None:
    """(program, flags, positionals) per pipeline segment, operators kept; None if unparsable."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return None
    segments: list = []
    current: list[str] = []
    for tok in tokens + [";"]:
        if tok and set(tok) <= _OPERATOR_CHARS:
            if current:
                segments.append(_canonical_segment(current))
            if tok != ";" or tokens[-1:] != [tok]:
                segments.append(tok)
            current = []
        else:
            current.append(tok)
    while segments and segments[-1] == ";":
        segments.pop()
    return tuple(segments) if segments else None


def _canonical_segment(tokens: list[str]) -> tuple:
    program, flags, positional, end_of_flags = tokens[0], set(), [], False
    for tok in tokens[1:]:
        if end_of_flags or tok == "-" or not tok.startswith("-"):
            positional.append(tok)
        elif tok == "--":
            end_of_flags = True
        elif tok.startswith("--"):
            flags.add(tok)
        elif tok[1:].isalpha():
            flags.update(f"-{ch}" for ch in tok[1:])  # -la == -l -a
        else:
            flags.add(tok)  # e.g. -n5: value glued on, keep whole
    return (os.path.basename(program), tuple(sorted(flags)), tuple(positional))


@register_verifier("shell")
class ShellCommandVerifier:
    """`argument`: read commands from this argument of the (first) tool call instead of the text."""

    def __init__(self, argument: str | None = None, execute: bool = False, workdir: str | None = None,
                 timeout: float = 5.0, shell: str = "/bin/sh", workdir_root: str | None = None):
        self.argument, self.execute, self.workdir = argument, execute, workdir
        self.timeout, self.shell = float(timeout), shell
        self.workdir_root = os.path.realpath(workdir_root) if workdir_root else None
        if execute:
            sandbox.require_sandbox()

    def state_workdir(self, state) -> str | None:
        """The folder a state's commands run in: ours (`workdir`), else the state's own if it lies
        inside `workdir_root`; raises DataError for one that does not."""
        if self.workdir:
            return self.workdir
        chosen = state_meta(state).get("workdir")
        if chosen is None:
            return None
        real = os.path.realpath(chosen) if isinstance(chosen, str) and "\x00" not in chosen else None
        if real is None or self.workdir_root is None or os.path.commonpath([real, self.workdir_root]) != self.workdir_root:
            raise DataError(f"the state's workdir {chosen!r} is not inside workdir_root "
                            f"({self.workdir_root or 'none given'}): name the folder that holds the task folders "
                            "with the verifier option workdir_root", record=getattr(state, "id", None))
        return real

    def check(self, states, source: str | None = None) -> None:
        """Refuse, before any work, states whose workdir lies outside `workdir_root`."""
        if self.execute:
            for state in states:
                try:
                    self.state_workdir(state)
                except DataError as exc:
                    raise DataError(exc.reason, file=source, record=exc.record) from None

    def command_of(self, action) -> str | None:
        if self.argument is None:
            return action.text if action.kind == "message" else None
        if not action.calls or not isinstance(action.calls[0].arguments, dict):
            return None
        value = action.calls[0].arguments.get(self.argument)
        return value if isinstance(value, str) else None

    def score(self, completion: Any, state) -> Score:
        ref_cmd = self.command_of(state.reference)
        if ref_cmd is None:
            return Score(0.0, "bad_reference")
        action = parse_action(completion, state.tools)
        if action.kind == "none":
            return Score(0.0, "no_action")
        cmd = self.command_of(action)
        if cmd is None:
            return Score(0.0, "no_command")
        if len(cmd) > MAX_COMMAND_CHARS:  # shlex is quadratic in a token's length: 2 MB cost 100 s of CPU
            return Score(0.0, "too_long")
        if self.argument and action.calls[0].name != state.reference.calls[0].name:
            return Score(0.0, "wrong_tool")
        cand = canonical_command(cmd)
        if cand is None:
            return Score(0.0, "unparsable")
        if cand == canonical_command(ref_cmd):
            return Score(1.0, "match")
        try:
            workdir = self.state_workdir(state) if self.execute else None
        except DataError:
            return Score(0.0, "workdir_refused")
        if workdir and os.path.isdir(workdir):
            return Score(1.0, "same_effect") if self.same_effect(ref_cmd, cmd, workdir) else Score(0.0, "different_effect")
        return Score(0.0, "different")

    def same_effect(self, a: str, b: str, workdir: str) -> bool:
        return self._run(a, workdir) == self._run(b, workdir)

    def _run(self, command: str, workdir: str):
        with sandbox.task_folder(prefix="pivotrl-shell-") as root:
            sandbox.copy_into(workdir, root)
            res = sandbox.run_shell(command, root, limits=sandbox.Limits(timeout_s=self.timeout), shell=self.shell)
            out = ("timeout", b"") if res.timed_out else (res.returncode, res.stdout)
            return out, sandbox.snapshot(root)  # files, folders and links, hidden ones too
