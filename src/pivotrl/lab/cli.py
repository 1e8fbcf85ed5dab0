"""`pivotrl lab ...`: the bundled lab's commands, mounted by the main CLI. Everything the lab needs
(its extra: reasoning-gym, bm25s) is imported inside the commands, so `pivotrl --help` and the
library's commands never load the lab."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pivotrl.console import add_examples
from pivotrl.errors import DataError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="The bundled lab: four domains, a tiny base model, the paper's comparison.")


@app.callback()
def require_lab_extra(ctx: typer.Context) -> None:
    """The lab's commands need its extra (its OOD suite and its search index)."""
    import importlib

    if ctx.invoked_subcommand == "base-path":
        return
    missing = []
    for name in ("bm25s", "reasoning_gym"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DataError(f"the lab needs its extra ({', '.join(missing)} missing): pip install 'pivotrl[lab]'")




@app.command("generate")
def lab_generate(
    domain: str = typer.Option("all", help="A domain (tooluse, terminal, search, code; repo, the long-horizon one) "
                                            "or all (the four)."),
    output: Path = typer.Option(Path("lab_data"), "-o", "--output"),
    train: int = typer.Option(400, help="Train tasks (and SFT trajectories) per domain."),
    dev: int = typer.Option(50),
    test: int = typer.Option(200),
    seed: int = typer.Option(0),
):
    """Write train/dev/test tasks and the experts' SFT trajectories."""
    from pivotrl.console import console, rows_table
    from pivotrl.lab.domains import IN_DOMAIN
    from pivotrl.lab.generate import generate

    domains = list(IN_DOMAIN) if domain == "all" else [domain]
    counts = generate(output, domains, {"train": train, "dev": dev, "test": test}, seed)
    console.print(rows_table(f"lab data in {output}", [(d, c.get("train_tasks"), c.get("dev_tasks"), c.get("test_tasks"),
                                                    c.get("train_trajectories")) for d, c in counts.items()],
                         ("domain", "train", "dev", "test", "SFT trajectories")))


@app.command("eval")
def lab_eval(
    model: str = typer.Option(..., help="Model directory (e.g. the bundled base: pivotrl lab base-path)."),
    tasks: int = typer.Option(200, help="Test episodes per domain."),
    ood: int = typer.Option(50, help="Items per OOD reasoning task."),
    variant: int = typer.Option(100, help="Episodes of the held-out agentic variant."),
    next_action: int = typer.Option(100, "--next-action", help="Held-out states per domain for next-action accuracy."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the results as JSON."),
):
    """Real episodes in all four environments (test split), the OOD suite, next-action accuracy."""
    from pivotrl.console import console, rows_table
    from pivotrl.lab.evaluate import EvalConfig, evaluate_model

    res = evaluate_model(model, EvalConfig(tasks, ood, variant, next_action), log=console.print)
    rows = [(f"in-domain: {d}", f"{v:.3f}") for d, v in res["in_domain"].items()]
    rows.append(("in-domain mean", f"{res['in_domain_mean']:.3f}"))
    rows += [(f"OOD: {t}", f"{v:.3f}") for t, v in res["ood"].items()]
    if "ood_reasoning_mean" in res:
        rows.append(("OOD mean (reasoning tasks; the variant on its own above)", f"{res['ood_reasoning_mean']:.3f}"))
    rows += [(f"next action: {d}", f"{v:.3f}") for d, v in res["next_action"].items()]
    console.print(rows_table(f"lab eval of {model} ({res['eval_seconds']:.0f}s)", rows, ("measure", "value")))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"model": model, **res}, indent=2))


