"""What the three trainers share: model loading, device settings, the ledger and evaluation
callbacks, the train/eval split by trajectory, and turning states into a GRPO dataset."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

# transformers 5 renamed gradient_checkpointing to activation_checkpointing and warns at every use of the
# old names, which TRL's trainers make at every save and evaluation; nothing a user can change.
warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning)

from pivotrl.errors import DataError
from pivotrl.pivots.state import State
from pivotrl.train.distributed import from_main, generation_policy, is_main_process
from pivotrl.train.ledger import Ledger


def prepare_trl_config(cfg) -> None:
    """What every pivotrl trainer config does before TRL's own checks: JSON options from a flag
    become a dict, and a machine without a GPU trains on the CPU in float32 (TRL defaults to bf16), or
    in bf16 autocast with `cpu_bf16` where the CPU computes bf16 natively (emulated bf16 is slower
    than float32, so elsewhere the option falls back to float32 and says so)."""
    import json

    import torch

    for name in ("verifier_options", "domain_weights", "chat_template_kwargs"):
        value = getattr(cfg, name, None)
        if isinstance(value, str):
            try:
                setattr(cfg, name, json.loads(value) if value.strip() else {})
            except ValueError:
                ok = False
            else:
                ok = isinstance(getattr(cfg, name), dict)
            if not ok:
                raise DataError(f"{name} must be a JSON object, got {value!r}") from None
    check_choices(cfg)
    if not torch.cuda.is_available():
        cfg.use_cpu, cfg.fp16 = True, False
        cfg.bf16 = bool(getattr(cfg, "cpu_bf16", False))
        if cfg.bf16 and not cpu_has_bf16():
            import warnings

            warnings.warn("cpu_bf16: this CPU has no native bf16 instructions; training in float32", stacklevel=2)
            cfg.bf16 = False


def check_choices(cfg, names: tuple = ("loss_type", "importance_sampling_level")) -> None:
    """Refuse, before any model loads, a value TRL would only trip over mid-training (an unknown
    `loss_type` fails at the first loss): the choices are read from the field's own help in TRL's
    config ("Supported values are 'grpo', ..."), so they follow the installed TRL."""
    import dataclasses
    import re

    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for name in names:
        f = fields.get(name)
        value = getattr(cfg, name, None)
        help_text = (f.metadata.get("help") or "") if f else ""
        m = re.search(r"(?:Supported|Possible|Valid) values (?:are|include):?([^.]*)", help_text)
        choices = re.findall(r"'([a-z_]+)'", m.group(1)) if m else []
        if choices and isinstance(value, str) and value not in choices:
            raise DataError(f"{name} must be one of {', '.join(choices)} (as TRL's config says), not {value!r}")


def require_vllm_if_used(cfg) -> None:
    """Before any model loads: TRL's own error comes after loading, as a 70-line traceback."""
    import importlib.util

    if getattr(cfg, "use_vllm", False) and importlib.util.find_spec("vllm") is None:
        raise DataError("use_vllm needs vLLM, which is not installed: pip install 'pivotrl[vllm]' (on a GPU machine)")


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """A run folder that already holds a run (a checkpoint, a final model, or ledger steps) is
    continued with `resume`, started over with `overwrite` (its ledger, checkpoints and final model
    removed), and otherwise refused: nothing is deleted silently. A folder a failed run left before
    its first step holds no run and is reused."""
    import shutil

    done = [p.name for p in (sorted(out.glob("checkpoint-*")) + [out / "final"]) if p.exists()]
    ledger = out / "ledger.jsonl"
    if ledger.exists() and '"kind": "step"' in ledger.read_text(errors="replace"):
        done.append("ledger.jsonl")
    if not done or resume:
        return
    if not overwrite:
        raise DataError(f"this folder already holds a run ({', '.join(done[:4])}): continue it with --resume true, "
                        "or start over with --overwrite true (which removes them), or give another output_dir",
                        file=str(out))
    if is_main_process():
        for name in done:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    import torch

    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_policy(model: str, lora: bool = False):
    """The policy and its tokenizer. Full-parameter training keeps float32 master weights whatever
    the checkpoint's dtype (bf16 then runs as autocast, `prepare_trl_config`): updates of lr 1e-6, as in
    NVIDIA's recipe, are below bf16's resolution and would round away (TRL's own loader also
    defaults to float32). With LoRA the frozen base stays in its own dtype; PEFT keeps the adapters
    in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(model).is_dir():  # a local folder as an absolute path: a LoRA adapter records it as its base
        model = str(Path(model).resolve())
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        policy = AutoModelForCausalLM.from_pretrained(model, dtype="auto" if lora else torch.float32)
    except OSError as exc:
        raise DataError(f"cannot load model {model!r}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return policy, tokenizer


def lora_config(enabled: bool, r: int, alpha: int, target_modules: Any):
    if not enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules or "all-linear", task_type="CAUSAL_LM")


def split_states(states: list[State], heldout: set[str]) -> tuple[list[State], list[State]]:
    """(training states, held-out states) by the held-out trajectory ids (`pivotrl.pivots.split`)."""
    return [s for s in states if s.trajectory_id not in heldout], [s for s in states if s.trajectory_id in heldout]


def render_prompts(states: list[State], tokenizer, chat_template: str | None = None,
                   template_kwargs: dict | None = None) -> list[str]:
    """Prompt text per state with the policy's chat template and the state's own tools, ready for
    TRL, which tokenizes text prompts *with* special tokens: a template that writes the BOS token
    itself (Llama 3, Gemma, Mistral) would then give two. So the template's leading BOS is cut here
    when the tokenizer adds one, and training sees exactly the ids that profiling and evaluation see
    (those tokenize the full text without special tokens).

    Rendered here rather than left to TRL, because TRL's conversational GRPO path renders every
    prompt with one global tool list while each pivot carries its own tools."""
    from pivotrl.sampling.base import Prompt, render_prompt

    texts = [render_prompt(tokenizer, Prompt(s.context, s.tools), chat_template, template_kwargs) for s in states]
    bos = tokenizer.bos_token
    if bos and tokenizer.bos_token_id is not None and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
        texts = [t[len(bos):] if t.startswith(bos) else t for t in texts]
    return texts


def grpo_dataset(states: list[State], tokenizer, chat_template: str | None = None,
                 template_kwargs: dict | None = None):
    """`states_to_dataset`'s columns, with the prompt rendered as text (see `render_prompts`) and
    the state's messages kept as JSON in `context`, for verifiers that read the conversation."""
    import json

    from pivotrl.pivots.state import states_to_dataset

    ds = states_to_dataset(states).remove_columns("prompt")
    ds = ds.add_column("context", [json.dumps(s.context) for s in states])
    return ds.add_column("prompt", render_prompts(states, tokenizer, chat_template, template_kwargs))


