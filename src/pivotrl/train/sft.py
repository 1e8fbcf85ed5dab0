"""The SFT baseline: TRL's `SFTTrainer` on the same trajectories, loss on assistant tokens only."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pivotrl.errors import DataError
from pivotrl.train.common import (EvalCallback, LedgerCallback, WallClockLimit, bind_callbacks, device_kwargs,
                                  load_policy, lora_config, open_ledger, write_run_config, train_and_save)


@dataclass
class SFTRunConfig:
    model: str = ""
    trajectories: str = ""              # OpenAI / ShareGPT JSONL or HF dataset, as `extract` reads
    output_dir: str = "runs/sft"
    verifier: str = "tool_call"         # for the next-action evaluation only
    verifier_options: dict = field(default_factory=dict)
    heldout: str | None = None          # held-out trajectory ids (default: TRAJECTORIES.heldout.json, see pivots/split.py)
    eval_fraction: float = 0.1          # share held out when no split file exists
    eval_states: str | None = None
    eval_every: int = 50
    eval_max_states: int = 200
    eval_max_tokens: int = 256
    learning_rate: float = 2e-5
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int | None = 2048
    num_train_epochs: float = 1.0
    max_steps: int = -1                 # overrides epochs when > 0
    max_seconds: float | None = None
    save_steps: int = 200
    save_total_limit: int | None = 2
    seed: int = 0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_target_modules: Any = None
    report_to: list = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True
    resume: bool = False


def sft_dataset(trajectories):
    import datasets

    from pivotrl.pivots.state import arrow_safe_message

    return datasets.Dataset.from_dict({
        "messages": [[arrow_safe_message(m) for m in t.messages] for t in trajectories],
        "tools": [json.dumps(t.tools) for t in trajectories],
    })


def train_sft(cfg: SFTRunConfig, trajectories=None, eval_states=None, extra_callbacks=()) -> dict:
    from trl import SFTConfig, SFTTrainer

    from pivotrl.data import load_trajectories
    from pivotrl.pivots import extract_states
    from pivotrl.pivots.split import resolve_heldout, sample_eval
    from pivotrl.train.distributed import is_main_process
    from pivotrl.rewards import get_verifier

    if not cfg.model:
        raise DataError("`model` is required (a local model directory or a hub id)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, cfg)
    if trajectories is None:
        trajectories = list(load_trajectories(cfg.trajectories))
        if cfg.eval_states:
            from pivotrl.pivots.state import load_states

            eval_states = load_states(cfg.eval_states)
        else:
            # The same held-out trajectories as PivotRL's (one split file), so both evaluate alike.
            held = resolve_heldout(cfg.heldout, cfg.trajectories, (t.id for t in trajectories),
                                   fraction=cfg.eval_fraction, seed=cfg.seed,
                                   run_dir=out if is_main_process() else None)
            eval_states = [s for s in extract_states(trajectories) if s.trajectory_id in held]
            trajectories = [t for t in trajectories if t.id not in held]
    eval_states = sample_eval(eval_states or [], cfg.eval_max_states, cfg.seed)

    policy, tokenizer = load_policy(cfg.model, lora=cfg.lora)
    ledger, resume_from = open_ledger(out, "sft", cfg.resume)
    args = SFTConfig(
        output_dir=str(out), learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, logging_steps=1, disable_tqdm=not cfg.progress_bar, seed=cfg.seed,
        report_to=cfg.report_to,
        assistant_only_loss=True, **device_kwargs())
    callbacks = [LedgerCallback(ledger), WallClockLimit(ledger, cfg.max_seconds)]
    if eval_states:
        callbacks.append(EvalCallback(ledger, eval_states, get_verifier(cfg.verifier, **cfg.verifier_options),
                                      tokenizer, cfg.eval_every, cfg.eval_max_tokens))
    trainer = SFTTrainer(model=policy, args=args, processing_class=tokenizer, train_dataset=sft_dataset(trajectories),
                         peft_config=lora_config(cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules),
                         callbacks=[*callbacks, *bind_callbacks(extra_callbacks, ledger, tokenizer)])
    train_and_save(trainer, tokenizer, out, resume_from, cfg.progress_bar)
    return {"output_dir": str(out), "steps": trainer.state.global_step, "trajectories": len(trajectories),
            "eval_states": len(eval_states), "ledger": str(ledger.path), "trainer": trainer}
