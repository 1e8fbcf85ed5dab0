"""Does the sandbox change the lab's results? Greedy episodes of the bundled base model in the two
domains that execute model output (terminal, code), and the lab verifiers' verdicts on sampled
actions at held-out states, recorded per episode and per sample, so two runs (e.g. before and after
a change to how commands run) can be compared line by line.

    python bench/sandbox_lab_parity.py --tasks 200 -o run.json
    python bench/sandbox_lab_parity.py --compare before.json after.json [-o diff.json]

It uses only APIs that predate the sandbox, so the same file runs against an older checkout
(`PYTHONPATH=old/src python bench/sandbox_lab_parity.py ...`).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

DOMAINS = ("terminal", "code")


def record(tasks: int, states: int, k: int) -> dict:
    import pivotrl
    from pivotrl.data.loaders import normalise_record
    from pivotrl.eval.episodes import run_episodes
    from pivotrl.lab.domains.base import get_domain
    from pivotrl.lab.evaluate import MAX_TURNS, lab_verifier
    from pivotrl.pivots import extract_states
    from pivotrl.rewards import safe_score
    from pivotrl.sampling import Prompt, SamplingParams
    from pivotrl.sampling.transformers_backend import TransformersSampler

    base = Path(pivotrl.__file__).parent / "lab" / "base"
    sampler = TransformersSampler(str(base))
    out: dict = {"pivotrl": str(Path(pivotrl.__file__).parent), "episodes": {}, "verdicts": {}}
    t0 = time.time()
    verifier = lab_verifier()
    for name in DOMAINS:
        dom = get_domain(name)
        eps = run_episodes(sampler, dom.environment, dom.tasks("test", tasks, 0), MAX_TURNS[name], 96)
        out["episodes"][name] = [{"reward": e.reward, "tool_outputs": [m["content"] for m in e.messages if m["role"] == "tool"],
                                  "actions": [m.get("tool_calls") or m["content"] for m in e.messages if m["role"] == "assistant"]}
                                 for e in eps]
        rng = random.Random(f"parity:{name}")
        trajs = [normalise_record(dom.expert(t, rng)) for t in dom.tasks("test", max(1, states // 3), 7)]
        sts = extract_states(trajs)[:states]
        res = sampler.sample([Prompt(s.context, s.tools) for s in sts], SamplingParams(n=k, temperature=1.0, max_tokens=96), seed=0)
        out["verdicts"][name] = [[safe_score(verifier, smp.completion, s).reward for smp in r.samples] for s, r in zip(sts, res)]
    out["seconds"] = round(time.time() - t0, 1)
    return out


def compare(a: dict, b: dict) -> dict:
    diff: dict = {}
    for name in DOMAINS:
        ea, eb = a["episodes"][name], b["episodes"][name]
        changed = [i for i, (x, y) in enumerate(zip(ea, eb)) if x["reward"] != y["reward"]]
        outputs = [(i, j, x, y) for i, (p, q) in enumerate(zip(ea, eb))
                   for j, (x, y) in enumerate(zip(p["tool_outputs"], q["tool_outputs"])) if x != y]
        va, vb = a["verdicts"][name], b["verdicts"][name]
        flips = sum(x != y for p, q in zip(va, vb) for x, y in zip(p, q))
        diff[name] = {"episodes": len(ea), "success_before": sum(e["reward"] for e in ea) / len(ea),
                      "success_after": sum(e["reward"] for e in eb) / len(eb), "episodes_with_other_reward": changed,
                      "tool_outputs_that_differ": len(outputs),
                      "examples": [{"episode": i, "call": j, "before": x[:300], "after": y[:300]} for i, j, x, y in outputs[:8]],
                      "verdicts": sum(len(p) for p in va), "verdicts_that_differ": flips}
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--states", type=int, default=60)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    ap.add_argument("-o", "--output", required=False)
    args = ap.parse_args()
    if args.compare:
        result = compare(*(json.loads(Path(p).read_text()) for p in args.compare))
    else:
        result = record(args.tasks, args.states, args.k)
    text = json.dumps(result, indent=1)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    if args.compare:
        print(text)


if __name__ == "__main__":
    main()
