"""The regime gate: is a base model in the regime the paper's claims are about? Fixed before any arm
trains, measured on the dev split (`pivotrl lab gate`; the bundled base's in `results/gate/`).

PivotRL (arXiv 2603.21383) post-trains a base that is competent turn by turn and loses long episodes
at a few turns where its samples disagree: those are the pivots, and GRPO on them has something to
learn. A base that never gets the decisive turns right (they are all-fail states, never pivots) can
only be taught them by imitation, and there SFT must win; a base that is right everywhere has no
pivots. The paper's four bases succeed on 2.5-44.4% of episodes, and about 71% of its turns are
uninformative. The gate asks, per domain of the lab:

- episodes (greedy, dev tasks): success within 10-50%, at least two domains at or below 25%;
- decisive turn types, those where at least a quarter of a domain's failed episodes first went off
  track (`lab.audit.first_off_track`): at most 30% of their states all-fail and at least 40% pivots
  in a K-sample profile of the dev experts' states;
- routine turn types (every other one with states): greedy next-action accuracy at least 0.85;
- pivots: 15-35% of all candidate states.

A base that fails the gate is not used for the lab's comparison. The numbers are the ones registered
in results/pretrain/README.md before any run; changing one needs a stated reason, before results exist.

The comparison trains one model per domain, as the paper does, so the gate also chooses a base per
domain (`choose_domain_bases`, `pivotrl lab bases`): the earliest checkpoint that holds every
criterion of that domain, with the criteria across domains applied to the chosen set.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class GateThresholds:
    success_low: float = 0.10
    success_high: float = 0.50
    hard_success: float = 0.25        # at most this ...
    hard_domains: int = 2             # ... in at least this many domains
    decisive_share: float = 0.25      # a turn type behind this share of a domain's failures is decisive
    decisive_all_fail: float = 0.30   # at most
    decisive_pivots: float = 0.40     # at least
    routine_accuracy: float = 0.85    # at least, greedy
    pivots_low: float = 0.15
    pivots_high: float = 0.35


@dataclass
class GateConfig:
    model: str = ""               # the base (default: the bundled lab base)
    tasks_per_domain: int = 100   # dev episodes per domain
    trajectories: int = 30        # dev expert trajectories per domain whose states are profiled
    k: int = 8                    # samples per state
    lambda_diff: float = 0.75     # the pivot rule's mean threshold (the lab's)
    max_tokens: int = 96
    seed: int = 0
    domains: tuple = ()           # measure only these (default: the four); their criteria are complete, the
    #                               ones across domains then cover only them (`choose_domain_bases` redoes those)


def turn_key(state) -> str:
    """"turn/tag", as failed episodes are counted (`lab.evaluate.failure_points`)."""
    from pivotrl.lab.audit import turn_type
    from pivotrl.lab.domains.base import get_domain

    dom = get_domain(state.domain)
    return f"{turn_type(state)}/{dom.tag(state) if dom.tag else 'untagged'}"


def count_turns(cands, lambda_diff: float) -> tuple[dict, int]:
    """Profiled candidates by domain and turn type (`turn_key`): states, all-fail, pivots, and a
    `greedy_correct` count the caller fills; and the pivots in all."""
    from pivotrl.pivots.select import select

    pivots = {id(c) for c in select(cands, "pivot", lambda_diff=lambda_diff)}
    turns: dict = {}
    for c in cands:
        row = turns.setdefault(c.state.domain, {}).setdefault(turn_key(c.state), dict(
            states=0, all_fail=0, pivots=0, greedy_correct=0))
        row["states"] += 1
        row["all_fail"] += c.profiled and c.var == 0 and c.mean <= 0
        row["pivots"] += id(c) in pivots
    return turns, len(pivots)


def measure_gate(cfg: GateConfig, log=print) -> dict:
    """The gate's figures for `cfg.model` and its verdict."""
    from pivotrl.eval.next_action import next_action_scores
    from pivotrl.lab import BASE_MODEL
    from pivotrl.lab.domains import IN_DOMAIN
    from pivotrl.lab.evaluate import MAX_TURNS, EvalConfig, evaluate_model, expert_states
    from pivotrl.lab.verifiers import lab_verifier
    from pivotrl.pivots.profile import profile_states
    from pivotrl.pivots.select import candidates_from_records
    from pivotrl.sampling import SamplingParams
    from pivotrl.sampling.transformers_backend import TransformersSampler

    model, names = cfg.model or str(BASE_MODEL), tuple(cfg.domains) or IN_DOMAIN
    sampler, verifier = TransformersSampler(model), lab_verifier()  # the model loaded once for all three
    episodes = evaluate_model(sampler.model, EvalConfig(cfg.tasks_per_domain, 0, 0, 0, cfg.max_tokens, cfg.seed,
                                                        split="dev", domains=names),
                              tokenizer=sampler.tokenizer, log=log)
    recs, greedy = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:  # domain by domain: its samples do not depend on which others are measured
            states = expert_states("dev", (name,), cfg.trajectories, cfg.seed + 11, f"gate:{{name}}:{cfg.seed}")
            log(f"profiling {len(states)} {name} dev states, K={cfg.k}")
            recs += profile_states(states, sampler, verifier, k=cfg.k, output=Path(tmp) / f"{name}.jsonl",
                                   params=SamplingParams(cfg.k, 1.0, 1.0, cfg.max_tokens), seed=cfg.seed)
            greedy += next_action_scores(sampler, states, verifier, cfg.max_tokens)
    cands = candidates_from_records(recs)
    turns, pivots = count_turns(cands, cfg.lambda_diff)
    for c, correct in zip(cands, greedy):
        turns[c.state.domain][turn_key(c.state)]["greedy_correct"] += correct >= 1.0
    figures = {"model": model, "config": asdict(cfg), "max_turns": MAX_TURNS,
               "success": episodes["in_domain"], "failures": episodes.get("failures", {}), "turns": turns,
               "candidates": len(cands), "pivots": pivots}
    return {**figures, **verdict(figures)}


