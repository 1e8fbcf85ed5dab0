"""`pivotrl lab run`: the paper's comparison in miniature, from one base model and one set of SFT
trajectories: SFT, PivotRL, end-to-end RL, the two ablations (no pivot filter; exact-match reward)
and SFT then PivotRL.

The protocol (arXiv 2603.21383 trains each method to its best validation point on the same data):
- every choice is made on the dev split: each arm's learning rate by a sweep with the first seed
  (`Preset.learning_rates`), and its checkpoint by dev success measured while it trains (the best
  one kept, within a generous wall-clock cap);
- the test split is evaluated once per arm and seed, at the end, on that checkpoint;
- claims are paired differences with 95% intervals (`lab/report.py`).

Every stage writes its result to `OUT/work/NAME.json` and is skipped when rerun, so an interrupted
run resumes where it stopped; `lab run` started twice on one folder runs two workers. The stage
plan is recomputed from the files on disk each round (`plan`), so it needs no state of its own.
"""

from __future__ import annotations

import json
import random
from collections import Counter
import time
from dataclasses import asdict, replace
from pathlib import Path

from pivotrl.artifacts import write_jsonl
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.evaluate import evaluate_model
from pivotrl.lab.presets import ARMS, LABELS, PRESETS, Preset  # noqa: F401  (the lab's public names)
from pivotrl.lab.report import aggregate, markdown_table, write_results  # noqa: F401
from pivotrl.lab.stages import run_stage
from pivotrl.lab.verifiers import lab_verifier

PIVOT_ARMS = ("pivotrl", "pivotrl_exact", "sft_pivotrl")  # need a profile (no_filter does not)


def run_name(arm: str, lr: float, seed: int) -> str:
    return f"{arm}-lr{lr:g}-s{seed}"


def make_data(preset: Preset, data: Path) -> dict:
    """Expert trajectories (the SFT data and the pivot candidates) and the E2E tasks, train split."""
    trajs, tasks = [], []
    for name in preset.domains:
        dom = get_domain(name)
        rng = random.Random(f"sft:{name}")
        ts = dom.tasks("train", preset.trajectories[name], seed=0)
        tasks += ts
        trajs += [dom.expert(t, rng) for t in ts]
    write_jsonl(data / "train_trajectories.jsonl", trajs)
    write_jsonl(data / "train_tasks.jsonl", tasks)
    return {"trajectories": len(trajs), "tasks": len(tasks)}


def profile(model: str, preset: Preset, work: Path, output: Path) -> dict:
    """The one-off profiling of every candidate state with the frozen `model` (K samples each)."""
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import extract_states
    from pivotrl.pivots.profile import profile_states
    from pivotrl.pivots.select import candidates_from_records
    from pivotrl.sampling import SamplingParams, get_sampler

    states = extract_states(load_trajectories(work / "data" / "train_trajectories.jsonl"))
    recs = profile_states(states, get_sampler("transformers", model=model), lab_verifier(), k=preset.profile_k,
                          params=SamplingParams(preset.profile_k, 1.0, 1.0, preset.max_completion_length),
                          output=output, model_name=model, verifier_name="lab")
    ok = [r for r in recs if not r["skipped"]]
    mixed = sum(r["reward_var"] > 0 for r in ok)
    outcomes = outcomes_by_tag(candidates_from_records(recs), preset.lambda_diff)
    by_domain = Counter()  # the pivots, from the counts by domain/tag (one selection, not two)
    for key, counts in outcomes.items():
        by_domain[key.split("/")[0]] += counts["pivot"]
    return {"model": model, "states": len(recs), "mixed": mixed, "mixed_share": mixed / max(len(ok), 1),
            "mean_reward": sum(r["reward_mean"] for r in ok) / max(len(ok), 1),
            "pivots_by_domain": {d: n for d, n in by_domain.items() if n}, "outcomes_by_tag": outcomes}


def outcomes_by_tag(cands, lambda_diff: float) -> dict:
    """How the K samples at each profiled state came out, counted by domain/tag: all failed (no
    reward variance: nothing for GRPO to learn from at that state), a pivot, mixed with a mean of at
    least lambda_diff, or all passed (the lab's rewards are 0 or 1)."""
    from pivotrl.pivots.select import select

    pivots = {id(c) for c in select(cands, "pivot", lambda_diff=lambda_diff)}
    out: dict = {}
    for c in cands:
        if not c.profiled:
            continue
        kind = ("pivot" if id(c) in pivots else "mixed_above" if c.var > 0 else
                "all_fail" if c.mean <= 0 else "all_pass")
        key = f"{c.state.domain}/{get_domain(c.state.domain).tag(c.state)}"
        out.setdefault(key, dict.fromkeys(("all_fail", "pivot", "mixed_above", "all_pass"), 0))[kind] += 1
    return dict(sorted(out.items()))


