"""The `pivotrl` command line. Each command is a thin shell over the Python API."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pivotrl.errors import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PivotRL: RL on the informative turns of existing agent trajectories.")
console = Console()


def main() -> None:
    try:
        app()
    except DataError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None


def _table(title: str, rows, columns=("", "count")) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def _parse_options(options: list[str]) -> dict:
    """`key=value` pairs; values parsed as JSON when they can be (numbers, booleans, objects)."""
    out = {}
    for opt in options or []:
        if "=" not in opt:
            raise DataError(f"option {opt!r} is not key=value")
        k, v = opt.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


@app.command()
def extract(
    trajectories: Path = typer.Argument(..., help="Trajectories: OpenAI/ShareGPT JSONL, HF dataset dir or parquet."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write states (JSONL)."),
    format: str = typer.Option("auto", help="auto, openai, sharegpt or hf."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count bad records instead of failing."),
    domain: Optional[str] = typer.Option(None, help="Domain label for every trajectory (default: the record's own)."),
    to: str = typer.Option("states", help="Output layout: states (our JSONL) or gym (NeMo Gym rows)."),
):
    """Turn agent trajectories into pivot candidates: one state per assistant turn."""
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import ExtractStats, extract_states, state_to_gym_row, write_states
    from pivotrl.artifacts import write_jsonl

    ts = load_trajectories(trajectories, format, skip_invalid=skip_invalid, domain=domain)
    stats = ExtractStats()
    states = extract_states(ts, stats)
    if to == "gym":
        write_jsonl(output, (state_to_gym_row(s) for s in states))
    elif to == "states":
        write_states(output, states)
    else:
        raise DataError(f"--to must be states or gym, not {to!r}")
    d = stats.as_dict()
    rows = [("trajectories", d["trajectories"]), ("assistant turns", d["assistant_turns"]),
            ("tool-call turns", d["tool_call_turns"]), ("  of which parallel calls", d["parallel_call_turns"]),
            ("final-answer / message turns", d["message_turns"]), ("states written", len(states))]
    rows += [(f"skipped record: {k}", v) for k, v in sorted(ts.skipped.items())]
    rows += [(f"skipped turn: {k}", v) for k, v in sorted(stats.skipped.items())]
    console.print(f"extract {trajectories} -> {output}", soft_wrap=True)
    console.print(_table("", rows))


@app.command()
def verify(
    pairs: Path = typer.Argument(..., help="JSONL of {'state': {...} | 'state_id': ..., 'completion': ...}, "
                                 "or NeMo Gym rows with a 'completion' field."),
    verifier: str = typer.Option("tool_call", "--verifier", "-v", help="Registered name or module:callable."),
    option: list[str] = typer.Option([], "--option", "-O", help="Verifier option key=value (repeatable)."),
    states: Optional[Path] = typer.Option(None, help="States file to resolve 'state_id' references."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write one score per line here."),
):
    """Score completions against reference actions; print the reward distribution and reasons."""
    from pivotrl.artifacts import iter_jsonl, write_jsonl
    from pivotrl.pivots import State, gym_row_to_state, load_states
    from pivotrl.pivots.gym import is_gym_row
    from pivotrl.rewards import get_verifier, safe_score

    v = get_verifier(verifier, **_parse_options(option))
    by_id = {s.id: s for s in load_states(states)} if states else {}
    scores = []
    for line, rec in iter_jsonl(pairs):
        if not isinstance(rec, dict) or "completion" not in rec:
            raise DataError("each line needs a 'completion'", file=str(pairs), line=line)
        try:
            if is_gym_row(rec):
                st = gym_row_to_state(rec)
            elif "state" in rec:
                st = State.from_dict(rec["state"])
            elif rec.get("state_id") in by_id:
                st = by_id[rec["state_id"]]
            else:
                raise DataError("no 'state', and 'state_id' not found (pass --states FILE)")
        except DataError as exc:
            raise DataError(exc.reason, file=str(pairs), line=line) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad state: {exc}", file=str(pairs), line=line) from None
        s = safe_score(v, rec["completion"], st)
        scores.append({"line": line, "state_id": st.id if hasattr(st, "id") else None,
                       "reward": s.reward, "reason": s.reason})
    if output:
        write_jsonl(output, scores)
    rewards = [s["reward"] for s in scores]
    n = len(rewards)
    mean = sum(rewards) / n if n else 0.0
    bins = Counter("1" if r == 1.0 else "0" if r == 0.0 else "(0,1)" for r in rewards)
    console.print(f"verify {pairs} with {verifier}: {n} completions, mean reward {mean:.3f}", soft_wrap=True)
    console.print(_table("reward distribution", [(k, bins[k]) for k in ("1", "(0,1)", "0") if bins[k]],
                         ("reward", "count")))
    console.print(_table("reasons", Counter(s["reason"] for s in scores).most_common(), ("reason", "count")))


@app.command()
def info(file: Path = typer.Argument(..., help="A trajectory file, a states file, or NeMo Gym rows.")):
    """Print statistics of a trajectory or state file."""
    from pivotrl.artifacts import iter_jsonl
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import load_states

    first = None
    if file.suffix == ".jsonl" or file.suffix == ".json":
        first = next((r for _, r in iter_jsonl(file)), None)
    is_states = isinstance(first, dict) and ("responses_create_params" in first or "reference" in first)
    if is_states:
        sts = load_states(file)
        kinds = Counter(s.reference.kind for s in sts)
        ctx = sorted(len(s.context) for s in sts) or [0]
        rows = [("kind", "NeMo Gym rows" if "responses_create_params" in first else "states"),
                ("states", len(sts)), ("trajectories", len({s.trajectory_id for s in sts})),
                ("tool-call actions", kinds["tool_calls"]), ("message actions", kinds["message"]),
                ("parallel-call actions", sum(len(s.reference.calls) > 1 for s in sts)),
                ("context messages (min/median/max)", f"{ctx[0]}/{ctx[len(ctx) // 2]}/{ctx[-1]}")]
        rows += [(f"domain {d}", c) for d, c in Counter(s.domain for s in sts).most_common()]
        profiled = [s for s in sts if "reward_mean" in (s.meta.get("gym") or {}).get("extra", {})]
        if profiled:
            rows.append(("rows with profiling columns", len(profiled)))
        console.print(_table(f"{file}", rows, ("", "value")))
        return
    ts = load_trajectories(file)
    turns = sorted(sum(m["role"] == "assistant" for m in t.messages) for t in ts) or [0]
    calls = Counter(c["function"]["name"] for t in ts for m in t.messages for c in (m.get("tool_calls") or []))
    rows = [("kind", "trajectories"), ("trajectories", len(ts)),
            ("assistant turns", sum(turns)), ("turns per trajectory (min/median/max)",
                                              f"{turns[0]}/{turns[len(turns) // 2]}/{turns[-1]}"),
            ("distinct tools", len({n for t in ts for n in [x['function']['name'] for x in t.tools]}))]
    rows += [(f"domain {d}", c) for d, c in Counter(t.domain for t in ts).most_common()]
    rows += [(f"calls to {n}", c) for n, c in calls.most_common(10)]
    console.print(_table(f"{file}", rows, ("", "value")))


@app.command()
def convert(
    input: Path = typer.Argument(..., help="Trajectories (OpenAI/ShareGPT/HF), states, or NeMo Gym rows."),
    output: Path = typer.Argument(..., help="Output JSONL."),
    to: str = typer.Option(..., "--to", help="openai (chat trajectories) or gym (NeMo Gym rows)."),
    agent: str = typer.Option("single_step_tool_use_with_argument_comparison_agent", help="agent_ref name for gym rows."),
):
    """Convert between trajectory formats and NeMo Gym rows."""
    from pivotrl.artifacts import iter_jsonl, write_jsonl
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import extract_states, load_states, state_to_gym_row

    first = next((r for _, r in iter_jsonl(input)), None) if input.suffix == ".jsonl" else None
    is_states = isinstance(first, dict) and ("responses_create_params" in first or "reference" in first)
    if to == "gym":
        states = load_states(input) if is_states else extract_states(load_trajectories(input))
        n = write_jsonl(output, (state_to_gym_row(s, agent) for s in states))
    elif to == "openai":
        if is_states:
            # A state becomes a chat record that ends with its demonstrated action.
            recs = ({"id": f"{s.trajectory_id}:{s.turn_index}", "messages": s.context + [s.reference.to_message()],
                     "tools": s.tools, "domain": s.domain} for s in load_states(input))
        else:
            recs = (t.to_dict() for t in load_trajectories(input))
        n = write_jsonl(output, recs)
    else:
        raise DataError(f"--to must be openai or gym, not {to!r}")
    console.print(f"wrote {n} records to {output}")


@app.command()
def verifiers():
    """List the registered verifiers."""
    from pivotrl.rewards import list_verifiers

    for name in list_verifiers():
        console.print(name)


@app.command()
def demo(n: int = typer.Option(40, help="Sample trajectories to generate."),
         out: Path = typer.Option(Path("runs/demo"), help="Where to write the demo's files.")):
    """The bundled demo: sample trajectories -> states -> functional vs exact verification."""
    from pivotrl.demo import run_demo

    run_demo(console, n=n, out=out)


if __name__ == "__main__":
    main()
