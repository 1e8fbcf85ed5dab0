"""The `pivotrl` command line. Each command is a thin shell over the Python API."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pivotrl.config import load_config
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
    heldout_fraction: float = typer.Option(0.1, help="Share of trajectories held out for evaluation, written once "
                                           "to OUTPUT.heldout.json and used by sft, train and e2e."),
    seed: int = typer.Option(0, help="Seed of the held-out split."),
):
    """Turn agent trajectories into pivot candidates: one state per assistant turn."""
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import ExtractStats, extract_states, state_to_gym_row, write_states
    from pivotrl.pivots.split import choose_heldout, heldout_path, write_heldout
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
    held = choose_heldout((t.id for t in ts), heldout_fraction, seed)
    write_heldout(heldout_path(output), held, fraction=heldout_fraction, seed=seed, source=str(trajectories))
    d = stats.as_dict()
    rows = [("trajectories", d["trajectories"]), ("assistant turns", d["assistant_turns"]),
            ("tool-call turns", d["tool_call_turns"]), ("  of which parallel calls", d["parallel_call_turns"]),
            ("final-answer / message turns", d["message_turns"]), ("states written", len(states)),
            ("held-out trajectories", len(held))]
    rows += [(f"skipped record: {k}", v) for k, v in sorted(ts.skipped.items())]
    rows += [(f"skipped turn: {k}", v) for k, v in sorted(stats.skipped.items())]
    console.print(f"extract {trajectories} -> {output}", soft_wrap=True)
    console.print(_table("", rows))


@app.command()
def verify(
    pairs: Path = typer.Argument(..., help="JSONL of {'state': {...} | 'state_id': ..., 'completion': ...}, "
                                 "NeMo Gym rows with a 'completion' field, or NeMo Gym rollouts (a 'response')."),
    verifier: str = typer.Option("dispatch", "--verifier", "-v", help="Registered name or module:callable "
                                 "(default dispatch: each NVIDIA row by its agent's verifier)."),
    option: list[str] = typer.Option([], "--option", "-O", help="Verifier option key=value (repeatable)."),
    states: Optional[Path] = typer.Option(None, help="States file to resolve 'state_id' references."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write one score per line here."),
):
    """Score completions against reference actions; print the reward distribution and reasons.
    NeMo Gym rollouts are re-scored and compared with the reward NeMo Gym recorded."""
    from pivotrl.artifacts import iter_jsonl, write_jsonl
    from pivotrl.pivots import State, gym_row_to_state, load_states
    from pivotrl.pivots.gym import is_gym_row, is_rollout, response_to_completion
    from pivotrl.rewards import get_verifier, safe_score

    v = get_verifier(verifier, **_parse_options(option))
    by_id = {s.id: s for s in load_states(states)} if states else {}
    scores = []
    for line, rec in iter_jsonl(pairs):
        if isinstance(rec, dict) and "completion" not in rec and is_rollout(rec):
            rec = {**rec, "completion": response_to_completion(rec["response"])}
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
        except DataError as exc:
            raise DataError(exc.reason, file=str(pairs), line=line) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad state: {exc}", file=str(pairs), line=line) from None
        s = safe_score(v, rec["completion"], st)
        scores.append({"line": line, "state_id": st.id if hasattr(st, "id") else None,
                       "reward": s.reward, "reason": s.reason, "recorded": rec.get("reward"),
                       "recorded_reason": rec.get("failure_reason")})
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
    recorded = [s for s in scores if isinstance(s["recorded"], (int, float))]
    if recorded:  # NeMo Gym rollouts: do we give the reward NeMo Gym gave?
        agree = [s for s in recorded if abs(s["reward"] - float(s["recorded"])) < 1e-9]
        console.print(f"agreement with the recorded rewards: {len(agree)} of {len(recorded)} "
                      f"({len(agree) / len(recorded):.1%})", soft_wrap=True)
        pairs_ = Counter((s["reason"], str(s["recorded_reason"]), abs(s["reward"] - float(s["recorded"])) < 1e-9)
                         for s in recorded)
        console.print(_table("ours vs recorded", [(a, b, "yes" if same else "NO", n) for (a, b, same), n in
                                                   pairs_.most_common()], ("our reason", "their reason", "agree", "rows")))


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
def profile(
    states: Path = typer.Argument(..., help="States JSONL (from extract) or NeMo Gym rows."),
    output: Path = typer.Option(..., "-o", "--output", help="profile.parquet or .jsonl (records), or rows with --format gym."),
    config: Optional[Path] = typer.Option(None, help="YAML with any ProfileConfig key; flags override it."),
    model: Optional[str] = typer.Option(None, help="Frozen reference policy: local dir or hub id."),
    k: Optional[int] = typer.Option(None, "--k", help="Samples per state (default 8)."),
    verifier: Optional[str] = typer.Option(None, "--verifier", "-v", help="Verifier name or module:callable."),
    option: list[str] = typer.Option([], "--option", "-O", help="Verifier option key=value."),
    backend: Optional[str] = typer.Option(None, help="transformers (default), vllm or openai."),
    backend_option: list[str] = typer.Option([], "--backend-option", "-B", help="Backend option key=value "
                                             "(e.g. base_url=http://127.0.0.1:8000/v1, batch_size=16)."),
    temperature: Optional[float] = typer.Option(None),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="States per sampling batch."),
    keep_samples: Optional[bool] = typer.Option(None, "--keep-samples/--no-keep-samples", help="Store the sampled texts."),
    format: Optional[str] = typer.Option(None, "--format", help="records (default) or gym."),
    seed: Optional[int] = typer.Option(None),
    chat_template: Optional[str] = typer.Option(None, "--chat-template", help="Jinja chat template file."),
    ray: Optional[bool] = typer.Option(None, "--ray/--no-ray", help="Fan out over Ray actors."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers"),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Existing cluster (default: start one)."),
):
    """Sample K actions per state from the frozen reference policy and score them (resumable)."""
    from pivotrl.pivots import load_states
    from pivotrl.pivots.profile import ProfileConfig, profile_states

    cfg = load_config(ProfileConfig, config, model=model, k=k, verifier=verifier, backend=backend,
                      temperature=temperature, top_p=top_p, max_tokens=max_tokens, batch_size=batch_size,
                      keep_samples=keep_samples, format=format, seed=seed, chat_template=chat_template, ray=ray,
                      num_workers=num_workers, gpus_per_worker=gpus_per_worker, ray_address=ray_address)
    cfg.verifier_options.update(_parse_options(option))
    cfg.backend_options.update(_parse_options(backend_option))
    sts = load_states(states)
    sampler = build_sampler(cfg)
    from pivotrl.rewards import get_verifier
    from pivotrl.sampling import SamplingParams

    v = get_verifier(cfg.verifier, **cfg.verifier_options)
    try:
        with _progress() as prog:
            task = prog.add_task("profiling", total=len(sts), rate="")

            def update(done, total, samples, elapsed):
                prog.update(task, completed=done, rate=f"{samples / elapsed:.1f} samples/s" if elapsed else "")

            records = profile_states(sts, sampler, v, k=cfg.k, output=output, batch_size=cfg.batch_size,
                                     params=SamplingParams(cfg.k, cfg.temperature, cfg.top_p, cfg.max_tokens),
                                     keep_samples=cfg.keep_samples, seed=cfg.seed, model_name=cfg.model,
                                     verifier_name=cfg.verifier, fmt=cfg.format, progress=update)
    finally:
        sampler.close()
    from pivotrl.pivots.split import carry_heldout

    carry_heldout(states, output)
    _print_profile_summary(records, output)


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
        if cfg.chat_template_kwargs:
            opts.setdefault("chat_template_kwargs", cfg.chat_template_kwargs)
    if cfg.ray:
        return RaySampler(cfg.backend, opts, num_workers=cfg.num_workers, gpus_per_worker=cfg.gpus_per_worker,
                          address=cfg.ray_address)
    return get_sampler(cfg.backend, **opts)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("states"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console)


def _print_profile_summary(records: list[dict], output: Path) -> None:
    ok = [r for r in records if not r["skipped"]]
    mixed = sum(r["reward_var"] > 0 for r in ok)
    rows = [("states profiled", len(ok)), ("skipped (see 'skipped' column)", len(records) - len(ok)),
            ("samples", sum(len(r["rewards"]) for r in ok)),
            ("mean reward", f"{sum(r['reward_mean'] for r in ok) / max(len(ok), 1):.3f}"),
            ("mixed outcomes (variance > 0)", f"{mixed} ({mixed / max(len(ok), 1):.1%})"),
            ("all correct", sum(r["reward_var"] == 0 and r["reward_mean"] == 1 for r in ok)),
            ("all wrong", sum(r["reward_var"] == 0 and r["reward_mean"] == 0 for r in ok)),
            ("truncated samples", sum(r["n_truncated"] for r in ok))]
    console.print(f"profile written to {output}", soft_wrap=True)
    console.print(_table("", rows, ("", "value")))


@app.command("select")
def select_cmd(
    profile_file: Path = typer.Argument(..., help="A profile (from `pivotrl profile`) or NeMo Gym rows with profiling columns."),
    output: Path = typer.Option(..., "-o", "--output", help="pivots.jsonl"),
    rule: str = typer.Option("pivot", help="pivot, variance_top_k, mean_band or all."),
    lambda_diff: float = typer.Option(0.75, "--lambda-diff", help="pivot rule: keep mean reward below this."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="variance_top_k: how many to keep."),
    band: Optional[tuple[float, float]] = typer.Option(None, "--band", help="mean_band: LO HI."),
    format: str = typer.Option("states", "--format", help="states (our JSONL) or gym (NeMo Gym rows)."),
):
    """Keep the pivots: states with mixed outcomes (variance > 0, mean < lambda_diff) or another rule."""
    from pivotrl.artifacts import write_jsonl
    from pivotrl.pivots.gym import state_to_gym_row
    from pivotrl.pivots.select import RULES, breakdown, load_candidates, select
    from pivotrl.pivots.split import carry_heldout
    from pivotrl.pivots.state import write_states

    lo, hi = band if band else (0.0, 1.0)
    cands = load_candidates(profile_file)
    kept = select(cands, rule, lambda_diff=lambda_diff, top_k=top_k, lo=lo, hi=hi)
    if format == "gym":
        write_jsonl(output, (state_to_gym_row(c.state) for c in kept))
    elif format == "states":
        write_states(output, (c.state for c in kept))
    else:
        raise DataError(f"--format must be states or gym, not {format!r}")
    _carry_profile_cost(profile_file, output, rule, len(kept))
    carry_heldout(profile_file, output)
    counts = []
    for r in RULES:
        if r == "variance_top_k" and top_k is None:
            continue
        counts.append((r + (f" (lambda_diff={lambda_diff})" if r == "pivot" else f" [{lo}, {hi}]" if r == "mean_band"
                            else f" (k={top_k})" if r == "variance_top_k" else ""),
                       len(select(cands, r, lambda_diff=lambda_diff, top_k=top_k, lo=lo, hi=hi))))
    console.print(f"{len(cands)} candidate states; rule {rule!r} keeps {len(kept)} -> {output}", soft_wrap=True)
    console.print(_table("states kept by each rule", counts, ("rule", "kept")))
    b = breakdown(cands, kept)
    console.print(_table(f"kept by {rule}, by domain", [(d, n, b["domain_kept"][d]) for d, n in sorted(b["domain"].items())],
                         ("domain", "candidates", "kept")))
    order = sorted(b["position"], key=lambda p: ("first", "middle", "last").index(p) if p in ("first", "middle", "last")
                   else 3 + int(p.split()[-1]))
    console.print(_table(f"kept by {rule}, by turn position", [(p, b["position"][p], b["position_kept"][p]) for p in order],
                         ("position", "candidates", "kept")))


def _carry_profile_cost(profile_file: Path, output: Path, rule: str, kept: int) -> None:
    """The pivots inherit their profile's bill, so `train` can charge it to PivotRL's ledger."""
    from pivotrl.pivots.profile import meta_path

    src = meta_path(profile_file)
    if src.exists():
        meta = json.loads(src.read_text())
        meta.update(selected_by=rule, selected=kept, profile=str(profile_file))
        meta_path(output).write_text(json.dumps(meta, indent=2))


@app.command()
def report(
    profile_file: Path = typer.Argument(..., help="A profile, or NeMo Gym rows with profiling columns."),
    output: Path = typer.Option(Path("report"), "-o", "--output", help="Folder for PNGs and README.md."),
    lambda_diff: float = typer.Option(0.75, "--lambda-diff"),
):
    """Plots (mean-reward histogram, variance by turn, pivots by domain) and a markdown summary."""
    from pivotrl.pivots.report import write_report
    from pivotrl.pivots.select import load_candidates

    summary = write_report(load_candidates(profile_file), output, lambda_diff, title=str(profile_file))
    console.print(f"report written to {output}/ (README.md and 3 PNGs): {summary['pivots']} pivots of "
                  f"{summary['profiled']} profiled states", soft_wrap=True)


# ---- training: every config key is also a flag (--learning-rate 1e-4, --lora, --no-lora) -----------
_TRAIN_CTX = {"allow_extra_args": True, "ignore_unknown_options": True}


def _config_from_cli(cls, config: Optional[Path], extra: list[str]):
    """The trainer's config (TRL's config class with ours on top) from YAML, then flags, through
    TRL's own parser: every TRL key works, as `--key value` or `--key-with-dashes value`."""
    from trl import TrlParser

    argv = (["--config", str(config)] if config else []) + list(extra)
    try:
        (cfg, rest) = TrlParser([cls]).parse_args_and_config(argv, return_remaining_strings=True,
                                                              separate_remaining_strings=False)
    except (ValueError, OSError) as exc:  # an unreadable file, a value TRL refuses
        raise DataError(str(exc), file=str(config) if config else None) from None
    unknown = [a for a in rest if a.startswith("--")] or rest
    if unknown:
        raise DataError(f"unknown option(s) {' '.join(unknown)}: give keys of TRL's config class or pivotrl's own "
                        "(see --help)", file=str(config) if config else None)
    return cfg