@app.command("run")
def lab_run(
    preset: str = typer.Option("demo", help="demo (SFT and PivotRL, about 5.5 minutes on 2 cores), paper (the paper's protocol, one "
                                        "domain at a time with --domain: 5 seeds, sweeps, patience; hours a domain), full (6 arms, "
                                        "a learning-rate sweep on dev, 3 seeds; hours: start it twice for two workers), regime (the paper's "
                                        "data regime, one domain at a time: a draw of data per seed, pivots seen about "
                                        "once, tasks no arm has seen; days), tiny (tests)."),
    output: Path = typer.Option(Path("runs/lab"), "-o", "--output", help="Results folder; rerun to resume."),
    model: Optional[str] = typer.Option(None, help="Base model (default: the bundled one)."),
    domain: Optional[str] = typer.Option(None, help="Train and evaluate on this domain alone (the paper trains "
                                                    "one model per domain; repo is the long-horizon one)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow writing into a folder that holds committed "
                                                               "files (results/...): to resume or extend a run "
                                                               "whose stage files are committed."),
):
    """The paper's comparison: SFT, PivotRL, E2E RL and the ablations from one base model.

    Start it twice on one output folder (each with OMP_NUM_THREADS=1) to use two workers: each takes
    whichever stage is free."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from pivotrl.console import console
    from pivotrl.lab.experiment import PRESETS, Plan, run_lab

    if preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    committed = committed_files(output)
    if committed and not overwrite:
        raise DataError(f"{output} holds {committed} files committed to git (results kept with the repository): "
                        "give another -o, or --overwrite to resume or extend that run there")
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notices, not ours
    warnings.filterwarnings("ignore", message=".*experimental feature.*")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    p = PRESETS[preset].for_domain(domain) if domain else PRESETS[preset]
    total = Plan(p, "", output / "work").total()
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
    print_report(results, preset, output)
    console.print(f"this invocation {results['seconds_this_invocation'] / 60:.1f} min", soft_wrap=True)


def committed_files(folder: Path) -> int:
    """How many files under `folder` git tracks (0 outside a repository or without git)."""
    import subprocess

    if not folder.is_dir():
        return 0
    try:
        res = subprocess.run(["git", "ls-files", "--", "."], cwd=folder, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(res.stdout.splitlines()) if res.returncode == 0 else 0


def print_report(results: dict, preset: str, output: Path) -> None:
    from pivotrl.console import console
    from pivotrl.lab.report import claims_table, markdown_table

    console.print(f"\n[bold]Preset {preset}[/]: in-domain success (real episodes, test split, each arm's best dev "
                  f"checkpoint), OOD accuracy, cost (mean ± std over seeds {results['seeds']}; percentages)\n")
    console.print(markdown_table(results))
    console.print("\n[bold]The paper's claims here[/] (paired differences, points; 95% intervals)\n")
    console.print(claims_table(results))
    console.print("\nA difference whose interval includes 0 ('not resolved') is noise at this size; with one seed the "
                  "interval covers only the test sample (which tasks were drawn), not training noise.", soft_wrap=True)
    console.print(f"\nresults in {output}/ (results.json, table.md, success_vs_cost.png, in_domain_vs_ood.png)",
                  soft_wrap=True)


@app.command("report")
def lab_report(
    preset: str = typer.Option("full", help="The preset the run uses."),
    output: Path = typer.Option(Path("runs/lab"), "-o", "--output", help="The run's results folder."),
    domain: Optional[str] = typer.Option(None, help="The run's one domain, if it was given one."),
):
    """The report of a run still going or stopped: the arms whose every seed is evaluated (the others named)."""
    from pivotrl.console import console
    from pivotrl.lab.experiment import PRESETS, report_lab

    if preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    results = report_lab(PRESETS[preset].for_domain(domain) if domain else PRESETS[preset], output)
    print_report(results, preset, output)
    if results["pending"]:
        console.print(f"not finished yet (left out): {', '.join(results['pending'])}", soft_wrap=True)


@app.command("claims")
def lab_claims(
    runs: list[Path] = typer.Argument(..., help="One-domain run folders (`lab run --domain NAME -o DIR`), each with "
                                                "its results.json (`lab run` or `lab report` writes it)."),
    output: Path = typer.Option(Path("runs/lab"), "-o", "--output", help="Where claims.json and claims.md go."),
    statistic: str = typer.Option("seeds", help="The interval the verdicts are read from: seeds (over the seeds' "
                                                "means, as the comparison in results/lab-v3 was registered) or tasks "
                                                "(over seeds x test tasks, as results/lab-regime/REGISTRATION.md "
                                                "registers for the next). Both are written either way."),
):
    """The registered claims over the per-domain runs (results/lab-v3/README.md, "Claims registered"): per seed, the mean
    over domains of each domain's paired difference, with its 95% interval over seeds and verdict, and the
    interval over seeds x tasks read from the runs' stage files (`pivotrl.lab.intervals`)."""
    from pivotrl.artifacts import atomic_open
    from pivotrl.console import console
    from pivotrl.lab.intervals import claims_over_seeds_and_tasks
    from pivotrl.lab.report import across_domains, across_table

    if statistic not in ("seeds", "tasks"):
        raise DataError(f"--statistic {statistic!r}: seeds or tasks")

    by_domain, folders = {}, {}
    for run in runs:
        path = run / "results.json"
        if not path.exists():
            raise DataError("no results.json: run `pivotrl lab report --preset paper --domain NAME -o DIR` first",
                            file=str(path))
        res = json.loads(path.read_text())
        domains = list(res["table"]["base"]["in_domain"])
        if len(domains) != 1:
            raise DataError(f"a run of {len(domains)} domains ({', '.join(domains)}); `lab claims` reads one-domain "
                            "runs (`lab run --domain NAME`)", file=str(path))
        if domains[0] in by_domain:
            raise DataError(f"a second run of domain {domains[0]!r}", file=str(path))
        by_domain[domains[0]] = res
        folders[domains[0]] = run
    result = across_domains(by_domain)
    result["statistic"] = statistic
    result["seeds_and_tasks"] = claims_over_seeds_and_tasks(folders)
    if statistic == "tasks":  # the verdicts the registration reads
        for name, entry in result["seeds_and_tasks"].items():
            result["claims"][name]["verdict"] = entry["verdict"] + " (over seeds x tasks)"
    output.mkdir(parents=True, exist_ok=True)
    with atomic_open(output / "claims.json") as fh:
        fh.write(json.dumps(result, indent=2))
    table = across_table(result)
    with atomic_open(output / "claims.md") as fh:
        fh.write(table + "\n")
    console.print(table, soft_wrap=True)