def drop_long_prompts(states: list[State], tokenizer, limit: int | None, chat_template: str | None = None,
                      template_kwargs: dict | None = None) -> tuple[list[State], int]:
    """The states whose prompt fits in `limit` tokens, and how many did not (None: no limit). A
    pivot too long for the context is skipped and counted, never an out-of-memory error mid-run."""
    if not limit:
        return states, 0
    texts = render_prompts(states, tokenizer, chat_template, template_kwargs)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    kept = [s for s, n in zip(states, lengths) if n <= limit]
    return kept, len(states) - len(kept)


class LedgerCallback(TrainerCallback):
    """Writes one ledger line per optimizer step (logging_steps=1) and flags reward collapse."""

    def __init__(self, ledger: Ledger, collapse_patience: int = 20):
        self.ledger, self.patience = ledger, collapse_patience
        self.zero_streak, self.seen_reward = 0, False
        self.collapsed_at: int | None = None

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" not in logs and "reward" not in logs:
            return
        metrics = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        reward = logs.get("reward")
        if reward is not None:
            self.seen_reward |= reward > 0
            self.zero_streak = self.zero_streak + 1 if reward == 0 else 0
            if self.seen_reward and self.zero_streak >= self.patience and self.collapsed_at is None:
                # Seen on tiny models here: too large a learning rate drives every reward to 0, for good.
                self.collapsed_at = state.global_step
                metrics["collapsed"] = True
                if self.ledger.main:
                        print(f"warning: reward has been 0 for {self.patience} steps (step {state.global_step}): the "
                          "policy collapsed; lower the learning rate", flush=True)
        self.ledger.write("step", state.global_step, metrics)


class WallClockLimit(TrainerCallback):
    """Stop after `seconds` of training (the trainer has no such limit of its own). The main
    process's clock decides for every rank: ranks that stopped at different steps would hang."""

    def __init__(self, ledger: Ledger, seconds: float | None):
        self.ledger, self.seconds = ledger, seconds

    def on_step_end(self, args, state, control, **kw):
        if self.seconds and from_main(self.ledger.elapsed() >= self.seconds):
            control.should_training_stop = True
            control.should_save = True


