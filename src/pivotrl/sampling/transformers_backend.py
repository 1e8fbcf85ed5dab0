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
import os

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sample, Sampler, SamplingParams, load_chat_template, \
    register_backend, render_prompt, whole_turns


def plan_calls(lengths: list[int], n: int, max_prompts: int, token_budget: int) -> list[tuple[list[int], int]]:
    """Split prompts into `generate` calls under a memory budget: (positions in `lengths`, samples
    per call). A call holds its prompts' key/value cache once per sample (the shared prefill repeats
    it), so its cost is its prompt tokens x samples; calls keep that within `token_budget` and at most
    `max_prompts` prompts. A prompt whose `n` samples alone exceed the budget gets a call of its own
    and its samples come in chunks (at least one at a time: a long prompt never fails here)."""
    calls: list[tuple[list[int], int]] = []
    group: list[int] = []
    tokens = 0
    for i, length in enumerate(lengths):
        if length * n > token_budget:
            if group:
                calls.append((group, n))
                group, tokens = [], 0
            calls.append(([i], max(1, min(n, token_budget // max(length, 1)))))
            continue
        if group and (len(group) >= max_prompts or (tokens + length) * n > token_budget):
            calls.append((group, n))
            group, tokens = [], 0
        group.append(i)
        tokens += length
    if group:
        calls.append((group, n))
    return calls


def cpu_threads() -> tuple[int, str]:
    """Threads for generation on the CPU, and why: the CPUs this process may use less those other
    work keeps busy (the 1-minute load average). Torch's default, one per core, is slow when the
    cores are shared: 8 x 48 tokens took 41 s with 2 threads on a busy 2-core machine, 1.4 s with 1."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    n = max(1, min(torch.get_num_threads(), cpus - busy))
    return n, f"{cpus} CPU(s) with a load of {busy}"


@register_backend("transformers")
class TransformersSampler(Sampler):
    def __init__(self, model, device: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 per_sample: bool = False, chat_template: str | None = None, num_threads: int | None = None,
                 max_context: int | None = None, share_prefill: bool = True, tokenizer=None,
                 chat_template_kwargs: dict | None = None, token_budget: int = 65536):
        """`model`: a local directory or hub id, or a loaded model (then pass its `tokenizer` too),
        as when a trainer evaluates or re-profiles its current policy. `batch_size`: prompts per
        `generate` call at most; `token_budget`: prompt tokens x samples in flight per call at most
        (`plan_calls`), the knob that bounds memory at long prompts and large K."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one that matters
        if num_threads:  # process-wide: the CLI chooses it (cpu_threads); a library caller decides
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
        self.token_budget = max(1, int(token_budget))
        self._cache_kw, self._logits_to_keep = forward_keywords(self.model)
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
        texts = [render_prompt(self.tokenizer, p, self.chat_template, self.chat_template_kwargs) for p in prompts]
        for i, text in enumerate(texts):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) + params.max_tokens > self.max_context:
                results[i] = PromptResult([], len(ids), f"prompt_too_long: {len(ids)} tokens + max_tokens "
                                          f"{params.max_tokens} > context {self.max_context}")
            else:
                todo.append((i, ids))
        todo.sort(key=lambda x: len(x[1]))  # similar lengths together: less padding
        if self.per_sample:  # one call per sample (the slow reference the throughput benchmark compares with)
            for i, ids in todo:
                results[i] = PromptResult([s for _ in range(params.n) for s in self._generate([ids], params, 1)[0]],
                                          len(ids))
        else:
            for group, chunk in plan_calls([len(ids) for _, ids in todo], params.n, self.batch_size,
                                           self.token_budget):
                batch = [todo[j][1] for j in group]
                outs = self._generate(batch, params, params.n) if chunk >= params.n else \
                    [self._generate_chunked(batch[0], params, chunk)]
                for j, out in zip(group, outs):
                    results[todo[j][0]] = PromptResult(out, len(todo[j][1]))
        return [whole_turns(text, r) for text, r in zip(texts, results)]  # type: ignore[arg-type]

    def _generate_chunked(self, ids: list[int], params: SamplingParams, chunk: int) -> list[Sample]:
        """The n samples of one long prompt, `chunk` at a time, from one prefill of it."""
        import torch

        prefilled = None
        if self.share_prefill:
            enc = self.tokenizer.pad({"input_ids": [ids]}, return_tensors="pt").to(self.device)
            with torch.no_grad():
                prefilled = self._prefill(enc["input_ids"], enc["attention_mask"])
        out: list[Sample] = []
        while len(out) < params.n:
            out.extend(self._generate([ids], params, min(chunk, params.n - len(out)), prefilled)[0])
        return out

    def _generate(self, batch: list[list[int]], params: SamplingParams, n: int, prefilled=None) -> list[list[Sample]]:
        import torch

        enc = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        # Every sampling field explicit (None: off), so none comes from the model's generation_config
        # (Qwen3's top_k 20); explicit synced_gpus, which transformers would decide from global flags.
        kwargs = dict(max_new_tokens=params.max_tokens, synced_gpus=generation_must_sync(self.model),
                      repetition_penalty=params.repetition_penalty,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self.eos_ids))
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k or None, min_p=params.min_p or None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_p=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            if self.share_prefill:
                out = self._generate_shared(enc["input_ids"], enc["attention_mask"], n, kwargs, prefilled)
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

    def _prefill(self, ids, mask):
        return prefill(self.model, ids, mask, self._cache_kw, self._logits_to_keep)

    def _generate_shared(self, ids, mask, n: int, kwargs: dict, prefilled=None):
        return generate_from_prefill(self.model, ids, mask, n, kwargs, self._cache_kw, self._logits_to_keep,
                                     prefilled)


def generation_must_sync(model) -> bool:
    """Whether `generate` on `model` must keep every rank's decoding loop in step (transformers'
    `synced_gpus`): only where its parameters are sharded over the ranks, so that each forward
    all-gathers them (FSDP 1 or 2; DeepSpeed ZeRO-3 not gathered, whose parameters are then empty
    placeholders). transformers decides it from global flags instead (`generation/utils.py`): with
    ZeRO-3 enabled it syncs even a gathered copy, so ranks that sample different numbers of states
    (`my_share`) meet another rank's `all_gather_object` with a decoding all-reduce and hang; and it
    knows an FSDP2 module only by the `_is_fsdp_managed_module` attribute, which torch 2.13's
    `fully_shard` sets on every module it manages (a torch or a wrapper that does not would leave a
    sharded module unsynced). This reads the parameters, and pivotrl passes the answer explicitly
    wherever it generates. DeepSpeed and FSDP launches are untested here (no GPU)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    from torch.distributed.tensor import DTensor

    for p in model.parameters():
        if isinstance(p, DTensor):  # FSDP2 (`fully_shard`)
            return True
        if getattr(p, "ds_numel", None) and p.numel() == 0:  # ZeRO-3, partitioned (not gathered)
            return True
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())  # FSDP1
    except ImportError:
        return False


def forward_keywords(model) -> tuple[str, bool]:
    """(the cache keyword of `model.forward`, whether it takes `logits_to_keep`): transformers renamed
    `past_key_values` to `cache` (5.2x); use whichever this version has."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward = inspect.signature(type(base).forward).parameters
    return ("cache" if "cache" in forward else "past_key_values"), "logits_to_keep" in forward


def prefill(model, ids, mask, cache_kw: str, logits_to_keep: bool):
    """The key/value cache of all but the last prompt token (left-padded `ids`). Logits for the last
    position only: the prefill's own logits are never used, and for every position they would cost
    prompt tokens x vocabulary (about 19 GB at 8 x 8k tokens of Qwen3's 151,936-token vocabulary)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at each prompt
    extra = {"logits_to_keep": 1} if logits_to_keep else {}
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1],
          use_cache=True, **{cache_kw: cache}, **extra)
    return cache


def generate_from_prefill(model, ids, mask, n: int, gen_kwargs: dict, cache_kw: str, logits_to_keep: bool,
                          prefilled=None):
    """`n` samples of each prompt from one prefill of it: all but its last token run once, the cache
    repeated `n` times, then `generate` (rows in prompt order, each prompt's `n` samples together). A
    `prefilled` cache (a long prompt sampled in chunks) is copied, never consumed."""
    import copy

    cache = copy.deepcopy(prefilled) if prefilled is not None else prefill(model, ids, mask, cache_kw, logits_to_keep)
    if n > 1:
        cache.batch_repeat_interleave(n)
    return model.generate(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                          **gen_kwargs, **{cache_kw: cache})
