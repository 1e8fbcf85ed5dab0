"""The lab: a small, honest, fully offline replica of the paper's experiment that runs on a CPU.

`domains/` holds the four agentic domains (tooluse, terminal, search, code), each with a task
generator, a real environment, an expert and a functional verifier; `ood` the out-of-domain
suite; `pretrain` the tiny base model; `evaluate` full-episode evaluation.
"""

from pathlib import Path

from pivotrl.lab.domains.base import Domain, get_domain, list_domains  # noqa: F401

BASE_MODEL = Path(__file__).resolve().parent / "base"  # the committed tiny base model and tokenizer