@app.command("audit")
def lab_audit(
    model: Optional[str] = typer.Option(None, help="Whose actions to audit (default: the bundled base, as profiling sees it)."),
    domain: str = typer.Option("all", help="A domain (tooluse, terminal, search, code) or all."),
    trajectories: int = typer.Option(30, help="Expert trajectories per domain whose turns are audited."),
    k: int = typer.Option(4, help="Sampled actions per state."),
    temperature: float = typer.Option(1.0),
    seed: int = typer.Option(0),
    output: Path = typer.Option(Path("runs/lab/audit"), "-o", "--output", help="Folder for audit.json and audit.md."),
):
    """Do the verifiers' rewards mean what the environments mean? Precision and recall of each
    verifier against episode outcomes (the action played, the expert finishing)."""
    from pivotrl.artifacts import atomic_open, write_jsonl
    from pivotrl.console import console
    from pivotrl.lab.audit import AuditConfig, audit_table, run_audit
    from pivotrl.lab.domains import IN_DOMAIN

    domains = tuple(IN_DOMAIN) if domain == "all" else (domain,)
    result = run_audit(AuditConfig(model=model or "", domains=domains, trajectories=trajectories, k=k,
                                   temperature=temperature, seed=seed), log=console.print)
    output.mkdir(parents=True, exist_ok=True)
    rows = result.pop("rows")
    with atomic_open(output / "audit.json") as fh:
        fh.write(json.dumps(result, indent=2, default=str))
    write_jsonl(output / "audit_rows.jsonl", rows)  # every verdict, one action a line
    table = audit_table(result)
    (output / "audit.md").write_text(table + "\n")
    console.print(table)
    console.print(f"\n{result['actions']} actions at {result['states']} states; written to {output}/audit.json, "
                  "audit_rows.jsonl, audit.md")


