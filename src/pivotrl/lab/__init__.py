"""The lab: a small, honest, fully offline replica of the paper's experiment that runs on a CPU.

`domains/` holds the four agentic domains (tooluse, terminal, search, code), each with a task
generator, a real environment, an expert and a functional verifier; `ood` the out-of-domain
suite; `pretrain` the tiny base model; `evaluate` full-episode evaluation.
"""

from pathlib import Path

BASE_MODEL = Path(__file__).resolve().parent / "base"  # the committed tiny base model and tokenizer


def __getattr__(name: str):
    """`Domain`, `get_domain`, `list_domains` on first use: importing `pivotrl.lab` (for its CLI or
    its base model's path) must not load the domains and their extra dependencies."""
    if name in ("Domain", "get_domain", "list_domains"):
        from pivotrl.lab.domains import base

        return getattr(base, name)
    raise AttributeError(name)
