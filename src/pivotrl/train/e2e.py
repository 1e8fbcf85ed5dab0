"""The end-to-end RL baseline: GRPO on full multi-turn episodes in an environment, rewarded once
at the end of the episode, through TRL's `GRPOTrainer(environment_factory=...)`.

Tasks are a JSONL of `{"prompt": [messages], ...}`; everything besides `prompt` is passed to the
environment's `reset(**task)`. Every model call of every rollout is counted in the ledger
(`rollout_turns`), and so is every tool call (`env_steps`): this is the cost PivotRL is compared
against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pivotrl.errors import DataError
from pivotrl.eval.episodes import load_tasks
from pivotrl.pivots.split import heldout_path, read_heldout
from pivotrl.eval.heldout import HeldOutSet
from pivotrl.pivots.split import sample_eval
from pivotrl.pivots.load import load_states
from pivotrl.rewards import get_verifier
from pivotrl.train.common import (EvalCallback, LedgerCallback, WallClockLimit, bind_callbacks, claim_run_folder,
                                  load_policy, lora_config, open_ledger, require_vllm_if_used, train_and_save,
                                  write_run_config)
from pivotrl.train.ledger import Ledger
from pivotrl.train.options import E2EOptions
from pivotrl.train.pivotrl_trainer import PivotRLRecipe


@dataclass
class E2EConfig(E2EOptions, PivotRLRecipe):
    """The baseline's fields (`E2EOptions`) on TRL's `GRPOConfig` with PivotRL's recipe defaults
    (`PivotRLRecipe`), so the two differ only in what they roll out."""

    output_dir: str | None = "runs/e2e"
    max_completion_length: int | None = 512    # tokens over the whole episode (model and tool tokens)
    # An episode cut by the token limit never reached its end: no loss on it, rather than a reward of
    # 0 that punishes long but sound episodes (TRL's option; as in DAPO).
    mask_truncated_completions: bool = True
    max_tool_calling_iterations: int | None = 8


def wrap_environment(env_cls):
    """A subclass for TRL: `reset` takes the dataset row (prompt + JSON task), and `get_reward` is
    hidden from TRL, because the episode reward must first see the agent's final message
    (`episode_reward` below sets `final_message` and calls the real `get_reward`). Each tool
    returns a failure as the text evaluation shows the agent (`Error: ...`), not as TRL's
    `{"error": ...}`: the policy trains on what it is tested on."""
    from pivotrl.eval.episodes import tool_methods

    class Episode(env_cls):
        get_reward = None

        def reset(self, task: str = "{}", **_row):
            return super().reset(**json.loads(task))

        def _episode_reward(self, final_message: str) -> float:
            self.final_message = final_message
            return float(env_cls.get_reward(self))

    probe = env_cls.__new__(env_cls) if isinstance(env_cls, type) else None
    for name in (tool_methods(probe) if probe is not None else {}):
        setattr(Episode, name, _as_agent_sees_it(name, getattr(env_cls, name)))
    Episode.__name__ = env_cls.__name__ if isinstance(env_cls, type) else "Environment"
    return Episode


def _as_agent_sees_it(name: str, method):
    """The tool with its signature and docstring (TRL builds the schema from them); a failure
    returned as evaluation's error text."""
    import functools

    from pivotrl.eval.episodes import tool_error, tool_output

    @functools.wraps(method)
    def tool(self, *args, **kwargs):
        try:
            return tool_output(method(self, *args, **kwargs))
        except Exception as exc:
            return tool_error(name, exc)

    return tool


def episode_reward(ledger: Ledger):
    """The episode's reward from its environment, counting model calls (assistant turns) and tool
    calls of every rollout on the way."""

    def episode(completions, environments=None, **_):
        rewards = []
        for completion, env in zip(completions, environments or [None] * len(completions)):
            msgs = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
            ledger.counters.rollout_turns += sum(m.get("role") == "assistant" for m in msgs)
            ledger.counters.env_steps += sum(m.get("role") == "tool" for m in msgs)
            last = msgs[-1] if msgs else {}
            final = last.get("content") or "" if last.get("role") == "assistant" and not last.get("tool_calls") else ""
            rewards.append(env._episode_reward(final if isinstance(final, str) else "") if env is not None else 0.0)
        return rewards

    return episode


class TokenCounter(LedgerCallback):
    """E2E completions mix model and tool tokens; TRL's `completions/mean_length` counts model tokens only."""

    def __init__(self, ledger, batch: int, patience: int):
        super().__init__(ledger, patience)
        self.batch = batch

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "completions/mean_length" in logs:
            self.ledger.counters.generated_tokens += int(round(logs["completions/mean_length"] * self.batch))
        super().on_log(args, state, control, logs=logs, **kw)


