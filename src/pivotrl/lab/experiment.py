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

from pivotrl.artifacts import gunzip_copy, gzip_copy, weights_sha256, write_jsonl
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.evaluate import EvalConfig, evaluate_model
from pivotrl.lab.presets import AFTER_SFT, ARMS, LABELS, PRESETS, Preset  # noqa: F401  (the lab's public names)
from pivotrl.lab.report import aggregate, markdown_table, write_results  # noqa: F401
from pivotrl.lab.stages import run_stage
from pivotrl.lab.verifiers import lab_verifier

BASE_PROFILE_ARMS = ("pivotrl", "pivotrl_exact", "pivotrl_refresh")  # need the base's profile (no_filter does not)


def run_name(arm: str, lr: float, seed: int) -> str:
    return f"{arm}-lr{lr:g}-s{seed}"


def make_data(preset: Preset, data: Path, seed: int | None = None) -> dict:
    """Expert trajectories (the SFT data and the pivot candidates) and the E2E tasks, train split.
    `seed`: the draw's own (a preset with `data_per_seed`); None: the one draw every seed shares.
    With `production_order`, a second draw as large is kept apart (`heldout_*`): what SFT then
    PivotRL profiles and SFT then E2E RL trains on, which SFT never trained on."""
    started = time.time()
    trajs, tasks, held_trajs, held_tasks = [], [], [], []
    for name in preset.domains:
        dom = get_domain(name)
        n = preset.trajectories[name]
        rng = random.Random(f"sft:{name}" if seed is None else f"sft:{name}:{seed}")
        drawn = dom.tasks("train", n * (2 if preset.production_order else 1), seed=seed or 0,
                          unseen_templates=preset.eval.unseen_templates)
        tasks += drawn[:n]
        trajs += [dom.expert(t, rng) for t in drawn[:n]]
        held_tasks += drawn[n:]
        held_trajs += [dom.expert(t, rng) for t in drawn[n:]]
    write_jsonl(data / "train_trajectories.jsonl", trajs)
    write_jsonl(data / "train_tasks.jsonl", tasks)
    if preset.production_order:
        write_jsonl(data / "heldout_trajectories.jsonl", held_trajs)
        write_jsonl(data / "heldout_tasks.jsonl", held_tasks)
    seconds = time.time() - started
    if seconds > DEAR_TO_DRAW:  # kept, packed, beside the stage files (the experts of code and repo run pytest)
        for f in data.glob("*.jsonl"):
            gzip_copy(f, data.parent / f"{data.name}.{f.name}.gz")
    return {"trajectories": len(trajs), "tasks": len(tasks), "seed": seed, "heldout_trajectories": len(held_trajs),
            "seconds": seconds}


# seconds: a draw slower than this keeps gzipped copies (lab JSONL: ~20x smaller), committed with the stage
# files, so that a later sitting on a fresh checkout unpacks it instead of drawing it again (code's
# 11,000 experts: ~1.5 h)
DEAR_TO_DRAW = 120.0


