"""Rollouts that read each pivot's context once (`share_prefill`, on by default without vLLM).

TRL's `GRPOTrainer` generates a group by repeating the prompt `num_generations` times and calling
`generate` on the whole block, so a pivot's context (thousands of tokens of conversation, tool
schemas and tool output, before a 20-60 token action) is prefilled once per sample. Here each
distinct prompt of the generation batch is prefilled once, its key/value cache repeated for its
samples, and `generate` continues from there with TRL's own generation config (temperature, top-p,
top-k, min-p, repetition penalty, token budget, end tokens), as the profiling sampler does
(`pivotrl.sampling.transformers_backend.generate_from_prefill`). Completions are cut after their
first end token exactly as TRL cuts them, so rewards, `mask_truncated_completions` and the loss see
the same thing; greedy decoding gives TRL's completions token for token (tested).

Falls back to TRL's path where this does not apply: vLLM (which caches prefixes itself: enable its
prefix caching), continuous batching, images, or a generation batch that is not whole groups of one
prompt each.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer
from trl.extras.profiling import profiling_context
from trl.models import unwrap_model_for_generation


def whole_groups(prompt_ids: list[list[int]], n: int) -> list[list[int]] | None:
    """The distinct prompts when the batch is consecutive groups of `n` copies of one prompt each."""
    if n < 1 or len(prompt_ids) % n:
        return None
    groups = [prompt_ids[i:i + n] for i in range(0, len(prompt_ids), n)]
    if any(any(p != g[0] for p in g) for g in groups):
        return None
    return [g[0] for g in groups]


def cut_after_end(rows: torch.Tensor, end_ids: list[int]) -> list[list[int]]:
    """Each row up to and including its first end token (the whole row when it has none), as TRL does."""
    is_end = torch.isin(rows, torch.tensor(end_ids, device=rows.device))
    out = []
    for row, ends in zip(rows.tolist(), is_end.tolist()):
        first = ends.index(True) if True in ends else len(row)
        out.append(row[:first + 1])
    return out


class SharedPrefillGRPOTrainer(GRPOTrainer):
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        distinct = whole_groups(prompt_ids, num_generations)
        if (not getattr(self.args, "share_prefill", True) or self.use_vllm or self.use_transformers_continuous_batching
                or images or multimodal_fields or distinct is None):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        from pivotrl.sampling.transformers_backend import forward_keywords, generate_from_prefill, generation_must_sync

        pad = self._tokenizer.pad_token_id
        width = max(len(p) for p in distinct)
        device = self.accelerator.device
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in distinct], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in distinct], device=device)
        with (
            profiling_context(self, "transformers.generate"),
            unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                        gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                        generation_kwargs=self.generation_kwargs,
                                        gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs)
            as model,
            torch.no_grad(),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            cache_kw, logits_to_keep = forward_keywords(model)
            # Every rank generates once a step, so syncing costs no hang here: a sharded module must decode in
            # step (`generation_must_sync` reads the parameters; transformers reads an attribute that torch
            # 2.13 sets, an older torch may not); else transformers' own choice, as on TRL's path.
            gen = {"generation_config": self.generation_config}
            if generation_must_sync(model):
                gen["synced_gpus"] = True
            out = generate_from_prefill(model, ids, mask, num_generations, gen, cache_kw, logits_to_keep)
        return cut_after_end(out[:, width:], self.eos_token_ids), None
