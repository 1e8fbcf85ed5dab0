"""What every lab domain provides, and the registry.

A domain is one module with a `Domain` registered by name:
- `sample_task(rng, split)`: one random task (a JSON-able dict with `prompt` messages and the
  kwargs of the environment's `reset`), drawn until its key falls in the requested split;
- `environment`: the class that executes actions for real (`reset(**task)`, one method per tool,
  `get_reward()` = episode success), which TRL's `environment_factory` drives unchanged;
- `expert(task, rng)`: an SFT trajectory, produced by acting in the environment, with varied
  surface forms (argument order, equivalent commands and queries, paraphrased messages);
- `verifier`: the functional verifier for its actions (a registered name, with options).

A domain may also give its expert as a `policy` (what `pivotrl lab audit` needs to finish an
episode from any state) and a `tag` for each state (decision or copy).

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
from pivotrl.rewards.base import state_meta

SPLITS = {"train": range(0, 80), "dev": range(80, 90), "test": range(90, 100)}


@dataclass
class Domain:
    name: str
    environment: type
    sample_task: Callable[[random.Random], dict]      # a random task; its `key` decides the split
    #                                                    (with `bug_templates`, also `fits=`: which bugs it may plant)
    expert: Callable[[dict, random.Random], dict]     # an OpenAI-format trajectory record
    verifier: str = "tool_call"
    verifier_options: dict = field(default_factory=dict)
    description: str = ""
    # The expert as a policy `(task, messages, rng) -> step` that reads only what the environment
    # answered: it finishes an episode from any state (what `pivotrl lab audit` needs). rng=None
    # gives its plainest surface forms.
    policy: Callable | None = None
    # `tag(state) -> "decision" | "copy"`: whether the right action picks one of several
    # alternatives the context shows (an order among the listed ones, a document among the results,
    # the buggy function among three, a value among several lines) or only repeats a value the
    # context shows once (or is a fixed move). Reports split accuracy by it, so a gain says what
    # was learned.
    tag: Callable | None = None
    # `bug_templates(task) -> list[str]`: the planted bugs' templates, each "buggy -> fixed" (code, repo).
    # With `unseen_templates`, a fixed share of templates (`held_out_template`) never appears in a
    # train task, and every bug of a dev or test task is one of them: tasks no training has seen.
    bug_templates: Callable | None = None

    def tasks(self, split: str, n: int, seed: int = 0, unseen_templates: bool = False) -> list[dict]:
        """`n` distinct tasks of `split`, the same for the same seed; with `unseen_templates`, train
        tasks without a held-out bug template and dev/test tasks with nothing else."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        out, seen, tries = [], set(), 0
        by_template = unseen_templates and self.bug_templates is not None
        while len(out) < n:
            tries += 1
            if tries > (20_000 if by_template else 200) * n + 1000:
                raise DataError(f"{self.name}: could not draw {n} distinct {split} tasks")
            # a domain with templates plants only bugs that fit the split (drawing whole tasks until they
            # fit took minutes for repo's 200 test tasks, whose 3-5 bugs must all be held out)
            task = self.sample_task(rng, fits=lambda t: templates_fit([t], split)) if by_template else self.sample_task(rng)
            key = task.pop("key")
            if split_of(self.name, key) != split or key in seen:
                continue
            if by_template and not templates_fit(self.bug_templates(task), split):
                continue
            seen.add(key)
            task.update(id=f"{self.name}-{split}-{hashlib.sha1(key.encode()).hexdigest()[:10]}", domain=self.name,
                        split=split)
            out.append(task)
        return out

    def tools(self) -> list[dict]:
        from pivotrl.eval.episodes import environment_tools

        return environment_tools(self.environment())


HELD_OUT_TEMPLATES = 30  # percent of bug templates kept out of training (`unseen_templates`)


def held_out_template(template: str) -> bool:
    """Whether a bug template is one that training never sees, by a hash of it (the same everywhere)."""
    return int(hashlib.sha1(f"template\x00{template}".encode()).hexdigest()[:8], 16) % 100 < HELD_OUT_TEMPLATES


def templates_fit(templates, split: str) -> bool:
    """A train task has no held-out bug template; a dev or test task has held-out ones only."""
    held = [held_out_template(t) for t in templates]
    return not any(held) if split == "train" else all(held)


def split_of(domain: str, key: str) -> str:
    bucket = int(hashlib.sha1(f"{domain}\x00{key}".encode()).hexdigest()[:8], 16) % 100
    return next(s for s, r in SPLITS.items() if bucket in r)


_DOMAINS: dict[str, Domain] = {}


def register_domain(domain: Domain) -> Domain:
    _DOMAINS[domain.name] = domain
    return domain


# Importing this module first imports its package, `pivotrl.lab.domains`, whose `__init__` imports
# every built-in domain: the registry is full before anyone can call these two.
def get_domain(name: str) -> Domain:
    if name not in _DOMAINS:
        raise DataError(f"unknown lab domain {name!r}; choose one of {', '.join(sorted(_DOMAINS))}")
    return _DOMAINS[name]


