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
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from trl import GRPOConfig

from pivotrl.errors import DataError
from pivotrl.eval.heldout import announce, heldout_set, resolve_states
from pivotrl.pivots.select import weight_by_domain
from pivotrl.pivots.split import resolve_heldout, sample_eval
from pivotrl.pivots.state import State
from pivotrl.rewards import as_reward_function, check_states, get_verifier
from pivotrl.sampling.base import GENERATION_BUDGET
from pivotrl.train.common import (EvalCallback, LedgerCallback, WallClockLimit, bind_callbacks, checkpoint_step,
                                  claim_run_folder, drop_long_prompts, grpo_dataset, load_policy, lora_config,
                                  open_ledger, prepare_trl_config, require_vllm_if_used, split_states, train_and_save,
                                  write_run_config)
from pivotrl.train.distributed import is_main_process
from pivotrl.train.group_batches import GroupedGRPOTrainer, group_micro_batch_settings
from pivotrl.train.shared_generation import SharedPrefillGRPOTrainer
from pivotrl.train.ledger import Ledger
from pivotrl.train.options import PivotRLOptions
from pivotrl.train.plan import launch_refusal


@dataclass
class PivotRLRecipe(GRPOConfig):
    """TRL's `GRPOConfig` with the defaults of the recipe NVIDIA published with NeMo-RL for the paper
    (arXiv 2603.21383): no KL penalty (beta 0, TRL's default), clipping 0.2/0.2, one optimizer step
    per generation, a ledger line every step. PivotRL and the end-to-end baseline both build on it,
    so the two differ only in what they roll out. `prompts_per_step` (from the options class mixed
    in first) sets per_device_train_batch_size to prompts_per_step x num_generations; PivotRL's
    `group_micro_batches` then makes one micro-batch per group (`pivotrl.train.group_batches`)."""

    epsilon_high: float | None = 0.2
    max_steps: int = 100
    save_steps: float = 50
    save_total_limit: int | None = 2
    seed: int = 0
    logging_steps: float = 1
    # steps_per_generation stays TRL's None: one generation covers the whole accumulation, so one optimizer
    # step per generation, and the `dapo` loss is normalised by the tokens of the whole batch. Fixing it
    # to 1 with gradient_accumulation_steps > 1 made each step a mean of per-micro-batch token means.
    report_to: None | str | list[str] = "tensorboard"
    vllm_mode: str = "colocate"

    def __post_init__(self):
        prepare_trl_config(self)
        if self.prompts_per_step:
            self.per_device_train_batch_size = self.prompts_per_step * self.num_generations
        if getattr(self, "group_micro_batches", False):  # PivotRL's option; the E2E baseline has none
            group_micro_batch_settings(self)
        super().__post_init__()


@dataclass
class PivotRLConfig(PivotRLOptions, PivotRLRecipe):
    """PivotRL's fields (`PivotRLOptions`) on TRL's `GRPOConfig` with the recipe's defaults
    (`PivotRLRecipe`); the learning rate stays TRL's (NVIDIA's 1e-6 is far too small for a tiny
    model trained from scratch)."""

    output_dir: str | None = "runs/pivotrl"
    # None: the token budget the pivots were profiled with (GENERATION_BUDGET when unknown), see
    # `generation_settings`; chat_template and chat_template_kwargs likewise.
    max_completion_length: int | None = None


def load_training_states(path: str, rule: str = "pivot", lambda_diff: float = 0.75,
                         whole_pool: bool = False) -> tuple[list[State], dict | None]:
    """Pivots from a states/NeMo Gym file, or selected here from a profile; plus the profiling cost if known.
    `whole_pool`: every profiled candidate (for --refresh-every, which selects during training)."""
    from pivotrl.artifacts import file_kind
    from pivotrl.pivots.profile import meta_path
    from pivotrl.pivots.select import load_candidates, select
    from pivotrl.pivots.load import load_states

    p = Path(path)
    if not p.exists():
        raise DataError("pivots file not found", file=str(p))
    if file_kind(p) == "profile":
        cands = load_candidates(p)
        states = [c.state for c in (select(cands, "all") if whole_pool else select(cands, rule, lambda_diff=lambda_diff))]
    else:
        states = load_states(p)
    if not states:
        raise DataError("no pivot states to train on (is the selection empty?)", file=str(p))
    meta = meta_path(p)
    return states, json.loads(meta.read_text()) if meta.exists() else None


