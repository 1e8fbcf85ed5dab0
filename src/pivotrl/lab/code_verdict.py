"""The code and repo domains' success check, decided by the host where the task's code cannot reach it.

Running the task's tests under pytest and reading what the run reports cannot give a reward an RL
policy will not forge: the module under test runs in the same process as the runner, so it can
call the runner's hooks, read its nonce, plant a `conftest.py`, a `pytest.ini`, a `pytest.py` or
a `.pyc` for the next run, patch `Function.runtest`, return an object whose `__eq__` is always
true, or end the run as it likes. The verdict here takes none of that from the task's process:

1. the host reads the expected values from the task's own test files (data, never run: parsed
   with `ast`; each test is a run of `assert f(literal, ...) == literal`, the form the lab's
   generator writes) and keeps them;
2. a fresh folder gets a copy of just the modules the tests import (regular files read without
   following links; nothing else of the task folder: no conftest, ini, `__pycache__` or package);
3. in the sandbox, `python -I -B` (no site, no user paths, no bytecode) loads each module from
   its file and calls each function on the test's arguments (sent on stdin, the expected values
   never are), printing the return values as JSON;
4. the host compares those values with the expected ones. Whatever the code prints, it is paid
   only by values equal to the ones the tests expect, which it must compute: that is the fix.

The agent's `run_tests` tool still runs pytest over the task folder (what it reads), and has no
part in the reward.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pivotrl import sandbox
from pivotrl.errors import DataError

VERDICT_LIMITS = sandbox.Limits(timeout_s=20.0, cpu_s=20, memory_bytes=2 << 30, output_bytes=256 << 10)
MAX_MODULE_BYTES = 1 << 20  # a module larger than this is not copied (the verdict fails)

# Reads the calls before any task code is imported; each function's return value (or the name of
# what it raised) as one JSON line. `-I` leaves the task folder off sys.path: modules come from
# their files only.
HARNESS = r"""
import importlib.util, json, sys
calls = json.loads(sys.stdin.readline())
modules, out = {}, []
for name, path, func, args in calls:
    try:
        if path not in modules:
            spec = importlib.util.spec_from_file_location(name, path)
            modules[path] = sys.modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[path])
        value = getattr(modules[path], func)(*args)
        json.dumps(value)  # only plain values travel: an object with its own __eq__ does not
        out.append({"value": value})
    except BaseException as exc:
        out.append({"raised": type(exc).__name__})