class Plan:
    """The stages still to run, from what `work` holds: (stage file, label, function) for the ones
    whose inputs exist; `complete` once every test evaluation is written."""

    def __init__(self, preset: Preset, base_model: str, work: Path):
        self.preset, self.base_model, self.work = preset, base_model, work

    def done(self, stage: str) -> dict | None:
        """The stage's result; None until it has run."""
        path = self.work / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def has(self, stage: str) -> bool:
        return (self.work / f"{stage}.json").exists()

    def forget_if_model_lost(self, arm: str, lr: float, seed: int, chosen: float | None) -> None:
        """A run whose stage file survived but whose model did not (stage files are committed, models
        are not: a run resumed on a fresh checkout) is trained again if its model is still needed:
        for its test evaluation, or as the start of SFT then PivotRL."""
        name = run_name(arm, lr, seed)
        stage = self.work / f"train_{name}.json"
        if lr != chosen or not stage.exists() or not self.lost(name):
            return
        needed = not self.has(f"eval_{name}")
        if arm == "sft" and "sft_pivotrl" in self.preset.arms:
            follow, then = self.preset.learning_rates_of("sft_pivotrl"), self.chosen_lr("sft_pivotrl")
            if seed != self.preset.seeds[0] and then is not None:
                follow = [then]
            needed |= not self.has(f"profile_sft-s{seed}") or any(  # not trained yet, or to train again
                not self.has(f"train_{(after := run_name('sft_pivotrl', x, seed))}")
                or (x == then and self.lost(after) and not self.has(f"eval_{after}")) for x in follow)
        if needed:
            stage.unlink()
            if arm == "sft":  # SFT then PivotRL's pivots come from the model it starts from: profile it again
                (self.work / f"profile_sft-s{seed}.json").unlink(missing_ok=True)

    def lost(self, name: str) -> bool:
        """The run's kept model is not here (a fresh checkout, or never trained)."""
        return not (self.work / name / "best" / "config.json").exists()

    def chosen_lr(self, arm: str) -> float | None:
        """The arm's learning rate: the only one, or the sweep's best dev success (first seed;
        ties: the first listed) once every sweep run is done."""
        lrs = self.preset.learning_rates_of(arm)
        if len(lrs) == 1:
            return lrs[0]
        seed = self.preset.seeds[0]
        devs = [self.done(f"train_{run_name(arm, lr, seed)}") for lr in lrs]
        if any(d is None for d in devs):
            return None
        def score(lr_dev):  # a run with no dev point (no pivots to train on) ranks last
            dev = lr_dev[1].get("best_dev_success")
            return (-1.0 if dev is None else dev, -lrs.index(lr_dev[0]))

        return max(zip(lrs, devs), key=score)[0]

    def start(self, arm: str, seed: int) -> tuple[str, Path | None] | None:
        """Where an arm starts and the profile its pivots come from; None until those exist."""
        work = self.work
        if arm == "sft_pivotrl":  # from the SFT run of the same seed, profiled with it
            lr = self.chosen_lr("sft")
            if lr is None or not self.has(f"train_{run_name('sft', lr, seed)}") or not self.has(f"profile_sft-s{seed}"):
                return None
            return str(work / run_name("sft", lr, seed) / "best"), work / f"profile_sft-s{seed}.jsonl"
        if arm in PIVOT_ARMS:
            return (self.base_model, work / "profile.jsonl") if self.has("profile") else None
        return self.base_model, None

    def stages(self) -> list[tuple[str, str, object]]:
        from functools import partial

        from pivotrl.lab.arms import train_arm

        p, work, out = self.preset, self.work, []
        out.append(("eval_base", "evaluating the base model (test split)",
                    partial(evaluate_model, self.base_model, p.eval)))
        if any(a in PIVOT_ARMS[:2] for a in p.arms):
            out.append(("profile", "profiling the candidates with the base model",
                        partial(profile, self.base_model, p, work, work / "profile.jsonl")))
        for arm in p.arms:
            lrs, chosen = p.learning_rates_of(arm), self.chosen_lr(arm)
            runs = [(lr, p.seeds[0]) for lr in lrs]  # the sweep (or the single rate) with the first seed
            if chosen is not None:
                runs += [(chosen, seed) for seed in p.seeds[1:]]
            for lr, seed in runs:
                start = self.start(arm, seed)
                if start is None:
                    continue
                name = run_name(arm, lr, seed)
                self.forget_if_model_lost(arm, lr, seed, chosen)
                out.append((f"train_{name}", f"training {LABELS[arm]} (lr {lr:g}, seed {seed}, cap {p.seconds_per_arm:.0f}s)",
                            partial(train_arm, arm, seed, lr, p, start[0], work, work / name, start[1])))
                if lr == chosen and self.has(f"train_{name}"):
                    out.append((f"eval_{name}", f"evaluating {LABELS[arm]} (seed {seed}, best dev checkpoint, test split)",
                                partial(evaluate_model, str(work / name / "best"), replace(p.eval, seed=0))))
        if "sft_pivotrl" in p.arms and (lr := self.chosen_lr("sft")) is not None:  # after the runs forgot a lost model
            for seed in p.seeds:
                if self.has(f"train_{run_name('sft', lr, seed)}"):
                    model = str(work / run_name("sft", lr, seed) / "best")
                    out.append((f"profile_sft-s{seed}", f"profiling the candidates with SFT (seed {seed})",
                                partial(profile, model, p, work, work / f"profile_sft-s{seed}.jsonl")))
        # What builds on a trained SFT model (its profile, SFT then PivotRL and its test) goes first:
        # models are not committed, so an SFT model left waiting at the end of a sitting is trained again.
        out.sort(key=lambda s: not s[0].startswith(("profile_sft-", "train_sft_pivotrl-", "eval_sft_pivotrl-")))
        return [s for s in out if not self.has(s[0])]

    def complete(self) -> bool:
        if not self.has("eval_base"):
            return False
        for arm in self.preset.arms:
            lr = self.chosen_lr(arm)
            if lr is None or any(not self.has(f"eval_{run_name(arm, lr, s)}") for s in self.preset.seeds):
                return False
        return True

    def total(self) -> int:
        """Stages in the whole plan, the data included (for a progress bar)."""
        p = self.preset
        n = 2 + bool(any(a in PIVOT_ARMS[:2] for a in p.arms)) + len(p.seeds) * ("sft_pivotrl" in p.arms)
        return n + sum(len(p.learning_rates_of(a)) + 2 * len(p.seeds) - 1 for a in p.arms)

    def results(self, finished_arms_only: bool = False) -> tuple[dict, dict, dict, dict]:
        """(test evaluations, training ledgers, sweeps, profiles) of every arm; with
        `finished_arms_only` (a run still going) of the arms whose every seed has its test evaluation."""
        evals, runs, sweeps = {"base": [self.done("eval_base")]}, {}, {}
        for arm in self.preset.arms:
            lr = self.chosen_lr(arm)
            sweeps[arm] = {rate: (self.done(f"train_{run_name(arm, rate, self.preset.seeds[0])}") or {}).get("best_dev_success")
                           for rate in self.preset.learning_rates_of(arm)}
            if lr is None and finished_arms_only:
                continue
            ran = [self.done(f"train_{run_name(arm, lr, seed)}") for seed in self.preset.seeds]
            tested = [self.done(f"eval_{run_name(arm, lr, seed)}") for seed in self.preset.seeds]
            if finished_arms_only and not (all(ran) and all(tested)):
                continue
            runs[arm], evals[arm] = ran, tested
        profiles = {name: self.done(name) for name in ["profile"] + [f"profile_sft-s{s}" for s in self.preset.seeds]
                    if self.has(name)}
        for name, prof in profiles.items():  # profiles written before the count existed, from their records
            samples = self.work / f"{name}.jsonl"
            if "outcomes_by_tag" not in prof and samples.exists():
                from pivotrl.pivots.select import load_candidates

                prof["outcomes_by_tag"] = outcomes_by_tag(load_candidates(samples), self.preset.lambda_diff)
        return evals, runs, sweeps, profiles


