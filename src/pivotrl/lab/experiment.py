"""`pivotrl lab run`: the paper's comparison in miniature, from one base model and one set of SFT
trajectories: SFT, PivotRL, end-to-end RL, and the two ablations (no pivot filter; exact-match
reward). Each arm trains for the same wall-clock budget; each is evaluated with real episodes
(test split), the OOD suite and the cost ledger (PivotRL's profiling counted).

Every stage writes its result to `OUT/work/...` and is skipped when rerun, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

from pivotrl.artifacts import atomic_open, write_jsonl
from pivotrl.lab.domains import IN_DOMAIN
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.evaluate import (
    EvalConfig,
    evaluate_model,
    lab_verifier,
    lab_verifier_options,
)
from pivotrl.train.common import PeriodicEval

ARMS = ("sft", "pivotrl", "e2e", "pivotrl_no_filter", "pivotrl_exact")
LABELS = {"base": "Base", "sft": "SFT", "pivotrl": "PivotRL", "e2e": "E2E RL",
          "pivotrl_no_filter": "PivotRL, no pivot filter", "pivotrl_exact": "PivotRL, exact-match reward"}


@dataclass
class Preset:
    name: str
    seeds: list = field(default_factory=lambda: [0])
    arms: tuple = ARMS
    trajectories: dict = field(default_factory=lambda: {"tooluse": 400, "terminal": 400, "search": 400, "code": 150})
    profile_k: int = 8
    lambda_diff: float = 0.75
    seconds_per_arm: float = 300.0
    sft_lr: float = 2e-4
    grpo_lr: float = 5e-5             # 2e-4 cost episode success at short budgets (results/lab/README.md)
    num_generations: int = 8
    prompts_per_step: int = 4
    max_completion_length: int = 64
    e2e_prompts_per_step: int = 2
    e2e_max_completion_length: int = 384
    e2e_max_turns: int = 6
    curve_every: int = 0               # in-training episode evals for the curves (0: start and end only)
    curve_tasks: int = 10
    eval: EvalConfig = field(default_factory=EvalConfig)


PRESETS = {
    # Sized to finish in about 1.5 hours with two workers (`lab run` started twice; results/lab/README.md).
    "full": Preset("full", seeds=[0, 1, 2], trajectories={"tooluse": 150, "terminal": 150, "search": 150, "code": 60},
                   seconds_per_arm=240.0, curve_every=20, curve_tasks=10,
                   eval=EvalConfig(tasks_per_domain=200, ood_per_task=50, variant_tasks=100, next_action_states=50)),
    "demo": Preset("demo", seeds=[0], arms=("sft", "pivotrl", "e2e"),
                   trajectories={"tooluse": 40, "terminal": 40, "search": 40, "code": 20}, profile_k=4,
                   seconds_per_arm=60.0, eval=EvalConfig(tasks_per_domain=12, ood_per_task=12, variant_tasks=8,
                                                          next_action_states=0)),
    "tiny": Preset("tiny", seeds=[0], arms=ARMS, trajectories={"tooluse": 3, "terminal": 3, "search": 3, "code": 2},
                   profile_k=2, seconds_per_arm=4.0, num_generations=2, prompts_per_step=1, max_completion_length=8,
                   e2e_prompts_per_step=1, e2e_max_completion_length=48, e2e_max_turns=2,
                   eval=EvalConfig(tasks_per_domain=1, ood_per_task=1, variant_tasks=1, next_action_states=0,
                                   max_tokens=8)),
}


class LabCurveCallback(PeriodicEval):
    """In-domain episode success on a few dev tasks per domain, as `eval_success`, for the
    success-against-cost curves."""

    def __init__(self, ledger, tokenizer, every: int, tasks_per_domain: int):
        super().__init__(ledger, every)
        self.tokenizer, self.tasks = tokenizer, tasks_per_domain

    def measure(self, model) -> dict:
        res = evaluate_model(model, EvalConfig(self.tasks, 0, 0, 0), tokenizer=self.tokenizer)
        return {"eval_success": res["in_domain_mean"], **{f"eval_success/{d}": v for d, v in res["in_domain"].items()}}


def _claim(lock: Path) -> bool:
    """Take `lock` for this process. A lock left by a process that is gone (killed, crashed) is taken
    over; one held by a live process (another `lab run` on this folder, on this machine) is not.
    A pid file rather than `filelock`'s flock: it is removed when the stage ends without racing a
    waiter, and it says which process holds the stage."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
                os.kill(pid, 0)
                return pid == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)
                continue
            except PermissionError:  # alive, another user's
                return False
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def run_stage(path: Path, fn, progress=None, label="", wait: bool = True):
    """Run `fn` once: its JSON result is kept at `path`, and a rerun reads it back. Several `lab run`
    processes on one folder share the stages (one lock file each): a stage another live process is
    running is waited for (`wait`) or left for later (returns None)."""
    lock, claimed = path.with_name(path.name + ".lock"), False
    while not path.exists() and not (claimed := _claim(lock)):
        if not wait:
            return None
        time.sleep(5)
    if path.exists():  # done before (or by another worker just now)
        if claimed:
            lock.unlink(missing_ok=True)
        if progress:
            progress(f"{label} (done before, skipped)")
        return json.loads(path.read_text())
    try:
        if progress:
            progress(label)
        result = fn()
        with atomic_open(path) as fh:
            fh.write(json.dumps(result, indent=2, default=str))
    finally:
        lock.unlink(missing_ok=True)
    return result


