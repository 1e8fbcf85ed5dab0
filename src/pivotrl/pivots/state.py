"""A pivot candidate: the context before one assistant turn, plus the action the expert took."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pivotrl.artifacts import write_jsonl
from pivotrl.data.types import Action


def state_id(trajectory_id: str, turn_index: int) -> str:
    """Stable id: the same trajectory turn gets the same id in every file and every run."""
    return hashlib.sha1(f"{trajectory_id}\x00{turn_index}".encode()).hexdigest()[:16]


@dataclass
class State:
    id: str
    trajectory_id: str
    turn_index: int          # which assistant turn of the trajectory (0-based)
    num_turns: int           # assistant turns in the whole trajectory (-1 if unknown)
    context: list[dict]      # chat messages before the turn (OpenAI form)
    tools: list[dict]        # tool schemas (OpenAI form)
    reference: Action        # the demonstrated action a*
    domain: str = "default"
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "trajectory_id": self.trajectory_id, "turn_index": self.turn_index,
                "num_turns": self.num_turns, "domain": self.domain, "context": self.context,
                "tools": self.tools, "reference": self.reference.to_dict(), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> State:
        return cls(d["id"], d["trajectory_id"], int(d["turn_index"]), int(d.get("num_turns", -1)),
                   d["context"], d.get("tools", []), Action.from_dict(d["reference"]),
                   d.get("domain", "default"), d.get("meta", {}))


def write_states(path: str | Path, states) -> int:
    return write_jsonl(path, (s.to_dict() for s in states))


def states_to_dataset(states):
    """A `datasets.Dataset` in TRL's conversational prompt layout.

    `prompt` holds the context messages. Tool schemas and the reference action vary in shape from
    row to row, which Arrow cannot hold as one struct type, so they travel as JSON strings
    (`tools`, `reference`) and are decoded by the reward functions.
    """
    import datasets

    rows = {"prompt": [], "tools": [], "reference": [], "state_id": [], "trajectory_id": [],
            "domain": [], "turn_index": [], "meta": []}
    for s in states:
        rows["prompt"].append([arrow_safe_message(m) for m in s.context])
        rows["tools"].append(json.dumps(s.tools))
        rows["reference"].append(json.dumps(s.reference.to_dict()))
        rows["state_id"].append(s.id)
        rows["trajectory_id"].append(s.trajectory_id)
        rows["domain"].append(s.domain)
        rows["turn_index"].append(s.turn_index)
        rows["meta"].append(json.dumps(s.meta))  # what task-aware verifiers (the lab's) read
    return datasets.Dataset.from_dict(rows)


def arrow_safe_message(m: dict) -> dict:
    """Same message with one fixed shape: string content, tool-call arguments as JSON strings."""
    out = {"role": m["role"], "content": m.get("content") or ""}
    if m.get("tool_calls"):
        out["tool_calls"] = [{"type": "function", "id": str(c.get("id", "")), "function": {
            "name": c["function"]["name"],
            "arguments": a if isinstance(a := c["function"].get("arguments", {}), str) else json.dumps(a)}}
            for c in m["tool_calls"]]
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    return out
