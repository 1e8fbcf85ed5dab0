"""`vllm` backend (extra `[vllm]`, needs a GPU): vLLM's offline `LLM` engine, the K samples of a
state in one request, prefix caching on (they share the prompt's cache blocks, not copies of them).

Written against vLLM's documented offline API, in the range TRL supports (0.22 to 0.31):
- prompts go in as token ids (`TokensPrompt`), rendered and tokenized exactly as the transformers
  backend does, so vLLM does not tokenize the text again and add special tokens of its own;
- every prompt gets its own seed, from the call's seed and the prompt's position and content:
  vLLM seeds sample i of a request from its seed, so one seed for the whole batch would give two
  identical states identical samples;
- greedy decoding with K > 1, which vLLM refuses, asks for one sample and repeats it (greedy
  samples are identical anyway, as with the transformers backend);
- every other option (`-B key=value`: `enforce_eager`, `max_num_seqs`, `swap_space`, ...) goes to
  the engine as it is;
- a LoRA run's checkpoint (a folder with `adapter_config.json`) is profiled as its base model
  plus the adapter (`LoRARequest`), or pass `lora_path` with a base `model`.
It has not run on a GPU yet in this project: its wiring is tested against a stand-in module.
"""

from __future__ import annotations

import json
from pathlib import Path

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sample, Sampler, SamplingParams, load_chat_template, \
    prompt_seed, register_backend, render_prompt, whole_turns


def lora_checkpoint(model: str, lora_path: str | None) -> tuple[str, str | None]:
    """(base model, adapter folder): a PEFT checkpoint folder names its base in adapter_config.json."""
    if lora_path:
        return model, lora_path
    config = Path(model) / "adapter_config.json"
    if config.is_file():
        base = json.loads(config.read_text()).get("base_model_name_or_path")
        if not base:
            raise DataError("adapter_config.json names no base model", file=str(config))
        return base, model
    return model, None


@register_backend("vllm")
class VLLMSampler(Sampler):
    def __init__(self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, chat_template: str | None = None, dtype: str = "auto",
                 chat_template_kwargs: dict | None = None, lora_path: str | None = None, max_lora_rank: int = 64,
                 **engine_options):
        try:
            import vllm
            from vllm.inputs import TokensPrompt
        except ImportError:
            raise DataError("the vllm backend needs vLLM: pip install 'pivotrl[vllm]' (on a GPU machine)") from None
        base, self.lora_path = lora_checkpoint(model, lora_path)
        if self.lora_path:
            engine_options.update(enable_lora=True, max_lora_rank=max_lora_rank)
        engine_options.setdefault("enable_prefix_caching", True)
        try:
            self.llm = vllm.LLM(model=base, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                                gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                **engine_options)
        except TypeError as exc:
            raise DataError(f"vLLM refused an engine option: {exc}") from None
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_template = load_chat_template(chat_template)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.max_context = self.llm.llm_engine.model_config.max_model_len
        self._vllm, self._tokens_prompt = vllm, TokensPrompt
        self._lora = None
        if self.lora_path:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("pivotrl-adapter", 1, str(self.lora_path))

    def sample(self, prompts: list[Prompt], params: SamplingParams, seed: int | None = None) -> list[PromptResult]:
        results: list[PromptResult | None] = [None] * len(prompts)
        texts = [""] * len(prompts)
        requests, per_request, index = [], [], []
        greedy = params.temperature <= 0
        for i, p in enumerate(prompts):
            text = render_prompt(self.tokenizer, p, self.chat_template, self.chat_template_kwargs)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) + params.max_tokens > self.max_context:
                results[i] = PromptResult([], len(ids), f"prompt_too_long: {len(ids)} tokens + max_tokens "
                                          f"{params.max_tokens} > context {self.max_context}")
                continue
            texts[i] = text
            requests.append(self._tokens_prompt(prompt_token_ids=ids))
            per_request.append(self._vllm.SamplingParams(
                n=1 if greedy else params.n, temperature=max(params.temperature, 0.0),
                top_p=1.0 if greedy else params.top_p, max_tokens=params.max_tokens,
                **params.engine_fields(),
                stop=list(params.stop) or None, seed=None if seed is None else prompt_seed(seed, i, p)))
            index.append((i, len(ids)))
        outputs = self.llm.generate(requests, per_request, use_tqdm=False, lora_request=self._lora) if requests else []
        for (i, n_tok), out in zip(index, outputs):
            samples = [Sample(o.text, len(o.token_ids), o.finish_reason == "length") for o in out.outputs]
            if greedy:
                samples = samples[:1] * params.n
            results[i] = PromptResult(samples, n_tok)
        return [whole_turns(text, r) for text, r in zip(texts, results)]  # type: ignore[arg-type]