def _keys_help(options, trl_config: str) -> str:
    import dataclasses

    return (f"Keys (YAML, or flags --key value): every field of TRL's {trl_config} (see TRL's documentation), "
            "and " + ", ".join(f.name for f in dataclasses.fields(options)) + ".")


def _main_print(text: str, **kw) -> None:
    """Once per run, not once per process of a multi-process launch."""
    from pivotrl.train.distributed import is_main_process

    if is_main_process():
        console.print(text, **kw)


@app.command(context_settings=_TRAIN_CTX)
def train(ctx: typer.Context, config: Optional[Path] = typer.Option(None, help="YAML config; flags override it.")):
    """PivotRL: GRPO on the pivots (TRL GRPOTrainer), with the functional verifier as reward."""
    from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl

    result = train_pivotrl(_config_from_cli(PivotRLConfig, config, ctx.args))
    _main_print(f"trained {result['steps']} steps on {result['train_states']} pivots; model in "
                f"{result['output_dir']}/final, ledger {result['ledger']}", soft_wrap=True)


@app.command(context_settings=_TRAIN_CTX)
def sft(ctx: typer.Context, config: Optional[Path] = typer.Option(None, help="YAML config; flags override it.")):
    """The SFT baseline (TRL SFTTrainer) on the same trajectories, loss on assistant tokens only."""
    from pivotrl.train.sft import SFTRunConfig, train_sft

    result = train_sft(_config_from_cli(SFTRunConfig, config, ctx.args))
    _main_print(f"trained {result['steps']} steps on {result['trajectories']} trajectories; model in "
                f"{result['output_dir']}/final, ledger {result['ledger']}", soft_wrap=True)