sys.stdout.write("\nverdict " + json.dumps(out) + "\n")
"""


@dataclass(frozen=True)
class Case:
    """One assertion of a test: `module.function(*args) == expected`."""
    test_file: str
    line: int
    module: str      # the module's path in the task folder, e.g. "calc.py" or "d/calc.py"
    function: str
    args: tuple
    expected: object


def assertion_cases(tests: dict) -> list[Case]:
    """Every assertion of the task's test files (`{path: text}`, from data), in file and line order.
    DataError names the file and line of anything that is not `assert name(literals) == literal`
    inside a `test_*` function, with the module imported by `from M import *` or `import M`."""
    cases = []
    for rel in sorted(tests):
        text = tests[rel]
        if not isinstance(text, str):
            raise DataError(f"test file {rel!r}: its content must be text")
        try:
            tree = ast.parse(text, filename=rel)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise DataError(f"test file {rel!r}: not Python the host can read ({type(exc).__name__})") from None
        folder = os.path.dirname(rel)
        star, named = [], {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and [a.name for a in node.names] == ["*"]:
                star.append(_module_path(rel, node, folder, node.module))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    named[alias.asname or alias.name] = _module_path(rel, node, folder, alias.name)
            elif isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for stmt in node.body:
                    cases.append(_case(rel, stmt, star, named))
            elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):  # a docstring
                raise _unreadable(rel, node, "only imports and test functions")
    if not cases:
        raise DataError(f"tests {sorted(tests)}: no assertion to check")
    return cases


def _module_path(rel: str, node, folder: str, name: str | None) -> str:
    if not name or not all(part.isidentifier() for part in name.split(".")) or "." in name:
        raise _unreadable(rel, node, "a module of the task folder imported by its name")
    return os.path.join(folder, name + ".py")


def _unreadable(rel: str, node, what: str) -> DataError:
    return DataError(f"test file {rel!r} line {getattr(node, 'lineno', '?')}: the host checks tests of the form "
                     f"`assert f(literal, ...) == literal` in test_* functions ({what} expected here)")


def _case(rel: str, stmt, star: list, named: dict) -> Case:
    if not (isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Compare) and len(stmt.test.ops) == 1
            and isinstance(stmt.test.ops[0], ast.Eq) and isinstance(stmt.test.left, ast.Call)
            and not stmt.test.left.keywords):
        raise _unreadable(rel, stmt, "an assertion")
    call = stmt.test.left
    if isinstance(call.func, ast.Name) and len(star) == 1:
        module, func = star[0], call.func.id
    elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) and call.func.value.id in named:
        module, func = named[call.func.value.id], call.func.attr
    else:
        raise _unreadable(rel, stmt, "a call of a function of the one module imported")
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        expected = ast.literal_eval(stmt.test.comparators[0])
        # as the values travel: through JSON (a tuple compares as the list it comes back as)
        args, expected = json.loads(json.dumps(args)), json.loads(json.dumps(expected))
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise _unreadable(rel, stmt, "literal arguments and a literal expected value") from None
    return Case(rel, stmt.lineno, module, func, tuple(args), expected)


_MEMO: dict[str, tuple[bool, str]] = {}


def check_tests(root: Path, tests: dict) -> tuple[bool, str]:
    """(passed, why): whether the modules in `root` give every value the tests expect. Memoised by
    the modules' bytes and the cases, the whole of what the check reads."""
    cases = assertion_cases(tests)
    modules = sorted({c.module for c in cases})
    sources = {}
    for rel in modules:
        try:  # a link the code made on the way, or in the module's place, is not the module
            data = sandbox.read_regular(sandbox.task_path(Path(root), rel), MAX_MODULE_BYTES + 1)
        except DataError:
            data = None
        if data is None or len(data) > MAX_MODULE_BYTES:
            return False, f"{rel}: missing, not a regular file, or over {MAX_MODULE_BYTES} bytes"
        sources[rel] = data
    key = hashlib.sha256(json.dumps([sorted((k, v.hex()) for k, v in sources.items()),
                                     [c.__dict__ for c in cases]], default=str).encode()).hexdigest()
    if key not in _MEMO:
        _MEMO[key] = _run_cases(sources, cases)
    return _MEMO[key]


def _run_cases(sources: dict, cases: list[Case]) -> tuple[bool, str]:
    with sandbox.task_folder("pivotrl-verdict-") as fresh:
        names = {rel: f"m{i}.py" for i, rel in enumerate(sorted(sources))}  # flat: no package, no folder
        for rel, data in sources.items():
            (fresh / names[rel]).write_bytes(data)
        calls = [[Path(c.module).stem, f"{sandbox.TASK_DIR}/{names[c.module]}", c.function, list(c.args)] for c in cases]
        res = sandbox.run([os.path.realpath(sys.executable), "-I", "-B", "-c", HARNESS], fresh,
                          limits=VERDICT_LIMITS, env={"PYTHONDONTWRITEBYTECODE": "1"},
                          read_only=sandbox.python_paths(), stdin=(json.dumps(calls) + "\n").encode())
    if res.timed_out:
        return False, "timed out"
    lines = [ln for ln in res.stdout.decode("utf-8", errors="replace").splitlines() if ln.startswith("verdict ")]
    try:
        values = json.loads(lines[-1][len("verdict "):])
    except (IndexError, ValueError, RecursionError):
        return False, "the check ended before reporting its values"
    if not isinstance(values, list) or len(values) != len(cases):
        return False, "the check reported a different number of values"
    for case, got in zip(cases, values):
        # `==` as the test's own assertion compares (3.0 == 3 passes there too), on plain JSON values
        if not (isinstance(got, dict) and "value" in got and got["value"] == case.expected):
            return False, f"{case.test_file} line {case.line}: {case.function} did not return {case.expected!r}"
    return True, f"{len(cases)} values as the tests expect"
