"""`make demo`: the pipeline on the bundled sample, on any laptop.

Until the lab lands, the demo extracts pivot candidates from the sample trajectories and shows why
functional rewards matter: completions that do the same thing as the demonstration in another
spelling are accepted by the functional verifiers and refused by exact match, while wrong actions
are refused by all.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pivotrl.artifacts import write_jsonl
from pivotrl.data.sample import generate_sample_trajectories
from pivotrl.data.types import Action, ToolCall
from pivotrl.pivots import ExtractStats, State, extract_states, state_to_gym_row, write_states
from pivotrl.rewards import get_verifier, safe_score


def render(action: Action) -> str:
    """Write an action as a Qwen/Hermes model would emit it."""
    blocks = [f"<tool_call>\n{json.dumps({'name': c.name, 'arguments': c.arguments})}\n</tool_call>"
              for c in action.calls]
    return "\n".join(([action.text] if action.text else []) + blocks)


def _reordered(s: State, rng: random.Random) -> str | None:
    if s.reference.kind != "tool_calls":
        return None
    calls = []
    for c in reversed(s.reference.calls):  # parallel calls in another order, keys reversed too
        calls.append(ToolCall(c.name, dict(reversed(list(c.arguments.items())))))
    return "<think>Let me do that.</think>\n" + render(Action.tool_calls(calls))


def _stringly_typed(s: State, rng: random.Random) -> str | None:
    calls = [c for c in s.reference.calls if any(isinstance(v, (int, bool)) for v in c.arguments.values())]
    if s.reference.kind != "tool_calls" or not calls:
        return None
    out = [ToolCall(c.name, {k: (str(v).lower() if isinstance(v, bool) else str(v)) if isinstance(v, (int, bool)) else v
                             for k, v in c.arguments.items()}) for c in s.reference.calls]
    return render(Action.tool_calls(out))


def _paraphrase(s: State, rng: random.Random) -> str | None:
    if s.reference.kind != "message":
        return None
    return "Sure! " + s.reference.text.replace("Your", "your") + " Anything else?"


def _wrong_value(s: State, rng: random.Random) -> str | None:
    if s.reference.kind != "tool_calls":
        return None
    c = s.reference.calls[0]
    # An identifier (no spaces): free text with one changed letter is rightly still accepted.
    key = next((k for k, v in c.arguments.items() if isinstance(v, str) and " " not in v), None)
    if key is None:
        return None
    args = dict(c.arguments)
    args[key] = args[key][:-1] + ("7" if args[key][-1:] != "7" else "3")
    return render(Action.tool_calls([ToolCall(c.name, args)] + list(s.reference.calls[1:])))


def _wrong_tool(s: State, rng: random.Random) -> str | None:
    names = [t["function"]["name"] for t in s.tools]
    if s.reference.kind != "tool_calls":
        return render(Action.tool_calls([ToolCall(rng.choice(names), {})]))
    c = s.reference.calls[0]
    other = rng.choice([n for n in names if n != c.name])
    return render(Action.tool_calls([ToolCall(other, c.arguments)]))


def _garbage(s: State, rng: random.Random) -> str | None:
    # Not plain text: upstream's rule accepts any text where a message is expected.
    return rng.choice(['<tool_call>{"name": "get_order", "arguments": {"order_id": </tool_call>',
                       "<think>The user wants", "<tool_call>\x00\x01 }}}{{{ </tool_call>"])


VARIANTS: list[tuple[str, bool, Callable]] = [
    ("same calls, reordered", True, _reordered),
    ("numbers as strings", True, _stringly_typed),
    ("paraphrased reply", True, _paraphrase),
    ("wrong argument value", False, _wrong_value),
    ("wrong tool", False, _wrong_tool),
    ("broken call / cut off", False, _garbage),
]
VERIFIERS = ["exact", "tool_call", "tool_call_schema"]


def run_demo(console: Console, n: int = 40, out: Path = Path("runs/demo"), seed: int = 0) -> dict:
    out = Path(out)
    trajs = generate_sample_trajectories(n, seed)
    write_jsonl(out / "trajectories.jsonl", (t.to_dict() for t in trajs))
    stats = ExtractStats()
    states = extract_states(trajs, stats)
    write_states(out / "states.jsonl", states)
    write_jsonl(out / "states.gym.jsonl", (state_to_gym_row(s) for s in states))
    d = stats.as_dict()
    console.rule("[bold]pivotrl demo: trajectories -> pivot candidates -> functional verification")
    console.print(f"{d['trajectories']} trajectories -> {len(states)} candidate states "
                  f"({d['tool_call_turns']} tool-call turns, {d['parallel_call_turns']} with parallel calls, "
                  f"{d['message_turns']} message turns), written to {out}/states.jsonl and states.gym.jsonl")

    rng = random.Random(seed)
    verifiers = {v: get_verifier(v) for v in VERIFIERS}
    pairs, results = [], {}
    for label, should_pass, make in VARIANTS:
        accepted = {v: 0 for v in VERIFIERS}
        count = 0
        for s in states:
            completion = make(s, rng)
            if completion is None:
                continue
            count += 1
            pairs.append({"state_id": s.id, "variant": label, "completion": completion})
            for name, v in verifiers.items():
                accepted[name] += safe_score(v, completion, s).reward == 1.0
        results[label] = {"n": count, "equivalent": should_pass, **{v: accepted[v] / max(count, 1) for v in VERIFIERS}}
    write_jsonl(out / "completions.jsonl", pairs)

    table = Table(title="share of completions each verifier accepts (1.0 = all)")
    table.add_column("completion variant")
    table.add_column("same effect as demo?")
    table.add_column("n", justify="right")
    for v in VERIFIERS:
        table.add_column(v, justify="right")
    for label, r in results.items():
        table.add_row(label, "yes" if r["equivalent"] else "no", str(r["n"]),
                      *[f"{r[v]:.2f}" for v in VERIFIERS])
    console.print(table)
    console.print(f"Audit any verifier on these pairs: [bold]pivotrl verify {out}/completions.jsonl "
                  f"--states {out}/states.jsonl --verifier tool_call_schema[/]")
    (out / "summary.json").write_text(json.dumps({"extract": d, "verification": results}, indent=2))
    return results
