"""How many states `pivotrl profile --backend vllm` hands vLLM per `generate` call, against a
stand-in engine that schedules as vLLM's does (no GPU here; a model of the scheduler, not vLLM).

`generate` returns when its slowest sequence ends, so a call of few states leaves the engine's
batch slots idle while the last long samples finish, and the next call waits for that. The
stand-in runs our real sampler (`VLLMSampler`, through `profile_states`) on a simulated engine:
each engine step serves up to `max_num_seqs` running sequences (vLLM's default 256) and a token
budget of `max_num_batched_tokens` (8,192: a step's decode tokens plus chunks of new prompts, each
prompt prefilled once for its K samples, as prefix caching does); a step's time is taken as
constant (decoding is bound by reading the weights), so time is counted in engine steps. Sample
lengths: lognormal, median 80 tokens, cut at `max_tokens` (agentic actions are mostly short, some
long). Compared: 8 states per call (the old default) and 256 (the new one).

    python bench/vllm_batching.py -o bench/results/vllm_batching.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import types
from pathlib import Path

MAX_NUM_SEQS, TOKEN_BUDGET = 256, 8192


class Engine:
    """Simulated continuous batching: requests queue, sequences run until their length is reached."""

    steps = 0
    calls = 0
    busy = 0  # sum over steps of running sequences

    def __init__(self, model, **engine):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=32768))

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=False, lora_request=None):
        Engine.calls += 1
        waiting = []  # (prompt tokens still to prefill, [lengths of its samples])
        for p, sp in zip(prompts, sampling_params):
            rng = random.Random(hash(tuple(p["prompt_token_ids"])))  # a prompt's lengths, whatever its batch
            lengths = [min(sp.max_tokens, max(1, round(math.exp(rng.gauss(math.log(80), 1.0))))) for _ in range(sp.n)]
            waiting.append([len(p["prompt_token_ids"]), lengths])
        running: list[int] = []  # tokens left per running sequence
        outputs = [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="x", token_ids=[0] * n,
                                                                        finish_reason="stop") for n in lengths])
                   for _, lengths in waiting]
        while waiting or running:
            budget = TOKEN_BUDGET - len(running)  # one decode token per running sequence
            while waiting and budget > 0 and len(running) + len(waiting[0][1]) <= MAX_NUM_SEQS:
                chunk = min(budget, waiting[0][0])
                waiting[0][0] -= chunk
                budget -= chunk
                if waiting[0][0] == 0:  # prefilled: its samples start decoding next step
                    running += waiting.pop(0)[1]
                else:
                    break
            Engine.steps += 1
            Engine.busy += len(running)
            running = [n - 1 for n in running if n > 1]
        return outputs


def run(states, model: str, batch_size: int, k: int, max_tokens: int, folder: Path) -> dict:
    from pivotrl.pivots.profile import profile_states
    from pivotrl.sampling import SamplingParams, get_sampler

    Engine.steps = Engine.calls = Engine.busy = 0
    sampler = get_sampler("vllm", model=model)
    profile_states(states, sampler, "tool_call", k=k, params=SamplingParams(k, 1.0, 1.0, max_tokens),
                   output=folder / f"profile-{batch_size}.jsonl", batch_size=batch_size, seed=0)
    samples = len(states) * k
    return {"states_per_call": batch_size, "generate_calls": Engine.calls, "engine_steps": Engine.steps,
            "samples_per_1000_steps": round(1000 * samples / Engine.steps, 1),
            "mean_running_sequences": round(Engine.busy / Engine.steps, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--states", type=int, default=1024)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("-o", "--output", default="bench/results/vllm_batching.json")
    args = ap.parse_args()

    import tempfile

    from pivotrl import extract_states
    from pivotrl.data.sample import generate_sample_trajectories
    from pivotrl.lab import BASE_MODEL

    vllm = types.ModuleType("vllm")
    vllm.LLM = Engine
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    sys.modules.update({"vllm": vllm, "vllm.inputs": inputs})
    states = extract_states(generate_sample_trajectories(args.states))[: args.states]
    with tempfile.TemporaryDirectory() as folder:
        runs = [run(states, str(BASE_MODEL), b, args.k, args.max_tokens, Path(folder)) for b in (8, 256)]
    result = {"stand_in": {"max_num_seqs": MAX_NUM_SEQS, "max_num_batched_tokens": TOKEN_BUDGET,
                           "sample_length": "lognormal, median 80, sigma 1.0, cut at max_tokens"},
              "states": len(states), "k": args.k, "max_tokens": args.max_tokens, "runs": runs,
              "speedup_256_over_8": round(runs[0]["engine_steps"] / runs[1]["engine_steps"], 2)}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