@app.command("gate")
def lab_gate(
    model: Optional[str] = typer.Option(None, help="The base to check (default: the bundled base)."),
    tasks: int = typer.Option(100, help="Dev episodes per domain."),
    trajectories: int = typer.Option(30, help="Dev expert trajectories per domain whose states are profiled."),
    k: int = typer.Option(8, help="Samples per state."),
    seed: int = typer.Option(0),
    domain: Optional[list[str]] = typer.Option(None, "--domain", help="Measure only this domain (repeatable; "
                                               "default the four; repo, the long-horizon one, only by name): "
                                               "the same figures as a full gate's for it, all its criteria, "
                                               "a base for `lab bases`."),
    output: Path = typer.Option(Path("runs/lab/gate.json"), "-o", "--output"),
):
    """Is the base in the paper's regime? The regime gate on the dev split (src/pivotrl/lab/gate.py,
    README "The regime gate"): every criterion with its figure; exit 1 when the base fails."""
    from pivotrl.artifacts import atomic_open
    from pivotrl.console import console
    from pivotrl.lab.domains import IN_DOMAIN, LONG_HORIZON
    from pivotrl.lab.gate import GateConfig, measure_gate

    gated = IN_DOMAIN + LONG_HORIZON
    if unknown := sorted(set(domain or ()) - set(gated)):
        raise typer.BadParameter(f"{', '.join(unknown)}: not a lab domain; choose among {', '.join(gated)}",
                                 param_hint="--domain")
    names = tuple(d for d in gated if d in set(domain or ()))  # the gate's order, whatever the flags'
    result = measure_gate(GateConfig(model=model or "", tasks_per_domain=tasks, trajectories=trajectories, k=k,
                                     seed=seed, domains=names), log=console.print)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output) as fh:
        fh.write(json.dumps(result, indent=2, default=str))
    console.print(_checks_table(f"regime gate: {result['model']}", result["checks"]))
    console.print(f"{'passed' if result['passed'] else 'FAILED'}: {sum(c['holds'] for c in result['checks'])} of "
                  f"{len(result['checks'])} criteria hold; written to {output}")
    if not result["passed"]:
        raise typer.Exit(1)


def _checks_table(title: str, checks: list[dict]):
    """The gate's criteria as a table: each with its figure, rule and whether it holds."""
    from pivotrl.console import rows_table

    rows = [(c["criterion"], f"{c['value']:g}", c["rule"], "holds" if c["holds"] else "FAILS") for c in checks]
    return rows_table(title, rows, ("criterion", "value", "rule", ""))


@app.command("bases")
def lab_bases(
    gates: list[Path] = typer.Argument(..., help="Gate results (`pivotrl lab gate -o`), in training order."),
    output: Path = typer.Option(Path("runs/lab/bases.json"), "-o", "--output"),
):
    """The gate per domain (results/pretrain/README.md, "A base per domain"): each domain's base is the earliest checkpoint
    whose criteria for that domain all hold; the criteria across domains then apply to the chosen set.
    Exit 1 when a domain has no base or the set fails."""
    from pivotrl.artifacts import atomic_open
    from pivotrl.console import console, rows_table
    from pivotrl.lab.gate import choose_domain_bases, gate_domains, verdict

    results, held = [], []
    for path in gates:
        try:
            g = json.loads(path.read_text())
            checks = verdict(g)["checks"]  # also proves every field the choice reads is there
            held.append({d: f"{g['success'][d]:.0%}, {sum(c['holds'] for c in checks if c['domain'] == d)}/"
                            f"{sum(c['domain'] == d for c in checks)}" for d in g["success"]})
            g["model"]  # the choice names each base by it
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise typer.BadParameter(f"{path}: not a gate result ({type(e).__name__}: {e})", param_hint="GATES")
        results.append(g)
    domains = gate_domains(results)  # a gate of some domains shows "-" for the rest
    rows = [(str(p), *(h.get(d, "-") for d in domains)) for p, h in zip(gates, held)]
    console.print(rows_table("per domain: episode success, criteria held", rows, ("gate", *domains)))
    chosen = choose_domain_bases(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output) as fh:
        fh.write(json.dumps({"gates": [str(p) for p in gates], **chosen}, indent=2))
    console.print(rows_table("bases", [(d, chosen["bases"].get(d, "none")) for d in domains],
                         ("domain", "base")))
    console.print(_checks_table("the chosen set", chosen["checks"]))
    console.print(f"{'passed' if chosen['passed'] else 'FAILED'}; written to {output}")
    if not chosen["passed"]:
        raise typer.Exit(1)


