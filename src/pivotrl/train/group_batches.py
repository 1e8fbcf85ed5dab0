"""GRPO's loss one group at a time, each cut to its own length, its shared prompt run once
(`group_micro_batches`).

TRL's `GRPOTrainer` pads a whole generation batch to its longest prompt and longest completion and
computes the loss on that block, every sample with its own copy of its prompt. Agentic pivots have
long contexts and short actions (the bundled lab's: prompts of 82-395 tokens, actions of about 20),
and their lengths differ, so most of that work is padding and repeated prompts. Here each micro-batch is one
group (the `num_generations` samples of one prompt), without the columns that are padding in every
row, and, when gradient checkpointing is off (it drops the key-value cache this needs), the
group's prompt runs once and its keys and values serve every sample. With several processes, or
under DeepSpeed or FSDP, the loss keeps TRL's path (`shared_prompt_applies`; not yet tried on GPUs).

The update is the same: padding columns are masked out of the loss, pad tokens to the right of a
completion cannot reach the tokens before them (causal attention), TRL's losses normalise over the
accumulated batch, not the micro-batch (its `loss_is_scaled_for_ga`), and a prompt computed once
and repeated receives the sum of its copies' gradients. Left padding is position-dependent only for
models with absolute position embeddings; rotary models see the same relative positions, trimmed
or not. Generation is the trainer's (`pivotrl.train.shared_generation`), so the optimizer steps,
rollouts and ledger are the same as without it.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import split_tensor_dict

from pivotrl.errors import DataError
from pivotrl.train.shared_generation import SharedPrefillGRPOTrainer

PROMPT_KEYS = ("prompt_ids", "prompt_mask")


def group_micro_batch_settings(cfg) -> None:
    """Make each micro-batch one group: `per_device_train_batch_size` groups of `num_generations`
    become that many accumulation steps over one generation (same samples per optimizer step)."""
    # Options whose loss is normalised over the micro-batch (not the accumulated batch): one group at a
    # time would change the update, so they are refused rather than silently reweighted.
    per_micro_batch = {"loss_type='bnpo' (tokens of the micro-batch)": cfg.loss_type == "bnpo",
                       "top_entropy_quantile < 1 (a quantile per micro-batch)": cfg.top_entropy_quantile < 1,
                       "entropy_coef / use_adaptive_entropy (a mean per micro-batch)":
                           bool(getattr(cfg, "entropy_coef", 0.0)) or bool(getattr(cfg, "use_adaptive_entropy", False))}
    refused = [name for name, on in per_micro_batch.items() if on]
    if refused:
        raise DataError(f"group_micro_batches cannot reproduce TRL's update with {'; '.join(refused)}: turn one off")
    groups, rest = divmod(cfg.per_device_train_batch_size, cfg.num_generations)
    if rest:
        raise DataError(f"group_micro_batches: per_device_train_batch_size ({cfg.per_device_train_batch_size}) "
                        f"must be a multiple of num_generations ({cfg.num_generations})")
    if groups > 1:
        cfg.per_device_train_batch_size = cfg.num_generations
        cfg.gradient_accumulation_steps *= groups
        # One generation per optimizer step, as before: TRL then needs no extra forward pass for the
        # old log-probabilities (it computes them only when accumulation outlasts a generation). Left
        # None, TRL sets it to gradient_accumulation_steps, which already counts the groups.
        if cfg.steps_per_generation is not None:
            cfg.steps_per_generation *= groups


def trim_padding(batch: dict) -> dict:
    """The micro-batch without the prompt columns that are left padding in every row and the
    completion columns that are right padding in every row."""
    prompt_mask, completion_mask = batch["prompt_mask"], batch["completion_mask"]
    used = prompt_mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else prompt_mask.size(1)
    used = completion_mask.any(dim=0).nonzero()
    # every completion masked (each cut by the budget, with mask_truncated_completions): keep one column,
    # all masked, so the shapes TRL slices stay non-empty and the loss is an exact 0
    end = int(used[-1]) + 1 if len(used) else 1
    completion_shape = tuple(batch["completion_ids"].shape)
    out = {}
    for key, value in batch.items():
        if key in PROMPT_KEYS:
            value = value[:, start:]
        elif isinstance(value, torch.Tensor) and tuple(value.shape) == completion_shape:
            value = value[:, :end]  # every per-token completion tensor: ids, masks, log-probabilities
        out[key] = value
    return out


def shares_prompt(input_ids, attention_mask, completion_length: int) -> bool:
    """Whether every row has the same unpadded prompt (of at least two tokens)."""
    start = input_ids.size(1) - completion_length
    prompt, mask = input_ids[:, :start], attention_mask[:, :start]
    return input_ids.size(0) > 1 and start >= 2 and bool(mask.all()) and bool((prompt == prompt[:1]).all())


def shared_prompt_logps(model, input_ids, attention_mask, completion_length: int, compute_entropy: bool):
    """Per-token log-probabilities (and entropies) of the completions, as TRL computes them, with the
    shared prompt run once: its keys and values (with their gradient) are computed for one row and
    repeated for every sample, so the backward pass sums every sample's gradient into that one
    forward, as it would over identical copies. `model` carries TRL's fused LM head, which scores the
    completion from the hidden states of the prompt's last token and the completion's tokens."""
    from pivotrl.sampling.transformers_backend import forward_keywords

    rows, start = input_ids.size(0), input_ids.size(1) - completion_length
    cache_kw, _ = forward_keywords(model)  # `past_key_values` before transformers 5.2x, `cache` after
    prefix = model(input_ids=input_ids[:1, :start - 1], attention_mask=attention_mask[:1, :start - 1],
                   use_cache=True, logits_to_keep=1)
    cache = prefix.cache if getattr(prefix, "cache", None) is not None else prefix.past_key_values
    cache.batch_repeat_interleave(rows)
    tail = input_ids[:, start - 1:]
    labels = tail.masked_fill(attention_mask[:, start - 1:] == 0, -100)  # the head scores labels[:, 1:]
    out = model(input_ids=tail, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                **{cache_kw: cache})
    return out.log_probs, out.entropy if compute_entropy else None, None


def shared_prompt_applies(accelerator, model) -> bool:
    """Whether the group's prompt may run once (`shared_prompt_logps`): only where that has been shown
    to give TRL's update, one process on a plain module. DDP's reducer expects one forward per
    backward, and this path runs two; a DeepSpeed engine or an FSDP module (whose activation
    checkpointing is the plugin's, not `args.gradient_checkpointing`, and would recompute into the
    same cache) is untested, so they keep TRL's path."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.NO and accelerator.num_processes == 1 and \
        not isinstance(model, torch.nn.parallel.DistributedDataParallel)


class GroupedGRPOTrainer(SharedPrefillGRPOTrainer):
    """TRL's trainer with `_prepare_inputs` cutting each generation batch into trimmed micro-batches
    in its sampler's order (TRL shuffles them, which mixes groups; with one optimizer step per
    generation the order within a step does not change the update), and the shared prompt of a
    group run once for all its samples (`shared_prompt_logps`)."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        checkpointing = self.args.gradient_checkpointing and torch.is_grad_enabled()
        if checkpointing or not shared_prompt_applies(self.accelerator, model) or compute_aux_loss or \
                any(v is not None for v in multimodal.values()) or not shares_prompt(input_ids, attention_mask,
                                                                                      logits_to_keep):
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              batch_size, compute_entropy, compute_aux_loss,
                                                              **multimodal)
        with self.accelerator.autocast():
            return shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, compute_entropy)

    def _prepare_inputs(self, generation_batch):
        if not self.model.training:  # evaluation: TRL's own path
            return super()._prepare_inputs(generation_batch)
        spg = self.args.steps_per_generation
        if self._step % (spg * self.num_iterations) == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            self._buffered_inputs = [trim_padding(b) for b in split_tensor_dict(batch, spg)]
        return self._buffered_inputs[self._step % spg]
