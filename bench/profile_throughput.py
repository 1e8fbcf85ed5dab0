"""Profiling throughput of the transformers backend on the CPU: samples/s for
(a) one `generate` call per sample, (b) n samples per prompt in one call, (c) batched across prompts;
and peak memory at long prompts: 8 states of about 4,000 tokens (a random 2.9M-parameter Qwen3
with the lab's tokenizer), K=1 against K=16 under the default token budget and without one, each
case in a fresh process (peak RSS).

    python bench/profile_throughput.py [--model DIR] [--states N] [--n 8] [--max-tokens 32] [-o results.json]

Without --model it builds the tiny local model the tests use. Writes a JSON result with the ratios.
Targets: (c) >= 5x (a); at long prompts, K=16 within 1.5x the peak memory of K=1 by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
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


LONG_WORDS = 1150  # words pasted into each long prompt: about 4,000 tokens with the lab tokenizer


def build_long_model(folder: Path, context: int = 8192) -> str:
    """A random ~2.9M-parameter Qwen3 with the lab's tokenizer and a `context`-token window."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from pivotrl.lab import BASE_MODEL

    tok = AutoTokenizer.from_pretrained(BASE_MODEL)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=64, max_position_embeddings=context,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def long_prompts(n_states: int = 8) -> list[Prompt]:
    words = ("refund policy applies to orders shipped within thirty days unless the customer asked otherwise " * 200).split()
    out = []
    for s in extract_states(load_trajectories(SAMPLE_PATH))[:n_states]:
        ctx = [dict(m) for m in s.context]
        ctx[0]["content"] = ctx[0]["content"] + "\n" + " ".join(words[:LONG_WORDS])
        out.append(Prompt(ctx, s.tools))
    return out


def long_case(model: str, k: int, budget: int | None) -> dict:
    """One long-prompt case, in this (fresh) process: peak RSS after loading, and after sampling."""
    opts = {} if budget is None else {"token_budget": budget}
    sampler = get_sampler("transformers", model=model, **opts)
    prompts = long_prompts()
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    res = sampler.sample(prompts, SamplingParams(n=k, max_tokens=16), seed=0)
    return {"k": k, "token_budget": budget if budget is not None else sampler.token_budget,
            "prompt_tokens": [r.prompt_tokens for r in res], "samples": sum(len(r.samples) for r in res),
            "skipped": sum(bool(r.skipped) for r in res), "seconds": round(time.perf_counter() - t, 2),
            "rss_after_load_mb": round(loaded), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def long_prompt_memory() -> dict:
    folder = Path(tempfile.mkdtemp())
    model = build_long_model(folder)
    cases = {"k1_default": (1, None), "k16_default": (16, None), "k16_no_budget": (16, 10**12)}
    out = {}
    for name, (k, budget) in cases.items():
        cmd = [sys.executable, __file__, "--long-case", model, str(k), str(budget if budget is not None else -1)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = json.loads(run.stdout.strip().splitlines()[-1])
        print(name, out[name], flush=True)
    out["ratio_k16_over_k1_default"] = round(out["k16_default"]["peak_rss_mb"] / out["k1_default"]["peak_rss_mb"], 2)
    out["ratio_k16_over_k1_no_budget"] = round(out["k16_no_budget"]["peak_rss_mb"] / out["k1_default"]["peak_rss_mb"], 2)
    out["target_ratio"] = 1.5
    out["meets_target"] = out["ratio_k16_over_k1_default"] <= 1.5 and out["k16_default"]["skipped"] == 0
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--long-case":
        budget = int(sys.argv[4])
        print(json.dumps(long_case(sys.argv[2], int(sys.argv[3]), None if budget < 0 else budget)))
        return
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
    result["long_prompt_memory"] = long_prompt_memory()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("ratio_b_over_a", "ratio_c_over_a", "meets_target")}))
    print(json.dumps({k: v for k, v in result["long_prompt_memory"].items() if not isinstance(v, dict)}))


if __name__ == "__main__":
    main()
