"""Pivot selection: keep the states whose profiled outcomes carry a learning signal.

Rules:
- `pivot` (the paper's): reward variance > 0 and mean reward < `lambda_diff`;
- `variance_top_k`: the `top_k` states with the highest variance (ties keep input order);
- `mean_band`: `lo <= mean <= hi`;
- `all`: every profiled state (the no-filter ablation).
States that could not be profiled (e.g. longer than the context) are never kept.

Input is our profile records, or NeMo Gym rows that carry their own profiling columns (NVIDIA's
pivot datasets), so their pivots can be re-selected with another `lambda_diff` without sampling.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pivotrl.errors import DataError
from pivotrl.pivots.state import State

RULES = ("pivot", "variance_top_k", "mean_band", "all")


@dataclass
class Candidate:
    """A state with its profile statistics."""

    state: State
    mean: float
    var: float
    profiled: bool = True
    truncated: float = 0.0  # share of its samples cut by the token budget (each scored 0)
    kind_only: bool = False  # a message turn whose rewarded samples were paid for being any message


# Reasons of verifiers that paid a message for being a message, without reading it (NeMo Gym's rule)
KIND_ONLY_REASONS = {"expected_chat_message_found", "any_message"}


def paid_for_kind(state: State, rewards: list, reasons: list) -> bool:
    paid = [why for r, why in zip(rewards, reasons or []) if r > 0]
    return state.reference.kind == "message" and bool(paid) and all(why in KIND_ONLY_REASONS for why in paid)


def candidates_from_records(records: list[dict]) -> list[Candidate]:
    return [candidate_from_record(r) for r in records]


def candidate_from_record(row: dict) -> Candidate:
    """A candidate from one profile record, checked (`pivotrl.pivots.profile_records.checked_record`)."""
    from pivotrl.pivots.profile_records import checked_record

    r, state = checked_record(row)
    state.meta["profile"] = {k: r[k] for k in ("rewards", "reward_mean", "reward_std", "reward_var",
                                                "num_unique_actions") if k in r}
    n = len(r["rewards"])
    return Candidate(state, r["reward_mean"], r["reward_var"], not r["skipped"] and bool(n),
                     r["n_truncated"] / n if n else 0.0, paid_for_kind(state, r["rewards"], r.get("reasons")))


def candidate_from_gym_row(row: dict) -> Candidate:
    """A candidate from a NeMo Gym row with profiling columns (NVIDIA's released pivots)."""
    from pivotrl.pivots.load import state_from_row

    mean, var = gym_row_stats(row)
    return Candidate(state_from_row(row), mean, var)


def _number(value, column: str) -> float:
    """A profiling value as a float; DataError naming the column when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"profiling column {column!r} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except ValueError:
        raise DataError(f"profiling column {column!r} must be a number, got {value!r:.40}") from None


def gym_row_stats(row: dict) -> tuple[float, float]:
    """Mean and variance from whichever profiling columns a release has."""
    if not isinstance(row, dict):
        raise DataError("expected a JSON object")
    rewards = row.get("rewards")
    if isinstance(rewards, list) and rewards:
        from pivotrl.pivots.profile import summarise

        stats = summarise([_number(r, "rewards") for r in rewards])
        return stats["reward_mean"], stats["reward_var"]
    if rewards is not None and not isinstance(rewards, list):
        raise DataError(f"profiling column 'rewards' must be a list of numbers, got {type(rewards).__name__}")
    column = "reward_mean" if row.get("reward_mean") is not None else "pass_rate"
    if row.get(column) is None:
        raise DataError("row has no profiling columns (rewards, reward_mean or pass_rate)")
    mean = _number(row[column], column)
    if row.get("reward_var") is not None:
        return mean, _number(row["reward_var"], "reward_var")
    if row.get("reward_std") is not None:
        return mean, _number(row["reward_std"], "reward_std") ** 2
    return mean, mean * (1 - mean)  # binary rewards: Bernoulli variance


def load_candidates(path: str | Path, *, skip_invalid: bool = False, skipped: Counter | None = None) -> list[Candidate]:
    """Candidates from a profile (parquet or JSONL records) or NeMo Gym rows with profiling
    columns, every row checked; a bad one is a DataError naming the file, the row and the column,
    or, with `skip_invalid`, is counted in `skipped` by reason and left out."""
    from pivotrl.pivots.gym import is_gym_row
    from pivotrl.pivots.profile_records import read_rows

    path = Path(path)
    skipped = skipped if skipped is not None else Counter()
    out = read_rows(path, lambda row: candidate_from_gym_row(row) if is_gym_row(row) else candidate_from_record(row),
                    skip_invalid=skip_invalid, skipped=skipped)
    if not out:
        why = f" ({sum(skipped.values())} invalid skipped)" if skipped else ""
        raise DataError(f"no profile records or NeMo Gym rows with profiling columns in this file{why}", file=str(path))
    return out


def select(cands: list[Candidate], rule: str = "pivot", *, lambda_diff: float = 0.75, top_k: int | None = None,
           lo: float = 0.0, hi: float = 1.0) -> list[Candidate]:
    if rule not in RULES:
        raise DataError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    ok = [c for c in cands if c.profiled and not math.isnan(c.mean)]
    if rule == "pivot":
        return [c for c in ok if c.var > 0 and c.mean < lambda_diff]
    if rule == "mean_band":
        return [c for c in ok if lo <= c.mean <= hi]
    if rule == "variance_top_k":
        if top_k is None:
            raise DataError("rule variance_top_k needs --top-k")
        order = sorted(range(len(ok)), key=lambda i: (-ok[i].var, i))[:top_k]
        return [ok[i] for i in sorted(order)]
    return ok


def save_pivots(kept: list[Candidate], output: str | Path, *, source: str | Path | None = None, rule: str = "pivot",
                fmt: str = "states") -> int:
    """Write the kept states (our states JSONL, or NeMo Gym rows with `fmt="gym"`) and carry beside
    them what training needs from the `source` profile: its bill (`OUTPUT.meta.json`, charged to
    PivotRL's ledger) and its held-out split (`OUTPUT.heldout.json`)."""
    from pivotrl.artifacts import atomic_open, write_jsonl
    from pivotrl.pivots.gym import state_to_gym_row
    from pivotrl.pivots.profile import meta_path
    from pivotrl.pivots.split import carry_heldout
    from pivotrl.pivots.state import write_states

    if fmt == "gym":
        n = write_jsonl(output, (state_to_gym_row(c.state) for c in kept))
    elif fmt == "states":
        n = write_states(output, (c.state for c in kept))
    else:
        raise DataError(f"format must be states or gym, not {fmt!r}")
    if source is not None:
        bill = meta_path(Path(source))
        if bill.exists():
            meta = json.loads(bill.read_text())
            meta.update(selected_by=rule, selected=len(kept), profile=str(source))
            with atomic_open(meta_path(Path(output))) as fh:
                fh.write(json.dumps(meta, indent=2))
        carry_heldout(source, output)
    return n


def position(state: State) -> str:
    """Turn position bucket: first, middle or last assistant turn (or the turn index if unknown)."""
    if state.num_turns <= 0:
        return f"turn {state.turn_index}"
    if state.turn_index == 0:
        return "first"
    return "last" if state.turn_index == state.num_turns - 1 else "middle"


def breakdown(cands: list[Candidate], kept: list[Candidate]) -> dict[str, Counter]:
    """Candidates and kept states by domain, by turn position, and by what the reference does (a
    call to each tool, a message, or a message paid for being any message)."""
    def action(c: Candidate) -> str:
        if c.state.reference.kind == "message":
            return "message (any text paid)" if c.kind_only else "message"
        return "call: " + c.state.reference.calls[0].name

    return {"domain": Counter(c.state.domain for c in cands), "domain_kept": Counter(c.state.domain for c in kept),
            "position": Counter(position(c.state) for c in cands),
            "position_kept": Counter(position(c.state) for c in kept),
            "action": Counter(action(c) for c in cands), "action_kept": Counter(action(c) for c in kept)}


def weight_by_domain(states: list[State], weights: dict | None, seed: int = 0) -> list[State]:
    """The training stream with each domain's share proportional to `weights` (domain -> weight),
    as a list as long as `states` that repeats each domain's pivots evenly (each one 0 or 1 times
    more than another of its domain). NVIDIA's four pivot datasets are mixed in training, and one
    domain can hold most pivots; this sets the mix. `None`: the data's own shares (unchanged)."""
    import random

    if not weights:
        return list(states)
    by_domain: dict[str, list[State]] = {}
    for s in states:
        by_domain.setdefault(s.domain, []).append(s)
    unnamed = sorted(set(by_domain) - set(weights))
    if unnamed:
        raise DataError(f"domain_weights names no weight for domain(s) {', '.join(unnamed)} of the pivots "
                        f"(their domains: {', '.join(sorted(by_domain))})")
    bad = {d: w for d, w in weights.items() if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0}
    if bad:
        raise DataError(f"domain_weights must be numbers >= 0; got {bad}")
    total = sum(weights[d] for d in by_domain)
    if total <= 0:
        raise DataError("domain_weights gives every domain of the pivots weight 0")
    rng = random.Random(seed)
    exact = {d: len(states) * weights[d] / total for d in by_domain}
    counts = {d: math.floor(x) for d, x in exact.items()}
    for d in sorted(exact, key=lambda d: exact[d] - counts[d], reverse=True)[:len(states) - sum(counts.values())]:
        counts[d] += 1  # largest remainders: the counts add up to len(states)
    out: list[State] = []
    for d in sorted(by_domain):
        pool = list(by_domain[d])
        rng.shuffle(pool)
        out += [pool[i % len(pool)] for i in range(counts[d])]
    rng.shuffle(out)
    return out
