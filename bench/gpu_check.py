"""A GPU check, ready to run on one accelerator (no internet needed): a ~0.5B Qwen3 built from a
config with random weights and the lab's tokenizer,
1. profiles 4-8k-token prompts at K=16 with the transformers backend under several token budgets
   and batch sizes, recording peak GPU memory against the planner's prediction;
2. checks that shared-prefill greedy output equals plain `generate` (and the chunked path too);
3. runs a few PivotRL steps with float32 master weights under bf16 autocast, then with LoRA,
   and records how much of the weights moved;
and writes everything to `bench/results/gpu_check.json`.

The prompts are 4,055-7,880 tokens with the lab's tokenizer (a test measures them). From the
repository root of a one-GPU machine that has a CUDA build of torch:

    pip install -e . && python bench/gpu_check.py    # with PyPI; under 8 minutes on one H100 (not yet run)

Without a network there, fetch the wheels `bench/gpu_check_wheels.txt` lists elsewhere, for the
machine's Python and platform, and run it from the source tree (nothing to build):

    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels -r bench/gpu_check_wheels.txt
    pip install --no-index --no-deps wheels/*.whl && PYTHONPATH=src python bench/gpu_check.py

    python bench/gpu_check.py --tiny -o out.json   # the same steps at a tiny size, on the CPU (a test runs this)
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
from pivotrl.data.sample import SAMPLE_PATH
from pivotrl.sampling import Prompt, SamplingParams, get_sampler

SIZES = {  # hidden, layers, heads, kv heads, head_dim, intermediate; the prompt lengths, K, budgets
    "full": dict(model=(1280, 24, 16, 8, 64, 3840), words=(1200, 2400), k=16, states=8,
                 budgets=(32_768, 131_072, 524_288), batch_sizes=(1, 4, 8), steps=3),
    "tiny": dict(model=(64, 2, 2, 1, 32, 128), words=(60, 120), k=4, states=3,
                 budgets=(1_000, 100_000), batch_sizes=(1, 3), steps=2),
}


def build_model(folder: Path, hidden, layers, heads, kv_heads, head_dim, intermediate) -> str:
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from pivotrl.lab import BASE_MODEL

    tok = AutoTokenizer.from_pretrained(BASE_MODEL)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      head_dim=head_dim, max_position_embeddings=16384, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def long_prompts(n: int, words: tuple[int, int]) -> list[Prompt]:
    text = ("refund policy applies to orders shipped within thirty days unless the customer asked otherwise " * 400).split()
    out = []
    for i, s in enumerate(extract_states(load_trajectories(SAMPLE_PATH))[:n]):
        ctx = [dict(m) for m in s.context]
        length = words[0] + (words[1] - words[0]) * i // max(1, n - 1)
        ctx[0]["content"] = ctx[0]["content"] + "\n" + " ".join(text[:length])
        out.append(Prompt(ctx, s.tools))
    return out


def predicted_peak(sampler, prompt_lengths: list[int], k: int, max_tokens: int) -> int:
    """Weights plus the largest call's cache (prompt + generated tokens, each sample its own copy),
    by the sampler's own plan (`plan_calls`)."""
    from pivotrl.sampling.transformers_backend import plan_calls
    from pivotrl.train.plan import kv_bytes_per_token

    model = sampler.model
    dtype_bytes = next(model.parameters()).element_size()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    lengths = sorted(prompt_lengths)
    worst = max(sum(lengths[i] + max_tokens for i in group) * chunk
                for group, chunk in plan_calls(lengths, k, sampler.batch_size, sampler.token_budget))
    return weights + int(worst * kv_bytes_per_token(model.config, dtype_bytes))


