"""The sampling interface: prompts (chat messages + tools) in, n completions each out.

Every backend (transformers, vLLM, an OpenAI-compatible server) and the Ray pool around them
answer `sample(prompts, params, seed)` for one batch. The batch is the unit of determinism: the
same batch with the same seed gives the same samples, which is what lets a resumed or distributed
profiling run reproduce an uninterrupted local one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pivotrl.errors import DataError


# One default token budget for a generated action, in profiling, training and evaluation alike: the
# pivot filter must measure the policy that is trained, under the same budget. A thinking model
# needs far more (its reasoning counts): set it, once, where you profile; training reads it from there.
GENERATION_BUDGET = 256


@dataclass(frozen=True)
class SamplingParams:
    """How actions are sampled. Every backend sends every field explicitly, so that a server or an
    engine never fills one from the model's `generation_config` (Qwen3's says top_k 20): the pivot
    filter must measure the distribution TRL trains with, whose defaults these are (GRPOConfig:
    top_k 0, off; repetition_penalty 1.0; min_p unset, 0 here)."""

    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = GENERATION_BUDGET
    stop: tuple[str, ...] = ()
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0

    def engine_fields(self) -> dict:
        """top_k, min_p and repetition_penalty as vLLM (engine or server) and SGLang take them: -1 is
        top_k off in every version of both."""
        return {"top_k": self.top_k if self.top_k > 0 else -1, "min_p": self.min_p,
                "repetition_penalty": self.repetition_penalty}


@dataclass
class Prompt:
    messages: list[dict]
    tools: list[dict] = field(default_factory=list)


@dataclass
class Sample:
    """One completion. `completion` is what verifiers read: the text, or an OpenAI message dict
    when a server already parsed tool calls out of it."""

    completion: Any
    tokens: int
    truncated: bool  # stopped by max_tokens rather than by end of turn


@dataclass
class PromptResult:
    samples: list[Sample]
    prompt_tokens: int = 0
    skipped: str = ""  # why this prompt was not sampled (e.g. longer than the context)


_BACKENDS: dict[str, Callable[..., Any]] = {}


def register_backend(name: str):
    def deco(cls):
        _BACKENDS[name] = cls
        return cls
    return deco


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_sampler(backend: str, **options):
    if backend not in _BACKENDS:
        raise DataError(f"unknown sampling backend {backend!r}; choose one of {', '.join(list_backends())}")
    return _BACKENDS[backend](**options)


class Sampler:
    """Base class: backends implement `sample`; `sample_batches` runs batches in order (the Ray
    pool overrides it to run them in parallel)."""

    def sample(self, prompts: list[Prompt], params: SamplingParams, seed: int | None = None) -> list[PromptResult]:
        raise NotImplementedError

    def sample_batches(self, batches: Iterable[tuple[list[Prompt], SamplingParams, int | None]]
                       ) -> Iterator[list[PromptResult]]:
        for prompts, params, seed in batches:
            yield self.sample(prompts, params, seed)

    def close(self) -> None:
        pass


def prompt_seed(seed: int | None, position: int, prompt: Prompt) -> int:
    """A seed of its own for each prompt of a call, from the call's seed, the prompt's position and
    content: backends that seed each request (vLLM, an OpenAI-compatible server) would otherwise give
    two identical states, or every state of a call, the same samples."""
    import hashlib
    import json

    content = json.dumps([prompt.messages, prompt.tools], sort_keys=True, default=str)
    return int(hashlib.sha1(f"{seed}:{position}:{content}".encode()).hexdigest()[:8], 16)


def load_chat_template(chat_template: str | None) -> str | None:
    """A template given as a file path or as the template text itself."""
    if chat_template and "{" not in chat_template and Path(chat_template).exists():
        return Path(chat_template).read_text()
    return chat_template


def render_prompt(tokenizer, prompt: Prompt, chat_template: str | None = None,
                  template_kwargs: dict | None = None) -> str:
    """The prompt text, with the tokenizer's own chat template (or the one given). `template_kwargs`
    go to the template (e.g. `enable_thinking: false` for Qwen3's hybrid models), the same in
    profiling, training and evaluation."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise DataError(f"the tokenizer of {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                        "pass one with --chat-template FILE")
    return tokenizer.apply_chat_template(prompt.messages, tools=prompt.tools or None, chat_template=template,
                                         tokenize=False, add_generation_prompt=True, **(template_kwargs or {}))


def whole_turns(prompt_text: str, result: PromptResult) -> PromptResult:
    """A prompt's samples as whole assistant turns (`pivotrl.rewards.parse.as_turn`): where the
    template opened a reasoning block in the prompt, each completion gets its opening tag back."""
    from pivotrl.rewards.parse import as_turn

    samples = [replace(s, completion=as_turn(prompt_text, s.completion)) for s in result.samples]
    return replace(result, samples=samples)