@app.command(context_settings=_TRAIN_CTX)
def e2e(ctx: typer.Context, config: Optional[Path] = typer.Option(None, help="YAML config; flags override it.")):
    """The end-to-end RL baseline: GRPO on full episodes in an environment (TRL environment_factory)."""
    from pivotrl.train.e2e import E2EConfig, train_e2e

    result = train_e2e(_config_from_cli(E2EConfig, config, ctx.args))
    _main_print(f"trained {result['steps']} steps on {result['tasks']} tasks; model in "
                f"{result['output_dir']}/final, ledger {result['ledger']}", soft_wrap=True)


def _add_keys_help():
    from pivotrl.train.options import E2EOptions, PivotRLOptions, SFTOptions

    for fn, cls, trl_config in ((train, PivotRLOptions, "GRPOConfig"), (sft, SFTOptions, "SFTConfig"),
                                (e2e, E2EOptions, "GRPOConfig")):
        fn.__doc__ = f"{fn.__doc__}\n\n{_keys_help(cls, trl_config)}"


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
    path = plot_compare(curves, metric, output, target)
    rows = []
    for c in curves:
        r = reach(c, target) if target is not None else {"turns": c["turns"][-1], "seconds": c["seconds"][-1],
                                                           "value": c["values"][-1]}
        rows.append((c["name"], c["trainer"], f"{c['values'][-1]:.3f}", "-" if r["turns"] is None else r["turns"],
                     "-" if r["seconds"] is None else f"{r['seconds']:.1f}", c["profiling"]["rollout_turns"]))
    title = f"to reach {metric} >= {target}" if target is not None else f"final {metric}"
    console.print(_table(title, rows, ("run", "trainer", f"final {metric}", "rollout turns", "seconds",
                                       "of which profiling turns")))
    console.print(f"plot: {path}", soft_wrap=True)


