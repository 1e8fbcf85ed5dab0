"""Does a longer training budget change an arm's result? Trains one arm of a finished `lab run`
(same data, profile and pivots) for more wall-clock, then evaluates it exactly as the run did.

    python bench/lab_budget.py --run results/lab --arm pivotrl --seconds 900 --seed 0

Writes `RUN/budget/ARM-sSEED-SECONDSs.json` (the ledger summary and the evaluation). Rerunning
skips what is done. The run's own arms are not touched.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from pivotrl.lab import BASE_MODEL
from pivotrl.lab.experiment import PRESETS, machine_info, train_and_evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="results/lab", help="a finished `pivotrl lab run` folder")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--arm", default="pivotrl")
    ap.add_argument("--seconds", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    run, work = Path(args.run), Path(args.run) / "work"
    if not (work / "profile.jsonl").exists():
        raise SystemExit(f"{work}/profile.jsonl not found: finish `pivotrl lab run --preset {args.preset}` first")
    preset = replace(PRESETS[args.preset], seconds_per_arm=args.seconds)
    name = f"{args.arm}-s{args.seed}-{args.seconds:.0f}s"
    out = run / "budget"
    out.mkdir(parents=True, exist_ok=True)
    ledger, ev = train_and_evaluate(args.arm, args.seed, preset, str(BASE_MODEL), work, out, name)
    summary = {"arm": args.arm, "seed": args.seed, "seconds": args.seconds, "ledger": ledger, "eval": ev,
               "machine": machine_info()}
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps({"arm": args.arm, "steps": ledger["steps"], "rollout_turns": ledger["rollout_turns"],
                      "in_domain_mean": ev["in_domain_mean"], "in_domain": ev["in_domain"],
                      "ood_mean": ev.get("ood_mean"), "next_action_mean": ev.get("next_action_mean")}, indent=2))


if __name__ == "__main__":
    main()
