"""One arm of the lab's comparison, trained once: SFT, PivotRL and its two ablations, end-to-end
RL, and SFT then PivotRL. Every arm is measured on dev tasks while it trains (at step 0 and every
`cap / dev_evals` seconds of training) and keeps its best dev checkpoint in `RUN/best`, which the
test evaluation then reads: the test split is never seen here."""

from __future__ import annotations

import statistics
from pathlib import Path

from pivotrl.artifacts import weights_sha256
from pivotrl.lab.domains import IN_DOMAIN
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.evaluate import EvalConfig, evaluate_model
from pivotrl.lab.presets import Preset
from pivotrl.lab.verifiers import lab_verifier_options
from pivotrl.train.common import PeriodicEval


class DevSelection(PeriodicEval):
    """In-domain episode success on dev tasks, as `eval_success` (the success-against-cost curves);
    the best checkpoint so far saved to `best_dir` (ties keep the earlier) or, with `ties_within`
    episodes, the latest within that many dev episodes of the best (one episode is noise on a small
    dev set: the more trained checkpoint is kept); training stopped after `patience` evaluations
    without a new best. Each kept checkpoint is a `best` line in the ledger."""

    def __init__(self, ledger, tokenizer, every_seconds: float, tasks_per_domain: int, best_dir: Path,
                 patience: int = 0, ties_within: int = 0, domains: tuple = IN_DOMAIN, unseen_templates: bool = False):
        super().__init__(ledger, every=0, every_seconds=every_seconds)
        self.tokenizer, self.tasks, self.best_dir, self.patience = tokenizer, tasks_per_domain, Path(best_dir), patience
        self.domains, self.unseen_templates = tuple(domains), unseen_templates
        self.episodes, self.ties_within = tasks_per_domain * len(self.domains), ties_within
        self.best, self.stale = -1.0, 0

    def measure(self, model) -> dict:
        res = evaluate_model(model, EvalConfig(self.tasks, 0, 0, 0, split="dev", attribute_failures=False,
                                               domains=self.domains, unseen_templates=self.unseen_templates),
                             tokenizer=self.tokenizer)
        return {"eval_success": res["in_domain_mean"], **{f"eval_success/{d}": v for d, v in res["in_domain"].items()}}

    def after_eval(self, state, model, metrics: dict) -> bool:
        score = metrics["eval_success"]
        improved = score > self.best
        self.stale = 0 if improved else self.stale + 1
        self.best = max(score, self.best)
        behind = round((self.best - score) * self.episodes)  # dev episodes below the best
        if improved or (self.ties_within and behind <= self.ties_within):
            model.save_pretrained(self.best_dir)
            self.tokenizer.save_pretrained(self.best_dir)
            self.ledger.write("best", state.global_step, {"dev_success": score}, sync=False)
        return bool(self.patience) and self.stale >= self.patience