def train_and_evaluate(arm: str, seed: int, preset: Preset, base_model: str, work: Path, stages: Path, name: str,
                       progress=None, wait: bool = True) -> tuple[dict, dict] | None:
    """One arm x seed as two stages: trained (the model under `stages/name`), then evaluated on the
    preset's test tasks. Returns (ledger summary, evaluation); None while another worker holds one."""
    run_dir = stages / name
    ledger = run_stage(stages / f"train_{name}.json", partial(train_arm, arm, seed, preset, base_model, work, run_dir),
                       progress, f"training {LABELS[arm]} (seed {seed}, {preset.seconds_per_arm:.0f}s)", wait)
    res = ledger and run_stage(stages / f"eval_{name}.json",
                               partial(evaluate_model, str(run_dir / "final"), replace(preset.eval, seed=0)),
                               progress, f"evaluating {LABELS[arm]} (seed {seed})", wait)
    return (ledger, res) if res else None


def run_lab(preset: Preset, out_dir: str | Path = "results/lab", base_model: str | None = None, progress=None) -> dict:
    from pivotrl.lab import BASE_MODEL

    base_model = str(base_model or BASE_MODEL)
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "preset.json").write_text(json.dumps(asdict(preset), indent=2, default=str))
    t_start = time.time()

    # 1. the data: expert trajectories (SFT data, and the pivot candidates), E2E tasks
    data = work / "data"

    def make_data():
        trajs, tasks = [], []
        for name in IN_DOMAIN:
            dom = get_domain(name)
            rng = random.Random(f"sft:{name}")
            ts = dom.tasks("train", preset.trajectories[name], seed=0)
            tasks += ts
            trajs += [dom.expert(t, rng) for t in ts]
        write_jsonl(data / "train_trajectories.jsonl", trajs)
        write_jsonl(data / "train_tasks.jsonl", tasks)
        return {"trajectories": len(trajs), "tasks": len(tasks)}

    run_stage(work / "data.json", make_data, progress, "generating expert trajectories")

    # 2. the base evaluated once. Stages share a folder by lock files: one that another worker is
    #    running is left for later, so `lab run` started twice on one folder uses two workers.
    def base_eval():
        return evaluate_model(base_model, preset.eval)

    base_res = run_stage(work / "eval_base.json", base_eval, progress, "evaluating the base model", wait=False)

    # 3. candidates and the one-off profiling with the frozen base
    def profile():
        from pivotrl.data import load_trajectories
        from pivotrl.pivots import extract_states, write_states
        from pivotrl.pivots.profile import profile_states
        from pivotrl.sampling import SamplingParams, get_sampler

        states = extract_states(load_trajectories(data / "train_trajectories.jsonl"))
        write_states(work / "states.jsonl", states)
        recs = profile_states(states, get_sampler("transformers", model=base_model), lab_verifier(),
                              k=preset.profile_k, params=SamplingParams(preset.profile_k, 1.0, 1.0,
                                                                        preset.max_completion_length),
                              output=work / "profile.jsonl", model_name=base_model, verifier_name="lab")
        ok = [r for r in recs if not r["skipped"]]
        return {"states": len(recs), "mixed": sum(r["reward_var"] > 0 for r in ok),
                "mixed_share": sum(r["reward_var"] > 0 for r in ok) / max(len(ok), 1),
                "mean_reward": sum(r["reward_mean"] for r in ok) / max(len(ok), 1)}

    # Only the PivotRL arms need the profile: while another worker profiles, this one trains the others.
    def profile_stage(wait: bool):
        return run_stage(work / "profile.json", profile, progress, "profiling the candidates with the base model", wait=wait)

    prof = profile_stage(False)

    # 4. each arm x seed: trained, then evaluated
    done: dict[tuple, tuple] = {}
    pending = [(arm, seed) for seed in preset.seeds for arm in preset.arms]
    while pending:
        for arm, seed in list(pending):
            if arm.startswith("pivotrl") and prof is None and (prof := profile_stage(False)) is None:
                continue
            result = train_and_evaluate(arm, seed, preset, base_model, work, work, f"{arm}-s{seed}", progress, wait=False)
            if result:
                done[arm, seed] = result
                pending.remove((arm, seed))
        if pending:
            time.sleep(5)
    prof = prof or profile_stage(True)
    evals = {"base": [base_res or run_stage(work / "eval_base.json", base_eval, progress, "evaluating the base model")]}
    runs: dict[str, list[dict]] = {}
    for seed in preset.seeds:
        for arm in preset.arms:
            runs.setdefault(arm, []).append(done[arm, seed][0])
            evals.setdefault(arm, []).append(done[arm, seed][1])
    results = aggregate(evals, runs, prof, preset, base_model, time.time() - t_start)
    write_results(results, out)
    return results


