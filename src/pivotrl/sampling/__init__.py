"""Sampling backends behind one interface. Importing this package registers them; adding one is a
module with a `Sampler` subclass decorated by `@register_backend("name")`, imported here."""

from pivotrl.sampling.base import (  # noqa: F401
    Prompt, PromptResult, Sample, Sampler, SamplingParams, get_sampler, list_backends, register_backend, render_prompt,
)
from pivotrl.sampling import openai_backend, transformers_backend, vllm_backend  # noqa: F401
from pivotrl.sampling.ray_pool import RaySampler  # noqa: F401