def generation_settings(cfg: PivotRLConfig, profile: dict | None) -> list[str]:
    """Train and evaluate with the budget and chat template the pivots were profiled with, unless the
    config sets its own: a pivot is a state where *that* generation had mixed outcomes. Fills the
    unset fields of `cfg` in place; returns what it adopted and where the config differs (warnings)."""
    generation = (profile or {}).get("generation") or {}
    notes = []
    for field_name, key, fallback in (("max_completion_length", "max_tokens", GENERATION_BUDGET),
                                      ("chat_template_kwargs", "chat_template_kwargs", {}),
                                      ("chat_template", "chat_template", None)):
        mine, theirs = getattr(cfg, field_name), generation.get(key)
        if mine is None:
            setattr(cfg, field_name, theirs if theirs is not None else fallback)
            if theirs:
                notes.append(f"{field_name} = {theirs!r}, as the pivots were profiled")
        elif key in generation and (mine or None) != (theirs or None):
            notes.append(f"warning: {field_name} is {mine!r} but the pivots were profiled with {theirs!r}: the pivot "
                         "filter measured another generation than the one trained")
    for key in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):  # TRL's defaults, never unset
        mine = getattr(cfg, key)
        mine = 0.0 if key == "min_p" and mine is None else mine  # TRL's None: off, as the profile's 0
        if key in generation and mine != generation[key]:
            notes.append(f"warning: {key} is {mine!r} but the pivots were profiled with {generation[key]!r}")
    return notes


def end_token_ids(policy, tokenizer) -> list[int]:
    """The ids that end a completion, as TRL reads them for `mask_truncated_completions`: the
    generation config's and the tokenizer's end of sequence, and padding."""
    eos = getattr(getattr(policy, "generation_config", None), "eos_token_id", None)
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    return [i for i in {*ids, tokenizer.eos_token_id, tokenizer.pad_token_id} if i is not None]


def counting_reward(verifier, ledger: Ledger, end_ids=None):
    """The verifier as a TRL reward function that also counts rollouts, tokens and verifier calls; a
    completion that ends in none of `end_ids` was cut by the budget and scores 0 (`truncated`)."""
    base = as_reward_function(verifier, end_token_ids=end_ids)

    def reward(completions, completion_ids=None, **columns):
        out = base(completions, completion_ids=completion_ids, **columns)
        ledger.counters.rollout_turns += len(completions)  # one model call per local rollout
        ledger.counters.verifier_calls += len(completions)
        ledger.counters.generated_tokens += sum(len(ids) for ids in completion_ids or [])
        return out

    reward.__name__ = base.__name__
    return reward


def pivots_per_step(cfg: PivotRLConfig) -> float:
    """Distinct pivots one optimizer step draws over all processes. TRL's sampler deals out
    `generation_batch_size / num_generations` prompts (TRL sums the batch over processes) per
    generation, makes one every `steps_per_generation x num_iterations` micro-batches, and steps the
    optimizer every `gradient_accumulation_steps` of them."""
    prompts = cfg.generation_batch_size / cfg.num_generations
    return prompts * cfg.gradient_accumulation_steps / (cfg.steps_per_generation * cfg.num_iterations)


def starting_pivots(cfg: PivotRLConfig, train_states: list[State]) -> int:
    """The pivots a run starts with (with refresh, the starting active set), counted after over-long
    prompts are dropped: what `max_visits_per_pivot` divides by, the same on every rank and on resume."""
    if cfg.refresh_every:
        from pivotrl.train.refresh import initial_active

        return len(initial_active(train_states, cfg.lambda_diff))
    return len(train_states)