# ---- the lab -------------------------------------------------------------------------------------
lab_app = typer.Typer(no_args_is_help=True, help="The bundled lab: four domains, a tiny base model, the paper's comparison.")
app.add_typer(lab_app, name="lab")


@lab_app.command("generate")
def lab_generate(
    domain: str = typer.Option("all", help="A domain (tooluse, terminal, search, code) or all."),
    output: Path = typer.Option(Path("lab_data"), "-o", "--output"),
    train: int = typer.Option(400, help="Train tasks (and SFT trajectories) per domain."),
    dev: int = typer.Option(50),
    test: int = typer.Option(200),
    seed: int = typer.Option(0),
):
    """Write train/dev/test tasks and the experts' SFT trajectories."""
    from pivotrl.lab.domains import IN_DOMAIN
    from pivotrl.lab.generate import generate

    domains = list(IN_DOMAIN) if domain == "all" else [domain]
    counts = generate(output, domains, {"train": train, "dev": dev, "test": test}, seed)
    console.print(_table(f"lab data in {output}", [(d, c.get("train_tasks"), c.get("dev_tasks"), c.get("test_tasks"),
                                                    c.get("train_trajectories")) for d, c in counts.items()],
                         ("domain", "train", "dev", "test", "SFT trajectories")))


@lab_app.command("eval")
def lab_eval(
    model: str = typer.Option(..., help="Model directory (e.g. the bundled base: pivotrl lab base-path)."),
    tasks: int = typer.Option(200, help="Test episodes per domain."),
    ood: int = typer.Option(50, help="Items per OOD reasoning task."),
    variant: int = typer.Option(100, help="Episodes of the held-out agentic variant."),
    next_action: int = typer.Option(100, "--next-action", help="Held-out states per domain for next-action accuracy."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the results as JSON."),
):
    """Real episodes in all four environments (test split), the OOD suite, next-action accuracy."""
    from pivotrl.lab.evaluate import EvalConfig, evaluate_model

    res = evaluate_model(model, EvalConfig(tasks, ood, variant, next_action), log=console.print)
    rows = [(f"in-domain: {d}", f"{v:.3f}") for d, v in res["in_domain"].items()]
    rows.append(("in-domain mean", f"{res['in_domain_mean']:.3f}"))
    rows += [(f"OOD: {t}", f"{v:.3f}") for t, v in res["ood"].items()]
    if "ood_mean" in res:
        rows.append(("OOD mean", f"{res['ood_mean']:.3f}"))
    rows += [(f"next action: {d}", f"{v:.3f}") for d, v in res["next_action"].items()]
    console.print(_table(f"lab eval of {model} ({res['eval_seconds']:.0f}s)", rows, ("measure", "value")))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"model": model, **res}, indent=2))