def verdict(figures: dict, t: GateThresholds = GateThresholds()) -> dict:
    """Each criterion with its figure and whether it holds; `passed` when all do."""
    checks = []

    def check(name: str, value: float, holds: bool, rule: str, domain: str | None = None,
              n: int | None = None, bound: float | None = None):
        row = {"criterion": name, "value": round(value, 4), "rule": rule, "holds": bool(holds), "domain": domain}
        if n and bound is not None:  # how far from its bound, in standard errors of a share of n at the bound
            se = math.sqrt(max(bound * (1 - bound), 1e-4) / n)
            row["margin_se"] = round(abs(value - bound) / se * (1 if holds else -1), 2)
        checks.append(row)

    episodes = figures.get("episodes", {})

    success = figures["success"]
    for domain, s in success.items():
        nearer = min((t.success_low, t.success_high), key=lambda b: abs(s - b))
        check(f"{domain}: episode success", s, t.success_low <= s <= t.success_high,
              f"{t.success_low:g}-{t.success_high:g}", domain, episodes.get(domain), nearer)
    hard = sum(s <= t.hard_success for s in success.values())
    check("domains at or below the hard line", hard, hard >= t.hard_domains,
          f">= {t.hard_domains} at <= {t.hard_success:g}")
    for domain, rows in figures["turns"].items():
        failures = figures["failures"].get(domain, {})
        total = sum(failures.values())
        decisive = {k for k, n in failures.items() if total and n / total >= t.decisive_share}
        for key in sorted(decisive):
            row = rows.get(key)
            if not row:  # e.g. turn_limit: no state to profile; the failure still counts against the base
                check(f"{domain} {key}: decisive, profiled states", 0, False, "> 0", domain)
                continue
            check(f"{domain} {key}: decisive, all-fail share", row["all_fail"] / row["states"],
                  row["all_fail"] / row["states"] <= t.decisive_all_fail, f"<= {t.decisive_all_fail:g}", domain,
                  row["states"], t.decisive_all_fail)
            check(f"{domain} {key}: decisive, pivot share", row["pivots"] / row["states"],
                  row["pivots"] / row["states"] >= t.decisive_pivots, f">= {t.decisive_pivots:g}", domain,
                  row["states"], t.decisive_pivots)
        for key, row in sorted(rows.items()):
            if key not in decisive:
                greedy = row.get("greedy_states", row["states"])  # all states, or a sample of them
                acc = row["greedy_correct"] / max(greedy, 1)
                check(f"{domain} {key}: routine, greedy accuracy", acc, acc >= t.routine_accuracy,
                      f">= {t.routine_accuracy:g}", domain, greedy, t.routine_accuracy)
    share = figures["pivots"] / max(figures["candidates"], 1)
    check("pivots among candidates", share, t.pivots_low <= share <= t.pivots_high, f"{t.pivots_low:g}-{t.pivots_high:g}",
          None, figures["candidates"], min((t.pivots_low, t.pivots_high), key=lambda b: abs(share - b)))
    domains = {d: all(c["holds"] for c in checks if c["domain"] == d) for d in success}
    return {"thresholds": asdict(t), "checks": checks, "domains": domains, "passed": all(c["holds"] for c in checks)}


