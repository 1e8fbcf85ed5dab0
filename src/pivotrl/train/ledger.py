"""One cost ledger for every trainer: `ledger.jsonl` in the run folder.

Append-only JSONL. One `{"kind": "profiling", ...}` line for PivotRL's one-off offline profiling
(so comparisons are honest), then one `{"kind": "step", ...}` line per optimizer step with
cumulative counters (rollout_turns: model calls that produced training data; generated_tokens;
env_steps; verifier_calls; wall_clock_s) and the step's train metrics, and `{"kind": "eval", ...}`
lines. On resume, lines past the checkpoint are dropped and the counters continue from it.

With several processes each rank counts its own rollouts in `counters`; `sync()` sums them over
ranks (every rank calls it at the same point), and only the main process writes the file.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pivotrl.artifacts import append_jsonl, atomic_open
from pivotrl.train.distributed import is_main_process, sum_over_ranks

_SUMMED = ("rollout_turns", "generated_tokens", "env_steps", "verifier_calls")


@dataclass
class Counters:
    rollout_turns: int = 0
    generated_tokens: int = 0
    env_steps: int = 0
    verifier_calls: int = 0
    wall_clock_s: float = 0.0


class Ledger:
    def __init__(self, run_dir: str | Path, trainer: str):
        self.path = Path(run_dir) / "ledger.jsonl"
        self.trainer = trainer
        self.counters = Counters()     # this process's share
        self.totals = Counters()       # all processes, as of the last sync
        self.main = is_main_process()
        self._t0 = time.time()
        self._base_seconds = 0.0

    def resume_from(self, step: int) -> None:
        """Keep the lines up to `step`; continue the counters from there (on the main process; the
        other ranks' shares start at 0, so the sum over ranks continues from the same totals)."""
        if not self.main or not self.path.exists():
            return
        kept = [r for r in read_ledger(self.path) if r.get("kind") == "profiling" or r.get("step", 0) <= step]
        with atomic_open(self.path) as fh:
            fh.writelines(json.dumps(r) + "\n" for r in kept)
        steps = [r for r in kept if r.get("kind") in ("step", "eval")]
        if steps:
            last = steps[-1]
            self.counters = Counters(**{k: last.get(k, 0) for k in asdict(Counters())})
            self.totals = Counters(**asdict(self.counters))
            self._base_seconds = self.counters.wall_clock_s
        self._t0 = time.time()

    def elapsed(self) -> float:
        return self._base_seconds + time.time() - self._t0

    def has_profiling_line(self) -> bool:
        return self.path.exists() and any(r.get("kind") == "profiling" for r in read_ledger(self.path))

    def start_fresh(self) -> None:
        if self.main:
            self.path.unlink(missing_ok=True)

    def sync(self) -> Counters:
        """Sum every rank's counters into `totals` (a collective in a multi-process run)."""
        summed = sum_over_ranks([getattr(self.counters, k) for k in _SUMMED])
        self.totals = Counters(**{k: int(v) for k, v in zip(_SUMMED, summed)})
        return self.totals

    def write_profiling(self, cost: dict) -> None:
        if not self.main or self.has_profiling_line():
            return
        append_jsonl(self.path, [{"kind": "profiling", "trainer": self.trainer, "rollout_turns": cost.get("samples", 0),
                                  "generated_tokens": cost.get("generated_tokens", 0), "env_steps": 0,
                                  "verifier_calls": cost.get("verifier_calls", 0),
                                  "wall_clock_s": cost.get("wall_clock_s", 0.0), "states": cost.get("states", 0)}])

    def write(self, kind: str, step: int, metrics: dict, sync: bool = True) -> dict:
        """A line with the counters summed over ranks. `sync=False` for a line only the main process
        writes (e.g. after an evaluation it alone ran): the totals of the last sync are used."""
        totals = self.sync() if sync else self.totals
        totals.wall_clock_s = self.counters.wall_clock_s = self.elapsed()
        rec = {"kind": kind, "trainer": self.trainer, "step": step, **asdict(totals), **metrics}
        if self.main:
            append_jsonl(self.path, [rec])
        return rec


def read_ledger(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "ledger.jsonl"
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line from a killed run
    return out


def profiling_cost(ledger: list[dict]) -> dict:
    """The profiling line's counters (zeros for trainers that do not profile)."""
    line = next((r for r in ledger if r.get("kind") == "profiling"), {})
    return {k: line.get(k, 0) for k in ("rollout_turns", "generated_tokens", "verifier_calls", "wall_clock_s")}
