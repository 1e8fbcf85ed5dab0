"""The SFT baseline: TRL's `SFTTrainer` on the same trajectories, loss on assistant tokens only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trl import SFTConfig

from pivotrl.errors import DataError
from pivotrl.train.common import (EvalCallback, LedgerCallback, WallClockLimit, bind_callbacks, claim_run_folder,
                                  load_policy, lora_config, open_ledger, prepare_trl_config, train_and_save,
                                  write_run_config)
from pivotrl.train.options import SFTOptions


@dataclass
class SFTRunConfig(SFTOptions, SFTConfig):
    """TRL's `SFTConfig` with the baseline's fields (`SFTOptions`): loss on assistant tokens only, one
    epoch, a ledger line every step."""

    output_dir: str | None = "runs/sft"
    assistant_only_loss: bool = True
    max_length: int | None = 2048
    num_train_epochs: float = 1.0
    save_steps: float = 200
    save_total_limit: int | None = 2
    seed: int = 0
    logging_steps: float = 1
    report_to: None | str | list[str] = "tensorboard"

    def __post_init__(self):
        prepare_trl_config(self)
        super().__post_init__()


def sft_dataset(trajectories, template_kwargs: dict | None = None):
    """TRL's conversational layout; `template_kwargs` ride along per example (TRL's own
    `chat_template_kwargs` column), so SFT renders conversations as PivotRL renders its prompts."""
    import datasets

    from pivotrl.pivots.state import arrow_safe_message

    columns = {"messages": [[arrow_safe_message(m) for m in t.messages] for t in trajectories],
               "tools": [json.dumps(t.tools) for t in trajectories]}
    if template_kwargs:
        columns["chat_template_kwargs"] = [dict(template_kwargs) for _ in trajectories]
    return datasets.Dataset.from_dict(columns)


def train_sft(cfg: SFTRunConfig, trajectories=None, eval_states=None, extra_callbacks=()) -> dict:
    """Train with `cfg`, which is also the `SFTConfig` TRL's trainer runs with."""
    from trl import SFTTrainer

    from pivotrl.data import load_trajectories
    from pivotrl.eval.heldout import announce, heldout_set, resolve_states
    from pivotrl.pivots import extract_states
    from pivotrl.pivots.split import resolve_heldout, sample_eval
    from pivotrl.train.distributed import is_main_process
    from pivotrl.rewards import get_verifier

    if not cfg.model:
        raise DataError("`model` is required (a local model directory or a hub id)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    claim_run_folder(out, cfg.resume, cfg.overwrite)
    write_run_config(out, cfg)
    source = ""
    if trajectories is None:
        trajectories = list(load_trajectories(cfg.trajectories))
        # The same held-out trajectories as PivotRL's (one split file), so both evaluate alike.
        held = resolve_heldout(cfg.heldout, cfg.trajectories, (t.id for t in trajectories),
                               fraction=cfg.eval_fraction, seed=cfg.seed, run_dir=out if is_main_process() else None)
        eval_states, source = resolve_states(
            cfg.eval_states, None, held, [s for s in extract_states(trajectories) if s.trajectory_id in held],
            "the held-out trajectories' states", heldout=cfg.heldout)
        dropped = held | {s.trajectory_id for s in eval_states}  # what is evaluated is never trained on
        trajectories = [t for t in trajectories if t.id not in dropped]
    eval_states = sample_eval(eval_states or [], cfg.eval_max_states, cfg.seed)

    policy, tokenizer = load_policy(cfg.model, lora=cfg.lora)
    ledger, resume_from = open_ledger(out, "sft", cfg.resume)
    callbacks = [LedgerCallback(ledger), WallClockLimit(ledger, cfg.max_seconds)]
    heldout = heldout_set(cfg, eval_states, get_verifier(cfg.verifier, **cfg.verifier_options))
    if source and is_main_process():
        print(announce(heldout, source), flush=True)
    if heldout:  # the tokenizer's template, which TRL sets from chat_template_path
        callbacks.append(EvalCallback(ledger, heldout, tokenizer, cfg.eval_every, cfg.eval_max_tokens,
                                      template_kwargs=cfg.chat_template_kwargs))
    trainer = SFTTrainer(model=policy, args=cfg, processing_class=tokenizer,
                         train_dataset=sft_dataset(trajectories, cfg.chat_template_kwargs),
                         peft_config=lora_config(cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules),
                         callbacks=[*callbacks, *bind_callbacks(extra_callbacks, ledger, tokenizer)])
    train_and_save(trainer, tokenizer, out, resume_from)
    return {"output_dir": str(out), "steps": trainer.state.global_step, "trajectories": len(trajectories),
            "eval_states": len(eval_states), "ledger": str(ledger.path), "trainer": trainer}