def train_arm(arm: str, seed: int, lr: float, preset: Preset, start_model: str, data: Path, run_dir: Path,
              pivots: Path | None = None) -> dict:
    """Train `arm` from `start_model` on the seed's `data` folder (`lab.experiment.make_data`);
    `pivots`: the profile its pivots are selected from (the PivotRL arms). Returns the ledger's
    summary, the dev curve, the best dev checkpoint's step and score, and where the run stood in the
    data regime (`regime`: visits per pivot, task or trajectory at the kept checkpoint and at the end)."""
    import math
    import shutil

    from pivotrl.train.ledger import read_ledger

    # No stage result yet, so a folder here is an attempt that was stopped (killed, machine gone):
    # arms keep no mid-run checkpoints (a wall-clock cap, not a step count, ends them), so it starts over.
    shutil.rmtree(run_dir, ignore_errors=True)
    every = preset.seconds_per_arm / max(preset.dev_evals, 1)
    dev = [lambda ledger, tok: DevSelection(ledger, tok, every, preset.dev_tasks, run_dir / "best", preset.patience,
                                            preset.dev_ties_within, preset.domains, preset.eval.unseen_templates)]
    common = dict(model=start_model, output_dir=str(run_dir), learning_rate=lr, max_seconds=preset.seconds_per_arm,
                  save_steps=10**6, seed=seed, eval_every=0, report_to=["tensorboard"], disable_tqdm=True)
    if arm == "sft":
        from pivotrl.data import load_trajectories
        from pivotrl.train.sft import SFTRunConfig, train_sft

        trajectories = list(load_trajectories(data / "train_trajectories.jsonl"))
        train_sft(SFTRunConfig(**common, per_device_train_batch_size=SFT_BATCH, num_train_epochs=preset.sft_epochs,
                               max_length=1024), trajectories=trajectories, eval_states=[], extra_callbacks=dev)
        # an epoch is ceil(units / batch) steps (its last batch short): visits then count whole epochs
        units = len(trajectories)
        per_step = units / max(math.ceil(units / SFT_BATCH), 1)
    elif arm in ("e2e", "sft_e2e"):
        from pivotrl.train.e2e import E2EConfig, load_tasks, train_e2e

        cfg = E2EConfig(**common, num_generations=preset.num_generations, prompts_per_step=preset.e2e_prompts_per_step,
                        max_completion_length=preset.e2e_max_completion_length,
                        max_tool_calling_iterations=preset.e2e_max_turns, max_steps=10**6)
        envs = {name: get_domain(name).environment for name in preset.domains}  # each task names its domain
        # after SFT in the production order: tasks whose trajectories SFT never trained on
        held = arm == "sft_e2e" and preset.production_order
        tasks = load_tasks(str(data / ("heldout_tasks.jsonl" if held else "train_tasks.jsonl")))
        train_e2e(cfg, tasks=tasks, eval_tasks=[], extra_callbacks=dev, environment=envs)
        units, per_step = len(tasks), preset.e2e_prompts_per_step
    else:
        from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl

        states = pivot_states(arm, preset, data, pivots)
        if not states:  # nothing to train on: the start checkpoint is the arm's result, said so
            shutil.copytree(start_model, run_dir / "best", dirs_exist_ok=True)
            summary = summarise_run(arm, lr, [])
            return {**summary, "no_pivots": True, "kept_model_sha256": weights_sha256(run_dir / "best"),
                    "regime": regime_figures(summary, 0, preset.prompts_per_step, [])}
        exact, refresh = arm == "pivotrl_exact", arm == "pivotrl_refresh"
        cfg = PivotRLConfig(**common, verifier="exact" if exact else "dispatch",
                            verifier_options={} if exact else lab_verifier_options(),
                            num_generations=preset.num_generations, prompts_per_step=preset.prompts_per_step,
                            max_completion_length=preset.max_completion_length,
                            max_visits_per_pivot=preset.pivot_visits_cap, max_steps=10**6,
                            domain_weights=preset.domain_weights, group_micro_batches=preset.fast_grpo,
                            gradient_checkpointing=not preset.fast_grpo,
                            refresh_every=preset.refresh_every if refresh else 0, refresh_k=preset.profile_k,
                            refresh_sample=preset.refresh_sample,
                            profile_cost=None if pivots is None else str(pivots) + ".meta.json")
        train_pivotrl(cfg, train_states=states, eval_states=[], extra_callbacks=dev)
    ledger = read_ledger(run_dir)
    if "pivotrl" in arm:  # as the trainer counted them: its starting pivots, drawn over all processes
        data_line = next(r for r in ledger if r.get("kind") == "data")
        units, per_step = data_line["starting_pivots"], data_line["pivots_per_step"]
    summary = summarise_run(arm, lr, ledger)
    return {**summary, "kept_model_sha256": weights_sha256(run_dir / "best"),
            "regime": regime_figures(summary, units, per_step, ledger)}


SFT_BATCH = 8  # SFT's trajectories a step


