"""Next-action accuracy: greedy actions of a policy at held-out states, scored by a verifier."""

from __future__ import annotations


def next_action_scores(sampler, states, verifier, max_tokens: int = 96) -> list[float]:
    """One greedy action per state; its verifier reward (0 where the prompt did not fit)."""
    from pivotrl.rewards import safe_score
    from pivotrl.sampling import Prompt, SamplingParams

    results = sampler.sample([Prompt(s.context, s.tools) for s in states],
                             SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens))
    return [safe_score(verifier, r.samples[0].completion, s, truncated=r.samples[0].truncated).reward
            if r.samples else 0.0 for s, r in zip(states, results)]
