"""One held-out split for every trainer: the trajectory ids kept out of training, written once.

SFT trains on trajectories, PivotRL on the pivots of some of them, E2E RL on tasks; each drawing
its own split would hold out different episodes (and evaluate on another's training data). So the
split is an artifact, `DATA.heldout.json` beside the data: `pivotrl extract` writes one for all the
trajectories it read, `profile` and `select` carry it to their outputs, and `sft`, `train` and `e2e`
read it (the `heldout` config key, or the file beside their data). A trainer that finds none draws
one from its own data and writes it in its run folder, where the others can be pointed to it.
Whole trajectories are held out, never single turns: turns of one episode are near-duplicates.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterable
from pathlib import Path

from pivotrl.artifacts import atomic_open
from pivotrl.errors import DataError


def heldout_path(data: str | Path) -> Path:
    data = Path(data)
    return data.with_name(data.name + ".heldout.json")


def choose_heldout(trajectory_ids: Iterable[str], fraction: float, seed: int) -> list[str]:
    """A seeded `fraction` of the distinct ids (at least one when there are two or more)."""
    tids = sorted(set(trajectory_ids))
    if fraction <= 0 or len(tids) < 2:
        return []
    random.Random(seed).shuffle(tids)
    return sorted(tids[: max(1, round(len(tids) * fraction))])


def write_heldout(path: str | Path, ids: Iterable[str], *, fraction: float, seed: int, source: str) -> None:
    with atomic_open(path) as fh:
        fh.write(json.dumps({"trajectory_ids": sorted(ids), "fraction": fraction, "seed": seed, "source": source},
                            indent=1) + "\n")


def read_heldout(path: str | Path) -> set[str]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the held-out split: {exc}", file=str(path)) from None
    ids = data.get("trajectory_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError("a held-out split needs 'trajectory_ids': a list of strings", file=str(path))
    return set(ids)


def carry_heldout(source_data: str | Path, output_data: str | Path) -> None:
    """A derived file (profile, pivots) keeps the split of the file it came from, and the held-out
    states beside it (`pivotrl.eval.heldout`)."""
    from pivotrl.eval.heldout import heldout_states_path

    for path in (heldout_path, heldout_states_path):
        src = path(source_data)
        if src.exists() and Path(src).resolve() != path(output_data).resolve():
            shutil.copyfile(src, path(output_data))


def resolve_heldout(explicit: str | None, data: str | Path | None, trajectory_ids: Iterable[str], *,
                    fraction: float, seed: int, run_dir: str | Path | None) -> set[str]:
    """The held-out ids a trainer uses: `explicit`; none with `fraction` 0 (train on everything);
    else the split beside `data`, else a new one drawn from `trajectory_ids`. Whichever it is, it is
    also written to `run_dir/heldout.json` (`run_dir` None: not written, as on a secondary rank)."""
    if explicit:
        ids, source = read_heldout(explicit), str(explicit)
    elif fraction <= 0:
        ids, source = set(), "none (eval_fraction 0)"
    elif data is not None and heldout_path(data).exists():
        ids, source = read_heldout(heldout_path(data)), str(heldout_path(data))
    else:
        ids, source = set(choose_heldout(trajectory_ids, fraction, seed)), f"drawn from {data or 'the given states'}"
    if run_dir is not None:
        write_heldout(Path(run_dir) / "heldout.json", ids, fraction=fraction, seed=seed, source=source)
    return ids


def sample_eval(states: list, limit: int, seed: int) -> list:
    """At most `limit` held-out states, a seeded sample in file order (not the first N, which are
    the first trajectories' turns)."""
    if len(states) <= limit:
        return list(states)
    keep = sorted(random.Random(seed).sample(range(len(states)), max(0, limit)))
    return [states[i] for i in keep]
