"""`pivotrl report`: plots and a markdown summary of a profile."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from pivotrl.pivots.select import Candidate, breakdown, select


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
    cut = [c.truncated for c in ok]
    mostly_cut = sum(t >= 0.5 for t in cut)
    summary = {"states": len(cands), "profiled": n, "pivots": len(pivots), "lambda_diff": lambda_diff,
               "zero_variance": zero, "all_correct": solved, "all_wrong": zero - solved,
               "truncated_share": sum(cut) / n if n else None, "states_mostly_truncated": mostly_cut,
               "mean_reward": sum(c.mean for c in ok) / n if n else None,
               "by_domain": {d: {"states": domains[d], "pivots": kept[d]} for d in names}}
    lines = [f"# Profile report{': ' + title if title else ''}", "",
             f"- states: {len(cands)} ({n} profiled, {len(cands) - n} skipped)",
             f"- pivots (variance > 0 and mean < {lambda_diff}): **{len(pivots)}** ({len(pivots) / max(n, 1):.1%})",
             f"- zero variance: {zero} ({solved} all correct, {zero - solved} all wrong)",
             f"- mean reward: {summary['mean_reward']:.3f}" if n else "- mean reward: n/a",
             f"- samples cut by the token budget (scored 0): {summary['truncated_share']:.1%}; states with half or "
             f"more of their samples cut: {mostly_cut}" if n else "", "",
             "| domain | states | pivots | share |", "|---|---:|---:|---:|"]
    lines += [f"| {d} | {domains[d]} | {kept[d]} | {kept[d] / domains[d]:.1%} |" for d in names]

    actions = breakdown(ok, pivots)
    lines += ["", "| reference action | states | pivots |", "|---|---:|---:|"]
    lines += [f"| {a} | {n} | {actions['action_kept'][a]} |" for a, n in actions["action"].most_common()]
    if actions["action_kept"]["message (any text paid)"]:
        lines += ["", "\"message (any text paid)\": message turns where the verifier paid any message without "
                  "reading it (NeMo Gym's rule); GRPO there learns to write some text, not the right text. A "
                  "`message_check` option (tool_call, tool_call_schema) makes the verifier read it."]
    summary["kind_only_pivots"] = actions["action_kept"]["message (any text paid)"]
    lines += ["", "| turn | states | pivots | mean variance | samples truncated |", "|---:|---:|---:|---:|---:|"]
    for t in turns:
        at = [c for c in ok if c.state.turn_index == t]
        k = sum(1 for c in at if c.state.id in pivot_ids)
        lines.append(f"| {t} | {len(at)} | {k} | {sum(by_turn[t]) / len(by_turn[t]):.3f} | "
                     f"{sum(c.truncated for c in at) / len(at):.1%} |")
    if n and any(cut):
        lines += ["", "Share of each state's samples cut by the token budget:", "",
                  "| truncated | states |", "|---|---:|"]
        bands = [(0.0, 0.0, "none"), (1e-9, 0.25, "up to 25%"), (0.25 + 1e-9, 0.5, "25-50%"),
                 (0.5 + 1e-9, 0.999, "50-99%"), (1.0, 1.0, "all")]
        lines += [f"| {label} | {sum(lo <= t <= hi for t in cut)} |" for lo, hi, label in bands]
    lines += ["", "![mean reward](mean_reward_hist.png)", "![variance by turn](variance_by_turn.png)",
              "![pivots by domain](pivots_by_domain.png)", ""]
    (out / "README.md").write_text("\n".join(lines))
    return summary
