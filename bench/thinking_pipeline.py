"""A thinking model through the whole pipeline, as a user runs it: extract -> profile -> select ->
train -> evaluate, with a tiny local model whose chat template opens `<think>` in the prompt (as
Qwen3-*-Thinking-2507's does), taught the format `reasoning</think>action` for a few seconds.

It profiles at several token budgets and reports, per budget, the share of samples cut by the
budget, the pivots found, and how many of them exist only because a cut sample was paid as a
message (what the parser did before completions got their opening tag back and cut samples scored
`truncated`). Then it selects at the last budget and trains PivotRL, which takes the profile's
budget and template, with its held-out evaluation.

    python bench/thinking_pipeline.py -o bench/results/thinking_pipeline.json [--fit-steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pivotrl(*args, cwd: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "pivotrl.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"pivotrl {' '.join(map(str, args))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def thinking_turns(states, tokenizer, seed: int, max_words: int) -> list[str]:
    """Each state's prompt, a reasoning of 2 to `max_words` words, `</think>`, the demonstrated action."""
    from pivotrl.sampling.base import Prompt, render_prompt

    rng = random.Random(seed)
    words = "the user wants this so I should call the tool first and then answer them".split()
    out = []
    for s in states:
        ref = s.reference
        action = ref.text if ref.kind == "message" else "".join(
            f'<tool_call>{json.dumps({"name": c.name, "arguments": c.arguments})}</tool_call>' for c in ref.calls)
        reasoning = " ".join(rng.choice(words) for _ in range(rng.randint(2, max_words)))
        out.append(render_prompt(tokenizer, Prompt(s.context, s.tools)) + reasoning + "</think>\n\n" + action
                   + "<|im_end|>")
    return out


def paid_before(record: dict) -> list[float]:
    """The rewards the earlier parsing gave these samples: the completion without its opening tag,
    and a cut sample scored like any other (text cut mid-reasoning read as a message)."""
    from pivotrl.pivots.state import State
    from pivotrl.rewards import get_verifier, safe_score

    state, verifier = State.from_dict(json.loads(record["state"])), get_verifier("tool_call")
    return [safe_score(verifier, s.removeprefix("<think>"), state).reward for s in record["samples"]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default="bench/results/thinking_pipeline.json")
    ap.add_argument("--fit-steps", type=int, default=150)
    ap.add_argument("--budgets", type=int, nargs="+", default=[24, 64, 160])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=20)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from pivotrl import extract_states, load_trajectories
    from pivotrl.data.sample import SAMPLE_PATH, generate_sample_trajectories
    from pivotrl.models import build_tiny_model, fit_tiny_model
    from pivotrl.pivots import load_states, write_states
    from pivotrl.pivots.profile import read_records
    from pivotrl.pivots.select import candidates_from_records, select

    work = Path(tempfile.mkdtemp(prefix="thinking-"))
    model = work / "model"
    build_tiny_model(model, [json.dumps(t.messages) for t in generate_sample_trajectories(40)], thinking=True)
    tok = AutoTokenizer.from_pretrained(model)
    states = extract_states(load_trajectories(SAMPLE_PATH))
    t = time.time()
    fit = fit_tiny_model(model, thinking_turns(states * 3, tok, seed=0, max_words=40), steps=args.fit_steps)
    fit["seconds"] = round(time.time() - t, 1)

    pivotrl("extract", SAMPLE_PATH, "-o", "states.jsonl", cwd=work)
    result = {"model": "tiny Qwen3 (hidden 64, 2 layers), thinking template, format fit on the sample data",
              "fit": fit, "k": args.k, "states": len(states), "budgets": []}
    for budget in args.budgets:
        t = time.time()
        pivotrl("profile", "states.jsonl", "--model", model, "--k", args.k, "--max-tokens", budget, "--keep-samples",
                "true", "-o", f"profile{budget}.jsonl", cwd=work)
        records = read_records(work / f"profile{budget}.jsonl")
        samples = sum(len(r["rewards"]) for r in records)
        pivots = {c.state.id for c in select(candidates_from_records(records), "pivot")}
        before = []
        for r in records:
            rewards = paid_before(r)
            mean = sum(rewards) / len(rewards)
            if any(x != mean for x in rewards) and mean < 0.75:
                before.append(r["state_id"])
        result["budgets"].append({
            "max_tokens": budget, "seconds": round(time.time() - t, 1),
            "truncated_share": sum(r["n_truncated"] for r in records) / samples,
            "states_with_a_cut_sample": sum(r["n_truncated"] > 0 for r in records),
            "mean_reward": sum(r["reward_mean"] for r in records) / len(records),
            "pivots": len(pivots),
            "pivots_if_cut_samples_were_paid_as_messages": len(before),
            "of_those_not_pivots_now": len(set(before) - pivots)})
    last = args.budgets[-1]
    pivotrl("report", f"profile{last}.jsonl", "-o", "report", cwd=work)
    pivotrl("select", f"profile{last}.jsonl", "-o", "pivots.jsonl", cwd=work)
    t = time.time()
    held = set(json.loads((work / "states.jsonl.heldout.json").read_text())["trajectory_ids"])
    write_states(work / "heldout_states.jsonl", [s for s in load_states(work / "states.jsonl") if s.trajectory_id in held])
    out = pivotrl("train", "--model", model, "--pivots", "pivots.jsonl", "--output_dir", "run", "--max_steps",
                  args.train_steps, "--num_generations", 4, "--prompts_per_step", 2, "--learning_rate", 1e-4,
                  "--eval_every", args.train_steps, "--eval_states", "heldout_states.jsonl", "--report_to", "none",
                  cwd=work)
    config = json.loads((work / "run" / "config.json").read_text())
    evals = [json.loads(x) for x in (work / "run" / "ledger.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "eval"]
    result["train"] = {"steps": args.train_steps, "seconds": round(time.time() - t, 1),
                       "max_completion_length": config["max_completion_length"],
                       "adopted": [line for line in out.splitlines() if "as the pivots were profiled" in line],
                       "eval_accuracy": [e["eval_accuracy"] for e in evals]}
    result["report_excerpt"] = [line for line in (work / "report" / "README.md").read_text().splitlines()
                                if "cut by the token budget" in line]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
