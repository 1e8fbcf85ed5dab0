"""`--refresh-every N` (an extension beyond the paper): every N steps, re-profile the candidate
pool against the *current* policy and re-select, so pivots the policy has solved leave the pool
and states that became informative enter it.

The trainer reads an endless stream (a `datasets.IterableDataset`, which TRL supports) that draws
its prompts from the pool's current active set, so changing the active set changes what the next
steps train on. TRL's buffered shuffle is off for it (the draw is already random), or a refresh
would reach the trainer only after the buffer drained. The re-profiling samples are real
rollouts and are charged to the ledger.
"""

from __future__ import annotations

import random

from transformers import TrainerCallback

from pivotrl.pivots.profile import summarise
from pivotrl.pivots.state import State
from pivotrl.rewards import safe_score


class ActivePool:
    """Rows of the pool and which of them are active now."""

    def __init__(self, rows: list[dict], active: list[int], seed: int = 0):
        self.rows, self.active, self.rng = rows, list(active), random.Random(seed)

    def set_active(self, active: list[int]) -> None:
        self.active = list(active)

    def dataset(self):
        import datasets

        return datasets.IterableDataset.from_generator(_draw, gen_kwargs={"pool": self})


def _draw(pool: ActivePool):
    while True:
        yield pool.rows[pool.rng.choice(pool.active)]


class RefreshCallback(TrainerCallback):
    def __init__(self, pool_states: list[State], pool: ActivePool, verifier, tokenizer, every: int, k: int,
                 lambda_diff: float, max_tokens: int, ledger, chat_template: str | None = None):
        self.states, self.pool, self.verifier, self.tokenizer = pool_states, pool, verifier, tokenizer
        self.every, self.k, self.lambda_diff, self.max_tokens = every, k, lambda_diff, max_tokens
        self.ledger, self.chat_template = ledger, chat_template

    def on_step_end(self, args, state, control, model=None, **kw):
        if not self.every or state.global_step % self.every:
            return
        from pivotrl.sampling import Prompt, SamplingParams
        from pivotrl.sampling.transformers_backend import TransformersSampler

        sampler = TransformersSampler(model, tokenizer=self.tokenizer, chat_template=self.chat_template)
        results = sampler.sample([Prompt(s.context, s.tools) for s in self.states],
                                 SamplingParams(n=self.k, max_tokens=self.max_tokens), seed=state.global_step)
        keep = []
        for i, (s, res) in enumerate(zip(self.states, results)):
            rewards = [safe_score(self.verifier, x.completion, s).reward for x in res.samples]
            self.ledger.counters.rollout_turns += len(rewards)
            self.ledger.counters.verifier_calls += len(rewards)
            self.ledger.counters.generated_tokens += sum(x.tokens for x in res.samples)
            stats = summarise(rewards) if rewards else None
            if stats and stats["reward_var"] > 0 and stats["reward_mean"] < self.lambda_diff:
                keep.append(i)
        old = set(self.pool.active)
        new = set(keep)
        metrics = {"refresh_pool": len(self.states), "refresh_active": len(new) or len(old),
                   "refresh_entered": len(new - old), "refresh_left": len(old - new) if new else 0,
                   "refresh_kept_old_set": not new}
        if new:  # an empty selection would leave nothing to train on: keep the old set, and say so
            self.pool.set_active(sorted(new))
        self.ledger.write("refresh", state.global_step, metrics)
