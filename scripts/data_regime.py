"""How far the lab's per-domain comparison was from the paper's data regime, from its committed
stage files, and how much data the regime registered for the next runs needs (issue 51, point 1).

The paper trains on tens of thousands of pivots and sees each well under once; its SFT runs a few
epochs. Here, for each domain and seed at the chosen learning rate: PivotRL's visits per pivot
(optimizer steps x pivots per step / pivots) at its kept (best dev) checkpoint and at its cap, the
share of GRPO groups without reward variance, and SFT's epochs (steps x batch / training
trajectories). Then the trajectories a domain needs so that, at the same steps, PivotRL visits each
pivot at most 2 times at its kept checkpoint (4 at its cap) and SFT runs at most 3 epochs at its
kept checkpoint, with the pivots a trajectory yields measured from the committed profile.

    python scripts/data_regime.py      # writes results/lab-v3/data_regime.json and prints the table
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from pivotrl.lab.arms import SFT_BATCH  # the lab SFT arm's per_device_train_batch_size

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"visits_kept": 2.0, "visits_cap": 4.0, "sft_epochs_kept": 3.0}


def stage(domain: str, name: str) -> dict:
    return json.loads((ROOT / "results" / "lab-v3" / domain / "work" / f"{name}.json").read_text())


def domain_regime(domain: str) -> dict:
    preset = stage(domain, "preset")
    results = json.loads((ROOT / "results" / "lab-v3" / domain / "results.json").read_text())
    trajectories = preset["trajectories"][domain]
    pivots = stage(domain, "profile")["pivots_by_domain"][domain]
    per_step = preset["prompts_per_step"]
    rates = {arm: results["table"][arm]["learning_rate"] for arm in ("pivotrl", "sft")}
    seeds = preset["seeds"]
    rl = [stage(domain, f"train_pivotrl-lr{rates['pivotrl']:g}-s{s}") for s in seeds]
    sft = [stage(domain, f"train_sft-lr{rates['sft']:g}-s{s}") for s in seeds]
    visits_kept = [r["best_step"] * per_step / pivots for r in rl]
    visits_cap = [r["steps"] * per_step / pivots for r in rl]
    epochs_kept = [r["best_step"] * SFT_BATCH / trajectories for r in sft]
    epochs_cap = [r["steps"] * SFT_BATCH / trajectories for r in sft]
    pivots_per_trajectory = pivots / trajectories
    need_rl = max(max(visits_kept) / TARGETS["visits_kept"], max(visits_cap) / TARGETS["visits_cap"])
    need_sft = max(epochs_kept) / TARGETS["sft_epochs_kept"]
    return {
        "trajectories": trajectories, "pivots": pivots, "pivots_per_trajectory": pivots_per_trajectory,
        "pivotrl": {"steps": [r["steps"] for r in rl], "best_step": [r["best_step"] for r in rl],
                    "visits_per_pivot_kept": visits_kept, "visits_per_pivot_cap": visits_cap,
                    "zero_variance_share": [r["zero_std_share"] for r in rl]},
        "sft": {"steps": [r["steps"] for r in sft], "best_step": [r["best_step"] for r in sft],
                "epochs_kept": epochs_kept, "epochs_cap": epochs_cap},
        # the data the regime needs at the same steps (more data may move the kept step; measured per run then)
        "trajectories_needed_for_pivotrl": math.ceil(trajectories * need_rl),
        "trajectories_needed_for_sft": math.ceil(trajectories * need_sft),
        "profiled_states_per_trajectory": stage(domain, "profile")["states"] / trajectories,
        "profiling_seconds_per_state": profiling_seconds_per_state(domain),
    }


def profiling_seconds_per_state(domain: str) -> float:
    """Wall-clock of the base's K=8 profile per candidate state (the profile's bill)."""
    bill = json.loads((ROOT / "results" / "lab-v3" / domain / "work" / "profile.jsonl.meta.json").read_text())
    return bill["wall_clock_s"] / bill["states"]


def main() -> None:
    out = {d: domain_regime(d) for d in ("search", "code", "tooluse", "repo")}
    (ROOT / "results" / "lab-v3" / "data_regime.json").write_text(json.dumps({"targets": TARGETS, "domains": out}, indent=1) + "\n")
    print("| domain | trajectories | pivots | PivotRL visits/pivot, kept (cap) | zero-variance groups | SFT epochs, kept "
          "| trajectories needed: PivotRL / SFT | profiling a trajectory |")
    print("|---|---:|---:|---|---|---|---|---|")
    for d, r in out.items():
        p, s = r["pivotrl"], r["sft"]
        print(f"| {d} | {r['trajectories']} | {r['pivots']} | {min(p['visits_per_pivot_kept']):.0f}-{max(p['visits_per_pivot_kept']):.0f} "
              f"({min(p['visits_per_pivot_cap']):.0f}-{max(p['visits_per_pivot_cap']):.0f}) | "
              f"{100 * min(p['zero_variance_share']):.0f}-{100 * max(p['zero_variance_share']):.0f}% | "
              f"{min(s['epochs_kept']):.0f}-{max(s['epochs_kept']):.0f} | "
              f"{r['trajectories_needed_for_pivotrl']:,} / {r['trajectories_needed_for_sft']:,} | "
              f"{r['profiling_seconds_per_state']:.2f} s x {r['profiled_states_per_trajectory']:.1f} states |")


if __name__ == "__main__":
    main()
