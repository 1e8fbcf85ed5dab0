"""`repo`: repair a small repository (like SWE-Bench's long episodes): three to four modules of
three functions each, their tests, and three to five planted bugs across them. Tools: list the
files, view one, edit one (replace a string), run the tests (pytest over every test file, stopping
at the first failure, in `pivotrl.sandbox` as the code domain's). Success: every test passes at the
end. The expert lists the files, runs the tests, and for each failure reads the failing test's file
(once) and the module it names, fixes the line, and runs the tests again: 13-21 turns on 30
training tasks (median 15; the episode cap is 30), against the code domain's four. It is the lab's
long-horizon domain, where end-to-end RL pays for every turn of an episode and PivotRL for one turn
a rollout.
"""

from __future__ import annotations

import json
import random
import re

from pivotrl.lab.domains.base import Domain, pick, register_domain, run_expert, tool_history
from pivotrl.lab.domains.code import (CodeEnv, _caught, _function, bug_templates, code_tag, module_source, run_pytest,
                                      template_of, test_source)

MODULES = ("geometry", "billing", "stats", "units", "scores", "timing")
SYSTEM = "Coding agent. Make every test of this repository pass by fixing its modules (the tests are right)."
MAX_TURNS = 30


class RepoEnv(CodeEnv):
    fix_what = "the modules"

    def run_tests(self) -> str:
        """Run the unit tests."""
        return run_pytest(self.dir, tests=self.tests, node_ids=True)[1]

    def list_files(self) -> str:
        """List the repository's files."""
        import os

        # a name the code made may hold a newline: shown escaped, it cannot pass for two files
        with os.scandir(self.dir) as entries:
            return "\n".join(sorted(repr(e.name)[1:-1] for e in entries if e.name.endswith(".py")))


def _distinct_functions(rng: random.Random, n: int) -> list:
    """`n` functions with distinct names, a name already taken drawn again: drawing all `n` until
    none repeats took ~200 tries a task (six of the ten templates have one name each)."""
    funcs, names = [], set()
    while len(funcs) < n:
        f = _function(rng)
        if f[0] not in names:
            names.add(f[0])
            funcs.append(f)
    return funcs


def _sample(rng: random.Random, fits=None) -> dict:
    """A task; `fits(template)`: which bug templates it may plant (None: any, the draw as before)."""
    modules = rng.sample(MODULES, rng.choice([3, 4]))
    while True:
        funcs = _distinct_functions(rng, 3 * len(modules))
        count = rng.choice([3, 4, 5])
        allowed = range(len(funcs)) if fits is None else [i for i, f in enumerate(funcs) if fits(template_of(f))]
        if len(allowed) < count:
            continue
        bugs = sorted(rng.sample(allowed, count))
        # every fix unambiguous (neither body appears in another function); tests that catch each bug
        if all(_caught(funcs[b][1], funcs[b][3], funcs[b][4]) for b in bugs) \
                and all(f[i] not in (o[2], o[3]) for b in bugs for f in [funcs[b]] for i in (2, 3)
                        for o in funcs if o is not f):
            break
    files = {}
    for m, module in enumerate(modules):
        mine = funcs[3 * m: 3 * m + 3]
        files[f"{module}.py"] = module_source(mine, {b - 3 * m for b in bugs})
        files[f"test_{module}.py"] = test_source(module, mine)
    fixes = {funcs[b][0]: [modules[b // 3] + ".py", funcs[b][3], funcs[b][2]] for b in bugs}
    return {"key": json.dumps([files]), "files": files, "bugs": fixes,
            "prompt": [{"role": "system", "content": SYSTEM},
                       {"role": "user", "content": rng.choice(["Several tests fail in this repository. Fix the code.",
                                                               "CI is red. Please make the test suite pass.",
                                                               "Fix the bugs so that all tests pass."])}]}


FAILED = re.compile(r"FAILED (test_\w+\.py)::test_(\w+)")


def repo_policy(task: dict, messages: list, rng: random.Random | None) -> tuple:
    """The repair expert, from what the tools returned: list the files, run the tests; for the
    failure they report, read its test file (once) and the module (unless its buggy line is already
    on screen), fix the line, run the tests again; report when they pass."""
    seen = tool_history(messages)
    if not any(tool == "list_files" for tool, _, _ in seen):
        return "call", ("list_files", {})
    runs = [i for i, (tool, _, _) in enumerate(seen) if tool == "run_tests"]
    edits = [i for i, (tool, _, out) in enumerate(seen) if tool == "edit" and out == "edited"]
    if not runs or (edits and edits[-1] > runs[-1]):
        return "call", ("run_tests", {})
    report = seen[runs[-1]][2]
    failed = FAILED.search(report)
    if failed is None:  # the last run passed
        fixed = sorted(task["bugs"])
        return "say", pick(rng, ["All tests pass now.", f"Fixed {', '.join(fixed)}; the test suite passes.",
                                 "The repository's tests pass."])
    test_file, name = failed.groups()
    module, bad, good = task["bugs"][name]
    viewed = [(args.get("path"), out) for tool, args, out in seen if tool == "view"]
    if not any(path == test_file for path, _ in viewed):
        return "call", ("view", {"path": test_file})
    # the buggy line on screen in a view of its module (the expert's edits since changed other lines only)
    shown = [out for path, out in viewed if path == module and f"return {bad}" in out]
    if not shown:
        return "call", ("view", {"path": module})
    # the bare expression only where the file holds it once (as viewed, plus what the expert wrote since)
    text = shown[-1] + "".join(str(args.get("new")) for tool, args, _ in seen if tool == "edit" and args.get("path") == module)
    forms = [(f"return {bad}", f"return {good}")] + ([(bad, good)] if text.count(bad) == 1 else [])
    old, new = pick(rng, forms)
    return "call", ("edit", {"path": module, "old": old, "new": new})


def _expert(task: dict, rng: random.Random) -> dict:
    return run_expert(DOMAIN, task, repo_policy, rng=rng, max_turns=MAX_TURNS)


# Tags as the code domain's: the edit (how the failing function must read) is the decision; the rest
# follow from what the tools showed (the file a failure names, the next run).
DOMAIN = register_domain(Domain("repo", RepoEnv, _sample, _expert, verifier="lab_code", policy=repo_policy,
                                tag=code_tag, bug_templates=bug_templates, description="repair a small repository with several planted "
                                                          "bugs (long episodes, like SWE-Bench)"))
