"""`--refresh-every N` (an extension beyond the paper): every N steps, re-profile the candidate
pool against the *current* policy and re-select, so pivots the policy has solved leave the pool
and states that became informative enter it.

Training starts from the pool's own pivots (the states whose profile passes the rule), not the whole
pool; the active set is saved in every checkpoint (`pool_active.json`) and restored on resume.
The trainer reads an endless stream (a `datasets.IterableDataset`, which TRL supports) that draws
its prompts from the pool's current active set, so changing the active set changes what the next
steps train on. TRL's buffered shuffle is off for it (the draw is already random), or a refresh
would reach the trainer only after the buffer drained. The re-profiling samples are real
rollouts and are charged to the ledger.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from transformers import TrainerCallback

from pivotrl.artifacts import atomic_open
from pivotrl.pivots.profile import summarise
from pivotrl.pivots.state import State
from pivotrl.rewards import safe_score
from pivotrl.train.distributed import gather_lists, generation_policy, my_share


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


ACTIVE_FILE = "pool_active.json"


def passes(profile, lambda_diff: float) -> bool:
    """The pivot rule on a state's profile statistics (`meta["profile"]`)."""
    if not isinstance(profile, dict):
        return False
    mean, var = profile.get("reward_mean"), profile.get("reward_var")
    return isinstance(mean, (int, float)) and isinstance(var, (int, float)) and var > 0 and mean < lambda_diff


def initial_active(states: list[State], lambda_diff: float) -> list[int]:
    """The pool's pivots by their profiles; every state when none carries a profile that passes."""
    keep = [i for i, s in enumerate(states) if passes(s.meta.get("profile"), lambda_diff)]
    return keep or list(range(len(states)))


def load_active(checkpoint: str | None) -> list[int] | None:
    path = Path(checkpoint) / ACTIVE_FILE if checkpoint else None
    return json.loads(path.read_text())["active"] if path and path.exists() else None


class RefreshCallback(TrainerCallback):
    def __init__(self, pool_states: list[State], pool: ActivePool, verifier, tokenizer, every: int, k: int,
                 lambda_diff: float, max_tokens: int, ledger, chat_template: str | None = None,
                 template_kwargs: dict | None = None, score_truncated: bool = False, sample: int = 0, seed: int = 0):
        self.states, self.pool, self.verifier, self.tokenizer = pool_states, pool, verifier, tokenizer
        self.every, self.k, self.lambda_diff, self.max_tokens = every, k, lambda_diff, max_tokens
        self.ledger, self.chat_template, self.template_kwargs = ledger, chat_template, template_kwargs
        self.score_truncated = score_truncated  # training's rule for samples cut by the budget, as profile's
        # `sample` > 0: each refresh re-profiles that many states of the pool, drawn with (seed, step), so a
        # pool of every candidate costs a bounded number of rollouts a refresh; the rest keep their place.
        self.sample, self.seed = sample, seed

    def sampled(self, step: int) -> list[int]:
        """The pool indices re-profiled at `step`: all, or a seeded sample (the same on every rank)."""
        everyone = range(len(self.states))
        if not self.sample or self.sample >= len(self.states):
            return list(everyone)
        return sorted(random.Random(f"refresh:{self.seed}:{step}").sample(everyone, self.sample))

    def on_save(self, args, state, control, **kw):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.ledger.main and ckpt.is_dir():  # atomic: a resume checks it is whole (train/checkpoints.py)
            with atomic_open(ckpt / ACTIVE_FILE) as fh:
                fh.write(json.dumps({"active": self.pool.active}))

    trainer = None  # the Trainer, set by `train_and_save` (callbacks are not handed it)

    def on_step_end(self, args, state, control, model=None, **kw):
        if not self.every or state.global_step % self.every:
            return
        # Each rank re-profiles its share of the pool (each charges its own samples) with the policy
        # as it can generate alone; every rank then trains on the same gathered set.
        sampled = self.sampled(state.global_step)
        with generation_policy(self.trainer, model) as policy:
            keep = self._profile(policy, state.global_step, my_share(sampled))
        self._apply(sorted(gather_lists(keep)), state.global_step, sampled)

    def _profile(self, model, step: int, share: list[int]) -> list[int]:
        import torch

        from pivotrl.sampling import Prompt, SamplingParams
        from pivotrl.sampling.transformers_backend import TransformersSampler

        sampler = TransformersSampler(model, tokenizer=self.tokenizer, chat_template=self.chat_template,
                                      chat_template_kwargs=self.template_kwargs)
        states = [self.states[i] for i in share]
        # Seeded sampling, in a forked RNG: training's own random stream must go on untouched.
        gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=gpus):
            results = sampler.sample([Prompt(s.context, s.tools) for s in states],
                                     SamplingParams(n=self.k, max_tokens=self.max_tokens), seed=step)
        keep = []
        for i, s, res in zip(share, states, results):
            rewards = [safe_score(self.verifier, x.completion, s, truncated=x.truncated and not self.score_truncated).reward
                       for x in res.samples]
            self.ledger.counters.rollout_turns += len(rewards)
            self.ledger.counters.verifier_calls += len(rewards)
            self.ledger.counters.generated_tokens += sum(x.tokens for x in res.samples)
            stats = summarise(rewards) if rewards else None
            if stats and stats["reward_var"] > 0 and stats["reward_mean"] < self.lambda_diff:
                keep.append(i)
        return keep

    def _apply(self, keep: list[int], step: int, sampled: list[int] | None = None) -> None:
        old = set(self.pool.active)
        # the states not re-profiled this time keep their place
        new = set(keep) | (old - set(sampled) if sampled is not None else set())
        metrics = {"refresh_pool": len(self.states), "refresh_profiled": len(self.states if sampled is None else sampled),
                   "refresh_active": len(new) or len(old),
                   "refresh_entered": len(new - old), "refresh_left": len(old - new) if new else 0,
                   "refresh_kept_old_set": not new}
        if new:  # an empty selection would leave nothing to train on: keep the old set, and say so
            self.pool.set_active(sorted(new))
        self.ledger.write("refresh", step, metrics)
