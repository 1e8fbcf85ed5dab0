"""`transformers` backend: batched `generate` with left padding, n samples per prompt per call.

Works on CPU or GPU; the default backend and the one the tests use. Modes, for the throughput
benchmark: `batch_size` prompts per `generate` call (1 = no batching across prompts), and
`per_sample=True` makes one call per sample (the slow baseline).

Agent prompts are long and actions short, so prefill dominates: `generate(num_return_sequences=n)`
would prefill every prompt n times. With `share_prefill` (default) each prompt is prefilled once
and its KV cache repeated for its n samples, as vLLM's prefix caching does; greedy outputs are
identical either way (tested).
"""

from __future__ import annotations

import inspect

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sample, Sampler, SamplingParams, load_chat_template, \
    register_backend, render_prompt


@register_backend("transformers")
class TransformersSampler(Sampler):
    def __init__(self, model, device: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 per_sample: bool = False, chat_template: str | None = None, num_threads: int | None = None,
                 max_context: int | None = None, share_prefill: bool = True, tokenizer=None,
                 chat_template_kwargs: dict | None = None):
        """`model`: a local directory or hub id, or a loaded model (then pass its `tokenizer` too),
        as when a trainer evaluates or re-profiles its current policy."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
        if num_threads:
            torch.set_num_threads(num_threads)
        if isinstance(model, str):
            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(model)
                self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
            except OSError as exc:
                raise DataError(f"cannot load model {model!r}: {exc}") from None
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer with an in-memory model")
            self.model, self.tokenizer = model, tokenizer
            self.device = next(model.parameters()).device
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat_template = load_chat_template(chat_template)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.batch_size, self.per_sample, self.share_prefill = max(1, batch_size), per_sample, share_prefill
        # transformers renamed `past_key_values` to `cache` (5.2x); use whichever this version has.
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._cache_kw = "cache" if "cache" in inspect.signature(type(base).forward).parameters \
            else "past_key_values"
        self.max_context = max_context or getattr(self.model.config, "max_position_embeddings", None) or 10**9
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = gen_eos or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def sample(self, prompts: list[Prompt], params: SamplingParams, seed: int | None = None) -> list[PromptResult]:
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        results: list[PromptResult | None] = [None] * len(prompts)
        todo: list[tuple[int, list[int]]] = []
        for i, p in enumerate(prompts):
            ids = self.tokenizer(render_prompt(self.tokenizer, p, self.chat_template, self.chat_template_kwargs),
                                 add_special_tokens=False)["input_ids"]
            if len(ids) + params.max_tokens > self.max_context:
                results[i] = PromptResult([], len(ids), f"prompt_too_long: {len(ids)} tokens + max_tokens "
                                          f"{params.max_tokens} > context {self.max_context}")
            else:
                todo.append((i, ids))
        todo.sort(key=lambda x: len(x[1]))  # similar lengths together: less padding
        step = 1 if self.per_sample else self.batch_size
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            reps = 1 if self.per_sample else params.n
            samples: dict[int, list[Sample]] = {i: [] for i, _ in chunk}
            for _ in range(params.n if self.per_sample else 1):
                for (i, _), out in zip(chunk, self._generate([ids for _, ids in chunk], params, reps)):
                    samples[i].extend(out)
            for i, ids in chunk:
                results[i] = PromptResult(samples[i], len(ids))
        return results  # type: ignore[return-value]

    def _generate(self, batch: list[list[int]], params: SamplingParams, n: int) -> list[list[Sample]]:
        import torch

        enc = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        kwargs = dict(max_new_tokens=params.max_tokens, top_k=None,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self.eos_ids))
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            if self.share_prefill:
                out = self._generate_shared(enc["input_ids"], enc["attention_mask"], n, kwargs)
            else:  # inputs repeated by hand: greedy decoding refuses num_return_sequences > 1
                out = self.model.generate(input_ids=enc["input_ids"].repeat_interleave(n, 0),
                                          attention_mask=enc["attention_mask"].repeat_interleave(n, 0), **kwargs)
        if was_training:
            self.model.train()
        gen = out[:, enc["input_ids"].shape[1]:].tolist()
        per_prompt: list[list[Sample]] = []
        for b in range(len(batch)):
            row = []
            for seq in gen[b * n:(b + 1) * n]:
                end = next((j for j, t in enumerate(seq) if t in self.eos_ids), None)
                tokens = seq[: end + 1] if end is not None else seq
                while end is None and tokens and tokens[-1] == self.tokenizer.pad_token_id:
                    tokens = tokens[:-1]  # a stop string ended it; the rest of the row is padding
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                row.append(Sample(text, len(tokens), end is None and len(tokens) >= params.max_tokens))
            per_prompt.append(row)
        return per_prompt

    def _generate_shared(self, ids, mask, n: int, kwargs: dict):
        """Prefill all but the last prompt token once, repeat the cache n times, then generate."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at each prompt
        self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1],
                   use_cache=True, **{self._cache_kw: cache})
        if n > 1:
            cache.batch_repeat_interleave(n)
        gen_kwargs = {**kwargs, self._cache_kw: cache}
        return self.model.generate(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                                   **gen_kwargs)