@lab_app.command("run")
def lab_run(
    preset: str = typer.Option("demo", help="demo (under 10 minutes on 2 cores), full (3 seeds x 5 arms; ~1.5 h with two workers), tiny (tests)."),
    output: Path = typer.Option(Path("results/lab"), "-o", "--output", help="Results folder; rerun to resume."),
    model: Optional[str] = typer.Option(None, help="Base model (default: the bundled one)."),
):
    """The paper's comparison: SFT, PivotRL, E2E RL and the ablations from one base model.

    Start it twice on one output folder (each with OMP_NUM_THREADS=1) to use two workers: each takes
    whichever stage is free."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from pivotrl.lab.experiment import PRESETS, markdown_table, run_lab

    if preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notices, not ours
    warnings.filterwarnings("ignore", message=".*experimental feature.*")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    p = PRESETS[preset]
    total = 3 + 2 * len(p.seeds) * len(p.arms)
    with Progress(TextColumn("[bold]lab run[/] {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as prog:
        task = prog.add_task("starting", total=total)
        state = {"n": 0}

        def step(label: str):
            if state["n"]:
                prog.advance(task)
            state["n"] += 1
            prog.update(task, description=label)
            console.log(label)

        results = run_lab(p, output, model, progress=step)
        prog.update(task, completed=total, description="done")
    console.print(f"\n[bold]Preset {preset}[/]: in-domain success (real episodes, test split), OOD accuracy, cost "
                  f"(mean ± std over seeds {p.seeds}; percentages)\n")
    console.print(markdown_table(results))
    c = results["claims"]
    for key, value in c.items():
        console.print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    console.print(f"\nresults in {output}/ (results.json, table.md, success_vs_cost.png, in_domain_vs_ood.png); "
                  f"this invocation {results['seconds_this_invocation'] / 60:.1f} min", soft_wrap=True)


@lab_app.command("pretrain")
def lab_pretrain(
    output: Path = typer.Option(Path("runs/lab/pretrain"), "-o", "--output"),
    steps: int = typer.Option(1140, help="Optimizer steps (the bundled base: 1140, ~18 minutes here)."),
    minutes: Optional[float] = typer.Option(None, help="Optional wall-clock cap."),
    seed: int = typer.Option(0),
):
    """Train the lab's tiny base model from scratch (the bundled one: the defaults, seed 0)."""
    from pivotrl.lab.pretrain import PretrainConfig, pretrain

    summary = pretrain(PretrainConfig(output_dir=str(output), steps=steps, minutes=minutes, seed=seed),
                       log=console.print)
    console.print(json.dumps(summary, indent=2, default=str))