def train_arm(arm: str, seed: int, preset: Preset, base_model: str, work: Path, run_dir: Path) -> dict:
    from pivotrl.pivots.select import load_candidates, select
    from pivotrl.train.ledger import read_ledger

    curves = []
    if preset.curve_every:
        curves = [lambda ledger, tok: LabCurveCallback(ledger, tok, preset.curve_every, preset.curve_tasks)]
    if arm == "sft":
        from pivotrl.data import load_trajectories
        from pivotrl.train.sft import SFTRunConfig, train_sft

        train_sft(SFTRunConfig(model=base_model, output_dir=str(run_dir), learning_rate=preset.sft_lr,
                               per_device_train_batch_size=8, num_train_epochs=100,
                               max_seconds=preset.seconds_per_arm, save_steps=10**6, seed=seed, eval_every=0,
                               report_to=["tensorboard"], max_length=1024, disable_tqdm=True),
                  trajectories=list(load_trajectories(work / "data" / "train_trajectories.jsonl")), eval_states=[])
    elif arm.startswith("pivotrl"):
        from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl

        rule = "all" if arm == "pivotrl_no_filter" else "pivot"
        states = [c.state for c in select(load_candidates(work / "profile.jsonl"), rule, lambda_diff=preset.lambda_diff)]
        if not states:
            from pivotrl.errors import DataError

            raise DataError("the base model's profile has no pivots (no state with mixed outcomes): PivotRL has "
                            "nothing to train on; use a base checkpoint nearer the jump in copying ability")
        exact = arm == "pivotrl_exact"
        cfg = PivotRLConfig(model=base_model, output_dir=str(run_dir), learning_rate=preset.grpo_lr,
                            verifier="exact" if exact else "dispatch",
                            verifier_options={} if exact else lab_verifier_options(),
                            num_generations=preset.num_generations, prompts_per_step=preset.prompts_per_step,
                            max_completion_length=preset.max_completion_length, max_steps=10**6,
                            max_seconds=preset.seconds_per_arm, save_steps=10**6, seed=seed, eval_every=0,
                            report_to=["tensorboard"], profile_cost=str(work / "profile.jsonl.meta.json"),
                            disable_tqdm=True)
        train_pivotrl(cfg, train_states=states, eval_states=[], extra_callbacks=curves)
    else:
        from pivotrl.train.e2e import E2EConfig, load_tasks, train_e2e

        cfg = E2EConfig(model=base_model, output_dir=str(run_dir), learning_rate=preset.grpo_lr,
                        num_generations=preset.num_generations, prompts_per_step=preset.e2e_prompts_per_step,
                        max_completion_length=preset.e2e_max_completion_length,
                        max_tool_calling_iterations=preset.e2e_max_turns, max_steps=10**6,
                        max_seconds=preset.seconds_per_arm, save_steps=10**6, seed=seed, eval_every=0,
                        report_to=["tensorboard"], disable_tqdm=True)
        envs = {name: get_domain(name).environment for name in IN_DOMAIN}  # each task names its domain
        train_e2e(cfg, tasks=load_tasks(str(work / "data" / "train_tasks.jsonl")), eval_tasks=[], extra_callbacks=curves,
                  environment=envs)
    ledger = read_ledger(run_dir)
    steps = [r for r in ledger if r.get("kind") == "step"]
    last = steps[-1]
    return {"steps": last["step"], "rollout_turns": last["rollout_turns"], "generated_tokens": last["generated_tokens"],
            "env_steps": last["env_steps"], "verifier_calls": last["verifier_calls"],
            "wall_clock_s": last["wall_clock_s"],
            "profiling": next((r for r in ledger if r.get("kind") == "profiling"), None),
            "curve": [{k: r[k] for k in ("rollout_turns", "wall_clock_s", "eval_success")}
                      for r in ledger if r.get("kind") == "eval" and "eval_success" in r],
            "zero_std_share": statistics.fmean([r.get("frac_reward_zero_std", 0.0) for r in steps]) if arm != "sft" else None}