def gate_domains(gates: list[dict]) -> list[str]:
    """The domains `gates` measured, in order of first appearance (a gate may hold some only)."""
    return list(dict.fromkeys(d for g in gates for d in g["success"]))


def choose_domain_bases(gates: list[dict], t: GateThresholds = GateThresholds()) -> dict:
    """The gate applied per domain, as the paper trains one model per domain: for each domain the
    earliest of `gates` (each `measure_gate`'s result, in training order) whose criteria for that
    domain all hold is its base; the criteria across domains (the hard line, the pivot share) then
    apply to the chosen set, each domain's figures taken from its own base. A gate measured on some
    domains only (`GateConfig.domains`) can be the base of those."""
    domains = gate_domains(gates)
    bases: dict = {}
    for g in gates:
        held = verdict(g, t)["domains"]  # recomputed: gate files written before per-domain verdicts lack it
        for d in g["success"]:
            if d not in bases and held.get(d):
                bases[d] = g
    checks = [{"criterion": f"{d}: a checkpoint holds every criterion of the domain", "value": float(d in bases),
               "rule": "1", "holds": d in bases, "domain": d} for d in domains]
    if bases:
        chosen = {"success": {d: g["success"][d] for d, g in bases.items()},
                  "turns": {d: g["turns"].get(d, {}) for d, g in bases.items()}}
        chosen["candidates"] = sum(r["states"] for rows in chosen["turns"].values() for r in rows.values())
        chosen["pivots"] = sum(r["pivots"] for rows in chosen["turns"].values() for r in rows.values())
        chosen["failures"] = {d: g["failures"].get(d, {}) for d, g in bases.items()}
        checks += [c for c in verdict(chosen, t)["checks"] if c["domain"] is None]
    return {"bases": {d: g["model"] for d, g in bases.items()}, "thresholds": asdict(t), "checks": checks,
            "passed": all(c["holds"] for c in checks)}


def gate_on_comparison(model: str, profile: Path, dev: dict, lambda_diff: float = 0.75, greedy_per_turn: int = 100,
                       max_tokens: int = 96, seed: int = 0) -> dict:
    """The gate recomputed on the comparison's own data (issue 51): the base's episodes on the
    comparison's dev tasks (`dev`, an `evaluate_model` result with failures attributed) and the
    base's profile of a seed's candidates, as training selects its pivots from it; greedy accuracy
    of a routine turn type on a seeded sample of at most `greedy_per_turn` of its states. Each
    criterion carries `margin_se`, its distance from the bound in standard errors (negative when it
    fails); a domain's verdict is `domains[d]` (the criteria across domains need several domains)."""
    from pivotrl.eval.next_action import next_action_scores
    from pivotrl.lab.verifiers import lab_verifier
    from pivotrl.pivots.select import load_candidates
    from pivotrl.sampling.transformers_backend import TransformersSampler

    cands = load_candidates(profile)
    turns, pivots = count_turns(cands, lambda_diff)
    by_turn: dict = {}
    for c in cands:
        by_turn.setdefault((c.state.domain, turn_key(c.state)), []).append(c)
    rng = random.Random(f"gate:{seed}")
    sampled = [(key, c) for key, group in sorted(by_turn.items()) for c in rng.sample(group, min(len(group), greedy_per_turn))]
    scores = next_action_scores(TransformersSampler(model), [c.state for _, c in sampled], lab_verifier(), max_tokens)
    for (domain, key), group in by_turn.items():
        turns[domain][key]["greedy_states"] = min(len(group), greedy_per_turn)
    for ((domain, key), _), correct in zip(sampled, scores):
        turns[domain][key]["greedy_correct"] += correct >= 1.0
    figures = {"model": model, "profile": str(profile), "success": dev["in_domain"],
               "episodes": {d: len(e) for d, e in dev.get("episodes", {}).items()},
               "failures": dev.get("failures", {}), "turns": turns, "candidates": len(cands), "pivots": pivots}
    return {**figures, **verdict(figures)}