class PeriodicEval(TrainerCallback):
    """Measure the current policy at step 0, every `every` steps (or every `every_seconds` of
    training, which compares methods whose steps cost differently) and at the end, and write an
    `eval` line to the ledger. Evaluation time is excluded from the ledger's wall-clock: it is not a
    training cost. With several processes every rank measures, with the policy as it can generate
    alone (`generation_policy`: ZeRO-3's parameters gathered, FSDP's replicated, in training's
    autocast), so no rank waits on another's forward; the main process writes the line. Subclasses
    say what to measure (`measure`, on every rank; what the main process returns is written);
    `after_eval` may stop the training (its return value) once the main process has measured."""

    trainer = None  # the Trainer, set by `train_and_save` (callbacks are not handed it)

    def __init__(self, ledger: Ledger, every: int, every_seconds: float | None = None):
        self.ledger, self.every, self.last_step = ledger, every, -1
        self.every_seconds, self.next_at = every_seconds, every_seconds
        self.metrics: dict = {}

    def after_eval(self, state, model, metrics: dict) -> bool:
        return False

    def measure(self, model) -> dict:
        raise NotImplementedError

    def _run(self, state, model) -> bool:
        """Measure once per step; whether to stop (the main process's answer; call on every rank)."""
        if state.global_step == self.last_step:
            return False
        import time

        self.last_step = state.global_step
        self.ledger.sync()  # every rank, at the same point
        stop, t = False, time.time()
        with generation_policy(self.trainer, model) as policy:
            metrics = self.measure(policy)
        if self.ledger.main:
            self.ledger._base_seconds -= time.time() - t  # measuring (and saving, below) is not training
            self.ledger.write("eval", state.global_step, metrics, sync=False)
            self.metrics, t = metrics, time.time()
            stop = bool(self.after_eval(state, model, metrics))
            self.ledger._base_seconds -= time.time() - t
        return from_main(stop)

    def on_train_begin(self, args, state, control, model=None, **kw):
        if state.global_step == 0:
            self._run(state, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        due = self.every and state.global_step % self.every == 0
        if self.every_seconds and from_main(self.ledger.elapsed() >= self.next_at):
            due = True
            while self.next_at <= self.ledger.elapsed():
                self.next_at += self.every_seconds
        if due and self._run(state, model):
            control.should_training_stop = True
            control.should_save = True

    def on_train_end(self, args, state, control, model=None, **kw):
        self._run(state, model)


class EvalCallback(PeriodicEval):
    """The held-out evaluation every trainer runs alike (`pivotrl.eval.heldout`): `eval_accuracy` on
    held-out states (greedy, scored by the verifier) and, with an environment, `eval_success` of
    held-out episodes, with the policy being trained."""

    def __init__(self, ledger: Ledger, heldout, tokenizer, every: int, max_tokens: int, batch_size: int = 8,
                 chat_template: str | None = None, template_kwargs: dict | None = None):
        super().__init__(ledger, every)
        self.heldout, self.tokenizer = heldout, tokenizer
        self.max_tokens, self.batch_size, self.chat_template = max_tokens, batch_size, chat_template
        self.template_kwargs = template_kwargs

    def measure(self, model) -> dict:
        from pivotrl.eval.heldout import measure
        from pivotrl.sampling.transformers_backend import TransformersSampler

        sampler = TransformersSampler(model, tokenizer=self.tokenizer, batch_size=self.batch_size,
                                      chat_template=self.chat_template, chat_template_kwargs=self.template_kwargs)
        return measure(sampler, self.heldout, self.max_tokens)


def open_ledger(out: Path, trainer_name: str, resume: bool,
                extra_files: tuple[str, ...] = ()) -> tuple[Ledger, str | None]:
    """The run's ledger, continued with `resume` from the newest complete checkpoint (one that also
    holds the callbacks' `extra_files`; torn newer ones are moved aside), else started afresh."""
    from pivotrl.train.checkpoints import resume_checkpoint

    ledger = Ledger(out, trainer_name)
    resume_from = resume_checkpoint(out, extra_files, move_aside=is_main_process()) if resume else None
    if resume_from:
        ledger.resume_from(checkpoint_step(resume_from))
    else:
        ledger.start_fresh()  # a fresh run in an old folder starts a fresh ledger
    return ledger, resume_from


def train_and_save(trainer, tokenizer, out: Path, resume_from: str | None) -> None:
    """Train (resuming if asked), then save the policy and its tokenizer to `out/final`."""
    if trainer.args.disable_tqdm:
        # Without a progress bar HF prints every log dict instead; the ledger has them, so drop that too.
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "trainer") and callback.trainer is None:  # PeriodicEval, RefreshCallback
            callback.trainer = trainer
    if resume_from:
        _quiet_tied_head_warning(trainer.model)
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(out / "final"))  # every rank takes part; the main process writes
    if is_main_process():
        tokenizer.save_pretrained(str(out / "final"))


def _quiet_tied_head_warning(model) -> None:
    """A checkpoint of a model with tied embeddings holds no `lm_head.weight` (it is the embedding),
    and transformers says "There were missing keys ... ['lm_head.weight']" on every resume, which
    reads as an error; the resumed run is the uninterrupted one (tested). Only that message goes."""
    import logging

    config = getattr(model, "config", None)
    if not getattr(config, "tie_word_embeddings", False):
        return

    class TiedHead(logging.Filter):
        def filter(self, record):
            return "missing keys in the checkpoint model loaded: ['lm_head.weight']" not in record.getMessage()

    logging.getLogger("transformers.trainer").addFilter(TiedHead())


def write_run_config(out: Path, cfg) -> None:
    """The run's config (every TRL field and ours) as JSON in its folder (main process only)."""
    import json

    if is_main_process():  # default=str: an environment class or callable given in Python
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))


def bind_callbacks(callbacks, ledger, tokenizer) -> list:
    """Extra callbacks: instances as they are, or factories `(ledger, tokenizer) -> callback` for
    callbacks that write to the run's own ledger."""
    return [cb if isinstance(cb, TrainerCallback) else cb(ledger, tokenizer) for cb in callbacks]


def checkpoint_step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.split("-")[-1])
