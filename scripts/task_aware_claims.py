"""The lab's registered claims 1 and 2 read with the task-aware interval (`pivotrl.lab.intervals`:
seeds x tasks as crossed random effects) beside the interval over seeds they were registered with.
Exploratory (issue 51 makes the task-aware interval the registered statistic for the next runs).

    python scripts/task_aware_claims.py    # reads results/lab/*/work, writes results/lab/claims_task_aware.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pivotrl.lab.intervals import crossed_interval, nested_interval  # noqa: E402

DOMAINS = ("code", "repo", "search", "tooluse")
CLAIMS = {  # name in claims.json -> (arm a, arm b, what is scored)
    "pivotrl_vs_sft_in_domain": ("pivotrl", "sft", "episodes"),
    "sft_vs_base_ood": ("sft", "base", "ood_items"),
    "pivotrl_vs_base_ood": ("pivotrl", "base", "ood_items"),
}


def scored(record: dict, what: str) -> list[float]:
    if what == "episodes":
        return [float(x) for eps in record["episodes"].values() for x in eps]
    return [float(x) for x in record["ood_items"]]


def load(domain: str, arm: str, seed: int) -> dict:
    work = ROOT / "results" / "lab" / domain / "work"
    if arm == "base":
        return json.loads((work / "eval_base.json").read_text())
    rate = json.loads((ROOT / "results" / "lab" / domain / "results.json").read_text())["table"][arm]["learning_rate"]
    return json.loads((work / f"eval_{arm}-lr{rate:g}-s{seed}.json").read_text())


def main() -> None:
    out = {}
    for name, (a, b, what) in CLAIMS.items():
        table = []
        for seed in range(5):  # each seed's row: every domain's tasks (or items), the domains' lengths equal
            row = []
            for domain in DOMAINS:
                row += [x - y for x, y in zip(scored(load(domain, a, seed), what), scored(load(domain, b, seed), what))]
            table.append(row)
        crossed = crossed_interval(table)
        seeds = nested_interval([statistics.fmean(r) for r in table])
        out[name] = {"tasks_per_seed": len(table[0]), "seeds": 5,
                     "crossed": {k: crossed[k] for k in ("mean", "low", "high", "df")},
                     "over_seeds": {k: seeds[k] for k in ("mean", "low", "high")}}
        print(f"{name}: crossed {100 * crossed['mean']:+.1f} [{100 * crossed['low']:+.1f}, {100 * crossed['high']:+.1f}]"
              f"; over seeds [{100 * seeds['low']:+.1f}, {100 * seeds['high']:+.1f}]")
    (ROOT / "results" / "lab" / "claims_task_aware.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
