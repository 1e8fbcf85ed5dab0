"""`code`: fix a planted bug in a small generated Python module until its unit tests pass (like
SWE-Bench). Tools: view a file, edit it (replace a string), run the tests. The tests run the
model-edited code, so pytest runs inside `pivotrl.sandbox` (only the task folder writable, this
Python installation read-only, no network, time and memory limits). Success: the module gives
every value its tests expect at the end, decided by the host (`pivotrl.lab.code_verdict`): what
the tests' own run reports is what the agent reads, never its reward.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
from pathlib import Path

from pivotrl import sandbox
from pivotrl.lab.code_verdict import assertion_cases, check_tests
from pivotrl.lab.domains.base import Domain, pick, register_domain, run_expert, tool_history

SYSTEM = "Coding agent. Make the tests in test_calc.py pass by fixing calc.py."
# Function templates: (name, args, correct body, buggy body); {c} is a random constant. Test cases are
# computed from the correct body on random inputs.
TEMPLATES = [
    ("plus{c}", "x", "x + {c}", "x - {c}"),
    ("times{c}", "x", "x * {c}", "x + {c}"),
    ("minus{c}", "x", "x - {c}", "{c} - x"),
    ("mod{c}", "x", "x % {c}", "x // {c}"),
    ("add", "a, b", "a + b", "a - b"),
    ("diff", "a, b", "a - b", "b - a"),
    ("square", "x", "x * x", "x + x"),
    ("half", "x", "x // 2", "x // 3"),
    ("larger", "a, b", "max(a, b)", "min(a, b)"),
    ("gap", "a, b", "abs(a - b)", "a - b"),
]


def _function(rng: random.Random) -> tuple:
    name, args, good, bad = rng.choice(TEMPLATES)
    c = rng.randint(2, 9)
    name, good, bad = name.format(c=c), good.format(c=c), bad.format(c=c)
    names = [a.strip() for a in args.split(",")]
    cases = []
    for _ in range(2):
        inputs = tuple(rng.randint(0, 20) for _ in names)
        cases.append((inputs, eval(good, {}, dict(zip(names, inputs)))))
    return name, args, good, bad, cases


_RESULTS: dict[str, tuple[bool, str]] = {}


TEST_LIMITS = sandbox.Limits(timeout_s=20.0, cpu_s=20, memory_bytes=2 << 30, output_bytes=256 << 10)
# pytest under a plugin that reports every test's outcome on a line keyed by a nonce it reads from
# stdin before any task code is imported. A verdict needs those lines: code that ends the runner early
# (`os._exit(0)` at import, `sys.exit(0)`) leaves none, so exit status 0 alone never passes.
RUNNER = """
import os, sys
def reporter(key, out=os.fdopen(os.dup(1), "w", buffering=1)):
    class Outcomes:
        def pytest_runtest_logreport(self, report):
            if report.when == "call" or report.outcome != "passed":
                out.write(f"\\n{key} {report.outcome} {report.nodeid}\\n")
    return Outcomes(), lambda code: out.write(f"\\n{key} exit {int(code)}\\n")
