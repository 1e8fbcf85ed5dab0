"""A restricted real shell for the terminal domain: real programs on real files, inside one
directory, and nothing else.

- Only allow-listed programs; a pipeline of them (`|`) and one final `>`/`>>` redirect are the
  only shell syntax accepted (no `;`, `&&`, `$(...)`, backticks, `<`, globs expansion is not done).
- Every path-like argument must stay inside the task directory: absolute paths, `..` and any
  symbolic link on the way are refused.
- Each program runs with a timeout, CPU, memory and file-size limits, an empty environment (no
  proxies, no network tools allowed anyway), stdin closed, and its output cut at `max_output`.
Refusals are returned as text, so an agent reads why and the episode goes on.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
from pathlib import Path

ALLOWED = frozenset({"ls", "cat", "head", "tail", "wc", "grep", "sort", "uniq", "echo", "mkdir", "touch", "cp", "mv",
                     "rm", "cut", "tr", "pwd"})
FORBIDDEN_TEXT = ("$(", "`", "${")
FORBIDDEN_TOKENS = {";", "&&", "||", "&", "<", "<<", "<<<", "(", ")", ">&", "&>", ";;"}


class Refused(Exception):
    pass


def _limits():
    resource.setrlimit(resource.RLIMIT_CPU, (2, 2))
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


class RestrictedShell:
    def __init__(self, root: str | Path, timeout: float = 3.0, max_output: int = 2000):
        self.root = Path(root).resolve()
        self.timeout, self.max_output = timeout, max_output

    def run(self, command: str) -> str:
        try:
            segments, redirect = self.parse(command)
        except Refused as exc:
            return f"refused: {exc}"
        return self._execute(segments, redirect)

    def parse(self, command: str) -> tuple[list[list[str]], tuple[str, Path] | None]:
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
            redirect = (tokens[-2], self.inside(tokens[-1]))
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
                if not arg.startswith("-"):
                    self.inside(arg)
        return segments, redirect

    def inside(self, arg: str) -> Path:
        """The path `arg` names inside the root; Refused if it could lead outside."""
        if os.path.isabs(arg) or arg.startswith("~"):
            raise Refused(f"absolute paths are not allowed: {arg}")
        if ".." in Path(arg).parts:
            raise Refused(f"'..' is not allowed: {arg}")
        path = self.root
        for part in Path(arg).parts:
            path = path / part
            if path.is_symlink():
                raise Refused(f"symbolic links are not followed: {arg}")
        return path

    def _execute(self, segments, redirect) -> str:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.root)}
        procs, prev = [], subprocess.DEVNULL
        out_file = None
        try:
            if redirect:
                out_file = open(redirect[1], "ab" if redirect[0] == ">>" else "wb")
            for i, seg in enumerate(segments):
                last = i == len(segments) - 1
                stdout = out_file if (last and out_file) else subprocess.PIPE
                p = subprocess.Popen(seg, cwd=self.root, env=env, stdin=prev, stdout=stdout, stderr=subprocess.PIPE,
                                     preexec_fn=_limits)
                if prev is not subprocess.DEVNULL:
                    prev.close()
                prev = p.stdout if not (last and out_file) else None
                procs.append(p)
            try:
                out, err = procs[-1].communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                return "error: timed out"
            for p in procs[:-1]:
                p.wait(timeout=self.timeout)
                err = (p.stderr.read() if p.stderr else b"") + (err or b"")
        except FileNotFoundError as exc:
            return f"error: {exc}"
        finally:
            if out_file:
                out_file.close()
            for p in procs:
                for f in (p.stdout, p.stderr):
                    if f:
                        f.close()
        text = ((out or b"") + (err or b"")).decode("utf-8", errors="replace")
        if len(text) > self.max_output:
            text = text[: self.max_output] + "\n[output truncated]"
        return text.strip() or "(no output)"
