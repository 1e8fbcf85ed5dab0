"""Profiling throughput of the transformers backend on the CPU: samples/s for
(a) one `generate` call per sample, (b) n samples per prompt in one call, (c) batched across prompts.

    python bench/profile_throughput.py [--model DIR] [--states N] [--n 8] [--max-tokens 32] [-o results.json]

Without --model it builds the tiny local model the tests use. Writes a JSON result with the ratios.
Target (issue): (c) >= 5x (a).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from pivotrl import extract_states, load_trajectories
from pivotrl.data.sample import SAMPLE_PATH, generate_sample_trajectories
from pivotrl.models import build_tiny_model
from pivotrl.sampling import Prompt, SamplingParams, get_sampler


def measure(sampler, prompts, params) -> dict:
    sampler.sample(prompts[:1], SamplingParams(1, params.temperature, params.top_p, 4), seed=0)  # warm-up
    t = time.perf_counter()
    res = sampler.sample(prompts, params, seed=0)
    dt = time.perf_counter() - t
    n = sum(len(r.samples) for r in res)
    tokens = sum(s.tokens for r in res for s in r.samples)
    return {"samples": n, "seconds": round(dt, 3), "samples_per_s": round(n / dt, 2), "tokens_per_s": round(tokens / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--states", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per call for (c); the backend default")
    ap.add_argument("--sweep", default="2,4,8,16", help="also measure (c) at these batch sizes")
    ap.add_argument("-o", "--output", default="bench/results/profile_throughput.json")
    args = ap.parse_args()
    model = args.model or str(build_tiny_model(tempfile.mkdtemp(), [json.dumps(t.messages) for t in
                                                                    generate_sample_trajectories(40)]))
    states = extract_states(load_trajectories(SAMPLE_PATH))[: args.states]
    prompts = [Prompt(s.context, s.tools) for s in states]
    params = SamplingParams(n=args.n, max_tokens=args.max_tokens)
    result = {"model": args.model or "tiny local Qwen3 (random init, built by the benchmark)", "states": len(states),
              "n": args.n, "max_tokens": args.max_tokens, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.platform(), "processor": platform.processor()}
    modes = {"a_per_sample": {"per_sample": True}, "b_n_per_prompt": {"batch_size": 1},
             "c_batched": {"batch_size": args.batch_size}}
    for name, opts in modes.items():
        result[name] = measure(get_sampler("transformers", model=model, **opts), prompts, params)
        print(name, result[name], flush=True)
    result["c_sweep"] = {}
    for bs in [int(x) for x in args.sweep.split(",") if x]:
        result["c_sweep"][bs] = measure(get_sampler("transformers", model=model, batch_size=bs), prompts, params)
        print(f"c_batched batch_size={bs}", result["c_sweep"][bs], flush=True)
    result["c_without_shared_prefill"] = measure(get_sampler("transformers", model=model, batch_size=args.batch_size,
                                                             share_prefill=False), prompts, params)
    print("c_without_shared_prefill", result["c_without_shared_prefill"], flush=True)
    a = result["a_per_sample"]["samples_per_s"]
    result["ratio_b_over_a"] = round(result["b_n_per_prompt"]["samples_per_s"] / a, 2)
    result["ratio_c_over_a"] = round(result["c_batched"]["samples_per_s"] / a, 2)
    result["target_c_over_a"] = 5.0
    result["meets_target"] = result["ratio_c_over_a"] >= 5.0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("ratio_b_over_a", "ratio_c_over_a", "meets_target")}))


if __name__ == "__main__":
    main()