plugin, finish = reporter(sys.stdin.readline().strip())
import pytest
finish(pytest.main(sys.argv[1:], plugins=[plugin]))
"""


def run_pytest(root: Path, limits: sandbox.Limits | None = None, tests: dict | None = None,
               node_ids: bool = False) -> tuple[bool, str]:
    """pytest on the task folder, in the sandbox: (passed, the summary the agent reads). `tests`
    (the task's own test files, run in name order; default `test_calc.py`) are written back first,
    so code that ran before cannot have rewritten them. pytest stops at the first failure (`-x`),
    named by its test function (`node_ids`: with its file, `test_x.py::test_f`).
    Passed means every test reported passing through the runner's nonce-keyed report. Results
    are memoised by the whole folder's content (`_content_key`), and plugin autoloading is off
    (1.5 s -> 0.3 s a run here)."""
    import secrets

    root = Path(root)
    for name in tests or {}:  # the host never follows what code that ran made of these paths
        sandbox.clear_path(root, name)
    sandbox.write_files(root, tests or {})
    key = _content_key(root)
    key = key and f"{key}:{node_ids}"
    if key is not None and key in _RESULTS:
        return _RESULTS[key]
    nonce = secrets.token_hex(16)
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    # "./": a test file named by data (`-p/test_x.py`) is a path to pytest, never one of its options
    targets = ["./" + t for t in sorted(tests)] if tests else ["test_calc.py"]
    # the interpreter by its real path: the sandbox mounts real paths, and a venv reached through a link
    # would otherwise not be found there (every run "ended before reporting")
    res = sandbox.run([os.path.realpath(sys.executable), "-c", RUNNER, "-q", "-x", "-p", "no:cacheprovider",
                       *targets], root,
                      limits=limits or TEST_LIMITS, env=env, read_only=sandbox.python_paths(),
                      stdin=(nonce + "\n").encode())
    if res.timed_out:
        return False, "tests timed out"
    stdout = res.stdout.decode("utf-8", errors="replace")
    # the report's lines start on a line of their own, between pytest's progress dots
    reported = [ln.split(" ", 2)[1:] for ln in stdout.splitlines() if ln.startswith(nonce + " ")]
    lines = [ln for ln in stdout.splitlines() if ln.strip() and not ln.startswith(nonce)]
    stderr = res.stderr.decode("utf-8", errors="replace").strip()
    outcomes = [r[0] for r in reported if r[0] != "exit"]
    passed = (["exit", "0"] in reported and bool(outcomes) and all(o == "passed" for o in outcomes))
    failed = [ln.split(" ")[1] if node_ids else ln.split("::")[-1].split(" ")[0] for ln in lines if ln.startswith("FAILED")]
    summary = re.sub(r" in [0-9.]+s", "", lines[-1] if lines else (stderr[-200:] or res.error)).replace("=", "").strip()
    if not any(r[0] == "exit" for r in reported):  # the code ended the runner (os._exit, a signal)
        summary = "the test run ended before reporting its tests"
    result = passed, (f"FAILED {failed[0]}; " if failed else "") + summary
    if key is not None:
        _RESULTS[key] = result
    return result


def _content_key(root: Path, budget: int = 4 << 20, max_entries: int = 2_000) -> str | None:
    """A digest of everything in the folder: every entry's path, kind, and a file's bytes or a link's
    target, read at most `budget` bytes in all (None past it, or past `max_entries`: no memo, and the
    caller's memory stays bounded whatever the code wrote). Not the top-level `.py` files alone: a
    run that plants an ini, a plugin package or a `.pyc` and restores calc.py byte for byte would
    otherwise be served the result of a run without them, or give its result to one."""
    import stat

    digest, used, entries = hashlib.sha1(), 0, 0
    for entry in sandbox.scan(root):
        entries += 1
        st = entry.st
        if st is None or entries > max_entries:
            return None
        rel = entry.rel.encode("utf-8", "surrogateescape")
        if stat.S_ISREG(st.st_mode):
            data = sandbox.read_regular(entry.name, budget - used + 1, dir_fd=entry.dir_fd)
            used += len(data or b"")
            kind, body = b"f", data or b""
        elif stat.S_ISLNK(st.st_mode):
            try:
                kind, body = b"l", os.readlink(entry.name, dir_fd=entry.dir_fd).encode("utf-8", "surrogateescape")
            except OSError:
                return None
        else:
            kind, body = (b"d" if stat.S_ISDIR(st.st_mode) else b"s"), b""
        if used > budget:
            return None
        digest.update(rel + b"\0" + kind + b"\0" + str(len(body)).encode() + b"\0" + body)
    return digest.hexdigest()


class CodeEnv:
    fix_what = "calc.py"

    def reset(self, files: dict | None = None, **_):
        sandbox.require_sandbox()
        self._cleanup()
        self.dir = sandbox.new_task_folder("pivotrl-code-")
        sandbox.write_files(self.dir, files or {})
        self.tests = {k: v for k, v in (files or {}).items() if Path(k).name.startswith("test_")}
        if self.tests:
            assertion_cases(self.tests)  # tests the host cannot check are refused here, naming file and line
        return None

    def view(self, path: str) -> str:
        """Show a file.

        Args:
            path: File name.
        """
        data = sandbox.read_regular(self._path(path), 64 << 10)
        return f"no file {path}" if data is None else data.decode("utf-8", errors="replace")

    def edit(self, path: str, old: str, new: str) -> str:
        """Replace text in a file.

        Args:
            path: File name.
            old: Text to replace.
            new: New text.
        """
        p = self._path(path)
        if p.name in {Path(t).name for t in self.tests}:
            raise ValueError(f"the tests are read-only: fix {self.fix_what}")
        data = sandbox.read_regular(p)
        text = None if data is None else data.decode("utf-8", errors="replace")
        if text is None or not isinstance(old, str) or not isinstance(new, str) or old not in text:
            raise ValueError(f"text not found in {path}")
        p.write_text(text.replace(old, new, 1), encoding="utf-8")
        return "edited"

    def run_tests(self) -> str:
        """Run the unit tests."""
        return run_pytest(self.dir, tests=self.tests)[1]

    def _path(self, path: str) -> Path:
        if not isinstance(path, str) or "\x00" in path:
            raise ValueError("path must be a file name")
        p = (self.dir / path).resolve()  # links resolved: one made by the tests cannot lead out
        if self.dir.resolve() not in p.parents:
            raise ValueError("path outside the task folder")
        return p

    def _state(self):
        """What an action can change: the task folder's files (compared by the lab's verifier)."""
        return [entry for entry in sandbox.snapshot(self.dir) if entry[1] != "dir"]

    def get_reward(self) -> float:
        """1.0 when the modules give every value the tests expect, checked outside the task's process."""
        return 1.0 if self.tests and check_tests(self.dir, self.tests)[0] else 0.0

    def _cleanup(self):
        if getattr(self, "dir", None):
            sandbox.remove_tree(self.dir)

    def __del__(self):
        self._cleanup()


def _caught(args: str, body: str, cases) -> bool:
    """Whether the tests catch `body` (our own expressions, evaluated on the test inputs)."""
    names = [a.strip() for a in args.split(",")]
    return any(eval(body, {}, dict(zip(names, a))) != r for a, r in cases)


def module_source(funcs, buggy) -> str:
    """A module of `funcs` (from `_function`), the ones at the indices in `buggy` with their bug."""
    return "\n".join(f"def {name}({args}):\n    return {bad if i in buggy else good}\n"
                     for i, (name, args, good, bad, _) in enumerate(funcs))


def test_source(module: str, funcs) -> str:
    """`module`'s unit tests: each function's cases (computed from its correct body)."""
    return f"from {module} import *\n\n" + "\n".join(
        f"def test_{name}():\n" + "".join(f"    assert {name}({', '.join(map(str, a))}) == {r}\n" for a, r in cases)
        for name, _, _, _, cases in funcs)


def template_of(func) -> str:
    """A function's bug template (`_function`'s tuple): "buggy -> fixed"."""
    return f"{func[3]} -> {func[2]}"


def _sample(rng: random.Random, fits=None) -> dict:
    """A task; `fits(template)`: which bug templates it may plant (None: any, the draw as before)."""
    while True:
        funcs = [_function(rng) for _ in range(3)]
        if fits is None:
            bug = rng.randrange(3)
        elif not (allowed := [i for i, f in enumerate(funcs) if fits(template_of(f))]):
            continue
        else:
            bug = rng.choice(allowed)
        others = [f for i, f in enumerate(funcs) if i != bug]
        name, args, good, bad, cases = funcs[bug]
        # distinct names; an unambiguous fix (neither body appears in another function); tests that catch the bug
        if (len({f[0] for f in funcs}) == 3 and _caught(args, bad, cases)
                and all(bad not in (o[2], o[3]) and good not in (o[2], o[3]) for o in others)):
            break
    files = {"calc.py": module_source(funcs, {bug}), "test_calc.py": test_source("calc", funcs)}
    name, _, good, bad, _ = funcs[bug]
    return {"key": json.dumps([files]), "files": files, "bug": [name, bad, good],
            "prompt": [{"role": "system", "content": SYSTEM},
                       {"role": "user", "content": rng.choice(["The tests fail. Please fix calc.py.",
                                                               "Fix the bug in calc.py."])}]}


def code_policy(task: dict, messages: list, rng: random.Random | None) -> tuple:
    """The coding expert, from what the tools returned: read calc.py, fix the buggy line, run the
    tests, report. It reads before it edits and never flips a coin over its first move (an expert
    that starts with `run_tests` or `view` at random makes the first turn a coin toss that no
    verifier comparing with the demonstration can judge)."""
    name, bad, good = task["bug"]
    seen = tool_history(messages)
    last_edit = max((i for i, (tool, _, out) in enumerate(seen) if tool == "edit" and out == "edited"), default=None)
    if last_edit is not None:
        runs = [out for tool, _, out in seen[last_edit + 1:] if tool == "run_tests"]
        if not runs:
            return "call", ("run_tests", {})
        if "passed" in runs[-1] and "failed" not in runs[-1]:
            return "say", pick(rng, ["Fixed: the tests pass.", f"I fixed {name} in calc.py.", "All tests pass now."])
    if not any(tool == "view" and f"return {bad}" in out for tool, _, out in seen):
        return "call", ("view", {"path": "calc.py"})
    old, new = pick(rng, [(f"return {bad}", f"return {good}"), (bad, good)])
    return "call", ("edit", {"path": "calc.py", "old": old, "new": new})


def _expert(task: dict, rng: random.Random) -> dict:
    return run_expert(DOMAIN, task, code_policy, rng=rng)


def bug_templates(task: dict) -> list[str]:
    """The planted bugs' templates, "buggy -> fixed" with their constants (code: one; repo: several)."""
    bugs = [task["bug"]] if "bug" in task else task.get("bugs", {}).values()
    return [template_of((None, None, good, bad)) for _, bad, good in bugs]


def code_tag(state) -> str:
    """Decision: the edit (which of three functions is wrong, and how); the rest are fixed moves."""
    ref = state.reference
    return "decision" if ref.kind == "tool_calls" and ref.calls and ref.calls[0].name == "edit" else "copy"


DOMAIN = register_domain(Domain("code", CodeEnv, _sample, _expert, verifier="lab_code",
                                policy=code_policy, tag=code_tag, bug_templates=bug_templates,
                                description="fix a planted bug until pytest passes (like SWE-Bench)"))
