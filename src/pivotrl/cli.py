"""The `pivotrl` command line. Each command is a thin shell over the Python API."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pivotrl.console import add_examples, console, rows_table
from pivotrl.errors import DataError

# Plain help (no rich panels): the panels print a `<bool>` type beside every flag, --help included.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="PivotRL: RL on the informative turns of existing agent trajectories.")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"pivotrl {version('pivotrl')}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print pivotrl's version and exit.")):
    """PivotRL: RL on the informative turns of existing agent trajectories."""


def main() -> None:
    try:
        app()
    except DataError as exc:
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # [brackets] kept
        raise SystemExit(2) from None


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
    heldout_fraction: float = typer.Option(0.1, help="Share of trajectories held out for evaluation, written once "
                                           "to OUTPUT.heldout.json (their states to OUTPUT.heldout.states.jsonl) and "
                                           "used by sft, train and e2e."),
    seed: int = typer.Option(0, help="Seed of the held-out split."),
):
    """Turn agent trajectories into pivot candidates: one state per assistant turn."""
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import ExtractStats, extract_states, state_to_gym_row, write_states
    from pivotrl.artifacts import write_jsonl
    from pivotrl.eval.heldout import heldout_states_path
    from pivotrl.pivots.split import choose_heldout, heldout_path, write_heldout

    ts = load_trajectories(trajectories, format, skip_invalid=skip_invalid, domain=domain)
    stats = ExtractStats()
    states = extract_states(ts, stats)
    if to == "gym":
        write_jsonl(output, (state_to_gym_row(s) for s in states))
    elif to == "states":
        write_states(output, states)
    else:
        raise DataError(f"--to must be states or gym, not {to!r}")
    held = choose_heldout((t.id for t in ts), heldout_fraction, seed)
    write_heldout(heldout_path(output), held, fraction=heldout_fraction, seed=seed, source=str(trajectories))
    # every state of the held-out trajectories: what sft, train and e2e evaluate on alike
    write_states(heldout_states_path(output), [s for s in states if s.trajectory_id in set(held)])
    d = stats.as_dict()
    rows = [("trajectories", d["trajectories"]), ("assistant turns", d["assistant_turns"]),
            ("tool-call turns", d["tool_call_turns"]), ("  of which parallel calls", d["parallel_call_turns"]),
            ("final-answer / message turns", d["message_turns"]), ("states written", len(states)),
            ("held-out trajectories", len(held))]
    rows += [(f"skipped record: {k}", v) for k, v in sorted(ts.skipped.items())]
    rows += [(f"skipped turn: {k}", v) for k, v in sorted(stats.skipped.items())]
    console.print(f"extract {trajectories} -> {output}", soft_wrap=True)
    console.print(rows_table("", rows))


@app.command()
def verify(
    pairs: Path = typer.Argument(..., help="JSONL of {'state': {...} | 'state_id': ..., 'completion': ...}, "
                                 "NeMo Gym rows with a 'completion' field, or NeMo Gym rollouts (a 'response')."),
    verifier: str = typer.Option("dispatch", "--verifier", "-v", help="Registered name or module:callable "
                                 "(default dispatch: each NVIDIA row by its agent's verifier)."),
    option: list[str] = typer.Option([], "--option", "-O", help="Verifier option key=value (repeatable)."),
    states: Optional[Path] = typer.Option(None, help="States file to resolve 'state_id' references."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write one score per line here."),
    by: Optional[str] = typer.Option(None, "--by", help="Also break the rewards down by this field of each line "
                                     "(e.g. a label column: 'good' / 'bad' completions)."),
):
    """Score completions against reference actions; print the reward distribution and reasons.
    NeMo Gym rollouts are re-scored and compared with the reward NeMo Gym recorded."""
    from pivotrl.artifacts import iter_jsonl, write_jsonl
    from pivotrl.pivots import State, gym_row_to_state, load_states
    from pivotrl.pivots.gym import is_gym_row, is_rollout
    from pivotrl.rewards import check_states, get_verifier, safe_score

    v = get_verifier(verifier, **_parse_options(option))
    by_id = {s.id: s for s in load_states(states)} if states else {}
    scores = []
    for line, rec in iter_jsonl(pairs):
        if isinstance(rec, dict) and "completion" not in rec and is_rollout(rec):
            # the Responses output items, read as NeMo Gym's servers read them (`parse_action`)
            rec = {**rec, "completion": rec["response"].get("output") or []}
        if not isinstance(rec, dict) or "completion" not in rec:
            raise DataError("each line needs a 'completion' (or a NeMo Gym 'response')", file=str(pairs), line=line)
        try:
            if is_gym_row(rec):
                st = gym_row_to_state(rec)
            elif "state" in rec:
                st = State.from_dict(rec["state"])
            elif rec.get("state_id") in by_id:
                st = by_id[rec["state_id"]]
            else:
                raise DataError("no 'state', and 'state_id' not found (pass --states FILE)")
            check_states(v, [st])
        except DataError as exc:
            raise DataError(exc.reason, file=str(pairs), line=line) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad state: {exc}", file=str(pairs), line=line) from None
        s = safe_score(v, rec["completion"], st)
        scores.append({"line": line, "state_id": st.id if hasattr(st, "id") else None,
                       "reward": s.reward, "reason": s.reason, "recorded": rec.get("reward"),
                       "recorded_reason": rec.get("failure_reason"),
                       **({by: rec.get(by)} if by else {})})
    if output:
        write_jsonl(output, scores)
    rewards = [s["reward"] for s in scores]
    n = len(rewards)
    mean = sum(rewards) / n if n else 0.0
    bins = Counter("1" if r == 1.0 else "0" if r == 0.0 else "(0,1)" if r > 0 else "< 0" for r in rewards)
    console.print(f"verify {pairs} with {verifier}: {n} completions, mean reward {mean:.3f}", soft_wrap=True)
    console.print(rows_table("reward distribution", [(k, bins[k]) for k in ("1", "(0,1)", "0", "< 0") if bins[k]],
                         ("reward", "count")))
    console.print(rows_table("reasons", Counter(s["reason"] for s in scores).most_common(), ("reason", "count")))
    if by:
        groups: dict = {}
        for sc in scores:
            groups.setdefault(json.dumps(sc[by]) if not isinstance(sc[by], str) else sc[by], []).append(sc["reward"])
        console.print(rows_table(f"by {by}", [(k, len(v), f"{sum(v) / len(v):.3f}", sum(r == 1.0 for r in v))
                                          for k, v in sorted(groups.items())],
                             (by, "completions", "mean reward", "reward 1")))
    recorded = [s for s in scores if isinstance(s["recorded"], (int, float))]
    if recorded:  # NeMo Gym rollouts: do we give the reward NeMo Gym gave?
        agree = [s for s in recorded if abs(s["reward"] - float(s["recorded"])) < 1e-9]
        console.print(f"agreement with the recorded rewards: {len(agree)} of {len(recorded)} "
                      f"({len(agree) / len(recorded):.1%})", soft_wrap=True)
        pairs_ = Counter((s["reason"], str(s["recorded_reason"]), abs(s["reward"] - float(s["recorded"])) < 1e-9)
                         for s in recorded)
        console.print(rows_table("ours vs recorded", [(a, b, "yes" if same else "NO", n) for (a, b, same), n in
                                                   pairs_.most_common()], ("our reason", "their reason", "agree", "rows")))


@app.command()
def info(file: Path = typer.Argument(..., help="A trajectory file, a states file, NeMo Gym rows or a profile.")):
    """Print statistics of a trajectory, state or profile file."""
    from pivotrl.artifacts import file_kind
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import load_states

    kind = file_kind(file)
    if kind == "profile":
        cands = _read_candidates(file)
        ok = [c for c in cands if c.profiled]
        rows = [("kind", "profile"), ("states", len(cands)), ("profiled", len(ok)),
                ("skipped (not sampled)", len(cands) - len(ok)),
                ("samples", sum(len(c.state.meta["profile"]["rewards"]) for c in ok)),
                ("mean reward", f"{sum(c.mean for c in ok) / max(len(ok), 1):.3f}"),
                ("mixed outcomes (variance > 0)", sum(c.var > 0 for c in ok))]
        rows += [(f"domain {d}", n) for d, n in Counter(c.state.domain for c in cands).most_common()]
        console.print(rows_table(f"{file}", rows, ("", "value")))
        return
    if kind in ("states", "gym"):
        sts = load_states(file)
        kinds = Counter(s.reference.kind for s in sts)
        ctx = sorted(len(s.context) for s in sts) or [0]
        rows = [("kind", "NeMo Gym rows" if kind == "gym" else "states"),
                ("states", len(sts)), ("trajectories", len({s.trajectory_id for s in sts})),
                ("tool-call actions", kinds["tool_calls"]), ("message actions", kinds["message"]),
                ("parallel-call actions", sum(len(s.reference.calls) > 1 for s in sts)),
                ("context messages (min/median/max)", f"{ctx[0]}/{ctx[len(ctx) // 2]}/{ctx[-1]}")]
        rows += [(f"domain {d}", c) for d, c in Counter(s.domain for s in sts).most_common()]
        profiled = [s for s in sts if "reward_mean" in (s.meta.get("gym") or {}).get("extra", {})]
        if profiled:
            rows.append(("rows with profiling columns", len(profiled)))
        console.print(rows_table(f"{file}", rows, ("", "value")))
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
    console.print(rows_table(f"{file}", rows, ("", "value")))


@app.command()
def convert(
    input: Path = typer.Argument(..., help="Trajectories (OpenAI/ShareGPT/HF), states, NeMo Gym rows or a profile."),
    output: Path = typer.Argument(..., help="Output JSONL."),
    to: str = typer.Option(..., "--to", help="openai (chat trajectories) or gym (NeMo Gym rows)."),
    agent: str = typer.Option("single_step_tool_use_with_argument_comparison_agent", help="agent_ref name for gym rows."),
):
    """Convert between trajectory formats and NeMo Gym rows."""
    from pivotrl.artifacts import file_kind, write_jsonl
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import extract_states, load_states, state_to_gym_row

    kind = file_kind(input)
    is_states = kind in ("states", "gym", "profile")

    def read_states():
        return [c.state for c in _read_candidates(input)] if kind == "profile" else load_states(input)

    if to == "gym" and kind == "profile":  # the rows keep the profiling columns NVIDIA's releases carry
        from pivotrl.pivots.profile import profile_to_gym_rows, read_records

        n = write_jsonl(output, profile_to_gym_rows(read_records(input), agent))
        console.print(f"wrote {n} records to {output}")
        return
    if to == "gym":
        states = read_states() if is_states else extract_states(load_trajectories(input))
        n = write_jsonl(output, (state_to_gym_row(s, agent) for s in states))
    elif to == "openai":
        if is_states:
            # A state becomes a chat record that ends with its demonstrated action.
            recs = ({"id": f"{s.trajectory_id}:{s.turn_index}", "messages": s.context + [s.reference.to_message()],
                     "tools": s.tools, "domain": s.domain} for s in read_states())
        else:
            recs = (t.to_dict() for t in load_trajectories(input))
        n = write_jsonl(output, recs)
    else:
        raise DataError(f"--to must be openai or gym, not {to!r}")
    console.print(f"wrote {n} records to {output}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def profile(
    ctx: typer.Context,
    output: Path = typer.Option(..., "-o", "--output", help="profile.parquet or .jsonl (records), or rows with --format gym."),
    config: Optional[Path] = typer.Option(None, help="YAML with any ProfileConfig key; flags override it."),
    option: list[str] = typer.Option([], "--option", "-O", help="Verifier option key=value (repeatable)."),
    backend_option: list[str] = typer.Option([], "--backend-option", "-B", help="Backend option key=value "
                                             "(e.g. base_url=http://127.0.0.1:8000/v1, batch_size=16)."),
):
    """Sample K actions per state from the frozen reference policy and score them (resumable).

    Usage: pivotrl profile STATES -o OUTPUT [--key value ...], STATES being our states JSONL (from
    extract) or NeMo Gym rows."""
    from pivotrl.pivots import load_states
    from pivotrl.pivots.profile import ProfileConfig, profile_states

    cfg, states = _config_from_cli(ProfileConfig, config, ctx.args, positional="states")
    if not states:
        raise DataError("give the states file: pivotrl profile STATES -o OUTPUT [--key value ...]")
    states = Path(states)
    cfg.verifier_options.update(_parse_options(option))
    cfg.backend_options.update(_parse_options(backend_option))
    sts = load_states(states)
    import warnings

    from pivotrl.pivots.profile import TruncationWarning, truncation_message
    from pivotrl.rewards import check_states, get_verifier
    from pivotrl.sampling import SamplingParams

    v = get_verifier(cfg.verifier, **cfg.verifier_options)
    check_states(v, sts, str(states))
    sampler = build_sampler(cfg)
    try:
        with _progress() as prog, warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # printed below, in the summary's colours
            task = prog.add_task("profiling", total=len(sts), rate="")

            def update(done, total, samples, elapsed):
                prog.update(task, completed=done, rate=f"{samples / elapsed:.1f} samples/s" if elapsed else "")

            records = profile_states(sts, sampler, v, k=cfg.k, output=output, batch_size=cfg.batch_size,
                                     params=SamplingParams(cfg.k, cfg.temperature, cfg.top_p, cfg.max_tokens,
                                                           top_k=cfg.top_k, min_p=cfg.min_p,
                                                           repetition_penalty=cfg.repetition_penalty),
                                     keep_samples=cfg.keep_samples, seed=cfg.seed, model_name=cfg.model,
                                     verifier_name=cfg.verifier, fmt=cfg.format, progress=update,
                                     template={"chat_template": _absolute(cfg.chat_template),
                                               "chat_template_kwargs": cfg.chat_template_kwargs},
                                     score_truncated=cfg.score_truncated)
    finally:
        sampler.close()
    from pivotrl.pivots.split import carry_heldout

    carry_heldout(states, output)
    _print_profile_summary(records, output)
    stats = getattr(sampler, "stats", None)
    if stats is not None:
        console.print(f"Ray pool: {stats.batches} batches, {stats.retried_batches} retried ({stats.retries} "
                      f"resubmissions), {stats.worker_restarts} workers restarted, {stats.timeouts} timed out",
                      soft_wrap=True)
    message = truncation_message(records, cfg.max_tokens)
    if message:
        console.print(f"[bold red]warning:[/] {message}", soft_wrap=True)


def _absolute(path: str | None) -> str | None:
    """A file path as an absolute one (a later command may run elsewhere); anything else as it is."""
    return str(Path(path).resolve()) if path and Path(path).is_file() else path


def build_sampler(cfg):
    from pivotrl.sampling import RaySampler, get_sampler

    opts = dict(cfg.backend_options)
    if cfg.backend in ("transformers", "vllm"):
        if not cfg.model:
            raise DataError("--model is required (a local model directory or a hub id)")
        opts.setdefault("model", cfg.model)
        if cfg.chat_template:
            opts.setdefault("chat_template", cfg.chat_template)
        if cfg.chat_template_kwargs:
            opts.setdefault("chat_template_kwargs", cfg.chat_template_kwargs)
    elif cfg.backend == "openai":
        if cfg.model:
            opts.setdefault("model", cfg.model)
        if cfg.chat_template:
            opts.setdefault("chat_template", cfg.chat_template)
        if cfg.chat_template_kwargs:
            opts.setdefault("chat_template_kwargs", cfg.chat_template_kwargs)
    if cfg.ray:
        return RaySampler(cfg.backend, opts, num_workers=cfg.num_workers, gpus_per_worker=cfg.gpus_per_worker,
                          address=cfg.ray_address, max_restarts=cfg.max_restarts,
                          max_batch_retries=cfg.max_batch_retries, worker_timeout_s=cfg.worker_timeout_s)
    if cfg.backend == "transformers" and "num_threads" not in opts and not _has_gpu():
        from pivotrl.sampling.transformers_backend import cpu_threads

        opts["num_threads"], why = cpu_threads()
        console.print(f"transformers backend on the CPU: {opts['num_threads']} thread(s) ({why}); "
                      "-B num_threads=N sets it", soft_wrap=True)
    return get_sampler(cfg.backend, **opts)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("states"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console)


def _print_profile_summary(records: list[dict], output: Path) -> None:
    ok = [r for r in records if not r["skipped"]]
    mixed = sum(r["reward_var"] > 0 for r in ok)
    samples, cut = sum(len(r["rewards"]) for r in ok), sum(r["n_truncated"] for r in ok)
    rows = [("states profiled", len(ok)), ("skipped (see 'skipped' column)", len(records) - len(ok)),
            ("samples", samples),
            ("mean reward", f"{sum(r['reward_mean'] for r in ok) / max(len(ok), 1):.3f}"),
            ("mixed outcomes (variance > 0)", f"{mixed} ({mixed / max(len(ok), 1):.1%})"),
            ("all correct", sum(r["reward_var"] == 0 and r["reward_mean"] == 1 for r in ok)),
            ("all wrong", sum(r["reward_var"] == 0 and r["reward_mean"] == 0 for r in ok)),
            ("truncated samples (scored 0)", f"{cut} ({cut / max(samples, 1):.1%})")]
    console.print(f"profile written to {output}", soft_wrap=True)
    console.print(rows_table("", rows, ("", "value")))


def _read_candidates(path: Path, skip_invalid: bool = False):
    """A profile's candidates, every row checked; with `skip_invalid`, what was skipped is said."""
    from pivotrl.pivots.select import load_candidates

    skipped: Counter = Counter()
    cands = load_candidates(path, skip_invalid=skip_invalid, skipped=skipped)
    if skipped:
        from rich.markup import escape

        console.print(f"[bold yellow]skipped {sum(skipped.values())} invalid record(s)[/] of {escape(str(path))}:",
                      soft_wrap=True)
        console.print(rows_table("skipped", [(escape(k), n) for k, n in skipped.most_common()], ("reason", "records")))
    return cands