@app.command("pretrain")
def lab_pretrain(
    output: Path = typer.Option(Path("runs/lab/pretrain"), "-o", "--output"),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: PretrainConfig's, ~57 minutes here)."),
    minutes: Optional[float] = typer.Option(None, help="Optional wall-clock cap."),
    seed: int = typer.Option(0),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="A later phase: go on from this checkpoint "
                                                                       "(its tokenizer and weights)."),
    domain_share: float = typer.Option(0.0, "--domain-share", help="Document weight of the lab domains' own expert "
                                                                   "trajectories (other tasks than the SFT data's; "
                                                                   "siblings weigh 1; default none)."),
    domain_tasks: Optional[str] = typer.Option(None, "--domain-tasks", help="With --domain-share: tasks per domain "
                                                                         "in the in-domain pool, as "
                                                                         "tooluse=600,terminal=0 (a domain drawn "
                                                                         "in proportion; unnamed ones keep "
                                                                         "PretrainConfig's count; repo, the "
                                                                         "long-horizon one, 0 unless named)."),
    weights: Optional[str] = typer.Option(None, "--mix", help="Document weights of the mixture's kinds, as "
                                                               "siblings=3,reasoning=1 (kinds: siblings, "
                                                               "toolcall, reasoning, domains; unnamed ones keep "
                                                               "theirs)."),
    family_docs: Optional[str] = typer.Option(None, "--family-docs", help="Documents of a sibling family instead of "
                                                                         "PretrainConfig's count, as files=32000 "
                                                                         "(a family drawn in proportion: "
                                                                         "desk, files, lookup, bugs, primitives; "
                                                                         "keyed, records, listed_records only when named)."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="Peak learning rate (default "
                                                  "PretrainConfig's 3e-3; a phase that goes on from another may "
                                                  "want the rate where that one stopped)."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="Linear warmup (default 100)."),
    gate_from: Optional[int] = typer.Option(None, "--gate-from", help="The first checkpoint step the gate measures "
                                                                      "(default 800)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1,
                                                   help="Steps between checkpoints (default 200); with a base "
                                                        "chosen per domain, closer ones miss less."),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", min=8, help="Model width from scratch "
                                              "(default 128)."),
    layers: Optional[int] = typer.Option(None, "--layers", min=1, help="Transformer layers from scratch (default 4)."),
    heads: Optional[int] = typer.Option(None, "--heads", min=1, help="Attention heads from scratch (default 4; "
                                                                     "must divide --hidden-size)."),
    train_only: bool = typer.Option(False, "--train-only", help="Train (or find the training done) and measure "
                                                               "each checkpoint's copy drills, without the gate: "
                                                               "a phase that a later --init-from goes on from."),
):
    """Pretrain the lab's generalist base from scratch, then gate its checkpoints in order and keep the
    earliest that passes as OUTPUT/base (reruns resume: a finished training and each gated checkpoint are
    kept; an unfinished training, stopped by --minutes or killed, goes on from its last checkpoint when
    rerun with the same settings, --minutes aside). Exits 1 when no checkpoint passes. With --train-only,
    a phase: train and measure copy drills (OUTPUT/drills.json), no gate; a later phase goes on with
    --init-from OUTPUT/checkpoints/step-N."""
    from pivotrl.console import console
    from pivotrl.lab.pretrain import (POOL_DOMAINS, PretrainConfig, finished_training, measure_drills, pretrain,
                                      train_checkpoints)
    from pivotrl.lab.siblings import FAMILIES, LATER_FAMILIES

    cfg = PretrainConfig(output_dir=str(output), minutes=minutes, seed=seed, init_from=init_from and str(init_from))
    cfg.mix = {**cfg.mix, "domains": domain_share}
    if weights:
        cfg.mix = {**cfg.mix, **parse_counts(weights, list(cfg.mix), "--mix", number=float)}
    shape = {"--hidden-size": hidden_size, "--layers": layers, "--heads": heads}
    if init_from and any(v is not None for v in shape.values()):
        raise typer.BadParameter("a phase that goes on from --init-from keeps that checkpoint's size",
                                 param_hint=", ".join(k for k, v in shape.items() if v is not None))
    for name, value in (("steps", steps), ("learning_rate", learning_rate), ("warmup_steps", warmup_steps),
                        ("gate_from", gate_from), ("checkpoint_every", checkpoint_every),
                        ("hidden_size", hidden_size), ("layers", layers), ("heads", heads)):
        if value is not None:
            setattr(cfg, name, value)
    if cfg.hidden_size % cfg.heads:
        raise typer.BadParameter(f"{cfg.heads} heads do not divide a width of {cfg.hidden_size}",
                                 param_hint="--heads")
    if domain_tasks:
        cfg.domain_tasks = {**cfg.domain_tasks, **parse_counts(domain_tasks, POOL_DOMAINS, "--domain-tasks")}
    if family_docs:
        cfg.family_docs = parse_counts(family_docs, {**FAMILIES, **LATER_FAMILIES}, "--family-docs")
    if train_only:
        trained = finished_training(cfg) or train_checkpoints(cfg, log=console.print)
        measure_drills(trained, cfg, log=console.print)
        return
    summary = pretrain(cfg, log=console.print)
    console.print(json.dumps({k: v for k, v in summary.items() if k != "checkpoints"}, indent=2, default=str))
    if summary["base"] is None:
        raise typer.Exit(1)


