"""`pivotrl compare`: several runs' ledgers on one figure, and the cost of reaching a target.

The x axes are rollout turns (model calls that produced training data) and wall-clock seconds,
each including PivotRL's one-off profiling unless `include_profiling=False`.
"""

from __future__ import annotations

from pathlib import Path

from pivotrl.errors import DataError
from pivotrl.train.ledger import profiling_cost, read_ledger


def run_curve(run_dir: str | Path, metric: str, include_profiling: bool = True) -> dict:
    path = Path(run_dir) / "ledger.jsonl" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.exists():
        raise DataError("no ledger.jsonl in this run folder", file=str(run_dir))
    ledger = read_ledger(path)
    prof = profiling_cost(ledger) if include_profiling else {"rollout_turns": 0, "wall_clock_s": 0.0}
    points = [r for r in ledger if metric in r and r.get("kind") in ("eval", "step")]
    if not points:
        raise DataError(f"the ledger has no {metric!r} values (metrics there: "
                        f"{', '.join(sorted({k for r in ledger for k in r if isinstance(r[k], (int, float))}))})",
                        file=str(path))
    trainer = next((r.get("trainer") for r in ledger if r.get("trainer")), "?")
    return {"name": Path(run_dir).name, "trainer": trainer,
            "turns": [r["rollout_turns"] + prof["rollout_turns"] for r in points],
            "seconds": [r["wall_clock_s"] + prof["wall_clock_s"] for r in points],
            "values": [r[metric] for r in points], "profiling": prof}


def reach(curve: dict, target: float) -> dict:
    """Turns and seconds at the first point where the metric reaches `target` (None if never)."""
    for t, s, v in zip(curve["turns"], curve["seconds"], curve["values"]):
        if v >= target:
            return {"turns": t, "seconds": s, "value": v}
    return {"turns": None, "seconds": None, "value": max(curve["values"])}


def plot_compare(curves: list[dict], metric: str, output: str | Path, target: float | None = None,
                 include_profiling: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for c in curves:
        label = f"{c['name']} ({c['trainer']})"
        axes[0].plot(c["turns"], c["values"], marker="o", ms=3, label=label)
        axes[1].plot(c["seconds"], c["values"], marker="o", ms=3, label=label)
    which = "profiling included" if include_profiling else "training only"
    for ax, xlabel in zip(axes, (f"rollout turns (model calls, {which})", f"wall-clock seconds ({which})")):
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=1)
        ax.set(xlabel=xlabel, ylabel=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
