"""`openai` backend: any OpenAI-compatible chat endpoint (vLLM or SGLang server, `transformers serve`).

Every sampling parameter is sent explicitly (`SamplingParams`), the server's own defaults never
used. Async requests with bounded concurrency; the `openai` client retries connection errors, 429s and
5xx with exponential backoff. Servers that ignore `n` (`transformers serve` does) are asked again
until each prompt has n samples. Tool calls the server parsed come back as an OpenAI message,
which the verifiers read directly.
"""

from __future__ import annotations

import asyncio
import warnings

from pivotrl.errors import DataError
from pivotrl.sampling.base import Prompt, PromptResult, Sample, Sampler, SamplingParams, load_chat_template, \
    prompt_seed, register_backend


@register_backend("openai")
class OpenAISampler(Sampler):
    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", model: str = "default", api_key: str = "EMPTY",
                 concurrency: int = 8, max_retries: int = 3, timeout: float = 120.0,
                 chat_template_kwargs: dict | None = None, chat_template: str | None = None, **_ignored):
        """`chat_template` (a file or the template's text) and `chat_template_kwargs` go with every
        request, as vLLM's server takes them (`chat_template`, `chat_template_kwargs`); a server that
        knows neither renders with its own template."""
        self.base_url, self.model, self.api_key = base_url, model, api_key
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.chat_template = load_chat_template(chat_template)
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, timeout
        self.sampling_fields_refused = False

    def sample(self, prompts: list[Prompt], params: SamplingParams, seed: int | None = None) -> list[PromptResult]:
        return asyncio.run(self._sample_all(prompts, params, seed))

    async def _sample_all(self, prompts, params, seed):
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                    max_retries=self.max_retries, timeout=self.timeout)
        gate = asyncio.Semaphore(self.concurrency)
        try:
            return await asyncio.gather(*(self._one(client, gate, p, params, None if seed is None else
                                                    prompt_seed(seed, i, p)) for i, p in enumerate(prompts)))
        except openai.APIConnectionError as exc:
            raise DataError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({exc.__cause__ or exc}); "
                            "start one (e.g. `vllm serve MODEL` or `transformers serve DIR`) or fix --base-url") from None
        except openai.NotFoundError as exc:
            raise DataError(f"server at {self.base_url} does not serve model {self.model!r}: {exc}") from None
        finally:
            await client.close()

    def _refuse_sampling_fields(self, params: SamplingParams) -> None:
        """A server that refuses vLLM's extra sampling fields (`transformers serve` answers 422): go on
        without them only where they ask for what a server does by default (off, off, 1.0), and say so."""
        if (params.top_k, params.min_p, params.repetition_penalty) != (0, 0.0, 1.0):
            raise DataError(f"the server at {self.base_url} refuses top_k/min_p/repetition_penalty (422), and this "
                            f"profile sets them (top_k {params.top_k}, min_p {params.min_p}, repetition_penalty "
                            f"{params.repetition_penalty}): use a server that takes them (vLLM, SGLang)")
        self.sampling_fields_refused = True
        warnings.warn(f"the server at {self.base_url} refuses top_k/min_p/repetition_penalty (422): sampling with "
                      "its own defaults for them (vLLM and SGLang take them; check its generation config has "
                      "no top_k)", stacklevel=2)

    async def _one(self, client, gate, prompt: Prompt, params: SamplingParams, seed) -> PromptResult:
        import openai

        samples: list[Sample] = []
        prompt_tokens = 0
        while len(samples) < params.n:
            want = params.n - len(samples)
            kwargs = dict(model=self.model, messages=prompt.messages, n=want, temperature=params.temperature,
                          top_p=params.top_p, max_tokens=params.max_tokens)
            if prompt.tools:
                kwargs["tools"] = prompt.tools
            if params.stop:
                kwargs["stop"] = list(params.stop)
            if seed is not None:
                kwargs["seed"] = seed + len(samples)
            extra = {"chat_template_kwargs": self.chat_template_kwargs, "chat_template": self.chat_template}
            extra = {k: v for k, v in extra.items() if v}
            # vLLM's and SGLang's sampling fields, every one sent: left out, `vllm serve` fills them from the
            # model's generation_config (Qwen3: top_k 20) and the profile measures a sharper policy than
            # TRL trains (top_k 0)
            if not self.sampling_fields_refused:
                extra.update(params.engine_fields())
            if extra:
                kwargs["extra_body"] = extra
            async with gate:
                try:
                    resp = await client.chat.completions.create(**kwargs)
                except openai.UnprocessableEntityError:
                    if "top_k" not in extra:  # refused for another reason
                        raise
                    if not self.sampling_fields_refused:  # the first of the concurrent requests to hear it
                        self._refuse_sampling_fields(params)
                    continue  # asked again without them
            if not resp.choices:
                raise DataError(f"server at {self.base_url} returned no choices")
            usage = resp.usage
            prompt_tokens = getattr(usage, "prompt_tokens", 0) or prompt_tokens
            per_choice = (getattr(usage, "completion_tokens", 0) or 0) // max(len(resp.choices), 1)
            for choice in resp.choices[:want]:
                msg = choice.message
                completion = {"role": "assistant", "content": msg.content or "",
                              "tool_calls": [tc.model_dump() for tc in (msg.tool_calls or [])]}
                samples.append(Sample(completion, per_choice, choice.finish_reason == "length"))
        return PromptResult(samples, prompt_tokens)
