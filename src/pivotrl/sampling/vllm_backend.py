"""`vllm` backend (extra `[vllm]`, needs a GPU): the offline `LLM` engine, n samples per prompt in
one request, prefix caching on (all K samples of a state share its prompt)."""

from __future__ import annotations

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sample, Sampler, SamplingParams, load_chat_template, \
    register_backend, render_prompt


@register_backend("vllm")
class VLLMSampler(Sampler):
    def __init__(self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, chat_template: str | None = None, dtype: str = "auto",
                 chat_template_kwargs: dict | None = None, **_ignored):
        try:
            import vllm
        except ImportError:
            raise DataError("the vllm backend needs vLLM: pip install 'pivotrl[vllm]' (on a GPU machine)") from None
        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            enable_prefix_caching=True)
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_template = load_chat_template(chat_template)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.max_context = self.llm.llm_engine.model_config.max_model_len
        self._vllm = vllm

    def sample(self, prompts: list[Prompt], params: SamplingParams, seed: int | None = None) -> list[PromptResult]:
        results: list[PromptResult | None] = [None] * len(prompts)
        texts, index, lengths = [], [], {}
        for i, p in enumerate(prompts):
            text = render_prompt(self.tokenizer, p, self.chat_template, self.chat_template_kwargs)
            n_tok = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            lengths[i] = n_tok
            if n_tok + params.max_tokens > self.max_context:
                results[i] = PromptResult([], n_tok, f"prompt_too_long: {n_tok} tokens + max_tokens "
                                          f"{params.max_tokens} > context {self.max_context}")
            else:
                texts.append(text)
                index.append(i)
        sp = self._vllm.SamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                                       max_tokens=params.max_tokens, stop=list(params.stop) or None, seed=seed)
        for i, out in zip(index, self.llm.generate(texts, sp, use_tqdm=False) if texts else []):
            results[i] = PromptResult([Sample(o.text, len(o.token_ids), o.finish_reason == "length")
                                       for o in out.outputs], lengths[i])
        return results  # type: ignore[return-value]