def aggregate(evals: dict, runs: dict, prof: dict, preset: Preset, base_model: str, seconds: float) -> dict:
    def ms(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values)}

    base = evals["base"][0]
    table = {}
    for arm, rs in evals.items():
        row = {"in_domain": {d: ms([r["in_domain"][d] for r in rs]) for d in IN_DOMAIN},
               "in_domain_mean": ms([r["in_domain_mean"] for r in rs]),
               "ood_mean": ms([r.get("ood_mean") for r in rs]),
               "ood": {t: ms([r["ood"][t] for r in rs]) for t in base["ood"]},
               "next_action_mean": ms([r.get("next_action_mean") for r in rs])}
        row["in_domain_delta"] = row["in_domain_mean"]["mean"] - base["in_domain_mean"]
        row["ood_delta"] = (row["ood_mean"]["mean"] - base["ood_mean"]) if row["ood_mean"] else None
        if arm in runs:
            led = runs[arm]
            p = [r["profiling"] or {} for r in led]
            row["cost"] = {"rollout_turns": ms([r["rollout_turns"] for r in led]),
                           "profiling_turns": ms([x.get("rollout_turns", 0) for x in p]),
                           "wall_clock_s": ms([r["wall_clock_s"] for r in led]),
                           "profiling_s": ms([x.get("wall_clock_s", 0.0) for x in p]),
                           "generated_tokens": ms([r["generated_tokens"] for r in led]),
                           "steps": ms([r["steps"] for r in led]),
                           "zero_std_share": ms([r["zero_std_share"] for r in led])}
        table[arm] = row
    claims = _claims(table, runs)
    return {"preset": preset.name, "seeds": preset.seeds, "base_model": base_model, "profile": prof,
            "table": table, "claims": claims, "runs": runs, "machine": machine_info(),
            "seconds_this_invocation": seconds}  # stages done before (resumed, or by another worker) not counted


def machine_info() -> dict:
    import platform
    from importlib.metadata import version

    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            **{pkg: version(pkg) for pkg in ("torch", "transformers", "trl")}}


