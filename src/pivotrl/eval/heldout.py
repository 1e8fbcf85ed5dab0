"""One held-out evaluation for every trainer and for `pivotrl eval`: next-action accuracy on held-out
states (`eval_accuracy`, scored by a verifier) and, where an environment is given, the success of
held-out episodes (`eval_success`). PivotRL, SFT and E2E RL log them under the same names, measured
on the same states and tasks, so `pivotrl compare` sets any of them side by side.

Which states: `eval_states` when given; else the held-out states `pivotrl extract` wrote beside its
output (`STATES.heldout.states.jsonl`, every state of the held-out trajectories, carried by `profile`
and `select` beside theirs); else what the trainer can tell itself (SFT: the held-out trajectories'
states; PivotRL: its held-out pivots, a narrower set, said so). Which episodes: `eval_tasks` with
`eval_environment` (E2E: its own environment and held-out tasks by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivotrl.errors import DataError


@dataclass
class HeldOutSet:
    states: list = field(default_factory=list)
    verifier: Any = None
    env_factory: Callable | None = None
    tasks: list = field(default_factory=list)
    max_turns: int = 8

    def __bool__(self) -> bool:
        return bool(self.states) or bool(self.tasks)

    def describe(self) -> str:
        parts = [f"{len(self.states)} states"] if self.states else []
        parts += [f"{len(self.tasks)} episodes"] if self.tasks else []
        return " and ".join(parts) or "nothing"


def measure(sampler, heldout: HeldOutSet, max_tokens: int) -> dict:
    """The metrics of one policy (behind `sampler`) on the held-out set. With several processes each
    rank measures its share of the states and episodes and every rank gets the whole set's metrics
    (call it on every rank)."""
    from pivotrl.eval.episodes import run_episodes
    from pivotrl.eval.next_action import next_action_scores
    from pivotrl.train.distributed import gather_lists, my_share

    out: dict = {}
    if heldout.states:
        scores = gather_lists(next_action_scores(sampler, my_share(heldout.states), heldout.verifier, max_tokens))
        out.update(eval_accuracy=sum(scores) / len(scores), eval_states=len(scores))
    if heldout.tasks:
        mine = run_episodes(sampler, heldout.env_factory, my_share(heldout.tasks), heldout.max_turns, max_tokens)
        eps = gather_lists([(e.reward, e.turns) for e in mine])
        out.update(eval_success=sum(r for r, _ in eps) / len(eps), eval_episodes=len(eps),
                   eval_turns_per_episode=sum(t for _, t in eps) / len(eps))
    return out


def heldout_states_path(data: str | Path) -> Path:
    data = Path(data)
    return data.with_name(data.name + ".heldout.states.jsonl")


def resolve_states(explicit: str | None, data: str | Path | None, held: set[str], fallback: list,
                   fallback_note: str = "", heldout: str | None = None) -> tuple[list, str]:
    """(held-out states, where they came from): `explicit`, else those of the `held` trajectories in
    the file beside `data`, or beside the split file `heldout` (`X.heldout.json` -> `X.heldout.states.jsonl`,
    as `extract` writes them), else `fallback`. The caller keeps their trajectories out of training,
    then samples."""
    from pivotrl.pivots.load import load_states

    if explicit:
        return load_states(explicit), str(explicit)
    beside = [heldout_states_path(data)] if data is not None else []
    if heldout and str(heldout).endswith(".heldout.json"):
        beside.append(heldout_states_path(str(heldout)[:-len(".heldout.json")]))
    found = next((p for p in beside if p.exists()), None)
    if found is not None:
        return [s for s in load_states(found) if s.trajectory_id in held], str(found)
    return list(fallback), fallback_note


def resolve_episodes(tasks: str | list | None, environment: Any, max_tasks: int, max_turns: int):
    """(environment factory, tasks) for held-out episodes, or (None, []) when none are asked for."""
    from pivotrl.eval.episodes import load_environment

    if not tasks:
        if environment:
            raise DataError("eval_environment needs eval_tasks: the held-out tasks to play")
        return None, []
    if not environment:
        raise DataError("eval_tasks needs eval_environment: the environment the tasks are played in")
    if isinstance(tasks, (str, Path)):
        from pivotrl.eval.episodes import load_tasks

        tasks = load_tasks(str(tasks))
    return load_environment(environment), list(tasks)[:max_tasks]


def heldout_set(cfg, states: list, verifier, default_env: Any = None, default_tasks: list | None = None) -> HeldOutSet:
    """The held-out set a trainer's config asks for, with its states already resolved."""
    factory, tasks = resolve_episodes(getattr(cfg, "eval_tasks", None) or default_tasks,
                                      getattr(cfg, "eval_environment", None) or default_env,
                                      cfg.eval_max_tasks, cfg.eval_max_turns)
    return HeldOutSet(states, verifier, factory, tasks, cfg.eval_max_turns)


def announce(heldout: HeldOutSet, source: str) -> str:
    """What a trainer tells the user about its evaluation; a warning when there is none."""
    if not heldout:
        return ("warning: no held-out states or episodes, so nothing is evaluated during training (give "
                "eval_states, or keep the STATES.heldout.states.jsonl that `pivotrl extract` wrote beside the data)")
    return f"evaluating on {heldout.describe()}" + (f" ({source})" if source and heldout.states else "")