def run_lab(preset: Preset, out_dir: str | Path = "results/lab", base_model: str | None = None, progress=None) -> dict:
    from pivotrl.lab import BASE_MODEL

    base_model = str(base_model or BASE_MODEL)
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "preset.json").write_text(json.dumps(asdict(preset), indent=2, default=str))
    t_start = time.time()
    if not (work / "data" / "train_tasks.jsonl").exists():  # a resumed run on a fresh checkout: the stage
        (work / "data.json").unlink(missing_ok=True)        # file is committed, the data is not (seeded, the same)
    run_stage(work / "data.json", lambda: make_data(preset, work / "data"), progress, "generating expert trajectories")
    plan = Plan(preset, base_model, work)
    # Each round: every stage whose inputs exist, unless another worker holds it (left for later).
    while not plan.complete():
        stages, ran = plan.stages(), False
        if not stages and not any(work.glob("*.lock")):
            raise RuntimeError(f"the lab plan in {work} cannot go on: no stage is ready and no worker holds one")
        for stage, label, fn in stages:
            if run_stage(work / f"{stage}.json", fn, progress, label, wait=False) is not None:
                ran = True
                break  # the plan may have grown (a profile or a sweep just finished): recompute it
        if not ran:
            time.sleep(5)
    results = aggregate(*plan.results(), preset, base_model, time.time() - t_start)
    write_results(results, out)
    return results


def report_lab(preset: Preset, out_dir: str | Path = "results/lab") -> dict:
    """The report of a run still going (or stopped): results.json, table.md and the plots from the
    arms whose every seed has its test evaluation; `pending` names the others."""
    from pivotrl.errors import DataError

    out = Path(out_dir)
    plan = Plan(preset, "", out / "work")
    if not plan.has("eval_base"):
        raise DataError("nothing to report yet: the base model's test evaluation has not run", file=str(out / "work"))
    evals, runs, sweeps, profiles = plan.results(finished_arms_only=True)
    results = aggregate(evals, runs, sweeps, profiles, preset, (plan.done("profile") or {}).get("model", ""), 0.0)
    results["pending"] = [arm for arm in preset.arms if arm not in evals]
    write_results(results, out)
    return results