def _claims(t: dict, runs: dict) -> dict:
    """The paper's four claims, as measured here (arXiv 2603.21383, section 4). Costs are given with and
    without PivotRL's one-off profiling (the paper's 4x counts training rollouts only)."""
    out = {}

    def mean(row: dict, key: str) -> float:  # "in": in-domain success; else a cost field
        return row["in_domain_mean"]["mean"] if key == "in" else row["cost"][key]["mean"]

    if "pivotrl" in t and "sft" in t:
        out["pivotrl_minus_sft_in_domain"] = mean(t["pivotrl"], "in") - mean(t["sft"], "in")
        out["sft_ood_delta"] = t["sft"]["ood_delta"]
        out["pivotrl_ood_delta"] = t["pivotrl"]["ood_delta"]
    if "pivotrl" in t and "e2e" in t:
        p, e = t["pivotrl"], t["e2e"]
        out["e2e_final_in_domain"] = mean(e, "in")
        out["pivotrl_final_in_domain"] = mean(p, "in")
        out["pivotrl_reached_e2e_final"] = mean(p, "in") >= mean(e, "in")
        for name, key, prof_key in (("turns", "rollout_turns", "profiling_turns"), ("time", "wall_clock_s", "profiling_s")):
            train, prof = mean(p, key), mean(p, prof_key)
            out[f"{name}_e2e"] = mean(e, key)
            out[f"{name}_pivotrl_training"] = train
            out[f"{name}_pivotrl_profiling"] = prof
            out[f"{name}_ratio_e2e_over_pivotrl_training"] = mean(e, key) / train if train else None
            out[f"{name}_ratio_e2e_over_pivotrl_with_profiling"] = mean(e, key) / (train + prof) if train + prof else None
        out.update(_turns_to_reach(runs))
    for ab in ("pivotrl_no_filter", "pivotrl_exact"):
        if ab in t and "pivotrl" in t:
            out[f"{ab}_minus_pivotrl"] = mean(t[ab], "in") - mean(t["pivotrl"], "in")
            out[f"{ab}_zero_std_share"] = t[ab]["cost"]["zero_std_share"]["mean"]
    if "pivotrl" in t:
        out["pivotrl_zero_std_share"] = t["pivotrl"]["cost"]["zero_std_share"]["mean"]
    return out


def _turns_to_reach(runs: dict) -> dict:
    """From the in-training curves (same few test tasks for both, seed by seed): the training turns at
    which PivotRL first matches E2E RL's last measured success. None where it never does."""
    need, got = [], []
    for p, e in zip(runs.get("pivotrl", []), runs.get("e2e", [])):
        if not p["curve"] or not e["curve"]:
            continue
        target = e["curve"][-1]["eval_success"]
        hit = next((c for c in p["curve"] if c["eval_success"] >= target), None)
        need.append(e["curve"][-1]["rollout_turns"])
        got.append(hit["rollout_turns"] if hit else None)
    if not need:
        return {}
    return {"curve_e2e_final_turns": need, "curve_pivotrl_turns_to_reach_e2e_final": got}


def _fmt(x, pct=True):
    if x is None:
        return "-"
    if isinstance(x, dict):
        m, s = x["mean"], x["std"]
        return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:,.0f}"
    return f"{100 * x:+.1f}" if pct else f"{x:,.0f}"


def markdown_table(results: dict) -> str:
    t = results["table"]
    next_action = t["base"].get("next_action_mean") is not None  # single-turn accuracy, when measured
    head = ("| method | " + " | ".join(IN_DOMAIN) + " | in-domain avg | Δ vs base | OOD avg | Δ OOD |" +
            (" next action |" if next_action else "") + " rollout turns (+ profiling) | wall-clock s |")
    lines = [head, "|" + "---|" * (len(IN_DOMAIN) + 7 + next_action)]
    for arm in ("base", *ARMS):
        if arm not in t:
            continue
        r = t[arm]
        cost = r.get("cost")
        turns = "-" if not cost else (f"{cost['rollout_turns']['mean']:,.0f}" + (
            f" (+{cost['profiling_turns']['mean']:,.0f})" if cost["profiling_turns"]["mean"] else ""))
        secs = "-" if not cost else f"{cost['wall_clock_s']['mean'] + cost['profiling_s']['mean']:,.0f}"
        lines.append(f"| {LABELS[arm]} | " + " | ".join(_fmt(r["in_domain"][d]) for d in IN_DOMAIN) +
                     f" | {_fmt(r['in_domain_mean'])} | {_fmt(r['in_domain_delta']) if arm != 'base' else '-'} | "
                     f"{_fmt(r['ood_mean'])} | {_fmt(r['ood_delta']) if arm != 'base' else '-'} | " +
                     (f"{_fmt(r['next_action_mean'])} | " if next_action else "") + f"{turns} | {secs} |")
    return "\n".join(lines)