def train_pivotrl(cfg: PivotRLConfig, train_states: list[State] | None = None,
                  eval_states: list[State] | None = None, extra_callbacks=()) -> dict:
    """Train with `cfg`, which is also the `GRPOConfig` TRL's trainer runs with."""
    if not cfg.model:
        raise DataError("`model` is required (a local model directory or a hub id)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    require_vllm_if_used(cfg)
    claim_run_folder(out, cfg.resume, cfg.overwrite)
    cost, source = None, ""
    if train_states is None:
        states, cost = load_training_states(cfg.pivots, cfg.rule, cfg.lambda_diff, whole_pool=bool(cfg.refresh_every))
        held = resolve_heldout(cfg.heldout, cfg.pivots, (s.trajectory_id for s in states),
                               fraction=cfg.eval_fraction, seed=cfg.seed, run_dir=out if is_main_process() else None)
        train_states, held_pivots = split_states(states, held)
        eval_states, source = resolve_states(
            cfg.eval_states, cfg.pivots, held, held_pivots, "the held-out pivots only: keep the STATES.heldout.states.jsonl "
            "of `pivotrl extract` beside the pivots to evaluate on every held-out state", heldout=cfg.heldout)
        evaluated = {s.trajectory_id for s in eval_states}  # what is evaluated is never trained on
        train_states = [s for s in train_states if s.trajectory_id not in evaluated]
        if not train_states:
            raise DataError(f"all {len(states)} pivots come from held-out trajectories: nothing is left to train "
                            "on (a smaller eval_fraction, another split with heldout, or more data)", file=cfg.pivots)
    eval_states = sample_eval(eval_states or [], cfg.eval_max_states, cfg.seed)
    if cfg.profile_cost:
        cost = json.loads(Path(cfg.profile_cost).read_text())
    for note in generation_settings(cfg, cost):
        if is_main_process():
            print(note, flush=True)
    # Planned once the profile's budget is in (max_completion_length) and with the prompt limit train keeps
    # to (longer pivots are skipped), before the model loads: a launch that will not fit stops here.
    refused = launch_refusal(cfg)
    if refused and not cfg.force:
        raise DataError(f"{refused} (`pivotrl plan` shows the figures; --force true launches anyway)")
    if refused and is_main_process():
        print(f"warning: {refused}; launched anyway (--force)", flush=True)
    write_run_config(out, cfg)

    policy, tokenizer = load_policy(cfg.model, lora=cfg.lora)
    verifier = get_verifier(cfg.verifier, **cfg.verifier_options)
    check_states(verifier, train_states + list(eval_states), cfg.pivots or None)
    from pivotrl.train.refresh import ACTIVE_FILE

    ledger, resume_from = open_ledger(out, "pivotrl", cfg.resume, (ACTIVE_FILE,) if cfg.refresh_every else ())
    if cost:
        ledger.write_profiling(cost)  # once, by the main process

    if cfg.refresh_every:
        cfg.shuffle_dataset = False  # the pool's stream is already a random draw (train/refresh.py)
    template_kwargs = cfg.chat_template_kwargs or {}
    context = getattr(policy.config, "max_position_embeddings", None)
    limit = cfg.max_prompt_length or (context - cfg.max_completion_length if context else None)
    train_states, too_long = drop_long_prompts(train_states, tokenizer, limit, cfg.chat_template, template_kwargs)
    if not train_states:
        raise DataError(f"every pivot's prompt is longer than {limit} tokens (max_prompt_length)")
    pivots_by_domain = dict(Counter(s.domain for s in train_states))
    starting, per_step = starting_pivots(cfg, train_states), pivots_per_step(cfg)
    if cfg.max_visits_per_pivot:  # each pivot drawn about this often: the steps follow from the data
        cfg.max_steps = max(math.ceil(cfg.max_visits_per_pivot * starting / per_step), 1)
    if cfg.domain_weights:
        if cfg.refresh_every:
            raise DataError("domain_weights and refresh_every cannot be combined yet: the refreshed pool "
                            "keeps the data's own domain shares")
        train_states = weight_by_domain(train_states, cfg.domain_weights, cfg.seed)
    if not resume_from:
        ledger.write("data", 0, {"train_states": sum(pivots_by_domain.values()), "skipped_long_prompts": too_long,
                                 "max_prompt_length": limit, "pivots_by_domain": pivots_by_domain,
                                 "domain_weights": cfg.domain_weights, "pivots_per_step": per_step,
                                 "starting_pivots": starting, "max_steps": cfg.max_steps,
                                 "stream_by_domain": dict(Counter(s.domain for s in train_states))})
    callbacks = [LedgerCallback(ledger, cfg.collapse_patience), WallClockLimit(ledger, cfg.max_seconds)]
    heldout = heldout_set(cfg, eval_states, verifier)
    if source and is_main_process():  # the trainer chose the held-out set (not a caller in Python)
        print(announce(heldout, source), flush=True)
    if heldout:
        callbacks.append(EvalCallback(ledger, heldout, tokenizer, cfg.eval_every, cfg.max_completion_length,
                                      chat_template=cfg.chat_template, template_kwargs=template_kwargs))
    dataset = grpo_dataset(train_states, tokenizer, cfg.chat_template, template_kwargs)
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
                                         cfg.lambda_diff, cfg.max_completion_length, ledger, cfg.chat_template,
                                         template_kwargs, cfg.score_truncated, cfg.refresh_sample, cfg.seed))
    trainer_class = GroupedGRPOTrainer if cfg.group_micro_batches else SharedPrefillGRPOTrainer
    trainer = trainer_class(model=policy, args=cfg, processing_class=tokenizer,
                            reward_funcs=[counting_reward(verifier, ledger,
                                                          None if cfg.score_truncated else end_token_ids(policy, tokenizer))], train_dataset=dataset,
                            peft_config=lora_config(cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules),
                            callbacks=[*callbacks, *bind_callbacks(extra_callbacks, ledger, tokenizer)])
    train_and_save(trainer, tokenizer, out, resume_from)
    return {"output_dir": str(out), "steps": trainer.state.global_step, "train_states": len(train_states),
            "eval_states": len(eval_states), "ledger": str(ledger.path)}