def train_e2e(cfg: E2EConfig, tasks: list[dict] | None = None, eval_tasks: list[dict] | None = None,
              extra_callbacks=(), environment=None) -> dict:
    """Train with `cfg`, which is also the `GRPOConfig` TRL's trainer runs with. `environment`: an
    environment class or factory given in Python, in place of `cfg.environment` (a registered name
    or `module:Class`; the config is saved with every checkpoint, so it holds names, not objects),
    or a dict of them keyed by the tasks' `domain`, for a mix of environments."""
    import datasets
    from trl import GRPOTrainer

    from pivotrl.eval.episodes import load_environment

    if not cfg.model or not (cfg.environment or environment):
        raise DataError("`model` and `environment` are required")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    require_vllm_if_used(cfg)
    claim_run_folder(out, cfg.resume, cfg.overwrite)
    write_run_config(out, cfg)
    tasks = tasks if tasks is not None else load_tasks(cfg.tasks)
    split = cfg.heldout or (heldout_path(cfg.tasks) if cfg.tasks and heldout_path(cfg.tasks).exists() else None)
    if split:  # tasks of held-out trajectories (by `trajectory_id` or `id`) are never trained on
        held = read_heldout(split)
        eval_pool = [t for t in tasks if str(t.get("trajectory_id", t.get("id"))) in held]
        tasks = [t for t in tasks if str(t.get("trajectory_id", t.get("id"))) not in held]
        if eval_tasks is None and not cfg.eval_tasks:
            eval_tasks = eval_pool
    if eval_tasks is None and cfg.eval_tasks:
        eval_tasks = load_tasks(cfg.eval_tasks)
    eval_tasks = (eval_tasks or [])[: cfg.eval_max_tasks]
    if isinstance(environment, dict):  # several environments: each task names its own in `domain`
        factories = {name: load_environment(env) for name, env in environment.items()}
    else:
        factories = {None: load_environment(environment or cfg.environment)}
    for name, env_cls in factories.items():
        if not callable(getattr(env_cls, "get_reward", None)):
            raise DataError(f"environment {name or cfg.environment!r} has no get_reward(): end-to-end RL needs "
                            "the episode reward")

    policy, tokenizer = load_policy(cfg.model, lora=cfg.lora)
    ledger, resume_from = open_ledger(out, "e2e", cfg.resume)
    columns = {"prompt": [t["prompt"] for t in tasks],
               "task": [json.dumps({k: v for k, v in t.items() if k != "prompt"}) for t in tasks]}
    multi = None not in factories
    if multi:
        columns["environment"] = [t["domain"] for t in tasks]
    dataset = datasets.Dataset.from_dict(columns)
    # completions per optimizer step on this process: TRL logs their mean length once per step
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    callbacks = [TokenCounter(ledger, batch, cfg.collapse_patience), WallClockLimit(ledger, cfg.max_seconds)]
    # the held-out evaluation every trainer runs (pivotrl.eval.heldout): episodes in the training environment
    # (or eval_environment), and next-action accuracy on eval_states when given
    eval_env = load_environment(cfg.eval_environment) if cfg.eval_environment else (None if multi else factories[None])
    eval_states = sample_eval(load_states(cfg.eval_states), cfg.eval_max_states, cfg.seed) if cfg.eval_states else []
    heldout = HeldOutSet(eval_states, get_verifier(cfg.verifier, **cfg.verifier_options) if eval_states else None,
                         eval_env, eval_tasks if eval_env else [], cfg.eval_max_turns)
    if heldout:
        callbacks.append(EvalCallback(ledger, heldout, tokenizer, cfg.eval_every, min(cfg.max_completion_length, 256),
                                      template_kwargs=cfg.chat_template_kwargs))
    env_factory = {k: wrap_environment(v) for k, v in factories.items()} if multi else wrap_environment(factories[None])
    trainer = GRPOTrainer(model=policy, args=cfg, processing_class=tokenizer, reward_funcs=[episode_reward(ledger)],
                          train_dataset=dataset, environment_factory=env_factory,
                          peft_config=lora_config(cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules),
                          callbacks=[*callbacks, *bind_callbacks(extra_callbacks, ledger, tokenizer)])
    train_and_save(trainer, tokenizer, out, resume_from)
    return {"output_dir": str(out), "steps": trainer.state.global_step, "tasks": len(tasks),
            "eval_tasks": len(eval_tasks), "ledger": str(ledger.path)}
