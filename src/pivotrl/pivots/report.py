"""`pivotrl report`: plots and a markdown summary of a profile."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from pivotrl.pivots.select import Candidate, select


def write_report(cands: list[Candidate], out_dir: str | Path, lambda_diff: float = 0.75, title: str = "") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = [c for c in cands if c.profiled]
    pivots = select(cands, "pivot", lambda_diff=lambda_diff)
    pivot_ids = {c.state.id for c in pivots}

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist([c.mean for c in ok], bins=20, range=(0, 1), color="#4477aa", edgecolor="white")
    ax.axvline(lambda_diff, color="#cc3311", ls="--", label=f"lambda_diff = {lambda_diff}")
    ax.set(xlabel="mean reward over K samples", ylabel="states", title="Per-state mean reward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "mean_reward_hist.png", dpi=120)
    plt.close(fig)

    by_turn: dict[int, list[float]] = defaultdict(list)
    for c in ok:
        by_turn[c.state.turn_index].append(c.var)
    turns = sorted(by_turn)
    fig, ax = plt.subplots(figsize=(6, 4))
    if turns:
        ax.boxplot([by_turn[t] for t in turns], positions=turns, widths=0.6)
        ax.plot(turns, [sum(by_turn[t]) / len(by_turn[t]) for t in turns], "o-", color="#cc3311", label="mean")
        ax.legend()
    ax.set(xlabel="assistant turn index", ylabel="reward variance", title="Reward variance by turn position")
    fig.tight_layout()
    fig.savefig(out / "variance_by_turn.png", dpi=120)
    plt.close(fig)

    domains = Counter(c.state.domain for c in ok)
    kept = Counter(c.state.domain for c in pivots)
    names = sorted(domains)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [kept[d] / domains[d] for d in names], color="#228833")
    ax.set(ylabel="share of states kept as pivots", ylim=(0, 1), title="Pivots per domain")
    fig.tight_layout()
    fig.savefig(out / "pivots_by_domain.png", dpi=120)
    plt.close(fig)

    n = len(ok)
    zero = sum(c.var == 0 for c in ok)
    solved = sum(c.var == 0 and c.mean == 1 for c in ok)
    summary = {"states": len(cands), "profiled": n, "pivots": len(pivots), "lambda_diff": lambda_diff,
               "zero_variance": zero, "all_correct": solved, "all_wrong": zero - solved,
               "mean_reward": sum(c.mean for c in ok) / n if n else None,
               "by_domain": {d: {"states": domains[d], "pivots": kept[d]} for d in names}}
    lines = [f"# Profile report{': ' + title if title else ''}", "",
             f"- states: {len(cands)} ({n} profiled, {len(cands) - n} skipped)",
             f"- pivots (variance > 0 and mean < {lambda_diff}): **{len(pivots)}** ({len(pivots) / max(n, 1):.1%})",
             f"- zero variance: {zero} ({solved} all correct, {zero - solved} all wrong)",
             f"- mean reward: {summary['mean_reward']:.3f}" if n else "- mean reward: n/a", "",
             "| domain | states | pivots | share |", "|---|---:|---:|---:|"]
    lines += [f"| {d} | {domains[d]} | {kept[d]} | {kept[d] / domains[d]:.1%} |" for d in names]
    lines += ["", "| turn | states | pivots | mean variance |", "|---:|---:|---:|---:|"]
    for t in turns:
        k = sum(1 for c in ok if c.state.turn_index == t and c.state.id in pivot_ids)
        lines.append(f"| {t} | {len(by_turn[t])} | {k} | {sum(by_turn[t]) / len(by_turn[t]):.3f} |")
    lines += ["", "![mean reward](mean_reward_hist.png)", "![variance by turn](variance_by_turn.png)",
              "![pivots by domain](pivots_by_domain.png)", ""]
    (out / "README.md").write_text("\n".join(lines))
    return summary