def profile(model: str, preset: Preset, trajectories: Path, output: Path) -> dict:
    """The one-off profiling of every candidate state of `trajectories` with the frozen `model` (K samples each)."""
    from pivotrl.data import load_trajectories
    from pivotrl.pivots import extract_states
    from pivotrl.pivots.profile import profile_states
    from pivotrl.pivots.select import candidates_from_records
    from pivotrl.sampling import SamplingParams, get_sampler

    states = extract_states(load_trajectories(trajectories))
    recs = profile_states(states, get_sampler("transformers", model=model), lab_verifier(), k=preset.profile_k,
                          params=SamplingParams(preset.profile_k, 1.0, 1.0, preset.max_completion_length),
                          output=output, model_name=model, verifier_name="lab")
    gzip_copy(output, output.with_name(output.name + ".gz"))  # a later sitting's arms select their pivots from it
    ok = [r for r in recs if not r["skipped"]]
    mixed = sum(r["reward_var"] > 0 for r in ok)
    outcomes = outcomes_by_tag(candidates_from_records(recs), preset.lambda_diff)
    by_domain = Counter()  # the pivots, from the counts by domain/tag (one selection, not two)
    for key, counts in outcomes.items():
        by_domain[key.split("/")[0]] += counts["pivot"]
    return {"model": model, "model_sha256": weights_sha256(model), "states": len(recs), "mixed": mixed,
            "mixed_share": mixed / max(len(ok), 1),
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

    @property
    def all_seeds(self) -> list[int]:
        """The sweep's seed, then the reported ones."""
        return list(dict.fromkeys([self.preset.first_seed, *self.preset.seeds]))

    def data_stage(self, seed: int) -> str:
        return f"data-s{seed}" if self.preset.data_per_seed else "data"

    def data_dir(self, seed: int) -> Path:
        return self.work / self.data_stage(seed)

    def data_ready(self, seed: int) -> bool:
        return self.has(self.data_stage(seed)) and (self.data_dir(seed) / "train_tasks.jsonl").exists()

    def profile_stage(self, seed: int) -> str:
        """The base's profile of a seed's candidates (one for all seeds when they share their data)."""
        return f"profile-s{seed}" if self.preset.data_per_seed else "profile"

    def forget_if_model_lost(self, arm: str, lr: float, seed: int, chosen: float | None) -> None:
        """A run whose stage file survived but whose model did not (stage files are committed, models
        are not: a run resumed on a fresh checkout) is trained again if its model is still needed:
        for its test evaluation, or as the start of an arm after SFT (SFT then PivotRL, then E2E RL)."""
        name = run_name(arm, lr, seed)
        stage = self.work / f"train_{name}.json"
        if lr != chosen or not stage.exists() or not self.lost(name):
            return
        needed = seed in self.preset.seeds and not self.has(f"eval_{name}")
        if arm == "sft":
            for after in (a for a in AFTER_SFT if a in self.preset.arms):
                follow, then = self.preset.learning_rates_of(after), self.chosen_lr(after)
                if seed != self.preset.first_seed and then is not None:
                    follow = [then]
                needed |= any(  # not trained yet, or to train again
                    not self.has(f"train_{(run := run_name(after, x, seed))}")
                    or (x == then and self.lost(run) and seed in self.preset.seeds and not self.has(f"eval_{run}"))
                    for x in follow)
            needed |= "sft_pivotrl" in self.preset.arms and not self.has(f"profile_sft-s{seed}")
        if needed:  # (an SFT profile stays until the model is back: `forget_stale_sft_profiles`)
            stage.unlink()

    def forget_stale_sft_profiles(self) -> None:
        """SFT then PivotRL's pivots come from the model it starts from. An SFT model trained again
        (a fresh checkout) whose weights differ from the ones its profile recorded, or a profile that
        recorded none, is profiled again; the same weights keep it (SFT on one process, seeded, gives
        the same bytes again: see results/lab-regime/README.md)."""
        lr = self.chosen_lr("sft")
        for seed in self.all_seeds if lr is not None else ():
            name, stage = run_name("sft", lr, seed), f"profile_sft-s{seed}"
            prof = self.done(stage)
            if prof is None or not self.has(f"train_{name}") or self.lost(name):
                continue
            if prof.get("model_sha256") != weights_sha256(self.work / name / "best"):
                # the records too: profiling resumes from them, and they are of the other model
                for path in self.work.glob(f"{stage}.*"):
                    path.unlink()

    def lost(self, name: str) -> bool:
        """The run's kept model is not here (a fresh checkout, or never trained)."""
        return not (self.work / name / "best" / "config.json").exists()

    def chosen_lr(self, arm: str) -> float | None:
        """The arm's learning rate: the only one, or the sweep's best dev success (the sweep's seed;
        ties: the first listed) once every sweep run is done."""
        lrs = self.preset.learning_rates_of(arm)
        if len(lrs) == 1:
            return lrs[0]
        devs = [self.done(f"train_{run_name(arm, lr, self.preset.first_seed)}") for lr in lrs]
        if any(d is None for d in devs):
            return None
        def score(lr_dev):  # a run with no dev point (no pivots to train on) ranks last
            dev = lr_dev[1].get("best_dev_success")
            return (-1.0 if dev is None else dev, -lrs.index(lr_dev[0]))

        return max(zip(lrs, devs), key=score)[0]

    def start(self, arm: str, seed: int) -> tuple[str, Path | None] | None:
        """Where an arm starts and the profile its pivots come from; None until those exist."""
        work = self.work
        if self.preset.data_per_seed and not self.data_ready(seed):  # (one shared draw is made before any stage)
            return None
        if arm in AFTER_SFT:  # from the SFT run of the same seed (SFT then PivotRL: profiled with it)
            lr = self.chosen_lr("sft")
            if lr is None or not self.has(f"train_{run_name('sft', lr, seed)}"):
                return None
            if arm == "sft_pivotrl" and not self.has(f"profile_sft-s{seed}"):
                return None
            return str(work / run_name("sft", lr, seed) / "best"), (
                work / f"profile_sft-s{seed}.jsonl" if arm == "sft_pivotrl" else None)
        if arm in BASE_PROFILE_ARMS:
            stage = self.profile_stage(seed)
            return (self.base_model, work / f"{stage}.jsonl") if self.has(stage) else None
        return self.base_model, None

    def forget_lost_data(self) -> None:
        """A data stage whose files are gone (stage files are committed, the data is not; it is seeded
        and drawn the same again) is unpacked from its gzipped copies where a slow draw kept them, else
        run again; a profile whose file is gone is unpacked from the copy `profile` keeps beside it."""
        for seed in self.all_seeds:
            stage = self.data_stage(seed)
            if self.has(stage) and not self.data_ready(seed):
                for packed in self.work.glob(f"{stage}.*.jsonl.gz"):
                    gunzip_copy(packed, self.data_dir(seed) / packed.name[len(stage) + 1:-len(".gz")])
                if not self.data_ready(seed):
                    (self.work / f"{stage}.json").unlink()
        for packed in self.work.glob("profile*.jsonl.gz"):
            if not (plain := packed.with_suffix("")).exists():
                gunzip_copy(packed, plain)

    def stages(self) -> list[tuple[str, str, object]]:
        from functools import partial

        from pivotrl.lab.arms import train_arm

        p, work, out = self.preset, self.work, {}
        self.forget_lost_data()
        self.forget_stale_sft_profiles()
        out["eval_base"] = ("evaluating the base model (test split)", partial(evaluate_model, self.base_model, p.eval))
        for seed in self.all_seeds:
            data = self.data_dir(seed)
            if p.data_per_seed and not self.data_ready(seed):
                out[self.data_stage(seed)] = (f"drawing seed {seed}'s expert trajectories",
                                              partial(make_data, p, data, seed))
            elif any(a in BASE_PROFILE_ARMS for a in p.arms):
                out.setdefault(self.profile_stage(seed), (
                    "profiling the candidates with the base model" + (f" (seed {seed}'s data)" if p.data_per_seed else ""),
                    partial(profile, self.base_model, p, data / "train_trajectories.jsonl",
                            work / f"{self.profile_stage(seed)}.jsonl")))
        if p.gate_on_data:
            self.add_gates(out)
        for arm in p.arms:
            chosen = self.chosen_lr(arm)
            for lr, seed in p.run_seeds(arm, chosen):
                start = self.start(arm, seed)
                if start is None:
                    continue
                name = run_name(arm, lr, seed)
                self.forget_if_model_lost(arm, lr, seed, chosen)
                out[f"train_{name}"] = (f"training {LABELS[arm]} (lr {lr:g}, seed {seed}, cap {p.seconds_per_arm:.0f}s)",
                                        partial(train_arm, arm, seed, lr, p, start[0], self.data_dir(seed), work / name,
                                                start[1]))
                if lr == chosen and seed in p.seeds and self.has(f"train_{name}"):
                    out[f"eval_{name}"] = (f"evaluating {LABELS[arm]} (seed {seed}, best dev checkpoint, test split)",
                                           partial(evaluate_model, str(work / name / "best"), replace(p.eval, seed=0)))
        if "sft_pivotrl" in p.arms and (lr := self.chosen_lr("sft")) is not None:  # after the runs forgot a lost model
            for seed in self.all_seeds:
                if self.has(f"train_{run_name('sft', lr, seed)}"):
                    model = str(work / run_name("sft", lr, seed) / "best")
                    held = "heldout_trajectories.jsonl" if p.production_order else "train_trajectories.jsonl"
                    out[f"profile_sft-s{seed}"] = (
                        f"profiling the candidates with SFT (seed {seed}" + (", trajectories SFT never saw)" if p.production_order else ")"),
                        partial(profile, model, p, self.data_dir(seed) / held, work / f"profile_sft-s{seed}.jsonl"))
        # What builds on a trained SFT model (its profile, the arms after SFT and their tests) goes first:
        # models are not committed, so an SFT model left waiting at the end of a sitting is trained again.
        # Then the gates (minutes each): whether the comparison's data are in the regime is known early.
        after = ("profile_sft-", *(f"{kind}_{a}-" for kind in ("train", "eval") for a in AFTER_SFT))
        ordered = sorted(out.items(), key=lambda kv: (not kv[0].startswith(after), not kv[0].startswith("gate")))
        return [(stage, label, fn) for stage, (label, fn) in ordered if not self.has(stage)]

    def add_gates(self, out: dict) -> None:
        """The regime gate on the comparison's own data: the base on the dev tasks the arms are chosen
        on (once), then on each seed's profile (`gate-sN`), as soon as those exist."""
        from functools import partial

        from pivotrl.lab.gate import gate_on_comparison

        p = self.preset
        out["gate_dev"] = ("the regime gate: the base on the dev tasks", partial(
            evaluate_model, self.base_model, EvalConfig(p.dev_tasks, 0, 0, 0, p.eval.max_tokens, split="dev",
                                                        domains=p.domains, unseen_templates=p.eval.unseen_templates)))
        dev = self.done("gate_dev")
        for seed in self.all_seeds:
            prof = self.profile_stage(seed)
            if dev is not None and self.has(prof):
                out[f"gate-s{seed}"] = (f"the regime gate on seed {seed}'s profile", partial(
                    gate_on_comparison, self.base_model, self.work / f"{prof}.jsonl", dev, p.lambda_diff,
                    max_tokens=p.max_completion_length, seed=seed))

    def regime(self) -> dict:
        """Whether the comparison was in the regime it is judged in: each seed's gate on its own data
        (a domain that fails there is reported as failing) and each run's visits per unit (pivots,
        tasks, SFT trajectories) at its kept checkpoint and end, against the registered bounds."""
        p = self.preset
        gates = {s: g for s in self.all_seeds if (g := self.done(f"gate-s{s}"))}
        runs = {}
        for arm in p.arms:
            lr = self.chosen_lr(arm)
            for seed in p.seeds if lr is not None else ():
                figures = (self.done(f"train_{run_name(arm, lr, seed)}") or {}).get("regime")
                if figures:
                    runs.setdefault(arm, {})[seed] = {**figures, **regime_bounds(arm, p, figures)}
        return {"gates": {s: {"domains": g["domains"], "checks": [c for c in g["checks"] if c["domain"]]}
                          for s, g in gates.items()}, "runs": runs}

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
        p, seeds = self.preset, self.all_seeds
        n = 1 + (len(seeds) if p.data_per_seed else 1)
        n += (len(seeds) if p.data_per_seed else 1) * any(a in BASE_PROFILE_ARMS for a in p.arms)
        n += len(seeds) * ("sft_pivotrl" in p.arms)
        n += (1 + len(seeds)) * p.gate_on_data  # gate_dev, then a gate per seed's profile
        later = [s for s in p.seeds if s != p.first_seed]
        return n + sum(len(p.learning_rates_of(a)) + len(later) + len(p.seeds) for a in p.arms)

    def base_profile(self) -> dict | None:
        """The base's profile (the sweep seed's when each seed has its own)."""
        return self.done(self.profile_stage(self.preset.first_seed))

    def results(self, finished_arms_only: bool = False) -> tuple[dict, dict, dict, dict]:
        """(test evaluations, training ledgers, sweeps, profiles) of every arm; with
        `finished_arms_only` (a run still going) of the arms whose every seed has its test evaluation."""
        evals, runs, sweeps = {"base": [self.done("eval_base")]}, {}, {}
        for arm in self.preset.arms:
            lr = self.chosen_lr(arm)
            sweeps[arm] = {rate: (self.done(f"train_{run_name(arm, rate, self.preset.first_seed)}") or {}).get("best_dev_success")
                           for rate in self.preset.learning_rates_of(arm)}
            if lr is None and finished_arms_only:
                continue
            ran = [self.done(f"train_{run_name(arm, lr, seed)}") for seed in self.preset.seeds]
            tested = [self.done(f"eval_{run_name(arm, lr, seed)}") for seed in self.preset.seeds]
            if finished_arms_only and not (all(ran) and all(tested)):
                continue
            runs[arm], evals[arm] = ran, tested
        names = list(dict.fromkeys(self.profile_stage(s) for s in self.all_seeds))
        profiles = {name: self.done(name) for name in names + [f"profile_sft-s{s}" for s in self.all_seeds]
                    if self.has(name)}
        for name, prof in profiles.items():  # profiles written before the count existed, from their records
            samples = self.work / f"{name}.jsonl"
            if "outcomes_by_tag" not in prof and samples.exists():
                from pivotrl.pivots.select import load_candidates

                prof["outcomes_by_tag"] = outcomes_by_tag(load_candidates(samples), self.preset.lambda_diff)
        return evals, runs, sweeps, profiles


REGIME_VISITS_KEPT = 2.0  # registered: PivotRL visits each pivot at most ~2 times at its kept checkpoint


def regime_bounds(arm: str, preset: Preset, figures: dict) -> dict:
    """`in_regime` for a run, by the registered bounds: the PivotRL arms at most ~2 visits per pivot
    at the kept checkpoint and the cap at the end; SFT at most `sft_epochs` (its cap). E2E RL has no
    bound (its tasks are its data)."""
    if arm == "sft":
        return {"in_regime": figures["visits_end"] <= preset.sft_epochs + 1e-9}
    if "pivotrl" in arm and arm != "pivotrl_no_filter":
        cap = preset.pivot_visits_cap or float("inf")
        return {"in_regime": figures["visits_kept"] <= REGIME_VISITS_KEPT and figures["visits_end"] <= cap + 1e-9}
    return {}


def run_lab(preset: Preset, out_dir: str | Path = "runs/lab", base_model: str | None = None, progress=None) -> dict:
    from pivotrl.lab import BASE_MODEL

    base_model = str(base_model or BASE_MODEL)
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "preset.json").write_text(json.dumps(asdict(preset), indent=2, default=str))
    t_start = time.time()
    plan = Plan(preset, base_model, work)
    if not preset.data_per_seed:  # one draw that every stage needs (with a draw per seed, they are stages)
        plan.forget_lost_data()
        run_stage(work / "data.json", lambda: make_data(preset, work / "data"), progress, "generating expert trajectories")
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
    if preset.data_per_seed or preset.gate_on_data:
        results["regime"] = plan.regime()
    write_results(results, out)
    return results


def report_lab(preset: Preset, out_dir: str | Path = "runs/lab") -> dict:
    """The report of a run still going (or stopped): results.json, table.md and the plots from the
    arms whose every seed has its test evaluation; `pending` names the others."""
    from pivotrl.errors import DataError

    out = Path(out_dir)
    plan = Plan(preset, "", out / "work")
    if not plan.has("eval_base"):
        raise DataError("nothing to report yet: the base model's test evaluation has not run", file=str(out / "work"))
    evals, runs, sweeps, profiles = plan.results(finished_arms_only=True)
    results = aggregate(evals, runs, sweeps, profiles, preset, (plan.base_profile() or {}).get("model", ""), 0.0)
    results["pending"] = [arm for arm in preset.arms if arm not in evals]
    if preset.data_per_seed or preset.gate_on_data:
        results["regime"] = plan.regime()
    write_results(results, out)
    return results
