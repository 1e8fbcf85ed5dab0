"""Lab evaluation: real episodes in the four environments (test split), the held-out agentic
variant, the OOD reasoning suite, and next-action accuracy on held-out states."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from pivotrl.lab.domains import IN_DOMAIN, LONG_HORIZON
from pivotrl.lab.domains import repo
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.verifiers import lab_verifier

MAX_TURNS = {"tooluse": 7, "terminal": 5, "search": 7, "code": 7, "tooluse_variant": 7, "repo": repo.MAX_TURNS}


@dataclass
class EvalConfig:
    tasks_per_domain: int = 200      # episodes per domain (of `split`)
    ood_per_task: int = 50           # items per reasoning-gym task
    variant_tasks: int = 100         # held-out agentic variant episodes
    next_action_states: int = 100    # held-out states per domain (0 = skip)
    max_tokens: int = 96
    seed: int = 0
    split: str = "test"              # "dev" while training (choices), "test" once at the end
    attribute_failures: bool = True  # each failed episode's first off-track turn, by type and tag
    domains: tuple = IN_DOMAIN       # whose episodes and states are in-domain (a preset's own)
    # Tasks no arm has seen (issue 51): dev/test tasks of bug templates training never plants (code,
    # repo), and OOD items whose question no base's pretraining corpus holds.
    unseen_templates: bool = False
    unseen_ood: bool = False


def evaluate_model(model, cfg: EvalConfig, tokenizer=None, log=None) -> dict:
    """`model`: a directory or hub id, or a loaded model with its `tokenizer`."""
    from pivotrl.eval.episodes import run_episodes
    from pivotrl.lab.ood import GENERATORS, ood_items, ood_messages, score_item
    from pivotrl.sampling import Prompt, SamplingParams
    from pivotrl.sampling.transformers_backend import TransformersSampler

    sampler = TransformersSampler(model, tokenizer=tokenizer)
    out: dict = {"split": cfg.split, "in_domain": {}, "ood": {}, "next_action": {}, "episodes": {}}
    t0 = time.time()
    for name in cfg.domains:
        dom = get_domain(name)
        eps = run_episodes(sampler, dom.environment, dom.tasks(cfg.split, cfg.tasks_per_domain, cfg.seed,
                                                               unseen_templates=cfg.unseen_templates),
                           MAX_TURNS[name], cfg.max_tokens)
        out["in_domain"][name] = sum(e.reward for e in eps) / len(eps)
        out["episodes"][name] = [e.reward for e in eps]  # task by task: arms compare paired
        if cfg.attribute_failures and dom.policy is not None:
            out.setdefault("failures", {})[name] = failure_points(dom, eps)
        if log:
            log(f"{name}: success {out['in_domain'][name]:.3f} over {len(eps)} episodes")
    out["in_domain_mean"] = sum(out["in_domain"].values()) / len(cfg.domains)
    if cfg.variant_tasks:
        dom = get_domain("tooluse_variant")
        eps = run_episodes(sampler, dom.environment, dom.tasks(cfg.split, cfg.variant_tasks, cfg.seed),
                           MAX_TURNS["tooluse_variant"], cfg.max_tokens)
        out["ood"]["tooluse_variant"] = sum(e.reward for e in eps) / len(eps)
    if cfg.ood_per_task:
        items = ood_items(cfg.ood_per_task, unseen=cfg.unseen_ood)
        res = sampler.sample([Prompt(ood_messages(it)) for it in items],
                             SamplingParams(n=1, temperature=0.0, max_tokens=32))
        scores: dict[str, list[float]] = {}
        for it, r in zip(items, res):
            text = r.samples[0].completion if r.samples else ""
            scores.setdefault(it["task"], []).append(score_item(it, text if isinstance(text, str) else ""))
        for task, s in scores.items():
            out["ood"][task] = sum(s) / len(s)
        out["ood_items"] = [x for s in scores.values() for x in s]  # item by item, paired across arms
        out["ood_reasoning_mean"] = sum(sum(s) / len(s) for s in scores.values()) / len(scores)
        if cfg.unseen_ood:  # generators without enough questions no base pretrained on (named, not padded)
            out["ood_left_out"] = [name for name in GENERATORS if name not in scores]
    if cfg.next_action_states:
        states = test_states(cfg.next_action_states, cfg.seed, cfg.domains, cfg.unseen_templates)
        acc = next_action_accuracy(sampler, states, cfg.max_tokens)
        out["next_action"] = {d: v for d, v in acc.items() if "/" not in d}
        out["next_action_by_tag"] = {d: v for d, v in acc.items() if "/" in d}
        out["next_action_mean"] = sum(out["next_action"].values()) / len(out["next_action"])
    out["eval_seconds"] = time.time() - t0
    return out


def failure_points(domain, episodes) -> dict:
    """Failed episodes counted by where they first went off track: "turn/tag" (e.g. "open/decision")."""
    from pivotrl.lab.audit import first_off_track

    tools, counts = domain.tools(), {}
    for ep in episodes:
        if ep.reward < 1.0:
            where = first_off_track(domain, ep.task, ep.messages, tools)
            key = f"{where['turn']}/{where['tag']}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def expert_states(split: str, domains, trajectories: int, task_seed: int, rng_key: str,
                  per_domain: int | None = None, unseen_templates: bool = False) -> list:
    """Every turn of the experts' trajectories on `trajectories` tasks of `split` per domain (at most
    `per_domain` states each); `rng_key` (formatted with the domain's name) seeds their surface forms."""
    from pivotrl.data.loaders import normalise_record
    from pivotrl.pivots import extract_states

    states = []
    for name in domains:
        dom = get_domain(name)
        rng = random.Random(rng_key.format(name=name))
        tasks = dom.tasks(split, trajectories, seed=task_seed, unseen_templates=unseen_templates)
        trajs = [normalise_record(dom.expert(t, rng)) for t in tasks]
        states += extract_states(trajs)[:per_domain]
    return states


def test_states(per_domain: int, seed: int = 0, domains: tuple = IN_DOMAIN, unseen_templates: bool = False):
    """Held-out states: every turn of expert trajectories on test tasks."""
    return expert_states("test", domains, max(1, per_domain // 3), seed + 7, f"test-states:{{name}}:{seed}",
                         per_domain, unseen_templates)


def next_action_accuracy(sampler, states, max_tokens: int = 96) -> dict:
    """Greedy next-action accuracy per domain, and per domain and tag ("domain/decision"), under
    the lab's verifier."""
    from pivotrl.eval.next_action import next_action_scores

    acc: dict[str, list[float]] = {}
    for s, score in zip(states, next_action_scores(sampler, states, lab_verifier(), max_tokens)):
        tag = get_domain(s.domain).tag
        for key in (s.domain, f"{s.domain}/{tag(s) if tag else 'untagged'}"):
            acc.setdefault(key, []).append(score)
    return {d: sum(v) / len(v) for d, v in acc.items()}
