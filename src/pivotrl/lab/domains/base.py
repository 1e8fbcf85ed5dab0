"""What every lab domain provides, and the registry.

A domain is one module with a `Domain` registered by name:
- `sample_task(rng, split)`: one random task (a JSON-able dict with `prompt` messages and the
  kwargs of the environment's `reset`), drawn until its key falls in the requested split;
- `environment`: the class that executes actions for real (`reset(**task)`, one method per tool,
  `get_reward()` = episode success), which TRL's `environment_factory` drives unchanged;
- `expert(task, rng)`: an SFT trajectory, produced by acting in the environment, with varied
  surface forms (argument order, equivalent commands and queries, paraphrased messages);
- `verifier`: the functional verifier for its actions (a registered name, with options).

Splits never overlap: a task's split is decided by a hash of its key (the facts that define it),
so train, dev and test are disjoint whatever their sizes.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from pivotrl.errors import DataError

SPLITS = {"train": range(0, 80), "dev": range(80, 90), "test": range(90, 100)}


@dataclass
class Domain:
    name: str
    environment: type
    sample_task: Callable[[random.Random], dict]      # a random task; its `key` decides the split
    expert: Callable[[dict, random.Random], dict]     # an OpenAI-format trajectory record
    verifier: str = "tool_call"
    verifier_options: dict = field(default_factory=dict)
    description: str = ""

    def tasks(self, split: str, n: int, seed: int = 0) -> list[dict]:
        """`n` distinct tasks of `split`, the same for the same seed."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        out, seen, tries = [], set(), 0
        while len(out) < n:
            tries += 1
            if tries > 200 * n + 1000:
                raise DataError(f"{self.name}: could not draw {n} distinct {split} tasks")
            task = self.sample_task(rng)
            key = task.pop("key")
            if split_of(self.name, key) != split or key in seen:
                continue
            seen.add(key)
            task.update(id=f"{self.name}-{split}-{hashlib.sha1(key.encode()).hexdigest()[:10]}", domain=self.name,
                        split=split)
            out.append(task)
        return out

    def tools(self) -> list[dict]:
        from pivotrl.eval.episodes import environment_tools

        return environment_tools(self.environment())


def split_of(domain: str, key: str) -> str:
    bucket = int(hashlib.sha1(f"{domain}\x00{key}".encode()).hexdigest()[:8], 16) % 100
    return next(s for s, r in SPLITS.items() if bucket in r)


_DOMAINS: dict[str, Domain] = {}


def register_domain(domain: Domain) -> Domain:
    _DOMAINS[domain.name] = domain
    return domain


def get_domain(name: str) -> Domain:
    import pivotrl.lab.domains  # noqa: F401  (registers the built-in domains)

    if name not in _DOMAINS:
        raise DataError(f"unknown lab domain {name!r}; choose one of {', '.join(sorted(_DOMAINS))}")
    return _DOMAINS[name]


def list_domains() -> list[str]:
    import pivotrl.lab.domains  # noqa: F401

    return sorted(_DOMAINS)


def run_expert(domain: Domain, task: dict, steps: list[tuple[str, Any]], tools: list[dict] | None = None) -> dict:
    """Play an expert's plan in a real environment and record the trajectory.

    `steps`: `("call", (name, args))` for a tool call, `("say", text)` for the final message; a
    step may also be a callable `(observations) -> step`, for choices that depend on what the
    environment answered.
    """
    from pivotrl.eval.episodes import call_tool, environment_tools

    env = domain.environment()
    obs = env.reset(**{k: v for k, v in task.items() if k not in ("prompt", "id", "domain", "split")})
    messages = [dict(m) for m in task["prompt"]]
    if isinstance(obs, str):
        messages[-1]["content"] += obs
    seen: list[str] = []
    for n, step in enumerate(steps):
        if callable(step):
            step = step(seen)
        kind, payload = step
        if kind == "say":
            messages.append({"role": "assistant", "content": payload})
            break
        name, args = payload
        call_id = f"call_{n}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})
        out = call_tool(env, name, args)
        seen.append(out)
        messages.append({"role": "tool", "tool_call_id": call_id, "content": out})
    env.final_message = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
    if env.get_reward() != 1.0:
        raise RuntimeError(f"{domain.name}: the expert failed task {task.get('id')}: {messages[-1]}")
    return {"id": task["id"], "domain": domain.name, "messages": messages,
            "tools": tools if tools is not None else environment_tools(env), "meta": {"task": task}}


def shuffled(args: dict, rng: random.Random) -> dict:
    """The same arguments in a random key order (a surface form exact match cares about)."""
    keys = list(args)
    rng.shuffle(keys)
    return {k: args[k] for k in keys}