def detail_tables(results: dict) -> str:
    """OOD accuracy per task, and each arm's cost ledger (means over seeds)."""
    t = results["table"]
    tasks = list(t["base"]["ood"])
    lines = ["| method | " + " | ".join(tasks) + " | OOD avg | Δ OOD |", "|" + "---|" * (len(tasks) + 3)]
    for arm in ("base", *ARMS):
        if arm in t:
            r = t[arm]
            lines.append(f"| {LABELS[arm]} | " + " | ".join(_fmt(r["ood"][k]) for k in tasks) +
                         f" | {_fmt(r['ood_mean'])} | {_fmt(r['ood_delta']) if arm != 'base' else '-'} |")
    keys = ("steps", "rollout_turns", "profiling_turns", "generated_tokens", "wall_clock_s", "profiling_s")
    head = ("| method | optimizer steps | rollout turns | profiling turns | generated tokens | training s | "
            "profiling s | groups with zero reward variance |")
    lines += ["", head, "|" + "---|" * 8]
    for arm in ARMS:
        if arm in t and t[arm].get("cost"):
            c = t[arm]["cost"]
            zero = "-" if c["zero_std_share"] is None else _fmt(c["zero_std_share"])
            lines.append(f"| {LABELS[arm]} | " + " | ".join(_fmt(c[k], pct=False) for k in keys) + f" | {zero} |")
    return "\n".join(lines)


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "results.json") as fh:
        fh.write(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text(markdown_table(results) + "\n\n" + detail_tables(results) + "\n")
    plot_results(results, out)


def plot_results(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, runs = results["table"], results["runs"]
    base = t["base"]["in_domain_mean"]["mean"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, color in (("pivotrl", "#228833"), ("e2e", "#cc3311")):
        leds = runs.get(arm, [])
        if not leds:
            continue
        name = LABELS[arm] + (" (profiling included)" if arm == "pivotrl" else "")
        for ax, x in zip(axes, ("rollout_turns", "wall_clock_s")):  # the ledger names both costs alike
            offsets = [(led.get("profiling") or {}).get(x, 0) for led in leds]
            # in-training curves (a few test tasks per domain; faint), one per seed
            for i, (led, off) in enumerate(zip(leds, offsets)):
                if led["curve"]:
                    ax.plot([c[x] + off for c in led["curve"]], [c["eval_success"] for c in led["curve"]], ".-",
                            color=color, alpha=0.35, label=f"{name}: in-training, few tasks" if i == 0 else None)
            # the start (the base) and the final evaluation on the full test split, mean ± std over seeds
            end = [led[x] + off for led, off in zip(leds, offsets)]
            final = t[arm]["in_domain_mean"]
            ax.plot([statistics.fmean(offsets), statistics.fmean(end)], [base, final["mean"]], "-", color=color, lw=2)
            ax.errorbar([statistics.fmean(end)], [final["mean"]], yerr=[final["std"]], fmt="*", ms=13, color=color,
                        capsize=4, label=f"{name}: final, full test split")
    for ax, label in zip(axes, ("rollout turns (model calls)", "wall-clock seconds")):
        ax.axhline(base, color="grey", ls="--", lw=1, label="base, full test split")
        ax.set(xlabel=label, ylabel="in-domain success (episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "success_vs_cost.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for arm in ARMS:
        if arm in t and t[arm]["ood_delta"] is not None:
            ax.scatter(100 * t[arm]["in_domain_delta"], 100 * t[arm]["ood_delta"], s=60)
            ax.annotate(LABELS[arm], (100 * t[arm]["in_domain_delta"], 100 * t[arm]["ood_delta"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    ax.axhline(0, color="grey", lw=1)
    ax.axvline(0, color="grey", lw=1)
    ax.set(xlabel="in-domain change vs base (points)", ylabel="OOD change vs base (points)",
           title="Gains in-domain vs skills kept out of domain")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "in_domain_vs_ood.png", dpi=120)
    plt.close(fig)
