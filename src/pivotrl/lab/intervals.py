"""Task-aware intervals for a paired difference measured on seeds x tasks (issue 51, point 4).

Every seed of an arm is scored on the same test tasks, so the seeds are not the only source of
noise: which tasks were drawn is another, shared by every seed. An interval over the seeds' means
alone is conditional on those tasks and too narrow for a claim about the method. The difference
table `d[s][t]` (arm A minus arm B, seed s, task t) is read as a crossed random-effects model,

    d[s][t] = mu + seed_s + task_t + residual_st,

whose grand mean has variance sigma_seed^2 / S + sigma_task^2 / T + sigma_res^2 / (S T). For a
balanced table the two-way ANOVA mean squares give it without bias, (MS_seed + MS_task - MS_res) /
(S T), and Satterthwaite's approximation its degrees of freedom; the interval is Student's t on
those. Where each seed has tasks of its own (nested, not crossed), the seeds' means already carry
the task noise and the usual t interval over seeds is the right one (`report.mean_interval`).
"""

from __future__ import annotations

import math
import statistics

from pivotrl.lab.report import t975


def crossed_interval(d: list[list[float]]) -> dict:
    """Mean and 95% interval of a seeds x tasks table of paired differences (every row the same
    tasks, in the same order), with the variance components it was built from."""
    s, t = len(d), len(d[0]) if d else 0
    if s < 2 or t < 2 or any(len(row) != t for row in d):
        raise ValueError("a crossed interval needs at least 2 seeds and 2 tasks, every seed on the same tasks")
    grand = statistics.fmean(x for row in d for x in row)
    seed_means = [statistics.fmean(row) for row in d]
    task_means = [statistics.fmean(d[i][j] for i in range(s)) for j in range(t)]
    ms_seed = t * sum((m - grand) ** 2 for m in seed_means) / (s - 1)
    ms_task = s * sum((m - grand) ** 2 for m in task_means) / (t - 1)
    ss_res = sum((d[i][j] - seed_means[i] - task_means[j] + grand) ** 2 for i in range(s) for j in range(t))
    ms_res = ss_res / ((s - 1) * (t - 1))
    # E[MS_seed + MS_task - MS_res] = S T Var(grand mean); a negative estimate (sampling noise) is
    # floored at the larger of the two main-effect terms alone, never at zero.
    v = max(ms_seed + ms_task - ms_res, ms_seed, ms_task, 1e-300)
    df_denominator = (ms_seed ** 2 / (s - 1) + ms_task ** 2 / (t - 1) + ms_res ** 2 / ((s - 1) * (t - 1)))
    df = v ** 2 / df_denominator if df_denominator > 0 else float(s - 1)
    half = t975(max(1, math.floor(df))) * math.sqrt(v / (s * t))
    return {"mean": grand, "low": grand - half, "high": grand + half, "df": df, "n_seeds": s, "n_tasks": t,
            "components": {"seed": max(0.0, (ms_seed - ms_res) / t), "task": max(0.0, (ms_task - ms_res) / s),
                           "residual": ms_res}}


# The registered claims read over domains (`pivotrl.lab.report.ACROSS`): which arms they compare, on what.
CLAIM_ARMS = {"pivotrl_vs_sft_in_domain": ("pivotrl", "sft", "in_domain"),
              "sft_vs_base_ood": ("sft", "base", "ood"),
              "pivotrl_vs_base_ood": ("pivotrl", "base", "ood")}


def seed_evaluations(run, arm: str) -> list[dict] | None:
    """The test evaluations of `arm` in a one-domain run folder, one per seed at the learning rate the
    run chose (the base's one evaluation stands for every seed); None while a seed is unevaluated."""
    import json
    from pathlib import Path

    run = Path(run)
    results = json.loads((run / "results.json").read_text())
    work, seeds = run / "work", results["seeds"]
    if arm == "base":
        paths = [work / "eval_base.json"] * len(seeds)
    elif arm in results.get("table", {}):
        rate = results["table"][arm]["learning_rate"]
        paths = [work / f"eval_{arm}-lr{rate:g}-s{s}.json" for s in seeds]
    else:
        return None
    if not all(p.exists() for p in paths):
        return None
    return [json.loads(p.read_text()) for p in paths]


def scored_items(record: dict, key: str) -> list[float]:
    """Every test episode's success (in-domain) or OOD item's score of one evaluation, in its order."""
    if key == "in_domain":
        return [float(x) for eps in record["episodes"].values() for x in eps]
    return [float(x) for x in record["ood_items"]]


def claims_over_seeds_and_tasks(runs: dict) -> dict:
    """The registered claims over one-domain runs (`{domain: run folder}`) with the task-aware
    interval: for each seed, every domain's paired differences task by task side by side (each domain
    has as many tasks as the others, so the grand mean is the mean over domains), then
    `crossed_interval` over seeds x tasks, judged by the claim's registered rule."""
    from pivotrl.errors import DataError
    from pivotrl.lab.report import ACROSS, verdict

    out, loaded = {}, {}

    def evaluations(run, arm):  # each arm's files read once, though several claims compare it
        if (run, arm) not in loaded:
            loaded[run, arm] = seed_evaluations(run, arm)
        return loaded[run, arm]

    for name, direction, says in ACROSS:
        a, b, key = CLAIM_ARMS[name]
        table, lengths, domains = None, {}, []
        for domain, run in sorted(runs.items()):
            ea, eb = evaluations(run, a), evaluations(run, b)
            if ea is None or eb is None:
                continue
            rows = [[x - y for x, y in zip(scored_items(ra, key), scored_items(rb, key))] for ra, rb in zip(ea, eb)]
            lengths[domain] = len(rows[0])
            if table is not None and len(rows) != len(table):
                raise DataError(f"{name}: the domains' runs have different numbers of seeds")
            table = rows if table is None else [t + r for t, r in zip(table, rows)]
            domains.append(domain)
        if table is None or len(table) < 2:
            continue
        if len(set(lengths.values())) > 1:
            raise DataError(f"{name}: the domains have different numbers of test tasks ({lengths}); the mean over "
                            "domains needs as many from each")
        iv = crossed_interval(table)
        out[name] = {"claim": says, "domains": domains, "tasks_per_seed": len(table[0]),
                     "seeds_and_tasks": {k: iv[k] for k in ("mean", "low", "high", "df")},
                     "verdict": verdict(iv, direction)}
    return out