def select_pivots(states: list, preset: Preset) -> list:
    """The states whose profile (carried in `meta["profile"]`) passes the pivot rule."""
    from pivotrl.train.refresh import passes

    return [s for s in states if passes(s.meta.get("profile"), preset.lambda_diff)]


def pivot_states(arm: str, preset: Preset, data: Path, pivots: Path | None):
    """The states a PivotRL arm trains on: the pivots of its profile (mixed outcomes, mean reward
    below lambda_diff; none when the start model's outcomes are never mixed), every candidate state
    without the filter (no profiling needed), or, for refresh over the pool, every profiled candidate
    (it starts from their pivots and re-selects as it trains)."""
    from pivotrl.pivots.select import load_candidates, select

    if arm == "pivotrl_no_filter":
        from pivotrl.data import load_trajectories
        from pivotrl.pivots import extract_states

        return extract_states(load_trajectories(data / "train_trajectories.jsonl"))
    cands = load_candidates(pivots)
    if arm == "pivotrl_refresh":
        every = [c.state for c in select(cands, "all")]
        return every if select_pivots(every, preset) else []
    return [c.state for c in select(cands, "pivot", lambda_diff=preset.lambda_diff)]


def regime_figures(summary: dict, units: int, per_step: int, ledger: list[dict]) -> dict:
    """Where a run stood in the data regime (issue 51): how many times it drew each of its `units`
    (pivots, tasks or SFT trajectories; `per_step` a step) on average by its kept checkpoint and by its
    end, and, for the GRPO arms, the share of groups without reward variance between dev evaluations."""
    best = summary["best_step"] or 0
    out = {"units": units, "per_step": per_step, "visits_kept": best * per_step / max(units, 1),
           "visits_end": summary["steps"] * per_step / max(units, 1)}
    steps = [r for r in ledger if r.get("kind") == "step" and "frac_reward_zero_std" in r]
    if steps:
        bounds = [c["step"] for c in summary["curve"] if c["step"] > 0] + [summary["steps"]]
        out["zero_std_by_interval"], lo = [], 0
        for hi in sorted(set(bounds)):
            part = [r["frac_reward_zero_std"] for r in steps if lo < r["step"] <= hi]
            if part:
                out["zero_std_by_interval"].append({"to_step": hi, "share": statistics.fmean(part)})
            lo = hi
    return out


def summarise_run(arm: str, lr: float, ledger: list[dict]) -> dict:
    """A run's ledger totals, dev curve, best dev success (what a sweep compares) and `best_step`,
    the step of the checkpoint kept for the test evaluation (DevSelection's last `best` line)."""
    steps = [r for r in ledger if r.get("kind") == "step"]
    last = steps[-1] if steps else {"step": 0, "rollout_turns": 0, "generated_tokens": 0, "env_steps": 0,
                                    "verifier_calls": 0, "wall_clock_s": 0.0}
    curve = [{k: r[k] for k in ("step", "rollout_turns", "wall_clock_s", "eval_success")}
             for r in ledger if r.get("kind") == "eval" and "eval_success" in r]
    best = max(curve, key=lambda c: c["eval_success"], default=None)
    kept = [r["step"] for r in ledger if r.get("kind") == "best"]  # DevSelection's, from step 0 on
    return {"learning_rate": lr, "steps": last["step"], "rollout_turns": last["rollout_turns"],
            "generated_tokens": last["generated_tokens"], "env_steps": last["env_steps"],
            "verifier_calls": last["verifier_calls"], "wall_clock_s": last["wall_clock_s"],
            "profiling": next((r for r in ledger if r.get("kind") == "profiling"), None),
            "curve": curve, "best_step": kept[-1] if kept else None,
            "best_dev_success": best and best["eval_success"],
            "zero_std_share": statistics.fmean([r.get("frac_reward_zero_std", 0.0) for r in steps]) if arm != "sft" and steps else None}
