"""A GRPO step on long agentic contexts: TRL's path against the shared-context paths, one process.

Agentic pivots are long contexts with short actions. TRL prefills a group's context once per sample
when it generates, and runs it once per sample in the loss. `share_prefill` (default) generates each
group from one prefill of its context; `group_micro_batches` with gradient checkpointing off runs
the context once per group in the loss too. For each context length and group size: optimizer
steps per second (after a warm-up step), the share of a step's time spent generating, and the
process's peak memory (each case in a fresh process).

    OMP_NUM_THREADS=1 python bench/long_context_grpo.py -o bench/results/long_context_grpo.json

A random ~2.9M-parameter Qwen3 with the lab's tokenizer (hidden 256, 4 layers, 16k positions),
pivots of the bundled sample data with their system prompt lengthened to the context length,
2 pivots x K samples a step, 32-token actions (a random model never ends one, so each is cut: the
reward judges the first letter, `score_truncated`), learning rate 1e-4. Target: at least 5x TRL's
steps/s at 4k tokens and K=8.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "trl": {"share_prefill": False},
    "shared_prefill": {"share_prefill": True},
    "shared_prefill+grouped": {"share_prefill": True, "group_micro_batches": True, "gradient_checkpointing": False},
}
CASES = [(1024, 8), (4096, 8), (4096, 16), (8192, 8)]


def first_letter(completion, state) -> float:
    text = completion if isinstance(completion, str) else json.dumps(completion)
    return 1.0 if text.strip()[:1].lower() in "aeiou" else 0.0


def long_states(tok, tokens: int, n: int = 6):
    """Sample-data states whose system prompt is lengthened to about `tokens` prompt tokens."""
    from pivotrl import extract_states, load_trajectories
    from pivotrl.data.sample import SAMPLE_PATH
    from pivotrl.train.common import render_prompts

    words = ("refund policy applies to orders shipped within thirty days unless the customer asked otherwise " * 2000)
    words = words.split()
    out = []
    for s in extract_states(load_trajectories(SAMPLE_PATH))[: n * 5: 5]:
        lo, hi = 0, len(words)
        while lo < hi:  # the most words that keep the prompt within `tokens`
            mid = (lo + hi + 1) // 2
            s.context[0]["content"] = s.context[0]["content"].split("\n@@")[0] + "\n@@" + " ".join(words[:mid])
            if len(tok(render_prompts([s], tok)[0])["input_ids"]) <= tokens:
                lo = mid
            else:
                hi = mid - 1
        s.context[0]["content"] = s.context[0]["content"].split("\n@@")[0] + "\n@@" + " ".join(words[:lo])
        out.append(s)
    return out


def one_case(model: str, tokens: int, k: int, variant: str, steps: int) -> dict:
    """In this (fresh) process: train `steps` steps, time generation, report steps/s and peak memory."""
    from transformers import AutoTokenizer

    from pivotrl.train.common import render_prompts
    from pivotrl.train.ledger import read_ledger
    from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl
    from pivotrl.train.shared_generation import SharedPrefillGRPOTrainer

    tok = AutoTokenizer.from_pretrained(model)
    states = long_states(tok, tokens)
    lengths = [len(tok(t)["input_ids"]) for t in render_prompts(states, tok)]
    spent = {"generation_s": 0.0}
    inner = SharedPrefillGRPOTrainer._generate_single_turn

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            spent["generation_s"] += time.perf_counter() - t

    SharedPrefillGRPOTrainer._generate_single_turn = timed
    with tempfile.TemporaryDirectory() as out:
        cfg = PivotRLConfig(model=model, output_dir=out, verifier=f"{__name__}:first_letter", score_truncated=True,
                            num_generations=k, prompts_per_step=2, max_completion_length=32, learning_rate=1e-4,
                            max_steps=steps, save_steps=10**6, eval_every=0, report_to=[], disable_tqdm=True, seed=0,
                            **VARIANTS[variant])
        t0 = time.perf_counter()
        train_pivotrl(cfg, train_states=states, eval_states=[])
        total = time.perf_counter() - t0
        ledger = [r for r in read_ledger(out) if r.get("kind") == "step"]
    first, last = ledger[0], ledger[-1]
    return {"context_tokens": tokens, "k": k, "variant": variant, "prompt_tokens_mean": round(sum(lengths) / len(lengths)),
            "steps": last["step"],
            "steps_per_s": round((last["step"] - first["step"]) / (last["wall_clock_s"] - first["wall_clock_s"]), 4),
            "generation_share": round(spent["generation_s"] / total, 3), "seconds_total": round(total, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--case":
        print(json.dumps(one_case(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--case", dest="cases", action="append", help="TOKENS:K (default: 1024:8 4096:8 4096:16 8192:8)")
    ap.add_argument("--variant", dest="variants", action="append", help=f"default: all of {', '.join(VARIANTS)}")
    ap.add_argument("--merge", action="store_true", help="add these runs to the output file's instead of replacing them")
    ap.add_argument("-o", "--output", default="bench/results/long_context_grpo.json")
    args = ap.parse_args()
    cases = [tuple(int(x) for x in c.split(":")) for c in args.cases] if args.cases else CASES
    from pivotrl.lab.report import machine_info
    from profile_throughput import build_long_model  # bench/ is on the path when this file runs

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    earlier = json.loads(Path(args.output).read_text())["runs"] if args.merge and Path(args.output).exists() else []
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        model = build_long_model(Path(folder) / "model", context=16384)
        for tokens, k in cases:
            for variant in args.variants or VARIANTS:
                r = subprocess.run([sys.executable, __file__, "--case", model, str(tokens), str(k), variant,
                                    str(args.steps)], capture_output=True, text=True, env=env)
                if r.returncode:
                    raise SystemExit(r.stderr[-3000:])
                runs.append({**json.loads(r.stdout.strip().splitlines()[-1]), "steps_run": args.steps})
                print(json.dumps(runs[-1]), flush=True)
    runs = earlier + runs
    speedups = {}
    for tokens, k in sorted({(r["context_tokens"], r["k"]) for r in runs}):
        base = next((r for r in runs if (r["context_tokens"], r["k"], r["variant"]) == (tokens, k, "trl")), None)
        if base:
            speedups[f"{tokens}:{k}"] = {r["variant"]: round(r["steps_per_s"] / base["steps_per_s"], 2) for r in runs
                                         if (r["context_tokens"], r["k"]) == (tokens, k)}
    result = {"runs": runs, "speedup_vs_trl": speedups,
              "threads": env["OMP_NUM_THREADS"], "machine": machine_info()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(speedups, indent=2))


if __name__ == "__main__":
    main()