@app.command("select")
def select_cmd(
    profile_file: Path = typer.Argument(..., help="A profile (from `pivotrl profile`) or NeMo Gym rows with profiling columns."),
    output: Path = typer.Option(..., "-o", "--output", help="pivots.jsonl"),
    rule: str = typer.Option("pivot", help="pivot, variance_top_k, mean_band or all."),
    lambda_diff: float = typer.Option(0.75, "--lambda-diff", help="pivot rule: keep mean reward below this."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="variance_top_k: how many to keep."),
    band: Optional[tuple[float, float]] = typer.Option(None, "--band", help="mean_band: LO HI."),
    format: str = typer.Option("states", "--format", help="states (our JSONL) or gym (NeMo Gym rows)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count bad records instead of failing."),
):
    """Keep the pivots: states with mixed outcomes (variance > 0, mean < lambda_diff) or another rule."""
    from pivotrl.pivots.select import RULES, breakdown, save_pivots, select

    lo, hi = band if band else (0.0, 1.0)
    cands = _read_candidates(profile_file, skip_invalid)
    kept = select(cands, rule, lambda_diff=lambda_diff, top_k=top_k, lo=lo, hi=hi)
    save_pivots(kept, output, source=profile_file, rule=rule, fmt=format)
    counts = []
    for r in RULES:
        if r == "variance_top_k" and top_k is None:
            continue
        counts.append((r + (f" (lambda_diff={lambda_diff})" if r == "pivot" else f" [{lo}, {hi}]" if r == "mean_band"
                            else f" (k={top_k})" if r == "variance_top_k" else ""),
                       len(select(cands, r, lambda_diff=lambda_diff, top_k=top_k, lo=lo, hi=hi))))
    console.print(f"{len(cands)} candidate states; rule {rule!r} keeps {len(kept)} -> {output}", soft_wrap=True)
    console.print(rows_table("states kept by each rule", counts, ("rule", "kept")))
    b = breakdown(cands, kept)
    console.print(rows_table(f"kept by {rule}, by domain", [(d, n, b["domain_kept"][d]) for d, n in sorted(b["domain"].items())],
                         ("domain", "candidates", "kept")))
    order = sorted(b["position"], key=lambda p: ("first", "middle", "last").index(p) if p in ("first", "middle", "last")
                   else 3 + int(p.split()[-1]))
    console.print(rows_table(f"kept by {rule}, by turn position", [(p, b["position"][p], b["position_kept"][p]) for p in order],
                         ("position", "candidates", "kept")))
    console.print(rows_table(f"kept by {rule}, by what the reference does",
                         [(a, n, b["action_kept"][a]) for a, n in b["action"].most_common()],
                         ("reference action", "candidates", "kept")))
    kind_only = b["action_kept"]["message (any text paid)"]
    if kind_only:
        console.print(f"[bold yellow]note:[/] {kind_only} kept states are message turns where the verifier paid any "
                      "message without reading it (NeMo Gym's rule for tool_call): GRPO learns to write some text "
                      "there, not the right text. Profile with a message check, e.g. -O message_check="
                      "'{\"name\": \"string_similarity\", \"threshold\": 0.6}' (or a judge).", soft_wrap=True)
    if not kept:
        ok = [c for c in cands if c.profiled]
        solved = sum(c.var == 0 and c.mean == 1 for c in ok)
        failed = sum(c.var == 0 and c.mean == 0 for c in ok)
        console.print(f"[bold red]no state kept:[/] of {len(ok)} profiled, {solved} were always right, {failed} always "
                      f"wrong, {len(ok) - solved - failed} mixed but at or above lambda_diff={lambda_diff}. More "
                      "samples (k), a higher temperature or max_tokens, a weaker or stronger reference model, or "
                      "--lambda-diff / --rule may find pivots.", soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def report(
    profile_file: Path = typer.Argument(..., help="A profile, or NeMo Gym rows with profiling columns."),
    output: Path = typer.Option(Path("report"), "-o", "--output", help="Folder for PNGs and README.md."),
    lambda_diff: float = typer.Option(0.75, "--lambda-diff"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count bad records instead of failing."),
):
    """Plots (mean-reward histogram, variance by turn, pivots by domain) and a markdown summary."""
    from pivotrl.pivots.report import write_report

    summary = write_report(_read_candidates(profile_file, skip_invalid), output, lambda_diff, title=str(profile_file))
    console.print(f"report written to {output}/ (README.md and 3 PNGs): {summary['pivots']} pivots of "
                  f"{summary['profiled']} profiled states", soft_wrap=True)


# ---- training: every config key is also a flag (--learning-rate 1e-4, --lora, --no-lora) -----------
_TRAIN_CTX = {"allow_extra_args": True, "ignore_unknown_options": True}


def _config_from_cli(cls, config: Optional[Path], extra: list[str], positional: str | None = None):
    """The config (for trainers, TRL's config class with ours on top) from YAML, then flags, through
    TRL's own parser: every key works, as `--key value` or `--key-with-dashes value`. With
    `positional`, one positional argument of that name is parsed too, anywhere among the flags,
    and `(config, value)` returned."""
    from argparse import Namespace

    from trl import TrlParser

    parser = TrlParser([cls])
    if positional:
        parser.add_argument(positional)
    argv = (["--config", str(config)] if config else []) + list(extra)
    try:
        out = parser.parse_args_and_config(argv, return_remaining_strings=True, separate_remaining_strings=False)
    except (ValueError, OSError) as exc:  # an unreadable file, a value TRL refuses
        raise DataError(str(exc), file=str(config) if config else None) from None
    except SystemExit:  # argparse already printed what is missing or malformed
        raise DataError("see the command's --help") from None
    cfg, rest = out[0], out[-1]
    unknown = [a for a in rest if a.startswith("--")] or rest
    if unknown:
        raise DataError(f"unknown option(s) {' '.join(unknown)}: give keys of TRL's config class or pivotrl's own "
                        "(see --help)", file=str(config) if config else None)
    if positional:
        extra_ns = next((o for o in out if isinstance(o, Namespace)), None)
        return cfg, getattr(extra_ns, positional, None)
    return cfg


TRL_DOCS = {"GRPOConfig": "https://huggingface.co/docs/trl/grpo_trainer#trl.GRPOConfig",
            "SFTConfig": "https://huggingface.co/docs/trl/sft_trainer#trl.SFTConfig"}
FLAG_STYLE = ("Config keys are flags too, spelt --key_name or --key-name alike (flags override the YAML file); "
              "dicts take JSON.")


def _keys_help(options, trl_config: str | None = None) -> str:
    from pivotrl.config_fields import field_docs, help_block

    text = f"{FLAG_STYLE}\n\npivotrl's keys:\n\n{help_block(field_docs(options))}"
    if trl_config:
        text += (f"\n\nTRL's keys: every field of {trl_config} ({TRL_DOCS[trl_config]}); the recipe's defaults where "
                 "they differ from TRL's are in the docs' config reference.")
    return text


def _end_run(summary: str) -> None:
    """The run's one line (once, not once per process of a multi-process launch), then every rank
    leaves together."""
    from pivotrl.train.distributed import end_process_group, is_main_process

    if is_main_process():
        console.print(summary, soft_wrap=True)
    end_process_group()


@app.command(context_settings=_TRAIN_CTX)
def train(ctx: typer.Context, config: Optional[Path] = typer.Option(None, help="YAML config; flags override it.")):
    """PivotRL: GRPO on the pivots (TRL GRPOTrainer), with the functional verifier as reward."""
    from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl

    result = train_pivotrl(_config_from_cli(PivotRLConfig, config, ctx.args))
    _end_run(f"trained {result['steps']} steps on {result['train_states']} pivots; model in "
             f"{result['output_dir']}/final, ledger {result['ledger']}")


@app.command(context_settings=_TRAIN_CTX)
def sft(ctx: typer.Context, config: Optional[Path] = typer.Option(None, help="YAML config; flags override it.")):
    """The SFT baseline (TRL SFTTrainer) on the same trajectories, loss on assistant tokens only."""
    from pivotrl.train.sft import SFTRunConfig, train_sft

    result = train_sft(_config_from_cli(SFTRunConfig, config, ctx.args))
    _end_run(f"trained {result['steps']} steps on {result['trajectories']} trajectories; model in "
             f"{result['output_dir']}/final, ledger {result['ledger']}")


@app.command(context_settings=_TRAIN_CTX)
def e2e(ctx: typer.Context, config: Optional[Path] = typer.Option(None, help="YAML config; flags override it.")):
    """The end-to-end RL baseline: GRPO on full episodes in an environment (TRL environment_factory)."""
    from pivotrl.train.e2e import E2EConfig, train_e2e

    result = train_e2e(_config_from_cli(E2EConfig, config, ctx.args))
    _end_run(f"trained {result['steps']} steps on {result['tasks']} tasks; model in "
             f"{result['output_dir']}/final, ledger {result['ledger']}")


# One example per command, shown at the end of its --help (a test checks every command has one).
EXAMPLES = {
    "extract": "pivotrl extract trajectories.jsonl -o states.jsonl --skip-invalid",
    "verify": "pivotrl verify pairs.jsonl --verifier tool_call --by label",
    "info": "pivotrl info profile.parquet",
    "convert": "pivotrl convert states.jsonl rows.jsonl --to gym",
    "profile": "pivotrl profile states.jsonl --model Qwen/Qwen3-0.6B --k 8 --verifier tool_call -o profile.parquet",
    "select": "pivotrl select profile.parquet -o pivots.jsonl --lambda-diff 0.75",
    "report": "pivotrl report profile.parquet -o report/",
    "train": "pivotrl train --config configs/pivotrl.yaml --model Qwen/Qwen3-0.6B --pivots pivots.jsonl "
             "--output_dir runs/pivotrl",
    "sft": "pivotrl sft --config configs/sft.yaml --model Qwen/Qwen3-0.6B --heldout states.jsonl.heldout.json "
           "--output_dir runs/sft",
    "e2e": "pivotrl e2e --config configs/e2e.yaml --model Qwen/Qwen3-0.6B --output_dir runs/e2e",
    "plan": "pivotrl plan --config configs/pivotrl.yaml --model Qwen/Qwen3-8B --devices 8 --sharding zero3 "
            "--max_prompt_length 2048 --max_completion_length 1024 --use_vllm true --vllm_gpu_memory_utilization 0.3",
    "eval": "pivotrl eval --model runs/pivotrl/final --states states.jsonl.heldout.states.jsonl -o eval.json",
    "compare": "pivotrl compare runs/pivotrl runs/sft --metric eval_accuracy -o compare.png",
    "verifiers": "pivotrl verifiers",
    "demo": "pivotrl demo --n 40",
}


def _add_keys_help():
    from pivotrl.pivots.profile import ProfileConfig
    from pivotrl.train.options import E2EOptions, PivotRLOptions, SFTOptions

    for fn, cls, trl_config in ((train, PivotRLOptions, "GRPOConfig"), (sft, SFTOptions, "SFTConfig"),
                                (e2e, E2EOptions, "GRPOConfig")):
        fn.__doc__ = f"{fn.__doc__}\n\n{_keys_help(cls, trl_config)}"
    profile.__doc__ = f"{profile.__doc__}\n\n{_keys_help(ProfileConfig)}"


@app.command(context_settings=_TRAIN_CTX)
def plan(ctx: typer.Context, config: Optional[Path] = typer.Option(None, help="The train config (YAML); flags too."),
         devices: int = typer.Option(1, help="GPUs the step runs on."),
         sharding: str = typer.Option("none", help="none (one GPU or DDP), zero3 or fsdp."),
         prompt_tokens: Optional[int] = typer.Option(None, help="Prompt length to plan for (default: "
                                                     "max_prompt_length, else the model's context less the "
                                                     "completion budget, as train skips longer pivots)."),
         device_gib: float = typer.Option(79.0, help="Memory of one GPU (GiB) as CUDA sees it: about 79 for an "
                                          "80 GB H100 or A100.")):
    """What one PivotRL step, its evaluation and a colocated vLLM hold per GPU (weights, gradients,
    optimizer, activations, TRL's chunked LM head, generation), from the model's config and a train
    config, before any launch; exit 1, with the nearest recipe that fits, if it does not.

    Every key of the train config is a flag too (--key_name or --key-name)."""
    from pivotrl.train.pivotrl_trainer import PivotRLConfig
    from pivotrl.train.plan import GiB, nearest_fit, recipe_for

    cfg = _config_from_cli(PivotRLConfig, config, ctx.args)
    if not cfg.model:
        raise DataError("give --model (a local folder, or a hub id whose config can be fetched)")
    try:
        recipe = recipe_for(cfg, devices=devices, sharding=sharding, prompt_tokens=prompt_tokens)
    except OSError as exc:  # no network and no local folder: one line, not transformers' traceback
        raise DataError(f"cannot read the config of {cfg.model!r}: {str(exc).splitlines()[0]}") from None
    device = device_gib * GiB
    mem = recipe.memory(device)
    rows = [(k, f"{v:.2f} GiB" if isinstance(v, float) else f"{v:,}") for k, v in mem.as_gib().items()
            if not (k.startswith("vllm") and not v)]
    console.print(f"{cfg.model}: {devices} GPU(s) of {device_gib:g} GiB, sharding {sharding}, prompt "
                  f"{recipe.prompt_tokens:,} + completion {recipe.completion_tokens:,} tokens", soft_wrap=True)
    console.print(rows_table("", rows, ("", "per GPU")))
    if mem.problems:
        for problem in mem.problems:
            console.print(f"[bold red]does not fit:[/] {problem}", soft_wrap=True)
        fix = nearest_fit(recipe, device)
        if fix:
            console.print(f"fits with: {' '.join(fix[0])} ({fix[1].total / GiB:.1f} GiB a step, "
                          f"{fix[1].evaluation / GiB:.1f} GiB evaluating)", soft_wrap=True)
        else:
            console.print("no recipe of pivotrl's knobs fits it on these GPUs: more GPUs (--devices) or a smaller "
                          "max_prompt_length / max_completion_length", soft_wrap=True)
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", help="The checkpoint: a local directory (a run's final/, a "
                              "checkpoint-N/, a LoRA adapter folder) or a hub id."),
    states: Optional[Path] = typer.Option(None, help="Held-out states (e.g. STATES.heldout.states.jsonl from extract): "
                                          "next-action accuracy."),
    tasks: Optional[Path] = typer.Option(None, help="Held-out episode tasks (JSONL of {'prompt': ...}): episode "
                                         "success, with --environment."),
    environment: Optional[str] = typer.Option(None, help="The environment the tasks are played in (a registered "
                                              "name or module:Class)."),
    verifier: str = typer.Option("tool_call", "--verifier", "-v", help="Scores the next actions."),
    option: list[str] = typer.Option([], "--option", "-O", help="Verifier option key=value (repeatable)."),
    max_tokens: int = typer.Option(0, help="Token budget of an action; 0: 256, profile's default (give the "
                                   "budget the model was profiled and trained with)."),
    chat_template_kwargs: Optional[str] = typer.Option(None, help="Chat template options (JSON), as in training."),
    max_states: int = typer.Option(200, help="A seeded sample of at most N states."),
    max_tasks: int = typer.Option(100, help="At most N episodes."),
    max_turns: int = typer.Option(8, help="Model turns per episode at most."),
    seed: int = typer.Option(0),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the metrics here (JSON)."),
):
    """Evaluate a checkpoint as the trainers do during training: next-action accuracy on held-out
    states (eval_accuracy), episode success in an environment (eval_success)."""
    import json

    from pivotrl.artifacts import atomic_open
    from pivotrl.eval.heldout import HeldOutSet, measure, resolve_episodes
    from pivotrl.pivots.split import sample_eval
    from pivotrl.pivots.load import load_states
    from pivotrl.rewards import check_states, get_verifier
    from pivotrl.sampling import get_sampler
    from pivotrl.sampling.base import GENERATION_BUDGET

    if not states and not tasks:
        raise DataError("give --states (next-action accuracy), --tasks with --environment (episode success), or both")
    try:
        template = json.loads(chat_template_kwargs) if chat_template_kwargs else {}
    except ValueError:
        raise DataError(f"--chat-template-kwargs must be a JSON object, got {chat_template_kwargs!r}") from None
    sts = sample_eval(load_states(states), max_states, seed) if states else []
    v = get_verifier(verifier, **_parse_options(option))
    check_states(v, sts, str(states) if states else None)
    factory, task_list = resolve_episodes(str(tasks) if tasks else None, environment, max_tasks, max_turns)
    sampler = get_sampler("transformers", model=model, chat_template_kwargs=template)
    metrics = measure(sampler, HeldOutSet(sts, v, factory, task_list, max_turns), max_tokens or GENERATION_BUDGET)
    result = {"model": model, "states": str(states) if states else None, "tasks": str(tasks) if tasks else None,
              "verifier": verifier, "max_tokens": max_tokens or GENERATION_BUDGET, **metrics}
    console.print(rows_table(f"eval of {model}", [(k, f"{v:.3f}" if isinstance(v, float) else v)
                                              for k, v in metrics.items()], ("measure", "value")))
    if output:
        with atomic_open(output) as fh:
            fh.write(json.dumps(result, indent=2) + "\n")


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Run folders (each with a ledger.jsonl)."),
    metric: str = typer.Option("eval_accuracy", help="Ledger metric to plot (eval_accuracy, eval_success, reward, ...)."),
    target: Optional[float] = typer.Option(None, help="Report the turns and seconds each run needed to reach this."),
    output: Path = typer.Option(Path("compare.png"), "-o", "--output"),
    include_profiling: bool = typer.Option(True, "--include-profiling/--no-profiling",
                                           help="Charge PivotRL's offline profiling to its curve."),
):
    """Plot a metric against rollout turns and wall-clock for several runs; cost to reach a target."""
    from pivotrl.train.compare import plot_compare, reach, run_curve

    curves = [run_curve(r, metric, include_profiling) for r in runs]
    path = plot_compare(curves, metric, output, target, include_profiling)
    rows = []
    for c in curves:
        r = reach(c, target) if target is not None else {"turns": c["turns"][-1], "seconds": c["seconds"][-1],
                                                           "value": c["values"][-1]}
        rows.append((c["name"], c["trainer"], f"{c['values'][-1]:.3f}", "-" if r["turns"] is None else r["turns"],
                     "-" if r["seconds"] is None else f"{r['seconds']:.1f}", c["profiling"]["rollout_turns"]))
    title = f"to reach {metric} >= {target}" if target is not None else f"final {metric}"
    console.print(rows_table(title, rows, ("run", "trainer", f"final {metric}", "rollout turns", "seconds",
                                       "of which profiling turns")))
    console.print(f"plot: {path}", soft_wrap=True)


# ---- the lab -------------------------------------------------------------------------------------
@app.command()
def verifiers():
    """List the registered verifiers, one line each."""
    from pivotrl.rewards import list_verifiers
    from pivotrl.rewards.base import verifier_summary

    for name in list_verifiers():
        console.print(f"[bold]{name}[/]  {verifier_summary(name)}", soft_wrap=True)


@app.command()
def demo(n: int = typer.Option(40, help="Sample trajectories to generate."),
         out: Path = typer.Option(Path("runs/demo"), help="Where to write the demo's files.")):
    """The bundled demo: sample trajectories -> states -> functional vs exact verification."""
    from pivotrl.demo import run_demo

    run_demo(console, n=n, out=out)


_add_keys_help()
add_examples(app, EXAMPLES)

# The bundled lab's commands live in their own module (its imports stay inside its commands).
from pivotrl.lab.cli import app as lab_app  # noqa: E402

app.add_typer(lab_app, name="lab")

if __name__ == "__main__":
    main()
