"""Tiny models built locally (no hub access): tokenizer, chat template, Qwen3 architecture."""

from pivotrl.models.tiny import (  # noqa: F401
    CHAT_TEMPLATE, THINKING_CHAT_TEMPLATE, build_tiny_model, fit_tiny_model, train_tokenizer,
)
