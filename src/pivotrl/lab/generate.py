"""`pivotrl lab generate`: tasks per split and the experts' SFT trajectories, as files."""

from __future__ import annotations

import random
from pathlib import Path

from pivotrl.artifacts import write_jsonl
from pivotrl.lab.domains import IN_DOMAIN
from pivotrl.lab.domains.base import get_domain


def generate(out_dir: str | Path, domains: list[str] | None = None, sizes: dict | None = None, seed: int = 0,
             log=None) -> dict:
    """Writes `{domain}/{split}_tasks.jsonl` and `{domain}/train_trajectories.jsonl` (OpenAI format),
    plus `train_trajectories.jsonl` with every domain's trajectories together."""
    sizes = sizes or {"train": 400, "dev": 50, "test": 200}
    out = Path(out_dir)
    counts, everything = {}, []
    for name in domains or list(IN_DOMAIN):
        dom = get_domain(name)
        counts[name] = {}
        for split, n in sizes.items():
            tasks = dom.tasks(split, n, seed)
            write_jsonl(out / name / f"{split}_tasks.jsonl", tasks)
            counts[name][f"{split}_tasks"] = len(tasks)
            if split == "train":
                rng = random.Random(f"sft:{name}:{seed}")
                trajs = [dom.expert(t, rng) for t in tasks]
                write_jsonl(out / name / "train_trajectories.jsonl", trajs)
                everything += trajs
                counts[name]["train_trajectories"] = len(trajs)
        if log:
            log(f"{name}: {counts[name]}")
    write_jsonl(out / "train_trajectories.jsonl", everything)
    return counts