def list_domains() -> list[str]:
    return sorted(_DOMAINS)


def task_of(state) -> dict:
    """The lab task a state came from; {} when the state carries none (or something else there)."""
    meta = state_meta(state)
    traj = meta.get("trajectory_meta") if isinstance(meta.get("trajectory_meta"), dict) else {}
    for task in (traj.get("task"), meta.get("task")):
        if isinstance(task, dict):
            return task
    return {}


Step = tuple  # ("call", (name, args)) or ("say", text)
Policy = Callable[[dict, list, "random.Random | None"], Step]


def task_kwargs(task: dict) -> dict:
    """The keyword arguments of the environment's `reset` that a task carries."""
    return {k: v for k, v in task.items() if k not in ("prompt", "id", "domain", "split")}


def start_episode(domain: Domain, task: dict):
    """A fresh environment reset to `task`, and the episode's first messages."""
    env = domain.environment()
    obs = env.reset(**task_kwargs(task))
    messages = [dict(m) for m in task["prompt"]]
    if isinstance(obs, str):
        messages[-1]["content"] += obs
    return env, messages


def replay(domain: Domain, task: dict, context: list[dict]):
    """A fresh environment brought to where `context` left it: every tool call of its assistant
    turns executed again, in order (the lab's environments are deterministic)."""
    from pivotrl.eval.episodes import call_tool

    env, _ = start_episode(domain, task)
    for name, args, _ in _calls(context):
        call_tool(env, name, args)
    return env


def _calls(context) -> list[tuple[Any, Any, Any]]:
    """(name, arguments, id) of every well-formed tool call of the assistant turns in `context`."""
    out = []
    for m in context if isinstance(context, list) else []:
        if not isinstance(m, dict) or m.get("role") != "assistant" or not isinstance(m.get("tool_calls"), list):
            continue
        for call in m["tool_calls"]:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                out.append((fn["name"], _json_arguments(fn.get("arguments")), call.get("id")))
    return out


def _json_arguments(args: Any) -> Any:
    """A call's arguments decoded as `ToolCall` decodes them (None for malformed JSON)."""
    from pivotrl.data.types import ToolCall

    return ToolCall.from_arguments("", args).arguments if isinstance(args, str) else args


def tool_history(messages: list[dict]) -> list[tuple[str, Any, str]]:
    """(tool name, arguments, output) of every call in `messages` that got an answer, in order: what
    an expert policy reads to decide its next step."""
    calls, out = {}, []
    for m in messages:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "assistant":
            calls.update({call_id: (name, args) for name, args, call_id in _calls([m])})
        elif m.get("role") == "tool" and m.get("tool_call_id") in calls:
            name, args = calls[m["tool_call_id"]]
            out.append((name, args if isinstance(args, dict) else {}, str(m.get("content", ""))))
    return out


def play_policy(env, messages: list[dict], policy: Policy, task: dict, rng: random.Random | None,
                max_turns: int, first_id: int = 0) -> tuple[list[dict], bool]:
    """Let an expert policy act for at most `max_turns` turns from `messages`. Returns the messages
    and whether it ended with a final message (which is then `env.final_message`)."""
    from pivotrl.eval.episodes import call_tool

    messages = list(messages)
    for n in range(first_id, first_id + max_turns):
        kind, payload = policy(task, messages, rng)
        if kind == "say":
            messages.append({"role": "assistant", "content": payload})
            env.final_message = payload
            return messages, True
        name, args = payload
        call_id = f"call_{n}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": call_tool(env, name, args)})
    env.final_message = ""
    return messages, False


def run_expert(domain: Domain, task: dict, policy: Policy, tools: list[dict] | None = None,
               rng: random.Random | None = None, max_turns: int = 12) -> dict:
    """Play an expert policy `(task, messages, rng) -> step`, which decides each step from what the
    environment answered so far, in a real environment and record the trajectory."""
    from pivotrl.eval.episodes import environment_tools

    env, messages = start_episode(domain, task)
    messages, _ = play_policy(env, messages, policy, task, rng, max_turns)
    if env.get_reward() != 1.0:
        raise RuntimeError(f"{domain.name}: the expert failed task {task.get('id')}: {messages[-1]}")
    return {"id": task["id"], "domain": domain.name, "messages": messages,
            "tools": tools if tools is not None else environment_tools(env), "meta": {"task": task}}


def shuffled(args: dict, rng: random.Random | None) -> dict:
    """The same arguments in a random key order (a surface form exact match cares about)."""
    keys = list(args)
    if rng is not None:
        rng.shuffle(keys)
    return {k: args[k] for k in keys}


def pick(rng: random.Random | None, options: list):
    """One of an expert's equivalent surface forms: random with an rng, else the first."""
    return options[0] if rng is None else rng.choice(options)