def parse_counts(text: str, names, option: str, number=int) -> dict:
    """`tooluse=600,terminal=0` -> {"tooluse": 600, "terminal": 0}, each NAME one of `names` and each
    value a whole number (with `number=float`, any number at or above 0)."""
    counts = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        try:
            value = number(count.strip())
        except ValueError:
            value = None
        if not sep or name.strip() not in names or value is None or not 0 <= value < float("inf"):
            kind = "a whole number" if number is int else "a number at or above 0"
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(names)} and "
                                     f"VALUE {kind}", param_hint=option)
        counts[name.strip()] = value
    return counts


@app.command("base-path")
def lab_base_path():
    """Print where the bundled base model is."""
    from pivotrl.console import console
    from pivotrl.lab import BASE_MODEL

    console.print(str(BASE_MODEL))


EXAMPLES = {
    "generate": "pivotrl lab generate --domain code --train 20 -o lab_data",
    "eval": "pivotrl lab eval --model $(pivotrl lab base-path) --tasks 20 --ood 10 -o base_eval.json",
    "run": "OMP_NUM_THREADS=1 pivotrl lab run --preset demo -o runs/lab-demo",
    "report": "pivotrl lab report --preset demo -o runs/lab-demo",
    "claims": "pivotrl lab claims results/lab-v3/search results/lab-v3/code -o runs/lab",
    "audit": "pivotrl lab audit --trajectories 50 --k 4 -o runs/lab/audit",
    "gate": "pivotrl lab gate --model results/pretrain/phase4-step300 --domain code -o runs/lab/gate_code.json",
    "bases": "pivotrl lab bases results/gate/phase2_step200.json results/gate/phase2_step400.json -o runs/lab/bases.json",
    "pretrain": "pivotrl lab pretrain --steps 200 -o runs/lab/pretrain",
    "base-path": "pivotrl lab base-path",
}
add_examples(app, EXAMPLES)
