"""The lab's report: tables, paired differences with 95% intervals, the paper's claims as measured,
and plots. A claim "holds" only when its interval lies on the claimed side of zero."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from pivotrl.artifacts import atomic_open, gzip_copy
from pivotrl.errors import DataError
from pivotrl.lab.presets import ARMS, LABELS

# Two-sided 95% quantiles of Student's t by degrees of freedom (a table rather than a SciPy
# dependency for one number; beyond 30, the normal 1.96).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t975(df: int) -> float:
    if df > 30:
        return 1.96
    return T975[max(k for k in T975 if k <= df)]  # the next smaller tabulated df: a slightly wider interval


def mean_interval(values: list[float], z: float | None = None) -> dict:
    """Mean and 95% interval: Student's t over `values` (seeds), or `z` (e.g. 1.96 over many episodes)."""
    n = len(values)
    mean = statistics.fmean(values) if values else float("nan")
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    half = (z or t975(n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


NO_DROP = 0.02  # a "keeps" claim holds when its interval rules out a drop of more than 2 points


def verdict(iv: dict, direction: str = "+") -> str:
    """Whether the interval supports the claim: "+" a gain (above 0), "-" a loss (below 0),
    "keeps" no drop of more than NO_DROP (and not significantly below 0)."""
    if iv.get("low") is None:
        return "no interval (one value)"
    low, high = iv["low"], iv["high"]
    if direction == "keeps":
        if low > -NO_DROP:
            return f"holds (interval above -{100 * NO_DROP:.0f} points)"
        return "does not hold (interval below 0)" if high < 0 else "not resolved (interval too wide)"
    sign = 1 if direction == "+" else -1
    if sign * (low if sign > 0 else high) > 0:
        return f"holds (interval {'above' if sign > 0 else 'below'} 0)"
    if sign * (high if sign > 0 else low) < 0:
        return f"does not hold (interval {'below' if sign > 0 else 'above'} 0)"
    return "not resolved (interval includes 0)"


def paired(evals: dict, a: str, b: str, key: str = "in_domain", direction: str = "+") -> dict | None:
    """`a` minus `b`, paired seed by seed (per-seed differences, t interval over seeds) and task by
    task (every test episode or item, pooled over seeds: the test sample's noise alone). `key`:
    "in_domain" (episode success) or "ood" (reasoning items)."""
    if a not in evals or b not in evals:
        return None
    ra, rb = evals[a], evals[b]
    if len(rb) == 1 and len(ra) > 1:  # against the base (one evaluation): every seed against it
        rb = rb * len(ra)

    def score(r):
        return r["in_domain_mean"] if key == "in_domain" else r.get("ood_reasoning_mean")

    def items(r):
        if key == "in_domain":  # the run's own domains, in its order (every arm of a run has the same)
            return [x for eps in r.get("episodes", {}).values() for x in eps]
        return r.get("ood_items", [])

    if any(score(r) is None for r in ra + rb):
        return None
    per_seed = [score(x) - score(y) for x, y in zip(ra, rb)]
    diffs = [p - q for x, y in zip(ra, rb) for p, q in zip(items(x), items(y))]
    seeds = mean_interval(per_seed)
    out = {"per_seed": per_seed, "seeds": seeds, "tasks": mean_interval(diffs, z=1.96) if diffs else None}
    # The verdict rests on the seeds when there are several; with one seed only the test sample's noise is known.
    basis = seeds if len(per_seed) > 1 else out["tasks"]
    out["verdict"] = verdict(basis, direction) + ("" if len(per_seed) > 1 else "; one seed: training noise not measured")
    return out


def never_trained(runs: list | None) -> bool:
    """Every seed of the arm had no pivots, so its result is its start model (SFT then PivotRL after
    an SFT that left no mixed outcomes)."""
    return bool(runs) and all(r and r.get("no_pivots") for r in runs)


CLAIMS = [  # (name, a, b, key, direction, what the paper says; arXiv 2603.21383, section 4)
    ("pivotrl_vs_base_in_domain", "pivotrl", "base", "in_domain", "+", "PivotRL gains in-domain"),
    ("sft_vs_base_in_domain", "sft", "base", "in_domain", "+", "SFT gains in-domain"),
    ("pivotrl_vs_sft_in_domain", "pivotrl", "sft", "in_domain", "+", "PivotRL beats SFT in-domain"),
    ("pivotrl_vs_base_ood", "pivotrl", "base", "ood", "keeps", "PivotRL keeps out-of-domain skills"),
    ("sft_vs_base_ood", "sft", "base", "ood", "-", "SFT loses out-of-domain skills"),
    ("pivotrl_vs_sft_ood", "pivotrl", "sft", "ood", "+", "PivotRL keeps more out of domain than SFT"),
    ("no_filter_vs_pivotrl_in_domain", "pivotrl_no_filter", "pivotrl", "in_domain", "-", "without the pivot filter, less"),
    ("exact_vs_pivotrl_in_domain", "pivotrl_exact", "pivotrl", "in_domain", "-", "with exact-match rewards, less"),
    ("sft_pivotrl_vs_sft_in_domain", "sft_pivotrl", "sft", "in_domain", "+", "PivotRL after SFT adds to SFT (beyond the paper)"),
    ("pivotrl_vs_e2e_in_domain", "pivotrl", "e2e", "in_domain", "keeps", "PivotRL reaches E2E RL's accuracy"),
    ("sft_pivotrl_vs_sft_e2e_in_domain", "sft_pivotrl", "sft_e2e", "in_domain", "keeps",
     "after SFT, PivotRL reaches E2E RL's accuracy (the paper's production order)"),
    ("refresh_vs_pivotrl_in_domain", "pivotrl_refresh", "pivotrl", "in_domain", "+",
     "refresh over the whole candidate pool adds to PivotRL (beyond the paper)"),
]


COST_PAIRS = (("pivotrl", "e2e", "base"), ("sft_pivotrl", "sft_e2e", "sft"))  # (PivotRL arm, E2E arm, their start)


def cost_to_match(runs: dict, dev_episodes: int, seeds: list | None = None) -> list[dict]:
    """Cost as the paper counts it (arXiv 2603.21383, section 4.3: rollout turns and wall-clock to
    the same accuracy), seed by seed on the dev curves (the same dev tasks for both arms), for PivotRL
    against E2E RL from the base and, where both ran, from the SFT checkpoint (`start`). The matched
    accuracy is the lower of the two arms' best dev success, and counts only when it is at least three
    dev standard errors above their start (step 0); `e2e_rose`: E2E RL's best is (the rule that makes
    the claim testable at all). Each arm's cost is its training rollout turns (E2E: every assistant
    turn of every episode; PivotRL: one per local rollout) and seconds when its curve first reaches
    it, PivotRL's with and without its one-off profiling."""
    out = []
    for pivot_arm, e2e_arm, start_name in COST_PAIRS:
        for i, (p, e) in enumerate(zip(runs.get(pivot_arm) or [], runs.get(e2e_arm) or [])):
            if not p or not e or not p["curve"] or not e["curve"]:
                continue
            out.append({"start": start_name, "seed": seeds[i] if seeds else i, **matched_cost(p, e, dev_episodes)})
    return out


def matched_cost(p: dict, e: dict, dev_episodes: int) -> dict:
    start = e["curve"][0]["eval_success"]
    # the standard error of a dev success rate at the start's; add-one smoothing so that a start at
    # 0% still has a positive one (1 success in n is not 3 standard errors above none)
    smoothed = (start * dev_episodes + 1) / (dev_episodes + 2)
    se = math.sqrt(smoothed * (1 - smoothed) / max(dev_episodes, 1))
    best_p = max(c["eval_success"] for c in p["curve"])
    best_e = max(c["eval_success"] for c in e["curve"])
    target = min(best_p, best_e)
    row = {"base_dev": start, "dev_se": se, "pivotrl_best_dev": best_p, "e2e_best_dev": best_e,
           "matched_dev": target, "matched": target >= start + 3 * se, "e2e_rose": best_e >= start + 3 * se}
    prof = p.get("profiling") or {}
    row.update(profiling_turns=prof.get("rollout_turns", 0), profiling_seconds=prof.get("wall_clock_s", 0.0))
    if row["matched"]:
        hit_p = next(c for c in p["curve"] if c["eval_success"] >= target)
        hit_e = next(c for c in e["curve"] if c["eval_success"] >= target)
        row.update(pivotrl_turns=hit_p["rollout_turns"], pivotrl_seconds=hit_p["wall_clock_s"],
                   e2e_turns=hit_e["rollout_turns"], e2e_seconds=hit_e["wall_clock_s"])
        row["turns_ratio"] = hit_e["rollout_turns"] / max(hit_p["rollout_turns"], 1)
        row["turns_ratio_with_profiling"] = hit_e["rollout_turns"] / max(hit_p["rollout_turns"] + row["profiling_turns"], 1)
        row["seconds_ratio"] = hit_e["wall_clock_s"] / max(hit_p["wall_clock_s"], 1e-9)
        row["seconds_ratio_with_profiling"] = hit_e["wall_clock_s"] / max(hit_p["wall_clock_s"] + row["profiling_seconds"], 1e-9)
    return row


def cost_verdict(rows: list[dict]) -> str:
    """Claim 3 over one start's seeds: "not testable" when E2E RL never rose three standard errors
    above its start in most seeds (registered 2026-12-07), distinct from a matched ratio below 4x."""
    matched = [x for x in rows if x["matched"]]
    flat = sum(not x.get("e2e_rose", True) for x in rows)
    if 2 * flat > len(rows):
        return f"not testable: E2E RL never rose three standard errors above its start in {flat} of {len(rows)} seeds"
    if not matched:
        return "no seed reached a matched accuracy three standard errors above the start"
    return (f"{sum(x['turns_ratio'] >= 4 for x in matched)} of {len(matched)} matched seeds at 4x or more "
            f"({sum(x['turns_ratio_with_profiling'] >= 4 for x in matched)} with the profiling counted; "
            f"E2E slower in wall-clock in {sum(x['seconds_ratio'] > 1 for x in matched)}; "
            f"{len(rows) - len(matched)} seeds without a target)")


def ms(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate(evals: dict, runs: dict, sweeps: dict, profiles: dict, preset, base_model: str, seconds: float) -> dict:
    base = evals["base"][0]
    table = {}
    for arm, rs in evals.items():
        row = {"in_domain": {d: ms([r["in_domain"][d] for r in rs]) for d in base["in_domain"]},
               "in_domain_mean": ms([r["in_domain_mean"] for r in rs]),
               "ood_reasoning_mean": ms([r.get("ood_reasoning_mean") for r in rs]),
               "ood": {t: ms([r["ood"].get(t) for r in rs]) for t in base["ood"]},
               "next_action_mean": ms([r.get("next_action_mean") for r in rs]),
               "next_action_by_tag": {t: ms([r.get("next_action_by_tag", {}).get(t) for r in rs])
                                      for t in base.get("next_action_by_tag", {})}}
        keys = {(d, k) for r in rs for d, c in (r.get("failures") or {}).items() for k in c}
        row["failures"] = {f"{d}: {k}": statistics.fmean([(r.get("failures") or {}).get(d, {}).get(k, 0) for r in rs])
                           for d, k in sorted(keys)}  # failed test episodes by first off-track turn, mean over seeds
        row["in_domain_delta"] = row["in_domain_mean"]["mean"] - base["in_domain_mean"]
        row["ood_delta"] = (row["ood_reasoning_mean"]["mean"] - base["ood_reasoning_mean"]
                            if row["ood_reasoning_mean"] and base.get("ood_reasoning_mean") is not None else None)
        if arm in runs:
            led = runs[arm]
            p = [r["profiling"] or {} for r in led]
            row["cost"] = {"rollout_turns": ms([r["rollout_turns"] for r in led]),
                           "profiling_turns": ms([x.get("rollout_turns", 0) for x in p]),
                           "wall_clock_s": ms([r["wall_clock_s"] for r in led]),
                           "profiling_s": ms([x.get("wall_clock_s", 0.0) for x in p]),
                           "generated_tokens": ms([r["generated_tokens"] for r in led]),
                           "steps": ms([r["steps"] for r in led]), "best_step": ms([r["best_step"] for r in led]),
                           "best_dev_success": ms([r["best_dev_success"] for r in led]),
                           "zero_std_share": ms([r["zero_std_share"] for r in led])}
            row["learning_rate"] = led[0]["learning_rate"]
        table[arm] = row
    claims = {}
    for name, a, b, key, direction, says in CLAIMS:
        res = paired(evals, a, b, key, direction)
        if res and never_trained(runs.get(a)):
            res["verdict"] = "no pivots: the arm is its start model, untrained"  # 0 by construction, not noise
        if res:
            claims[name] = {"paper": says, **res}
    no_filter = runs.get("pivotrl_no_filter")
    if no_filter and "pivotrl" in runs:  # it needs no profiling; shown both ways
        prof = ms([(r["profiling"] or {}).get("rollout_turns", 0) for r in runs["pivotrl"]])
        claims["no_filter_cost"] = {"rollout_turns": ms([r["rollout_turns"] for r in no_filter])["mean"],
                                    "profiling_turns_if_charged": prof and prof["mean"], "profiling_needed": False}
    return {"preset": preset.name, "seeds": preset.seeds, "base_model": base_model, "profiles": profiles,
            "table": table, "claims": claims,
            "cost_to_match": cost_to_match(runs, preset.dev_tasks * len(preset.domains), preset.seeds), "sweeps": sweeps,
            "runs": runs, "machine": machine_info(), "seconds_this_invocation": seconds}


def machine_info() -> dict:
    import platform
    from importlib.metadata import version

    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            **{pkg: version(pkg) for pkg in ("torch", "transformers", "trl")}}


def _fmt(x, pct=True):
    if x is None:
        return "-"
    if isinstance(x, dict):
        m, s = x["mean"], x["std"]
        return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:,.0f}"
    return f"{100 * x:+.1f}" if pct else f"{x:,.0f}"


def _iv(iv):
    if not iv:
        return "-"
    if iv.get("low") is None:
        return f"{100 * iv['mean']:+.1f}"
    return f"{100 * iv['mean']:+.1f} [{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]"


def ood_shown(table: dict) -> list[str]:
    """The OOD measures a table shows: the renamed-tools variant only where tooluse is trained (it asks
    whether tooluse skills survive renamed tools; a run on another domain scores 0 there, saying nothing)."""
    return [k for k in table["base"]["ood"] if k != "tooluse_variant" or "tooluse" in table["base"]["in_domain"]]


def markdown_table(results: dict) -> str:
    t = results["table"]
    variant = "tooluse_variant" in ood_shown(t)
    domains = list(t["base"]["in_domain"])
    head = ("| method | lr | " + " | ".join(domains) + " | in-domain avg | Δ vs base | OOD reasoning avg | Δ OOD |" +
            (" renamed-tools variant |" if variant else "") + " rollout turns (+ profiling) | wall-clock s |")
    lines = [head, "|" + "---|" * (len(domains) + 8 + variant)]
    for arm in ("base", *ARMS):
        if arm not in t:
            continue
        r = t[arm]
        cost = r.get("cost")
        turns = "-" if not cost else (f"{cost['rollout_turns']['mean']:,.0f}" + (
            f" (+{cost['profiling_turns']['mean']:,.0f})" if cost["profiling_turns"]["mean"] else ""))
        secs = "-" if not cost else f"{cost['wall_clock_s']['mean'] + cost['profiling_s']['mean']:,.0f}"
        lr = f"{r['learning_rate']:g}" if r.get("learning_rate") else "-"
        if never_trained(results.get("runs", {}).get(arm)):
            lr = "- (no pivots)"
        lines.append(f"| {LABELS[arm]} | {lr} | " + " | ".join(_fmt(r["in_domain"][d]) for d in domains) +
                     f" | {_fmt(r['in_domain_mean'])} | {_fmt(r['in_domain_delta']) if arm != 'base' else '-'} | "
                     f"{_fmt(r['ood_reasoning_mean'])} | {_fmt(r['ood_delta']) if arm != 'base' else '-'} | " +
                     (f"{_fmt(r['ood']['tooluse_variant'])} | " if variant else "") + f"{turns} | {secs} |")
    return "\n".join(lines)


def claims_table(results: dict) -> str:
    lines = ["| difference (points) | the paper | per seed | mean [95% CI over seeds] | mean [95% CI over test "
             "episodes/items] | verdict |", "|---|---|---|---|---|---|"]
    for name, *_ in CLAIMS:
        c = results["claims"].get(name)
        if c:
            seeds = ", ".join(f"{100 * d:+.1f}" for d in c["per_seed"])
            lines.append(f"| {name} | {c['paper']} | {seeds} | {_iv(c['seeds'])} | {_iv(c['tasks'])} | {c['verdict']} |")
    stayed = [LABELS[arm] for arm, led in results.get("runs", {}).items() if led and all(r.get("best_step") == 0 for r in led)]
    if stayed:
        lines.append(f"\nKept their starting checkpoint (no dev success above step 0's within the cap, every seed): "
                     f"{', '.join(stayed)}; their rows compare the starting model, not a trained one.")
    rows = results.get("cost_to_match") or []
    if rows:
        lines += ["", "Cost to the matched dev accuracy (the lower of the two arms' best, counted only at least three "
                  "dev standard errors above the base):", "",
                  "| seed | base dev | matched dev | E2E turns (s) | PivotRL turns (s) | + profiling turns (s) | "
                  "turns ratio (with profiling) | wall-clock ratio (with profiling) |", "|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rows):
            seed, start = r.get("seed", results["seeds"][i % len(results["seeds"])]), r.get("start", "base")
            head = f"| {seed}{'' if start == 'base' else ' (from SFT)'} | {100 * r['base_dev']:.1f} | {100 * r['matched_dev']:.1f} |"
            if not r["matched"]:
                lines.append(f"{head} - | - | {r['profiling_turns']:,} | no target (within 3 SE of the base) | - |")
                continue
            lines.append(f"{head} {r['e2e_turns']:,} ({r['e2e_seconds']:.0f}) | {r['pivotrl_turns']:,} "
                         f"({r['pivotrl_seconds']:.0f}) | {r['profiling_turns']:,} ({r['profiling_seconds']:.0f}) | "
                         f"{r['turns_ratio']:.2f} ({r['turns_ratio_with_profiling']:.2f}) | "
                         f"{r['seconds_ratio']:.2f} ({r['seconds_ratio_with_profiling']:.2f}) |")
    return "\n".join(lines)


def tags_table(results: dict) -> str:
    """Where the arms differ: next-action accuracy on held-out states by domain and tag (decision:
    a choice among alternatives the context shows; copy: a value shown once), and failed test
    episodes by their first off-track turn."""
    t = results["table"]
    tags = sorted({k for r in t.values() for k in r.get("next_action_by_tag", {})})
    lines = []
    if tags:
        lines += ["| method | " + " | ".join(tags) + " |", "|" + "---|" * (len(tags) + 1)]
        for arm in ("base", *ARMS):
            if arm in t:
                lines.append(f"| {LABELS[arm]} | " + " | ".join(_fmt(t[arm]["next_action_by_tag"].get(k)) for k in tags) + " |")
    points = sorted({k for r in t.values() for k in r.get("failures", {})})
    if points:
        lines += ["", "Failed test episodes (mean count over seeds) by where they first went off track "
                  "(the expert could no longer finish in the turns it needed):", "",
                  "| method | " + " | ".join(points) + " |", "|" + "---|" * (len(points) + 1)]
        for arm in ("base", *ARMS):
            if arm in t:
                lines.append(f"| {LABELS[arm]} | " + " | ".join(f"{t[arm]['failures'].get(k, 0):.1f}" for k in points) + " |")
    return "\n".join(lines)


def profile_owner(stage: str) -> str:
    """Whose profile a stage is, by its name: `profile` (the base's, shared by every seed),
    `profile-sN` (the base's, of seed N's draw) or `profile_sft-sN` (seed N's SFT model, of the
    trajectories it never trained on)."""
    model, _, seed = stage.partition("-s")
    who = "SFT" if model == "profile_sft" else "base"
    return f"{who}, seed {seed}" if seed else who


def outcomes_table(results: dict) -> str:
    """Where GRPO has something to learn: each profile's states by domain/tag and how their K samples
    came out. A state whose samples all fail gives every rollout the same reward, so no gradient."""
    profiles = {name: p for name, p in (results.get("profiles") or {}).items() if p and p.get("outcomes_by_tag")}
    if not profiles:
        return ""
    lines = ["Profiled states by how their K samples came out (share of the domain/tag's states; "
             "all fail: nothing for GRPO to learn from there):", "",
             "| profile | domain/tag | states | all fail | pivots | mixed, mean >= lambda | all pass |", "|---|---|---|---|---|---|---|"]
    for name, prof in profiles.items():
        who = profile_owner(name)
        for key, counts in prof["outcomes_by_tag"].items():
            n = sum(counts.values())
            lines.append(f"| {who} | {key} | {n} | " + " | ".join(
                f"{100 * counts[k] / n:.0f}%" for k in ("all_fail", "pivot", "mixed_above", "all_pass")) + " |")
    return "\n".join(lines)


def detail_tables(results: dict) -> str:
    """OOD accuracy per task, each arm's cost ledger (means over seeds), and the learning-rate sweeps."""
    t = results["table"]
    tasks = ood_shown(t)
    lines = ["| method | " + " | ".join(tasks) + " | OOD reasoning avg |", "|" + "---|" * (len(tasks) + 2)]
    for arm in ("base", *ARMS):
        if arm in t:
            r = t[arm]
            lines.append(f"| {LABELS[arm]} | " + " | ".join(_fmt(r["ood"][k]) for k in tasks) + f" | {_fmt(r['ood_reasoning_mean'])} |")
    keys = ("steps", "best_step", "rollout_turns", "profiling_turns", "generated_tokens", "wall_clock_s", "profiling_s")
    head = ("| method | optimizer steps | best dev step | rollout turns | profiling turns | generated tokens | training s | "
            "profiling s | best dev success | groups with zero reward variance |")
    lines += ["", head, "|" + "---|" * 10]
    for arm in ARMS:
        if arm in t and t[arm].get("cost"):
            c = t[arm]["cost"]
            zero = "-" if c["zero_std_share"] is None else _fmt(c["zero_std_share"])
            lines.append(f"| {LABELS[arm]} | " + " | ".join(_fmt(c[k], pct=False) for k in keys) +
                         f" | {_fmt(c['best_dev_success'])} | {zero} |")
    nf = results["claims"].get("no_filter_cost")
    if nf:
        lines.append(f"\nPivotRL without the pivot filter needs no profiling: {nf['rollout_turns']:,.0f} rollout turns "
                     f"(with the profiling charged as for PivotRL: +{nf['profiling_turns_if_charged']:,.0f}).")
    if results.get("sweeps"):
        lines += ["", "| method | learning rate | best dev success (first seed) | chosen |", "|---|---|---|---|"]
        for arm, sweep in results["sweeps"].items():
            chosen = t.get(arm, {}).get("learning_rate")
            untrained = never_trained(results.get("runs", {}).get(arm))  # no dev point: nothing was chosen
            for lr, dev in sweep.items():
                mark = "- (no pivots)" if untrained else "yes" if chosen is not None and float(lr) == chosen else ""
                lines.append(f"| {LABELS[arm]} | {float(lr):g} | {'-' if dev is None else f'{100 * dev:.1f}'} | {mark} |")
    return "\n".join(lines)


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "results.json") as fh:
        fh.write(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(markdown_table(results) + "\n\n" + claims_table(results) + "\n\n" +
                                  tags_table(results) + "\n\n" + outcomes_table(results) + "\n\n" +
                                  detail_tables(results) + regime_table(results) + "\n")
    plot_results(results, out)
    archive_ledgers(out / "work", out / "ledgers")


def regime_table(results: dict) -> str:
    """The gate on the comparison's data and each run's visits, where the run measured them."""
    regime = results.get("regime")
    if not regime:
        return ""
    lines = ["", "", "The regime gate on each seed's data (criteria of the domain; margin in standard errors "
             "of its bound, negative when it fails):", "", "| seed | domain | holds | narrowest criterion | margin (SE) |",
             "|---|---|---|---|---|"]
    for seed, g in regime["gates"].items():
        for d, holds in g["domains"].items():
            mine = [c for c in g["checks"] if c["domain"] == d and "margin_se" in c]
            low = min(mine, key=lambda c: c["margin_se"], default=None)
            lines.append(f"| {seed} | {d} | {'yes' if holds else 'no'} | {low['criterion'] if low else '-'} | "
                         f"{low['margin_se'] if low else '-'} |")
    lines += ["", "Visits per unit (pivots; SFT: trajectories, epochs; E2E: tasks) at the kept checkpoint and the end, "
              "and whether the run kept to the registered regime:", "",
              "| method | seed | units | visits, kept | visits, end | in the regime |", "|---|---|---|---|---|---|"]
    for arm, seeds in regime["runs"].items():
        for seed, r in seeds.items():
            inside = {True: "yes", False: "no"}.get(r.get("in_regime"), "-")
            lines.append(f"| {LABELS[arm]} | {seed} | {r['units']:,} | {r['visits_kept']:.2f} | {r['visits_end']:.2f} | {inside} |")
    return "\n".join(lines)


def archive_ledgers(work: Path, dest: Path) -> None:
    """Every run's per-step ledger, gzipped, as `dest/RUN.jsonl.gz`: small enough to commit beside
    the results (the run folders also hold models, which are not)."""
    for ledger in sorted(work.glob("*/ledger.jsonl")):
        gzip_copy(ledger, dest / f"{ledger.parent.name}.jsonl.gz")


def plot_results(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, runs = results["table"], results["runs"]
    base = t["base"]["in_domain_mean"]["mean"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, color in (("pivotrl", "#228833"), ("e2e", "#cc3311"), ("sft_pivotrl", "#4477aa")):
        leds = runs.get(arm, [])
        if not leds:
            continue
        name = LABELS[arm] + (" (profiling included)" if arm != "e2e" else "")
        for ax, x in zip(axes, ("rollout_turns", "wall_clock_s")):  # the ledger names both costs alike
            offsets = [(led.get("profiling") or {}).get(x, 0) for led in leds]
            for i, (led, off) in enumerate(zip(leds, offsets)):  # dev curves, one per seed (faint)
                if led["curve"]:
                    ax.plot([c[x] + off for c in led["curve"]], [c["eval_success"] for c in led["curve"]], ".-",
                            color=color, alpha=0.35, label=f"{name}: dev success while training" if i == 0 else None)
            end = [led[x] + off for led, off in zip(leds, offsets)]  # the final test evaluation, mean ± std
            final = t[arm]["in_domain_mean"]
            ax.errorbar([statistics.fmean(end)], [final["mean"]], yerr=[final["std"]], fmt="*", ms=13, color=color,
                        capsize=4, label=f"{name}: best dev checkpoint on test")
    for ax, label in zip(axes, ("rollout turns (model calls)", "wall-clock seconds")):
        ax.axhline(base, color="grey", ls="--", lw=1, label="base, test split")
        ax.set(xlabel=label, ylabel="in-domain success (episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "success_vs_cost.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    claims = results.get("claims") or {}

    def bar(arm: str, key: str, centre: float):
        """The 95% interval the verdicts are judged on (over seeds; with one seed, over test items)
        as error-bar lengths around the point, where the report computed one."""
        res = claims.get(f"{arm}_vs_base_{key}") or {}
        iv = res.get("seeds") if len(res.get("per_seed") or []) > 1 else res.get("tasks")
        if not iv or iv.get("low") is None:
            return None
        return [[max(0.0, centre - 100 * iv["low"])], [max(0.0, 100 * iv["high"] - centre)]]

    for arm in ARMS:
        if arm in t and t[arm]["ood_delta"] is not None:
            x, y = 100 * t[arm]["in_domain_delta"], 100 * t[arm]["ood_delta"]
            ax.errorbar([x], [y], xerr=bar(arm, "in_domain", x), yerr=bar(arm, "ood", y), fmt="o", ms=7, capsize=3)
            ax.annotate(LABELS[arm], (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.axhline(0, color="grey", lw=1)
    ax.axvline(0, color="grey", lw=1)
    ax.set(xlabel="in-domain change vs base (points)", ylabel="OOD reasoning change vs base (points)",
           title="Gains in-domain vs skills kept out of domain\n(bars: 95% intervals of the paired differences)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "in_domain_vs_ood.png", dpi=120)
    plt.close(fig)


# The claims registered for the per-domain comparison (results/lab-v3/README.md, "Claims registered"), read over the
# domains' runs: (claim in each domain's results, direction, what is claimed over the domains).
ACROSS = [
    ("pivotrl_vs_sft_in_domain", "keeps", "PivotRL - SFT >= 0 in-domain, on the mean over domains"),
    ("sft_vs_base_ood", "-", "SFT loses OOD reasoning (each domain against its own base)"),
    ("pivotrl_vs_base_ood", "keeps", "PivotRL stays within 2 points of its base OOD"),
]
ABLATIONS = ("no_filter_vs_pivotrl_in_domain", "exact_vs_pivotrl_in_domain")


def across_domains(by_domain: dict[str, dict]) -> dict:
    """The registered claims over one-domain runs (`lab run --domain`, one model per domain as the
    paper trains): per seed, the mean over domains of each domain's paired difference, then the t
    interval over seeds. A domain counts for a claim once its every seed is evaluated for both arms;
    the others are named in `pending`. The cost and ablation claims are the domains' own (repo's E2E
    RL, tooluse's ablations), carried over as measured there."""
    claims, pending = {}, {}
    for name, direction, says in ACROSS:
        have = {d: r["claims"][name]["per_seed"] for d, r in by_domain.items()
                if name in r.get("claims", {}) and len(r["claims"][name]["per_seed"]) == len(r["seeds"])}
        pending[name] = sorted(set(by_domain) - set(have))
        if len({len(v) for v in have.values()}) > 1:
            raise DataError(f"{name}: the domains' runs have different numbers of seeds "
                            f"({', '.join(f'{d}: {len(v)}' for d, v in have.items())})")
        if not have:
            continue
        per_seed = [statistics.fmean(col) for col in zip(*have.values())]
        iv = mean_interval(per_seed)
        claims[name] = {"claim": says, "domains": sorted(have), "per_seed": per_seed, "seeds": iv,
                        "by_domain": {d: by_domain[d]["claims"][name]["seeds"] for d in sorted(have)},
                        "verdict": verdict(iv, direction) if len(per_seed) > 1 else "no interval (one seed)"}
    for d, r in sorted(by_domain.items()):
        for name in ABLATIONS:
            if name in r.get("claims", {}):
                claims[f"{d}: {name}"] = {"claim": r["claims"][name]["paper"], "domains": [d], **r["claims"][name]}
        for start_name in ("base", "sft"):
            rows = [x for x in r.get("cost_to_match") or [] if x.get("start", "base") == start_name]
            if rows:
                claims[f"{d}: e2e_turns_vs_pivotrl" + ("" if start_name == "base" else " (from SFT)")] = {
                    "claim": "E2E RL needs at least 4x PivotRL's training rollout turns to the matched dev accuracy"
                             + ("" if start_name == "base" else ", both from the SFT checkpoint"),
                    "domains": [d], "rows": rows, "verdict": cost_verdict(rows)}
    table = {d: {arm: row["in_domain_mean"] for arm, row in r["table"].items()} for d, r in sorted(by_domain.items())}
    return {"domains": sorted(by_domain), "claims": claims, "pending": pending, "in_domain": table}


def across_table(result: dict) -> str:
    arms = [a for a in ("base", *ARMS) if any(a in t for t in result["in_domain"].values())]
    lines = ["| domain | " + " | ".join(LABELS[a] for a in arms) + " |", "|" + "---|" * (len(arms) + 1)]
    for d, t in result["in_domain"].items():
        lines.append(f"| {d} | " + " | ".join(_fmt(t.get(a)) if isinstance(t.get(a), dict) else "-" for a in arms) + " |")
    lines += ["", "| claim | domains | per seed (mean over domains) | mean [95% CI over seeds] | verdict |",
              "|---|---|---|---|---|"]
    for name, c in result["claims"].items():
        seeds = ", ".join(f"{100 * x:+.1f}" for x in c.get("per_seed", []))
        lines.append(f"| {c['claim']} | {', '.join(c['domains'])} | {seeds or '-'} | {_iv(c.get('seeds'))} | {c['verdict']} |")
    tasks = result.get("seeds_and_tasks") or {}
    if tasks:
        lines += ["", "Over seeds x test tasks (crossed random effects: `pivotrl.lab.intervals`):", "",
                  "| claim | domains | tasks per seed | mean [95% CI over seeds x tasks] | verdict |", "|---|---|---|---|---|"]
        for c in tasks.values():
            lines.append(f"| {c['claim']} | {', '.join(c['domains'])} | {c['tasks_per_seed']} | "
                         f"{_iv(c['seeds_and_tasks'])} | {c['verdict']} |")
    waiting = {n: ds for n, ds in result["pending"].items() if ds}
    if waiting:
        lines.append("\nNot yet counted (a seed still to evaluate): " +
                     "; ".join(f"{n}: {', '.join(ds)}" for n, ds in waiting.items()))
    return "\n".join(lines)
