"""Pivot candidates: every assistant turn of every trajectory becomes a `State`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pivotrl.data.types import Trajectory
from pivotrl.pivots.state import State, state_id
from pivotrl.rewards.parse import parse_action


@dataclass
class ExtractStats:
    trajectories: int = 0
    assistant_turns: int = 0
    tool_call_turns: int = 0
    parallel_call_turns: int = 0
    message_turns: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"trajectories": self.trajectories, "assistant_turns": self.assistant_turns,
                "tool_call_turns": self.tool_call_turns, "parallel_call_turns": self.parallel_call_turns,
                "message_turns": self.message_turns, "skipped": dict(self.skipped)}


def extract_states(trajectories, stats: ExtractStats | None = None) -> list[State]:
    """One state per assistant turn: the full context before it and the demonstrated action.

    A turn whose demonstrated action is empty (no text, no call) teaches nothing and is counted
    as skipped (`empty_action`).
    """
    stats = stats if stats is not None else ExtractStats()
    states: list[State] = []
    for traj in trajectories:
        stats.trajectories += 1
        states.extend(_states_of(traj, stats))
    return states


def _states_of(traj: Trajectory, stats: ExtractStats) -> list[State]:
    positions = [i for i, m in enumerate(traj.messages) if m.get("role") == "assistant"]
    out = []
    for turn, pos in enumerate(positions):
        stats.assistant_turns += 1
        action = parse_action(traj.messages[pos], traj.tools)
        if action.kind == "none":
            stats.skipped["empty_action"] += 1
            continue
        if action.kind == "tool_calls":
            stats.tool_call_turns += 1
            stats.parallel_call_turns += len(action.calls) > 1
        else:
            stats.message_turns += 1
        out.append(State(state_id(traj.id, turn), traj.id, turn, len(positions),
                         traj.messages[:pos], traj.tools, action, traj.domain,
                         {"message_index": pos, **({"trajectory_meta": traj.meta} if traj.meta else {})}))
    return out
