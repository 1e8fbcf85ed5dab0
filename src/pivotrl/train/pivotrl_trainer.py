"""PivotRL: GRPO on pivot states only, with local single-turn rollouts and a functional reward.

TRL's `GRPOTrainer` is the engine: from each pivot it samples a group of `num_generations`
actions from the current policy, the verifier scores them against the state's reference action
(read from the dataset columns), advantages are normalised within the group, and the clipped
policy-gradient update (plus a KL term to the frozen reference when `beta > 0`) runs. Defaults
follow the recipe NVIDIA published with NeMo-RL for the paper's tool-use setting (arXiv 2603.21383):
no KL penalty, clipping 0.2/0.2, learning rate 1e-6 (far too small for a tiny model trained from
scratch).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pivotrl.errors import DataError
from pivotrl.pivots.split import resolve_heldout, sample_eval
from pivotrl.pivots.state import State
from pivotrl.rewards import as_reward_function, get_verifier
from pivotrl.train.common import (EvalCallback, LedgerCallback, WallClockLimit, bind_callbacks, checkpoint_step,
                                  device_kwargs, grpo_dataset, load_policy, lora_config, open_ledger, split_states,
                                  train_and_save, write_run_config)
from pivotrl.train.distributed import is_main_process
from pivotrl.train.ledger import Ledger


@dataclass
class PivotRLConfig:
    model: str = ""
    pivots: str = ""                    # states JSONL from `select`, NeMo Gym rows, or a profile (then selected here)
    output_dir: str = "runs/pivotrl"
    verifier: str = "tool_call"
    verifier_options: dict = field(default_factory=dict)
    rule: str = "pivot"                 # used when `pivots` is a profile
    lambda_diff: float = 0.75
    heldout: str | None = None          # held-out trajectory ids (default: PIVOTS.heldout.json, see pivots/split.py)
    eval_fraction: float = 0.1          # share of trajectories held out when no split file exists
    eval_states: str | None = None      # or an explicit file of held-out states
    eval_every: int = 50
    eval_max_states: int = 200
    num_generations: int = 8            # G
    prompts_per_step: int = 4
    learning_rate: float = 1e-6
    beta: float = 0.0                   # KL to the frozen reference; 0 in NVIDIA's recipe
    epsilon: float = 0.2
    epsilon_high: float = 0.2
    temperature: float = 1.0
    max_completion_length: int = 256
    max_steps: int = 100
    max_seconds: float | None = None    # wall-clock budget
    save_steps: int = 50
    save_total_limit: int | None = 2
    seed: int = 0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_target_modules: Any = None
    use_vllm: bool = False              # generation with vLLM (GPU + the [vllm] extra)
    report_to: list = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True
    refresh_every: int = 0              # re-profile the pool and re-select every N steps (0 = never)
    refresh_k: int = 8
    chat_template: str | None = None
    resume: bool = False
    profile_cost: str | None = None     # profile meta JSON to charge to the ledger (default: found beside pivots)
    collapse_patience: int = 20


def load_training_states(path: str, rule: str = "pivot", lambda_diff: float = 0.75,
                         whole_pool: bool = False) -> tuple[list[State], dict | None]:
    """Pivots from a states/NeMo Gym file, or selected here from a profile; plus the profiling cost if known.
    `whole_pool`: every profiled candidate (for --refresh-every, which selects during training)."""
    from pivotrl.pivots.profile import meta_path
    from pivotrl.pivots.select import load_candidates, select
    from pivotrl.pivots.state import load_states

    p = Path(path)
    if not p.exists():
        raise DataError("pivots file not found", file=str(p))
    first = None
    if p.suffix == ".jsonl":
        with open(p, encoding="utf-8") as fh:
            line = fh.readline()
        first = json.loads(line) if line.strip() else None
    if p.suffix == ".parquet" or (isinstance(first, dict) and "state" in first and "rewards" in first):
        cands = load_candidates(p)
        states = [c.state for c in (select(cands, "all") if whole_pool else select(cands, rule, lambda_diff=lambda_diff))]
    else:
        states = load_states(p)
    if not states:
        raise DataError("no pivot states to train on (is the selection empty?)", file=str(p))
    meta = meta_path(p)
    return states, json.loads(meta.read_text()) if meta.exists() else None


def counting_reward(verifier, ledger: Ledger):
    """The verifier as a TRL reward function that also counts rollouts, tokens and verifier calls."""
    base = as_reward_function(verifier)

    def reward(completions, completion_ids=None, **columns):
        out = base(completions, **columns)
        ledger.counters.rollout_turns += len(completions)  # one model call per local rollout
        ledger.counters.verifier_calls += len(completions)
        ledger.counters.generated_tokens += sum(len(ids) for ids in completion_ids or [])
        return out

    reward.__name__ = base.__name__
    return reward


def train_pivotrl(cfg: PivotRLConfig, train_states: list[State] | None = None,
                  eval_states: list[State] | None = None, extra_callbacks=()) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    if not cfg.model:
        raise DataError("`model` is required (a local model directory or a hub id)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cost = None
    if train_states is None:
        states, cost = load_training_states(cfg.pivots, cfg.rule, cfg.lambda_diff, whole_pool=bool(cfg.refresh_every))
        if cfg.eval_states:
            from pivotrl.pivots.state import load_states

            train_states, eval_states = states, load_states(cfg.eval_states)
        else:
            held = resolve_heldout(cfg.heldout, cfg.pivots, (s.trajectory_id for s in states),
                                   fraction=cfg.eval_fraction, seed=cfg.seed,
                                   run_dir=out if is_main_process() else None)
            train_states, eval_states = split_states(states, held)
    if cfg.profile_cost:
        cost = json.loads(Path(cfg.profile_cost).read_text())
    eval_states = sample_eval(eval_states or [], cfg.eval_max_states, cfg.seed)
    write_run_config(out, cfg)

    policy, tokenizer = load_policy(cfg.model, lora=cfg.lora)
    verifier = get_verifier(cfg.verifier, **cfg.verifier_options)
    ledger, resume_from = open_ledger(out, "pivotrl", cfg.resume)
    if cost:
        ledger.write_profiling(cost)  # once, by the main process

    args = GRPOConfig(
        output_dir=str(out), learning_rate=cfg.learning_rate, num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations, gradient_accumulation_steps=1,
        steps_per_generation=1, max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
        beta=cfg.beta, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, max_steps=cfg.max_steps,
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, logging_steps=1, seed=cfg.seed,
        report_to=cfg.report_to, use_vllm=cfg.use_vllm, vllm_mode="colocate", disable_tqdm=not cfg.progress_bar,
        shuffle_dataset=not cfg.refresh_every, **device_kwargs())
    callbacks = [LedgerCallback(ledger, cfg.collapse_patience), WallClockLimit(ledger, cfg.max_seconds)]
    if eval_states:
        callbacks.append(EvalCallback(ledger, eval_states, verifier, tokenizer, cfg.eval_every,
                                      cfg.max_completion_length, chat_template=cfg.chat_template))
    dataset = grpo_dataset(train_states, tokenizer, cfg.chat_template)
    if cfg.refresh_every:
        from pivotrl.train.refresh import ActivePool, RefreshCallback, initial_active, load_active

        restored = load_active(resume_from)
        active = restored if restored is not None else initial_active(train_states, cfg.lambda_diff)
        pool = ActivePool(dataset.to_list(), active, cfg.seed)
        dataset = pool.dataset()
        ledger.write("refresh", checkpoint_step(resume_from) if resume_from else 0,
                     {"refresh_pool": len(train_states), "refresh_active": len(active),
                      "refresh_restored": restored is not None})
        callbacks.append(RefreshCallback(train_states, pool, verifier, tokenizer, cfg.refresh_every, cfg.refresh_k,
                                         cfg.lambda_diff, cfg.max_completion_length, ledger, cfg.chat_template))
    trainer = GRPOTrainer(model=policy, args=args, processing_class=tokenizer,
                          reward_funcs=[counting_reward(verifier, ledger)], train_dataset=dataset,
                          peft_config=lora_config(cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules),
                          callbacks=[*callbacks, *bind_callbacks(extra_callbacks, ledger, tokenizer)])
    train_and_save(trainer, tokenizer, out, resume_from, cfg.progress_bar)
    return {"output_dir": str(out), "steps": trainer.state.global_step, "train_states": len(train_states),
            "eval_states": len(eval_states), "ledger": str(ledger.path)}
