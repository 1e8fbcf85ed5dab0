"""PivotRL (GRPO) training speed on the lab's full-preset data: optimizer steps per second and prompt
length, for one or more runs, each a base model and a variant (e.g. the base before and after the
compact chat template; float32 against bf16 autocast, `cpu_bf16`; the loss on the whole batch against
one micro-batch per group, `group_micro_batches`).

    OMP_NUM_THREADS=1 python bench/grpo_throughput.py --model OLD_BASE --model src/pivotrl/lab/base \
        --model src/pivotrl/lab/base --variant fp32 --variant fp32 --variant grouped \
        --label json-tools --label compact-tools --label compact-tools-grouped --steps 20 \
        -o bench/results/grpo_throughput.json

Each model trains on the same states (every turn of the full preset's expert trajectories, a
seeded sample, balanced by domain) with the full preset's GRPO settings (4 states x 8 samples per
step, at most 64 new tokens, the lab's verifiers), one process and one torch thread each, as a
`lab run` worker trains. Reports steps/s over the steps after the first (warm-up) and the mean
prompt length in each model's own chat template. Target: at least 2x the 0.17 steps/s that the
full preset measured before (results/lab-v2/README.md).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path


VARIANTS = {"fp32": {}, "bf16": {"cpu_bf16": True}, "grouped": {"group_micro_batches": True},
            "no-checkpointing": {"gradient_checkpointing": False}}


def variant_options(variant: str) -> dict:
    """Config options of a variant: names from VARIANTS joined by '+', e.g. 'grouped+no-checkpointing'."""
    options = {}
    for name in variant.split("+"):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r} in {variant!r}; known: {', '.join(VARIANTS)}")
        options.update(VARIANTS[name])
    return options


def measure(model: str, states, steps: int, variant: str = "fp32") -> dict:
    from transformers import AutoTokenizer

    from pivotrl.lab.evaluate import lab_verifier_options
    from pivotrl.lab.presets import PRESETS
    from pivotrl.train.common import render_prompts
    from pivotrl.train.ledger import read_ledger
    from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl

    p = PRESETS["full"]
    tok = AutoTokenizer.from_pretrained(model)
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in render_prompts(states, tok)]
    with tempfile.TemporaryDirectory() as out:
        cfg = PivotRLConfig(model=model, output_dir=out, learning_rate=5e-5, verifier="dispatch",
                            verifier_options=lab_verifier_options(), num_generations=p.num_generations,
                            prompts_per_step=p.prompts_per_step, max_completion_length=p.max_completion_length,
                            max_steps=steps, save_steps=10**6, seed=0, eval_every=0, report_to=[], disable_tqdm=True,
                            domain_weights=p.domain_weights, **variant_options(variant))
        t0 = time.time()
        train_pivotrl(cfg, train_states=states, eval_states=[])
        total = time.time() - t0
        ledger = [r for r in read_ledger(out) if r.get("kind") == "step"]
    first, last = ledger[0], ledger[-1]
    rate = (last["step"] - first["step"]) / max(last["wall_clock_s"] - first["wall_clock_s"], 1e-9)
    return {"model": model, "variant": variant, "bf16_used": cfg.bf16, "steps": last["step"],
            "steps_per_s": round(rate, 4), "seconds_total": round(total, 1),
            "prompt_tokens_mean": round(statistics.fmean(lengths), 1), "prompt_tokens_max": max(lengths),
            "generated_tokens": last["generated_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--label", action="append")
    ap.add_argument("--variant", "--precision", dest="variant", action="append",
                    help="per --model, in order (default fp32): names joined by '+' from fp32, bf16 (bf16 autocast "
                         "where the CPU has it, cpu_bf16), grouped (group_micro_batches), no-checkpointing "
                         "(gradient_checkpointing off; TRL's GRPOConfig turns it on)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--states", type=int, default=200)
    ap.add_argument("-o", "--output", default="bench/results/grpo_throughput.json")
    args = ap.parse_args()

    import torch

    from pivotrl.data.loaders import normalise_record
    from pivotrl.lab.domains import IN_DOMAIN
    from pivotrl.lab.domains.base import get_domain
    from pivotrl.lab.presets import PRESETS
    from pivotrl.lab.report import machine_info
    from pivotrl.pivots import extract_states

    torch.set_num_threads(1)
    p, states = PRESETS["full"], []
    for name in IN_DOMAIN:
        dom, rng = get_domain(name), random.Random(f"sft:{name}")
        states += extract_states([normalise_record(dom.expert(t, rng)) for t in dom.tasks("train", p.trajectories[name], 0)])
    states = random.Random(0).sample(states, min(args.states, len(states)))
    labels = args.label or args.model
    variants = args.variant or ["fp32"] * len(args.model)
    if not len(labels) == len(variants) == len(args.model):
        ap.error("give one --label and one --variant per --model (or none)")
    runs = {label: measure(m, states, args.steps, v) for label, m, v in zip(labels, args.model, variants)}
    out = {"runs": runs, "states": len(states), "settings": {"num_generations": p.num_generations,
           "prompts_per_step": p.prompts_per_step, "max_completion_length": p.max_completion_length, "threads": 1},
           "reference_steps_per_s": 0.17, "machine": machine_info()}
    if len(runs) > 1:
        base = list(runs.values())[0]["steps_per_s"]
        out["speedup_vs_first"] = {k: round(v["steps_per_s"] / base, 2) for k, v in runs.items()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
