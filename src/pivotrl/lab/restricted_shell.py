"""The terminal domain's shell: real programs on real files, inside one folder, and nothing else.

Two layers. The first is this parser, which keeps the agent's commands to a small shell:
- only allow-listed programs; a pipeline of them (`|`) and one final `>`/`>>` redirect are the
  only syntax accepted (no `;`, `&&`, `$(...)`, backticks, `<`; globs are not expanded);
- path-like arguments, and paths attached to options (`-t/abs`, `--out=/abs`), must stay inside
  the task folder, and options that run programs or read file lists are refused.
The second, which does not trust the first, is `pivotrl.sandbox`: the accepted pipeline runs in a
bubblewrap sandbox where only the task folder exists and is writable, with time, CPU, memory,
file-size, process and output limits. Refusals and failures are returned as text, so an agent
reads why and the episode goes on; `run` never raises.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from pivotrl import sandbox

ALLOWED = frozenset({"ls", "cat", "head", "tail", "wc", "grep", "sort", "uniq", "echo", "mkdir", "touch", "cp", "mv",
                     "rm", "cut", "tr", "pwd"})
FORBIDDEN_TEXT = ("$(", "`", "${")
FORBIDDEN_TOKENS = {";", "&&", "||", "&", "<", "<<", "<<<", "(", ")", ">&", "&>", ";;"}
# Options of allowed programs that run another program or read a list of files named elsewhere.
FORBIDDEN_OPTIONS = ("--compress-program", "--files0-from", "--exclude-from", "--include-from")
MAX_COMMAND_CHARS = 16_384


class Refused(Exception):
    pass


class RestrictedShell:
    def __init__(self, root: str | Path, timeout: float = 3.0, max_output: int = 2000):
        self.root = Path(root).resolve()
        self.timeout, self.max_output = timeout, max_output

    def run(self, command: str) -> str:
        if not isinstance(command, str):
            return "refused: the command must be a string"
        if len(command) > MAX_COMMAND_CHARS:  # shlex is quadratic in a token's length
            return f"refused: the command is longer than {MAX_COMMAND_CHARS} characters"
        try:
            segments, redirect = self.parse(command)
        except Refused as exc:
            return f"refused: {exc}"
        return self._execute(segments, redirect)

    def parse(self, command: str) -> tuple[list[list[str]], tuple[str, str] | None]:
        if "\x00" in command:
            raise Refused("NUL bytes are not allowed")
        if any(t in command for t in FORBIDDEN_TEXT):
            raise Refused("command substitution and variables are not allowed")
        try:
            lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            raise Refused(f"cannot parse: {exc}") from None
        if not tokens:
            raise Refused("empty command")
        redirect = None
        if len(tokens) >= 2 and tokens[-2] in (">", ">>"):
            self.inside(tokens[-1])
            redirect = (tokens[-2], tokens[-1])
            tokens = tokens[:-2]
        segments, current = [], []
        for tok in tokens:
            if tok in FORBIDDEN_TOKENS or tok in (">", ">>"):
                raise Refused(f"{tok!r} is not allowed (only pipes and one final > or >>)")
            if tok == "|":
                segments.append(current)
                current = []
            else:
                current.append(tok)
        segments.append(current)
        for seg in segments:
            if not seg:
                raise Refused("empty pipeline stage")
            if seg[0] not in ALLOWED:
                raise Refused(f"program {seg[0]!r} is not allowed (allowed: {', '.join(sorted(ALLOWED))})")
            for arg in seg[1:]:
                self.check_argument(arg)
        return segments, redirect

    def check_argument(self, arg: str) -> None:
        if not arg.startswith("-") or arg == "-":
            self.inside(arg)
            return
        if arg.startswith(FORBIDDEN_OPTIONS):
            raise Refused(f"option {arg.split('=')[0]!r} is not allowed")
        if arg.startswith("--"):
            if "=" in arg:
                self.inside(arg.split("=", 1)[1])
        elif "/" in arg or "~" in arg:  # a value glued to short options: -t/abs, -o../x
            value = arg[1:].lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            self.inside(value or arg[1:])

    def inside(self, arg: str) -> Path:
        """The path `arg` names inside the root; Refused if it could lead outside."""
        if os.path.isabs(arg) or arg.startswith("~"):
            raise Refused(f"absolute paths are not allowed: {arg}")
        if ".." in Path(arg).parts:
            raise Refused(f"'..' is not allowed: {arg}")
        path = self.root
        for part in Path(arg).parts:
            path = path / part
            try:
                link = path.is_symlink()
            except (OSError, ValueError) as exc:  # a name too long, an unpaired surrogate
                raise Refused(f"not a usable path ({type(exc).__name__}): {arg[:80]}") from None
            if link:
                raise Refused(f"symbolic links are not followed: {arg}")
        return path

    def _execute(self, segments: list[list[str]], redirect: tuple[str, str] | None) -> str:
        # The parsed tokens, quoted again: the sandbox's sh sees exactly the checked pipeline.
        line = " | ".join(shlex.join(seg) for seg in segments)
        if redirect:
            line += f" {redirect[0]} {shlex.quote(redirect[1])}"
        limits = sandbox.Limits(timeout_s=self.timeout, cpu_s=2, memory_bytes=512 << 20,
                                output_bytes=max(4 * self.max_output, 64 << 10))
        res = sandbox.run_shell(line, self.root, limits=limits)
        text = res.text()
        if len(text) > self.max_output:
            text = text[: self.max_output] + "\n[output truncated]"
        if res.error:  # timed out, stopped at a limit, killed, or never started: the agent reads why
            return (text.strip() + f"\nerror: {res.error}").strip()
        return text.strip() or "(no output)"
