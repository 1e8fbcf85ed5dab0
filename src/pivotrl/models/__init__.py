"""Tiny models built locally (no hub access): tokenizer, chat template, Qwen3 architecture."""

from pivotrl.models.tiny import CHAT_TEMPLATE, build_tiny_model, train_tokenizer  # noqa: F401
