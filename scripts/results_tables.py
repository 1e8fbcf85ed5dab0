"""Write the result tables of the README and the docs from the result files, so no figure is typed.

Each table sits between `<!-- generated: NAME ... -->` and `<!-- end: NAME -->` in a Markdown file;
this script rewrites what is between them from the JSON it names:

- `lab-claims`: the lab's registered claims and verdicts (`results/lab-v3/claims.json`, written by
  `pivotrl lab claims`);
- `task-aware`: claims 1 and 2 with the interval over seeds x tasks (`seeds_and_tasks` in
  `results/lab-v3/claims.json`, written by `pivotrl lab claims`);
- `parity`: agreement with NeMo Gym's own server code (`bench/results/nemo_gym_parity.json`,
  written by `bench/nemo_gym_parity.py`);
- `performance`: the CPU benchmarks (`bench/results/*.json`);
- `sandbox-overhead`: what the sandbox costs per call (`bench/results/sandbox_overhead.json`);
- `long-context-grpo`, `profile-throughput`, `thinking-pipeline`: those benchmarks' own files;
- `audit`: the verifier audit (`results/lab-v2/audit/audit.json`, as `pivotrl lab audit` tabulates it);
- `demo`: `make demo`'s comparison (`results/demo/results.json`, as `pivotrl lab report` tabulates it).

    python scripts/results_tables.py            # rewrite the tables in place
    python scripts/results_tables.py --check    # exit 1 naming each table that differs (the tests run this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the tables the lab's own report writes (audit, demo) come from its code
FILES = ("README.md", "docs/quickstart.md", "docs/guides/verifiers.md", "docs/guides/performance.md",
         "docs/guides/security.md", "docs/guides/profile-and-select.md", "docs/lab.md")
# the markers may be indented (a table inside a list item): the table is indented alike
BLOCK = re.compile(r"(?P<indent>[ \t]*)(<!-- generated: (?P<name>[\w-]+)[^>]*-->\n)(?P<body>.*?)(?P=indent)(<!-- end: (?P=name) -->)",
                   re.S)


def _read(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def _interval(iv: dict) -> str:
    """`mean [low, high]` in points."""
    return f"{_points(iv['mean'])} [{_points(iv['low'])}, {_points(iv['high'])}]"


def lab_claims() -> str:
    claims = _read("results/lab-v3/claims.json")["claims"]
    rows = ["| claim | domains | difference, points [95% CI over seeds] | verdict |", "| --- | --- | --- | --- |"]
    for entry in claims.values():
        seeds = entry.get("seeds")
        diff = (f"{_interval(seeds)}, {seeds['n']} seeds"
                if seeds else "-")
        rows.append(f"| {entry['claim']} | {', '.join(entry['domains'])} | {diff} | {entry['verdict']} |")
    return "\n".join(rows)


def task_aware() -> str:
    data = _read("results/lab-v3/claims.json")
    rows = ["| claim | over seeds (as registered) | over seeds x tasks | verdict over seeds x tasks |", "| --- | --- | --- | --- |"]
    for name, entry in data["seeds_and_tasks"].items():
        o, c = data["claims"][name]["seeds"], entry["seeds_and_tasks"]
        rows.append(f"| {entry['claim']} | {_interval(o)} | {_interval(c)} | {entry['verdict']} |")
    return "\n".join(rows)


def parity() -> str:
    path = ROOT / "bench/results/nemo_gym_parity.json"
    if not path.exists():
        return "Not measured in this repository yet: run `bench/nemo_gym_parity.py` against a NeMo Gym checkout."
    data = json.loads(path.read_text())
    rows = [f"NeMo Gym commit `{data['gym_commit'][:9]}`, seeds {', '.join(map(str, data['seeds']))}:", "",
            "| verifier | mode | cases | rewards agree | failure codes agree |", "| --- | --- | ---: | ---: | ---: |"]
    for r in data["modes"]:
        rows.append(f"| `{r['verifier']}` | {r['mode']} | {r['cases']:,} | {100 * r['rewards_agree'] / r['cases']:.2f}% "
                    f"| {100 * r['codes_agree'] / r['cases']:.2f}% |")
    pub = data.get("published_rollouts")
    if pub:
        rows += ["", f"NeMo Gym's published example rollouts: {pub['agree']} of {pub['rollouts']} rewarded as recorded."]
    return "\n".join(rows)


def performance() -> str:
    prof = _read("bench/results/profile_throughput.json")
    grpo = _read("bench/results/long_context_grpo.json")["speedup_vs_trl"]
    box = _read("bench/results/sandbox_overhead.json")["cases"]
    a, c = prof["a_per_sample"]["samples_per_s"], prof["c_batched"]["samples_per_s"]
    return "\n".join([
        "| what | measured | source |", "| --- | --- | --- |",
        f"| profiling, transformers backend, batched with one prefill per prompt | {c:.1f} samples/s, {c / a:.1f}x "
        f"one `generate` per sample ({a:.1f}) | `bench/results/profile_throughput.json` |",
        f"| a GRPO step at ~4k-token contexts, K=8 (`share_prefill` + `group_micro_batches`) | "
        f"{grpo['4096:8']['shared_prefill+grouped']:.2f}x TRL's steps/s (K=16: {grpo['4096:16']['shared_prefill+grouped']:.2f}x) "
        "| `bench/results/long_context_grpo.json` |",
        f"| the sandbox, per call (trivial command; the code domain's reward check) | "
        f"+{box['trivial (true)']['overhead_ms']:.1f} ms; {box['code verdict (host check)']['sandbox_ms']:.0f} ms in all "
        "| `bench/results/sandbox_overhead.json` |"])


def long_context_grpo() -> str:
    data = _read("bench/results/long_context_grpo.json")
    names = {"trl": "TRL", "shared_prefill": "share_prefill", "shared_prefill+grouped": "share_prefill + group_micro_batches"}
    rows = ["| context, K | path | steps/s | vs TRL | generation share | peak RSS |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in data["runs"]:
        key = f"{r['context_tokens']}:{r['k']}"
        rows.append(f"| {r['prompt_tokens_mean']:,} tokens, K={r['k']} | {names[r['variant']]} | {r['steps_per_s']:.4f} | "
                    f"{data['speedup_vs_trl'][key][r['variant']]:.2f}x | {100 * r['generation_share']:.0f}% | "
                    f"{r['peak_rss_mb']:,} MB |")
    return "\n".join(rows)


def profile_throughput() -> str:
    data = _read("bench/results/profile_throughput.json")
    base = data["a_per_sample"]["samples_per_s"]
    rows = ["| mode | samples/s | vs (a) |", "|---|---:|---:|"]
    for key, label in (("a_per_sample", "(a) one `generate` per sample"), ("b_n_per_prompt", "(b) n samples per prompt in one call"),
                       ("c_batched", "(c) batched across prompts (8 prompts per call)"),
                       ("c_without_shared_prefill", "(c) without the shared prefill")):
        if key in data:
            rate = data[key]["samples_per_s"]
            rows.append(f"| {label} | {rate:.1f} | {rate / base:.1f}x |")
    return "\n".join(rows)


def thinking_pipeline() -> str:
    data = _read("bench/results/thinking_pipeline.json")
    rows = ["| `--max-tokens` | samples cut (scored 0) | pivots | pivots had cut samples been paid as messages "
            "| of those, not pivots now |", "|---:|---:|---:|---:|---:|"]
    for b in data["budgets"]:
        rows.append(f"| {b['max_tokens']} | {100 * b['truncated_share']:.1f}% | {b['pivots']} | "
                    f"{b['pivots_if_cut_samples_were_paid_as_messages']} | {b['of_those_not_pivots_now']} |")
    return "\n".join(rows)


def audit() -> str:
    from pivotrl.lab.audit import audit_table

    return audit_table(_read("results/lab-v2/audit/audit.json"))


def demo() -> str:
    from pivotrl.lab.report import markdown_table

    return markdown_table(_read("results/demo/results.json"))


def sandbox_overhead() -> str:
    data = _read("bench/results/sandbox_overhead.json")
    rows = ["| call | direct (ms) | sandboxed (ms) | overhead (ms) |", "| --- | ---: | ---: | ---: |"]
    for name, c in data["cases"].items():
        cell = name.replace("|", "\\|")  # a pipe inside a cell ends it
        rows.append(f"| {cell} | {c['direct_ms']:.1f} | {c['sandbox_ms']:.1f} | +{c['overhead_ms']:.1f} |")
    return "\n".join(rows)


TABLES = {"lab-claims": lab_claims, "task-aware": task_aware, "parity": parity, "performance": performance, "sandbox-overhead": sandbox_overhead,
          "long-context-grpo": long_context_grpo, "profile-throughput": profile_throughput,
          "thinking-pipeline": thinking_pipeline, "audit": audit, "demo": demo}


def render(text: str) -> str:
    def table(m):
        indent = m.group("indent")
        body = "\n".join(indent + line if line else line for line in TABLES[m.group("name")]().split("\n"))
        return f"{indent}{m.group(2)}{body}\n{indent}{m.group(5)}"

    return BLOCK.sub(table, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="Exit 1 where a committed table differs from its files.")
    args = ap.parse_args()
    stale = []
    for name in FILES:
        path = ROOT / name
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("tables that differ from their result files (run python scripts/results_tables.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
