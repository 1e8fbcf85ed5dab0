"""Run full multi-turn episodes of a policy in an environment.

An environment is any object with `reset(**task) -> str | None`, one public method per tool
(type hints and a docstring with `Args:`, from which the tool schema is made), and
`get_reward() -> float`: the same object TRL's `environment_factory` drives, so one class serves
end-to-end RL training and evaluation. As in TRL, a string returned by `reset` is appended to
the task's last user message. Before `get_reward()` the runner sets `env.final_message` to the
agent's last message, for tasks whose success depends on what the agent answered.

Episodes run in lockstep: each turn, every live episode's next action comes from one batched
greedy generation. A tool call is executed and its result (or a clear error, for a malformed or
unknown call) goes back as a tool message; a plain message ends the episode.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from pivotrl.errors import DataError
from pivotrl.rewards.parse import parse_action

SKIP = ("reset", "get_reward")


ENVIRONMENTS = "pivotrl.environments"  # entry-point group: name = "pkg.module:Class"


def list_environments() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=ENVIRONMENTS))


def load_environment(spec: str | Callable) -> Callable:
    """An environment factory: a callable given directly, `module:Class`, or a name registered in
    the `pivotrl.environments` entry-point group (the bundled lab registers `lab_tooluse`, ...)."""
    if callable(spec):
        return spec
    module, _, attr = str(spec).partition(":")
    if not attr:
        from importlib.metadata import entry_points

        found = [ep for ep in entry_points(group=ENVIRONMENTS) if ep.name == spec]
        if not found:
            raise DataError(f"unknown environment {spec!r}; registered: {', '.join(list_environments()) or 'none'}, "
                            "or give module:Class")
        try:
            return found[0].load()
        except Exception as exc:
            raise DataError(f"cannot load environment {spec!r} from {found[0].value!r}: {exc}") from None
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"cannot load environment {spec!r}: {exc}") from None


def tool_methods(env) -> dict[str, Callable]:
    return {name: getattr(env, name) for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
            if name not in SKIP and not name.startswith("_")}


def environment_tools(env) -> list[dict]:
    """OpenAI tool schemas of an environment's methods, as TRL renders them."""
    from transformers.utils import get_json_schema

    return [get_json_schema(fn) for fn in tool_methods(env).values()]


def call_tool(env, name: str, arguments: Any) -> str:
    """Execute one call; whatever goes wrong becomes a message the agent can read, never a crash."""
    methods = tool_methods(env)
    if name not in methods:
        return f"Error: unknown tool {name!r}. Available: {', '.join(sorted(methods))}."
    if not isinstance(arguments, dict):
        return f"Error: arguments of {name} must be a JSON object."
    try:
        result = methods[name](**arguments)
    except Exception as exc:  # the environment refused the action: tell the agent, keep the episode going
        return tool_error(name, exc)
    return tool_output(result)


def act(env, action, id_prefix: str) -> list[dict]:
    """Perform a tool-call action: its assistant message (calls numbered `id_prefix_K`) and the tool
    message each call gets back."""
    calls = [{"id": f"{id_prefix}_{k}", "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
             for k, c in enumerate(action.calls)]
    out = [{"role": "assistant", "content": action.text, "tool_calls": calls}]
    for call, c in zip(calls, action.calls):
        result = "Error: the call is not valid JSON." if c.malformed else call_tool(env, c.name, c.arguments)
        out.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    return out


def tool_error(name: str, exc: Exception) -> str:
    """How a failed call reads to the agent, in evaluation and in end-to-end training alike."""
    if isinstance(exc, TypeError):
        return f"Error: bad arguments for {name}: {exc}"
    return f"Error: {exc}"


def tool_output(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, default=str)


@dataclass
class Episode:
    task: dict
    messages: list[dict]
    reward: float = 0.0
    turns: int = 0              # model calls
    tool_calls: int = 0         # environment steps
    generated_tokens: int = 0
    done: bool = False          # ended with a message (not by the turn limit)
    extra: dict = field(default_factory=dict)


def load_tasks(path: str) -> list[dict]:
    """Episode tasks from JSONL: `{"prompt": [messages], ...}`, the rest going to `reset(**task)`."""
    from pivotrl.artifacts import iter_jsonl

    tasks = []
    for line, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), list):
            raise DataError("a task needs 'prompt': a list of chat messages", file=str(path), line=line)
        tasks.append(row)
    if not tasks:
        raise DataError("no tasks", file=str(path))
    return tasks


def run_episodes(sampler, env_factory: Callable, tasks: list[dict], max_turns: int = 8,
                 max_tokens: int = 128) -> list[Episode]:
    """Greedy episodes, one per task, with `sampler` (e.g. a TransformersSampler) as the policy."""
    from pivotrl.sampling import Prompt, SamplingParams

    envs = [env_factory() for _ in tasks]
    episodes, tools = [], []
    for env, task in zip(envs, tasks):
        messages = [dict(m) for m in task["prompt"]]
        obs = env.reset(**{k: v for k, v in task.items() if k != "prompt"})
        if isinstance(obs, str) and messages:
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + obs}
        episodes.append(Episode(task, messages))
        tools.append(environment_tools(env))
    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
    live = list(range(len(tasks)))
    for _ in range(max_turns):
        if not live:
            break
        results = sampler.sample([Prompt(episodes[i].messages, tools[i]) for i in live], params)
        still = []
        for i, res in zip(live, results):
            ep = episodes[i]
            if not res.samples:  # the context is full: the episode ends here
                continue
            sample = res.samples[0]
            ep.turns += 1
            ep.generated_tokens += sample.tokens
            action = parse_action(sample.completion, tools[i])
            if action.kind != "tool_calls":
                ep.messages.append({"role": "assistant", "content": action.text})
                ep.done = True
                continue
            ep.messages += act(envs[i], action, f"call_{ep.turns}")
            ep.tool_calls += len(action.calls)
            still.append(i)
        live = still
    for env, ep in zip(envs, episodes):
        last = ep.messages[-1]
        env.final_message = last.get("content", "") if last.get("role") == "assistant" else ""
        try:
            ep.reward = float(env.get_reward())
        except Exception as exc:  # a broken reward is a failed episode, reported, not a crash
            ep.reward, ep.extra["reward_error"] = 0.0, repr(exc)
    return episodes
