"""What the sandbox costs per call: median wall-clock of the same command run directly (a plain
subprocess, no confinement) and inside `pivotrl.sandbox` (bubblewrap), for a trivial command, a
lab terminal command through the restricted shell, the code domain's pytest run (what its agent
reads), and its reward check (`pivotrl.lab.code_verdict`: the module's values, compared by the
host; the sandboxed side includes copying the module to a fresh folder).

    python bench/sandbox_overhead.py [--repeats 50] [-o bench/results/sandbox_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pivotrl import sandbox
from pivotrl.lab import code_verdict
from pivotrl.lab.domains.code import _sample as code_task
from pivotrl.lab.restricted_shell import RestrictedShell

PYTEST = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "test_calc.py"]
PYTEST_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (and the sandbox's one-off check)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 2)


def direct(argv, cwd, env=None):
    return lambda: subprocess.run(argv, cwd=cwd, capture_output=True, env={"PATH": "/usr/bin:/bin", **(env or {})})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("-o", "--output", default="bench/results/sandbox_overhead.json")
    args = ap.parse_args()
    sandbox.require_sandbox()
    rows = {}
    with sandbox.task_folder() as d:
        sandbox.write_files(d, {"data/oslo.txt": "temp=3\nrain=7\n"})
        rows["trivial (true)"] = (median_ms(direct(["true"], d), args.repeats),
                                  median_ms(lambda: sandbox.run(["true"], d), args.repeats))
        pipeline = "grep rain data/oslo.txt | wc -l"
        rows["terminal (grep | wc)"] = (median_ms(direct(["sh", "-c", pipeline], d), args.repeats),
                                        median_ms(lambda: RestrictedShell(d).run(pipeline), args.repeats))
    with sandbox.task_folder() as d:
        sandbox.write_files(d, code_task(random.Random(0))["files"])
        n = max(5, args.repeats // 5)
        rows["code (pytest)"] = (median_ms(direct(PYTEST, d, PYTEST_ENV), n),
                                 median_ms(lambda: sandbox.run(PYTEST, d, env=PYTEST_ENV,
                                                               read_only=sandbox.python_paths()), n))
        tests = {"test_calc.py": (d / "test_calc.py").read_text()}
        cases = code_verdict.assertion_cases(tests)
        calls = json.dumps([["calc", str(d / "calc.py"), c.function, list(c.args)] for c in cases]) + "\n"
        harness = [sys.executable, "-I", "-B", "-c", code_verdict.HARNESS]

        def checked():
            code_verdict._MEMO.clear()  # every call measured, none served from the memo
            return code_verdict.check_tests(d, tests)

        rows["code verdict (host check)"] = (
            median_ms(lambda: subprocess.run(harness, cwd=d, input=calls.encode(), capture_output=True), args.repeats),
            median_ms(checked, args.repeats))
    result = {"repeats": args.repeats, "unit": "ms, median wall-clock per call",
              "cases": {k: {"direct_ms": a, "sandbox_ms": b, "overhead_ms": round(b - a, 2)} for k, (a, b) in rows.items()},
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "bwrap": subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip(),
                          "root": os.geteuid() == 0, "per_call_limits": sandbox.cgroup_mode()}}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["cases"].items():
        print(f"{k:27s} direct {v['direct_ms']:8.2f} ms   sandbox {v['sandbox_ms']:8.2f} ms   (+{v['overhead_ms']:.2f})")


if __name__ == "__main__":
    main()
