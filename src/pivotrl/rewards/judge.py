"""`judge`: an LLM decides whether the candidate action achieves what the reference did.

The judge is any callable `prompt -> reply text` (a sampler's chat call, an API client, a local
model). Its reply must end with a line `VERDICT: YES` or `VERDICT: NO`; anything else is
`judge_unparseable` and scores 0 (a judge that rambles is not trusted). Verdicts are cached by a
hash of the prompt, in memory and, with `cache_path`, in a JSONL file, so the same pair is never
judged twice, across runs too. A judge with no reply after `timeout_s` (default 300) scores 0 as
`judge_timeout`, uncached, so that a hung connection never stops a run.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from pivotrl.artifacts import append_jsonl, iter_jsonl
from pivotrl.rewards.base import Score, call_with_timeout, register_verifier
from pivotrl.rewards.exact import canonical_text
from pivotrl.rewards.parse import parse_action

DEFAULT_TEMPLATE = """You compare two actions of an AI agent at the same point of a conversation.

Conversation so far (last messages):
{context}

Reference action (known to be correct):
{reference}

Candidate action:
{candidate}

Does the candidate achieve the same thing as the reference (same effect; wording, argument order
and formatting may differ)? Answer with one short sentence of reasoning, then a last line that is
exactly `VERDICT: YES` or `VERDICT: NO`."""

_VERDICT = re.compile(r"^\s*VERDICT:\s*(YES|NO)\s*$")


def parse_verdict(reply: str) -> bool | None:
    lines = [ln for ln in str(reply).strip().splitlines() if ln.strip()]
    m = _VERDICT.match(lines[-1]) if lines else None
    return None if m is None else m.group(1) == "YES"


@register_verifier("judge")
class JudgeVerifier:
    def __init__(self, judge: Callable[[str], str] | str | None = None, template: str = DEFAULT_TEMPLATE,
                 cache_path: str | None = None, context_messages: int = 4, timeout_s: float | None = 300.0):
        if isinstance(judge, str):
            import importlib

            module, _, attr = judge.partition(":")
            judge = getattr(importlib.import_module(module), attr)
        if judge is None:
            raise ValueError("the judge verifier needs a judge: a callable prompt -> reply, or 'module:callable'")
        self.judge, self.template, self.context_messages = judge, template, context_messages
        self.timeout_s = timeout_s
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, bool | None] = {}
        if self.cache_path and self.cache_path.exists():
            # a cache torn by a crash keeps its whole lines
            self.cache = {r["key"]: r["verdict"] for _, r in iter_jsonl(self.cache_path, Counter())
                          if isinstance(r, dict) and "key" in r}
        self.calls = 0

    def prompt(self, candidate_text: str, state) -> str:
        ctx = getattr(state, "context", None) or []
        if isinstance(ctx, str):  # a prompt already rendered to text (as a trainer may pass it)
            context = ctx[-500 * self.context_messages:]
        else:
            msgs = [m for m in ctx if isinstance(m, dict)][-self.context_messages:] if isinstance(ctx, list) else []
            context = "\n".join(f"{m.get('role')}: {str(m.get('content', ''))[:500]}" for m in msgs) or "(none)"
        return self.template.format(context=context, reference=canonical_text(state.reference),
                                    candidate=candidate_text)

    def score(self, completion: Any, state) -> Score:
        action = parse_action(completion, state.tools)
        if action.kind == "none":
            return Score(0.0, "no_action")
        prompt = self.prompt(canonical_text(action), state)
        # Model text can hold lone surrogates, which strict UTF-8 refuses.
        key = hashlib.sha256(prompt.encode("utf-8", errors="surrogatepass")).hexdigest()
        if key not in self.cache:
            self.calls += 1
            try:
                verdict = parse_verdict(call_with_timeout(self.judge, prompt, self.timeout_s))
            except TimeoutError:
                return Score(0.0, "judge_timeout")
            except Exception:  # a judge outage must not stop training; it scores 0 and is not cached
                return Score(0.0, "judge_error")
            self.cache[key] = verdict
            if self.cache_path:
                append_jsonl(self.cache_path, [{"key": key, "verdict": verdict}])
        verdict = self.cache[key]
        if verdict is None:
            return Score(0.0, "judge_unparseable")
        return Score(1.0, "judge_yes") if verdict else Score(0.0, "judge_no")