@lab_app.command("base-path")
def lab_base_path():
    """Print where the bundled base model is."""
    from pivotrl.lab import BASE_MODEL

    console.print(str(BASE_MODEL))


@app.command()
def verifiers():
    """List the registered verifiers, one line each."""
    from pivotrl.rewards import list_verifiers
    from pivotrl.rewards.base import _REGISTRY

    modules = [c.__module__ for c in _REGISTRY.values()]
    for name in list_verifiers():
        cls = _REGISTRY[name]  # a module's doc describes its verifier, unless it holds several
        own = modules.count(cls.__module__) > 1 and cls.__dict__.get("__doc__")
        doc = own or __import__(cls.__module__, fromlist=["__doc__"]).__doc__ or ""
        doc = " ".join(doc.strip().split("\n\n")[0].split())
        doc = doc.split(": ", 1)[-1] if doc.startswith("`") else doc  # module docs open with "`name`: ..."
        console.print(f"[bold]{name}[/]  {doc.split('. ')[0].rstrip('.')}", soft_wrap=True)


@app.command()
def demo(n: int = typer.Option(40, help="Sample trajectories to generate."),
         out: Path = typer.Option(Path("runs/demo"), help="Where to write the demo's files.")):
    """The bundled demo: sample trajectories -> states -> functional vs exact verification."""
    from pivotrl.demo import run_demo

    run_demo(console, n=n, out=out)


_add_keys_help()

if __name__ == "__main__":
    main()