def profile_cases(model: str, size: dict, device: str) -> list[dict]:
    prompts = long_prompts(size["states"], size["words"])
    params = SamplingParams(n=size["k"], temperature=1.0, max_tokens=32)
    cases = []
    for budget in size["budgets"]:
        for bs in size["batch_sizes"]:
            sampler = get_sampler("transformers", model=model, batch_size=bs, token_budget=budget,
                                  dtype="bfloat16" if device == "cuda" else "float32")
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            res = sampler.sample(prompts, params, seed=0)
            seconds = time.perf_counter() - t
            lengths = [r.prompt_tokens for r in res]
            case = {"token_budget": budget, "batch_size": bs, "prompt_tokens": lengths, "k": size["k"],
                    "samples": sum(len(r.samples) for r in res), "skipped": sum(bool(r.skipped) for r in res),
                    "seconds": round(seconds, 2), "predicted_peak_gb": round(predicted_peak(sampler, lengths, size["k"], 32) / 2**30, 3)}
            if device == "cuda":
                case["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            cases.append(case)
            print("profile", case, flush=True)
            del sampler
    return cases


def greedy_equal(model: str) -> dict:
    prompts = long_prompts(2, (40, 80))
    greedy = SamplingParams(n=2, temperature=0.0, max_tokens=16)
    shared = get_sampler("transformers", model=model).sample(prompts, greedy)
    plain = get_sampler("transformers", model=model, share_prefill=False).sample(prompts, greedy)
    chunked = get_sampler("transformers", model=model, token_budget=1).sample(prompts, greedy)
    texts = lambda res: [[s.completion for s in r.samples] for r in res]  # noqa: E731
    return {"shared_equals_plain": texts(shared) == texts(plain), "chunked_equals_plain": texts(chunked) == texts(plain)}


def train_steps(model: str, steps: int, lora: bool, out: Path) -> dict:
    from transformers import AutoModelForCausalLM

    from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl

    states = extract_states(load_trajectories(SAMPLE_PATH))[:8]
    cfg = PivotRLConfig(model=model, output_dir=str(out), verifier=f"{__name__}:first_letter_reward", max_steps=steps,
                        num_generations=4, prompts_per_step=2, max_completion_length=8, learning_rate=1e-6,
                        lora=lora, report_to="none", save_steps=10**6, eval_every=0, disable_tqdm=True,
                        score_truncated=True)  # 8 tokens are always cut; the reward judges the first letter
    t = time.perf_counter()
    train_pivotrl(cfg, train_states=states, eval_states=[])
    seconds = time.perf_counter() - t
    result = {"lora": lora, "steps": steps, "bf16_autocast": cfg.bf16, "seconds": round(seconds, 1)}
    if not lora:
        before = AutoModelForCausalLM.from_pretrained(model).state_dict()
        after = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
        name = "model.layers.0.self_attn.q_proj.weight"
        result["master_dtype"] = str(after[name].dtype)
        result["changed_share_q_proj"] = round((before[name].float() != after[name].float()).float().mean().item(), 4)
    return result


def first_letter_reward(completion, state) -> float:
    """A reward that varies within a group (so GRPO has a gradient): 1 for a vowel first."""
    text = completion if isinstance(completion, str) else json.dumps(completion)
    return 1.0 if text.strip()[:1].lower() in "aeiou" else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, for a CPU test of the script itself")
    ap.add_argument("-o", "--output", default="bench/results/gpu_check.json")
    args = ap.parse_args()
    size = SIZES["tiny" if args.tiny else "full"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="pivotrl-gpu-check-"))
    t0 = time.time()
    model = build_model(work / "model", *size["model"])
    n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model).parameters())
    result = {"size": "tiny" if args.tiny else "full", "device": device, "parameters": n_params,
              "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "torch": torch.__version__,
              "platform": platform.platform()}
    result["profile"] = profile_cases(model, size, device)
    result["greedy"] = greedy_equal(model)
    result["train_full"] = train_steps(model, size["steps"], False, work / "full")
    result["train_lora"] = train_steps(model, size["steps"], True, work / "lora")
    result["seconds"] = round(time.time() - t0, 1)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("device", "parameters", "greedy", "seconds")}))


if __name__ == "__main__":
    main()
