"""The committed base model, lab evaluation, and the lab pipeline end to end at a tiny size."""

import gzip
import json
import shutil

import pytest
from typer.testing import CliRunner

from pivotrl.cli import app
from pivotrl.lab import BASE_MODEL, get_domain
from pivotrl.lab.domains import IN_DOMAIN

pytestmark = pytest.mark.skipif(not (BASE_MODEL / "model.safetensors").exists(), reason="no committed base model")


def test_the_committed_base_loads_and_completes_episodes():
    from pivotrl.eval.episodes import run_episodes
    from pivotrl.sampling import get_sampler

    sampler = get_sampler("transformers", model=str(BASE_MODEL))
    for name in IN_DOMAIN:
        dom = get_domain(name)
        (ep,) = run_episodes(sampler, dom.environment, dom.tasks("test", 1, seed=4), max_turns=6, max_tokens=64)
        assert ep.turns >= 1 and ep.reward in (0.0, 1.0)
        assert ep.messages[-1]["role"] in ("assistant", "tool")


def test_lab_eval_reports_every_measure(tmp_path):
    from typer.testing import CliRunner

    from pivotrl.cli import app

    out = tmp_path / "eval.json"
    r = CliRunner().invoke(app, ["lab", "eval", "--model", str(BASE_MODEL), "--tasks", "2", "--ood", "2",
                                 "--variant", "2", "--next-action", "3", "-o", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert set(res["in_domain"]) == set(IN_DOMAIN)
    assert {"basic_arithmetic", "letter_counting", "spell_backward", "word_sequence_reversal",
            "tooluse_variant"} <= set(res["ood"])
    assert all(0.0 <= v <= 1.0 for v in list(res["in_domain"].values()) + list(res["ood"].values()))


def test_the_lab_pipeline_runs_end_to_end_and_resumes(tmp_path):
    from pivotrl.lab.experiment import ARMS, PRESETS, Plan, run_lab

    stages = []
    preset = PRESETS["tiny"]
    results = run_lab(preset, tmp_path, progress=stages.append)
    for name in ("results.json", "table.md", "success_vs_cost.png", "in_domain_vs_ood.png"):
        assert (tmp_path / name).exists()
    assert set(results["table"]) == {"base", *ARMS}
    work = tmp_path / "work"
    # the protocol: every swept learning rate trained on dev; only the chosen one evaluated on test
    for arm in ARMS:
        lrs = preset.learning_rates_of(arm)
        chosen = results["table"][arm]["learning_rate"]
        assert chosen in lrs and set(results["sweeps"][arm]) == set(lrs)
        for lr in lrs:
            assert (work / f"train_{arm}-lr{lr:g}-s0.json").exists()
            assert (work / f"eval_{arm}-lr{lr:g}-s0.json").exists() == (lr == chosen)
        devs = {lr: d for lr, d in results["sweeps"][arm].items() if d is not None}
        if len(devs) == len(lrs) > 1:  # the best dev success wins (ties: the first listed)
            assert devs[chosen] == max(devs.values()) and all(devs[lr] < devs[chosen] for lr in lrs[:lrs.index(chosen)])
    for run in results["runs"]["pivotrl"]:  # dev measured at step 0 and later; the best one kept and evaluated
        assert run["curve"][0]["step"] == 0 and run["best_dev_success"] == max(c["eval_success"] for c in run["curve"])
    assert (work / f"pivotrl-lr{results['table']['pivotrl']['learning_rate']:g}-s0" / "best" / "config.json").exists()
    # every run's per-step ledger archived beside the results
    archived = {p.name.removesuffix(".jsonl.gz"): p for p in (tmp_path / "ledgers").glob("*.jsonl.gz")}
    assert set(archived) == {p.parent.name for p in work.glob("*/ledger.jsonl")} and len(archived) >= len(ARMS)
    name = f"pivotrl-lr{results['table']['pivotrl']['learning_rate']:g}-s0"
    assert gzip.decompress(archived[name].read_bytes()) == (work / name / "ledger.jsonl").read_bytes()
    evals = json.loads((work / "eval_base.json").read_text())
    assert evals["split"] == "test" and all(len(evals["episodes"][d]) == preset.eval.tasks_per_domain for d in IN_DOMAIN)
    pivot = results["table"]["pivotrl"]["cost"]
    assert pivot["profiling_turns"]["mean"] > 0  # PivotRL is charged its profiling
    assert results["table"]["pivotrl_no_filter"]["cost"]["profiling_turns"]["mean"] == 0  # it needs none
    assert results["table"]["sft"]["cost"]["rollout_turns"]["mean"] == 0
    assert results["table"]["e2e"]["cost"]["rollout_turns"]["mean"] > 0
    table = (tmp_path / "table.md").read_text()
    assert "PivotRL, exact-match reward" in table and "SFT then PivotRL" in table and "verdict" in table
    assert "OOD reasoning avg" in table and "renamed-tools variant" in table
    row = next(line for line in table.splitlines() if line.startswith("| SFT then PivotRL |"))
    untrained = all(run.get("no_pivots") for run in results["runs"]["sft_pivotrl"])
    assert ("no pivots" in row) == untrained == ("no pivots" in results["claims"]["sft_pivotrl_vs_sft_in_domain"]["verdict"])
    sweep_table = table[table.index("| method | learning rate | best dev success"):]
    swept = [line for line in sweep_table.splitlines() if line.startswith("| SFT then PivotRL |")]
    assert swept and all(line.endswith("| - (no pivots) |") == untrained for line in swept)
    assert sum(line.endswith("| yes |") for line in swept) == (0 if untrained else 1)
    claim = results["claims"]["pivotrl_vs_sft_in_domain"]
    assert claim["per_seed"] == [results["table"]["pivotrl"]["in_domain_mean"]["mean"]
                                 - results["table"]["sft"]["in_domain_mean"]["mean"]]
    assert results["machine"]["cpus"] >= 1
    assert Plan(preset, "", work).complete() and len(stages) == Plan(preset, "", work).total()
    again = []
    run_lab(preset, tmp_path, progress=again.append)
    assert all("skipped" in s for s in again) and len(again) == 1  # only the data stage is even asked
    # a fresh checkout of a committed run has its stage files, not its data: regenerated, the same
    import shutil

    data = (work / "data" / "train_trajectories.jsonl").read_bytes()
    shutil.rmtree(work / "data")
    regenerated = []
    run_lab(preset, tmp_path, progress=regenerated.append)
    assert regenerated == ["generating expert trajectories"] and (work / "data" / "train_trajectories.jsonl").read_bytes() == data
    # an arm stopped mid-run (its folder and ledger there, no stage result) is trained again from the start
    e2e = f"e2e-lr{results['table']['e2e']['learning_rate']:g}-s0"
    for stage in ("train", "eval"):
        (work / f"{stage}_{e2e}.json").unlink()
    (work / e2e / "best" / "stale.txt").write_text("from the stopped attempt")
    rerun = []
    run_lab(preset, tmp_path, progress=rerun.append)
    assert [s.split(" (")[0] for s in rerun[1:]] == ["training E2E RL", "evaluating E2E RL"]
    assert (work / f"eval_{e2e}.json").exists() and not (work / e2e / "best" / "stale.txt").exists()
    # where GRPO can learn: every profiled state counted once by domain/tag, pivots as select() keeps them
    prof = results["profiles"]["profile"]
    outcomes = prof["outcomes_by_tag"]
    assert sum(sum(c.values()) for c in outcomes.values()) == prof["states"]
    from collections import Counter

    from pivotrl.pivots.select import load_candidates, select

    picked = select(load_candidates(work / "profile.jsonl"), "pivot", lambda_diff=preset.lambda_diff)
    assert prof["pivots_by_domain"] == dict(Counter(c.state.domain for c in picked))
    for domain, n in prof["pivots_by_domain"].items():
        assert sum(c["pivot"] for k, c in outcomes.items() if k.startswith(domain + "/")) == n
    assert "all fail" in table and all(k.split("/")[1] in ("decision", "copy") for k in outcomes)
    stage = json.loads((work / "profile.json").read_text())  # a profile written before the count existed
    del stage["outcomes_by_tag"]
    (work / "profile.json").write_text(json.dumps(stage))
    assert Plan(preset, "", work).results()[3]["profile"]["outcomes_by_tag"] == outcomes
    # a run not finished yet: `lab report` tells what the finished arms show and names the others
    exact_lr = results["table"]["pivotrl_exact"]["learning_rate"]
    (work / f"eval_pivotrl_exact-lr{exact_lr:g}-s0.json").unlink()
    r = CliRunner().invoke(app, ["lab", "report", "--preset", "tiny", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    partial = json.loads((tmp_path / "results.json").read_text())
    assert partial["pending"] == ["pivotrl_exact"] and set(partial["table"]) == {"base", *ARMS} - {"pivotrl_exact"}
    assert partial["table"]["sft"] == json.loads(json.dumps(results["table"]["sft"]))
    assert "not finished yet" in r.output and "pivotrl_exact" in r.output


def test_the_data_regime_machinery_end_to_end(tmp_path, monkeypatch):
    """The `regime` preset's protocol at a tiny size: each seed draws its own data; the sweep runs on
    a seed that is not reported (never test-evaluated); SFT then PivotRL is profiled, and SFT then E2E
    RL trains, on a second draw SFT never saw; PivotRL stops at its visit cap and SFT at its epochs;
    the gate is recomputed on each seed's profile; every run stores where it stood in the regime."""
    from dataclasses import replace

    from pivotrl.data import load_trajectories
    from pivotrl.lab.experiment import PRESETS, run_lab, run_name
    from pivotrl.pivots.select import load_candidates

    monkeypatch.setattr("pivotrl.lab.experiment.DEAR_TO_DRAW", -1.0)  # every draw keeps its packed copy
    tiny = PRESETS["tiny"]
    preset = replace(tiny, seeds=[1], sweep_seed=100, data_per_seed=True, production_order=True, sft_epochs=2.0,
                     pivot_visits_cap=1.0, gate_on_data=True, learning_rates={"sft": [2e-4], "rl": [2e-4]},
                     arms=("sft", "pivotrl", "sft_pivotrl", "sft_e2e", "pivotrl_refresh"),
                     trajectories={"tooluse": 4, "code": 3},
                     eval=replace(tiny.eval, domains=("tooluse", "code"), unseen_templates=True, unseen_ood=True))
    results = run_lab(preset, tmp_path)
    work = tmp_path / "work"
    ids = {}
    for seed in (100, 1):
        data = work / f"data-s{seed}"
        ids[seed] = {name: {t["id"] for t in map(json.loads, (data / f"{name}_tasks.jsonl").read_text().splitlines())}
                     for name in ("train", "heldout")}
        assert len(ids[seed]["train"]) == 7 and len(ids[seed]["heldout"]) == 7
        assert not ids[seed]["train"] & ids[seed]["heldout"]
    assert ids[100]["train"] != ids[1]["train"]  # each seed its own draw
    # SFT then PivotRL's pivots come from the draw SFT never trained on
    held = {t.id for t in load_trajectories(work / "data-s1" / "heldout_trajectories.jsonl")}
    assert {c.state.trajectory_id for c in load_candidates(work / "profile_sft-s1.jsonl")} <= held
    # ... and record the weights of the model they came from (a fresh checkout trains SFT again)
    sft_sha = json.loads((work / f"train_{run_name('sft', 2e-4, 1)}.json").read_text())["kept_model_sha256"]
    assert json.loads((work / "profile_sft-s1.json").read_text())["model_sha256"] == sft_sha is not None
    for arm in preset.arms:
        assert (work / f"train_{run_name(arm, 2e-4, 100)}.json").exists()  # the sweep's seed trains ...
        assert not (work / f"eval_{run_name(arm, 2e-4, 100)}.json").exists()  # ... and is never tested
        assert (work / f"eval_{run_name(arm, 2e-4, 1)}.json").exists()
    runs = results["regime"]["runs"]
    assert set(runs) == set(preset.arms) and all(list(r) == [1] for r in runs.values())
    sft, rl = runs["sft"][1], runs["sft_pivotrl"][1]
    assert sft["visits_end"] == pytest.approx(2.0) and sft["in_regime"]  # its epoch cap, whole epochs
    # a run's units are its profile's pivots (none, for a base whose outcomes are never mixed, is reported as 0)
    from pivotrl.pivots.select import select

    for arm, profile in (("pivotrl", "profile-s1.jsonl"), ("sft_pivotrl", "profile_sft-s1.jsonl")):
        pivots = select(load_candidates(work / profile), "pivot", lambda_diff=preset.lambda_diff)
        assert runs[arm][1]["units"] == len(pivots)
    assert rl["units"] >= 1 and rl["visits_end"] <= 1.0 + preset.prompts_per_step / rl["units"]  # stopped at the cap
    assert "zero_std_by_interval" in rl and all(0 <= x["share"] <= 1 for x in rl["zero_std_by_interval"])
    assert set(results["regime"]["gates"]) == {100, 1}
    gate = json.loads((work / "gate-s1.json").read_text())
    assert gate["profile"].endswith("profile-s1.jsonl") and set(gate["domains"]) == {"tooluse", "code"}
    assert all("margin_se" in c for c in gate["checks"] if c["criterion"].endswith("all-fail share"))
    assert "The regime gate on each seed's data" in (tmp_path / "table.md").read_text()
    # OOD items no base pretrained on (at one item a generator, none is short); test tasks of templates
    # training never plants
    assert json.loads((work / f"eval_{run_name('sft', 2e-4, 1)}.json").read_text())["ood_left_out"] == []
    from pivotrl.lab.domains.base import held_out_template
    from pivotrl.lab.domains.code import bug_templates

    train_code = [t for t in map(json.loads, (work / "data-s1" / "train_tasks.jsonl").read_text().splitlines())
                  if t["domain"] == "code"]
    assert train_code and not any(held_out_template(x) for t in train_code for x in bug_templates(t))
    # a fresh checkout holds the stage files and the gzipped copies, not the profiles and data they pack
    import shutil

    from pivotrl.lab.experiment import Plan

    def files():
        return {str(p.relative_to(work)): p.read_bytes() for p in [*work.glob("profile*.jsonl"), *work.glob("data-s*/*.jsonl")]}

    kept = files()
    assert len(kept) == 4 + 2 * 4 and all((work / f"{name}.gz").exists() for name in kept if name.startswith("profile"))
    for name in kept:
        (work / name).unlink(missing_ok=True)
    shutil.rmtree(work / "data-s1")
    Plan(preset, "base", work).forget_lost_data()
    assert files() == kept and (work / "data-s1.json").exists()


def test_the_gates_come_before_the_other_seeds_profiles(tmp_path):
    """The regime gate (minutes) is planned as soon as it can run, ahead of the profiles (an hour
    each at the regime's size): whether a domain's data are in the regime is known early."""
    from dataclasses import replace

    from pivotrl.lab.experiment import PRESETS, Plan

    preset = replace(PRESETS["tiny"], seeds=[1, 2], sweep_seed=100, data_per_seed=True, gate_on_data=True,
                     arms=("sft", "pivotrl"))
    work = tmp_path / "work"
    for seed in (100, 1, 2):
        (work / f"data-s{seed}").mkdir(parents=True)
        (work / f"data-s{seed}" / "train_tasks.jsonl").write_text("")
        (work / f"data-s{seed}.json").write_text("{}")
    (work / "profile-s100.json").write_text("{}")
    (work / "eval_base.json").write_text("{}")
    names = [name for name, _, _ in Plan(preset, "base", work).stages()]
    assert names[0] == "gate_dev" and names.index("gate_dev") < names.index("profile-s1") < names.index("profile-s2")
    (work / "gate_dev.json").write_text(json.dumps({"in_domain": {}}))
    names = [name for name, _, _ in Plan(preset, "base", work).stages()]
    assert names[0] == "gate-s100" and "gate-s1" not in names  # seed 1's gate waits for its profile


def test_a_stage_another_live_worker_holds_is_left_for_later_and_a_dead_ones_lock_is_taken_over(tmp_path):
    import subprocess
    import sys

    from pivotrl.lab.experiment import run_stage

    path = tmp_path / "stage.json"
    lock = tmp_path / "stage.json.lock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(str(other.pid))
        assert run_stage(path, lambda: {"ran": 1}, wait=False) is None  # a live worker holds it
        assert not path.exists()
    finally:
        other.kill()
        other.wait()
    # the holder is gone (killed mid-stage): its lock no longer blocks the stage
    assert run_stage(path, lambda: {"ran": 2}, wait=False) == {"ran": 2}
    assert not lock.exists()
    assert run_stage(path, lambda: {"ran": 3}) == {"ran": 2}  # done before: read back, not rerun


def test_a_failing_stage_releases_its_lock(tmp_path):
    from pivotrl.lab.experiment import run_stage

    def boom():
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError):
        run_stage(tmp_path / "s.json", boom)
    assert not (tmp_path / "s.json.lock").exists() and not (tmp_path / "s.json").exists()


def test_cost_is_counted_to_the_lower_best_dev_point_and_only_beyond_three_standard_errors():
    from pivotrl.lab.report import cost_to_match

    def run(*points, profiling=0):
        return {"curve": [{"rollout_turns": t, "wall_clock_s": t / 10, "eval_success": s} for t, s in points],
                "profiling": {"rollout_turns": profiling, "wall_clock_s": 5.0}}

    # 100 dev episodes, base at 10%: add-one SE sqrt(11/102 * 91/102 / 100) = 0.031, so a target needs >= 0.193
    runs = {"pivotrl": [run((0, 0.1), (100, 0.2), (200, 0.35), profiling=50),  # its best above E2E's: E2E's is the target
                        run((0, 0.1), (100, 0.25), (300, 0.3)),                 # its best below E2E's: its own is
                        run((0, 0.1), (100, 0.18))],                             # the lower best within 3 SE: no target
            "e2e": [run((0, 0.1), (400, 0.15), (800, 0.25), (900, 0.2)), run((0, 0.1), (600, 0.31), (900, 0.2)),
                    run((0, 0.1), (500, 0.4))]}
    first, second, third = cost_to_match(runs, dev_episodes=100)
    assert first["matched"] and first["matched_dev"] == 0.25 and first["e2e_turns"] == 800
    assert first["pivotrl_turns"] == 200 and first["turns_ratio"] == 4.0 and first["turns_ratio_with_profiling"] == 800 / 250
    assert first["seconds_ratio"] == 4.0 and first["seconds_ratio_with_profiling"] == 80 / 25
    assert second["matched_dev"] == 0.3 and second["pivotrl_turns"] == 300 and second["e2e_turns"] == 600
    assert not third["matched"] and "turns_ratio" not in third
    assert third["dev_se"] == pytest.approx((11 / 102 * 91 / 102 / 100) ** 0.5)
    zero = cost_to_match({"pivotrl": [run((0, 0.0), (10, 0.01))], "e2e": [run((0, 0.0), (10, 0.01))]}, 100)[0]
    assert zero["dev_se"] > 0 and not zero["matched"]  # one success in 100 is not a gain over a base at 0%


def test_cost_from_sft_is_its_own_row_and_a_flat_e2e_makes_the_claim_not_testable():
    """Claim 3 from the SFT checkpoint (SFT then PivotRL against SFT then E2E RL) is counted apart from
    the base's; where E2E RL never rose three standard errors above its start in most seeds, the
    verdict says the claim could not be tested, not that PivotRL was cheaper or dearer."""
    from pivotrl.lab.report import cost_to_match, cost_verdict

    def run(*points):
        return {"curve": [{"rollout_turns": t, "wall_clock_s": t / 10, "eval_success": s} for t, s in points]}

    rising, flat = run((0, 0.1), (800, 0.4)), run((0, 0.1), (800, 0.12))
    runs = {"pivotrl": [run((0, 0.1), (100, 0.4))] * 3, "e2e": [rising, flat, flat],
            "sft_pivotrl": [run((0, 0.3), (50, 0.6))] * 3, "sft_e2e": [run((0, 0.3), (400, 0.6))] * 3}
    rows = cost_to_match(runs, dev_episodes=100, seeds=[1, 2, 3])
    base = [r for r in rows if r["start"] == "base"]
    sft = [r for r in rows if r["start"] == "sft"]
    assert [r["seed"] for r in base] == [r["seed"] for r in sft] == [1, 2, 3]
    assert [r["e2e_rose"] for r in base] == [True, False, False]
    assert cost_verdict(base).startswith("not testable: E2E RL never rose") and "2 of 3" in cost_verdict(base)
    assert all(r["matched"] and r["turns_ratio"] == 8.0 for r in sft)
    assert cost_verdict(sft).startswith("3 of 3 matched seeds at 4x or more")


def test_the_outcomes_table_names_whose_model_made_each_profile():
    from pivotrl.lab.report import outcomes_table

    counts = {"all_fail": 1, "pivot": 2, "mixed_above": 3, "all_pass": 4}
    profiles = {name: {"outcomes_by_tag": {"search/copy": counts}}
                for name in ("profile", "profile-s100", "profile_sft-s100", "profile-s2", "profile_sft-s2")}
    rows = [line.split(" | ")[0].lstrip("| ") for line in outcomes_table({"profiles": profiles}).splitlines()[4:]]
    assert rows == ["base", "base, seed 100", "SFT, seed 100", "base, seed 2", "SFT, seed 2"]


def test_paired_intervals_and_verdicts():
    from pivotrl.lab.report import mean_interval, paired, verdict

    iv = mean_interval([0.1, 0.2, 0.3])  # t with 2 degrees of freedom: 4.303
    assert iv["mean"] == pytest.approx(0.2) and iv["low"] == pytest.approx(0.2 - 4.303 * 0.1 / 3 ** 0.5) and iv["low"] < 0
    assert verdict(iv).startswith("not resolved")
    assert verdict(mean_interval([0.2, 0.25, 0.3])) == "holds (interval above 0)"
    assert verdict(mean_interval([-0.2, -0.25, -0.3])) == "does not hold (interval below 0)"
    assert verdict(mean_interval([-0.2, -0.25, -0.3]), "-") == "holds (interval below 0)"  # a claimed loss
    assert verdict(mean_interval([0.2, 0.25, 0.3]), "-") == "does not hold (interval above 0)"
    assert verdict(mean_interval([0.0, 0.005, 0.01]), "keeps").startswith("holds")  # no drop beyond 2 points
    assert verdict(mean_interval([-0.1, 0.0, 0.1]), "keeps").startswith("not resolved")
    assert verdict(mean_interval([-0.2, -0.25, -0.3]), "keeps").startswith("does not hold")

    def ev(score, eps):
        return {"in_domain_mean": score, "episodes": {"tooluse": eps}}

    evals = {"a": [ev(0.5, [1, 1, 0, 1]), ev(0.6, [1, 1, 1, 0])], "base": [ev(0.25, [0, 1, 0, 0])]}
    out = paired(evals, "a", "base")
    assert out["per_seed"] == pytest.approx([0.25, 0.35])  # every seed against the one base evaluation
    assert out["tasks"]["n"] == 8 and out["tasks"]["mean"] == pytest.approx(sum([1, 0, 0, 1, 1, 0, 1, 0]) / 8)


def test_what_builds_on_a_trained_sft_model_runs_before_new_training(tmp_path):
    """Models are not committed: SFT then PivotRL follows its SFT run before other arms train, so
    that an SFT model is seldom left waiting at the end of a sitting."""
    from dataclasses import replace

    from pivotrl.lab.experiment import PRESETS, Plan

    preset = replace(PRESETS["tiny"], arms=("sft", "pivotrl", "sft_pivotrl"), seeds=[0, 1],
                     learning_rates={"sft": [1e-4], "rl": [1e-5]})
    for name in ("eval_base", "profile", "train_sft-lr0.0001-s0"):
        (tmp_path / f"{name}.json").write_text("{}")
    (tmp_path / "sft-lr0.0001-s0" / "best").mkdir(parents=True)
    (tmp_path / "sft-lr0.0001-s0" / "best" / "config.json").write_text("{}")
    plan = Plan(preset, "base", tmp_path)
    assert [s[0] for s in plan.stages()][0] == "profile_sft-s0"
    (tmp_path / "profile_sft-s0.json").write_text("{}")
    stages = [s[0] for s in plan.stages()]
    assert stages[0] == "train_sft_pivotrl-lr1e-05-s0" and "train_sft-lr0.0001-s1" in stages[1:]
    (tmp_path / "train_sft_pivotrl-lr1e-05-s0.json").write_text("{}")
    (tmp_path / "sft_pivotrl-lr1e-05-s0" / "best").mkdir(parents=True)
    (tmp_path / "sft_pivotrl-lr1e-05-s0" / "best" / "config.json").write_text("{}")
    assert [s[0] for s in plan.stages()][0] == "eval_sft_pivotrl-lr1e-05-s0"  # its model is lost at a sitting's end
    assert stages.index("eval_sft-lr0.0001-s0") < stages.index("train_pivotrl-lr1e-05-s0")  # otherwise as listed


def test_a_run_whose_model_was_lost_is_trained_again_only_where_needed(tmp_path):
    """Stage files are committed, models are not: a fresh checkout retrains what it still needs."""
    from dataclasses import replace

    from pivotrl.artifacts import weights_sha256
    from pivotrl.lab.experiment import PRESETS, Plan

    preset = replace(PRESETS["tiny"], arms=("sft", "pivotrl"), learning_rates={"sft": [1e-4], "rl": [1e-5, 2e-5]})
    work = tmp_path / "work"
    work.mkdir()
    plan = Plan(preset, "base", work)
    for name, res in [("train_sft-lr0.0001-s0", {"best_dev_success": 0.1}),
                      ("train_pivotrl-lr1e-05-s0", {"best_dev_success": 0.3}),
                      ("train_pivotrl-lr2e-05-s0", {"best_dev_success": 0.2}), ("profile", {}), ("eval_base", {})]:
        (work / f"{name}.json").write_text(json.dumps(res))
    (work / "eval_sft-lr0.0001-s0.json").write_text("{}")  # evaluated: its model is no longer needed
    stages = [s[0] for s in plan.stages()]
    assert (work / "train_sft-lr0.0001-s0.json").exists()
    assert not (work / "train_pivotrl-lr1e-05-s0.json").exists() and "train_pivotrl-lr1e-05-s0" in stages  # chosen, unevaluated
    assert (work / "train_pivotrl-lr2e-05-s0.json").exists()  # not chosen: its dev score is all the sweep needs
    # an SFT model that SFT then PivotRL still needs is trained again; its profile is kept if the
    # model trained again has the weights it recorded, else profiled again (records and all)
    both = replace(preset, arms=("sft", "sft_pivotrl"), learning_rates={"sft": [1e-4], "rl": [1e-5]})
    best = work / "sft-lr0.0001-s0" / "best"

    def sft_trained_again(weights: bytes):
        (work / "train_sft-lr0.0001-s0.json").write_text("{}")
        best.mkdir(parents=True, exist_ok=True)
        (best / "config.json").write_text("{}")
        (best / "model.safetensors").write_bytes(weights)

    def profiled_with(weights: bytes | None):
        sha = None
        if weights is not None:  # the model profiled, saved elsewhere
            (tmp_path / "profiled").mkdir(exist_ok=True)
            (tmp_path / "profiled" / "model.safetensors").write_bytes(weights)
            sha = weights_sha256(tmp_path / "profiled")
        (work / "profile_sft-s0.json").write_text(json.dumps({"model_sha256": sha}))
        (work / "profile_sft-s0.jsonl").write_text("{}\n")  # its records, which profiling would resume from

    for kept, (profiled, retrained) in [(True, (b"w1", b"w1")), (False, (b"w1", b"w2")), (False, (None, b"w1"))]:
        shutil.rmtree(work / "sft-lr0.0001-s0", ignore_errors=True)
        (work / "train_sft-lr0.0001-s0.json").write_text("{}")
        profiled_with(profiled)
        stages = [s[0] for s in Plan(both, "base", work).stages()]
        assert stages[0] == "train_sft-lr0.0001-s0" and (work / "profile_sft-s0.json").exists()  # lost: train again
        sft_trained_again(retrained)
        stages = [s[0] for s in Plan(both, "base", work).stages()]
        assert (work / "profile_sft-s0.json").exists() is kept and (work / "profile_sft-s0.jsonl").exists() is kept
        assert stages[0] == ("train_sft_pivotrl-lr1e-05-s0" if kept else "profile_sft-s0")
    # the same when SFT then PivotRL trained but its model was lost before its test evaluation
    shutil.rmtree(work / "sft-lr0.0001-s0")
    (work / "train_sft_pivotrl-lr1e-05-s0.json").write_text("{}")
    profiled_with(b"w1")
    stages = [s[0] for s in Plan(both, "base", work).stages()]
    assert stages[0] == "train_sft-lr0.0001-s0"
    sft_trained_again(b"w1")
    assert [s[0] for s in Plan(both, "base", work).stages()][0] == "train_sft_pivotrl-lr1e-05-s0"


def test_weights_sha256_tells_models_apart_by_their_weights_only(tmp_path):
    from pivotrl.artifacts import weights_sha256

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, config in ((a, "{}"), (b, '{"other": 1}')):
        folder.mkdir()
        (folder / "config.json").write_text(config)
        (folder / "model.safetensors").write_bytes(b"same weights")
    assert weights_sha256(a) == weights_sha256(b)  # configs differ, weights do not
    (b / "model.safetensors").write_bytes(b"other weights")
    assert weights_sha256(a) != weights_sha256(b)
    assert weights_sha256(tmp_path / "missing") is None and weights_sha256("org/hub-id") is None


@pytest.mark.parametrize("ties_within, kept", [(0, [0, 2]), (1, [0, 1, 2, 3, 5])])
def test_dev_selection_keeps_the_best_or_the_latest_within_its_tolerance(tmp_path, ties_within, kept):
    """Dev success 6/24, 5/24, 7/24, 6/24, 4/24, 7/24 episodes: the best (7, first at eval 2), or with
    a tolerance of one episode the latest within one of the best so far (the last, eval 5)."""
    from types import SimpleNamespace

    from pivotrl.lab.arms import DevSelection, summarise_run

    class Ledger:
        def __init__(self):
            self.lines = []

        def write(self, kind, step, metrics, sync=True):
            self.lines.append({"kind": kind, "step": step, **metrics})

    class Saves:
        def __init__(self):
            self.count = 0

        def save_pretrained(self, path):
            self.count += 1

    ledger, model = Ledger(), Saves()
    dev = DevSelection(ledger, Saves(), 1.0, tasks_per_domain=6, best_dir=tmp_path, ties_within=ties_within)
    for i, won in enumerate([6, 5, 7, 6, 4, 7]):
        score = won / 24
        ledger.write("eval", i * 10, {"eval_success": score, "rollout_turns": 0, "wall_clock_s": i})
        dev.after_eval(SimpleNamespace(global_step=i * 10), model, {"eval_success": score})
    assert [r["step"] for r in ledger.lines if r["kind"] == "best"] == [10 * i for i in kept]
    assert model.count == len(kept)
    run = summarise_run("sft", 1e-4, ledger.lines)
    assert run["best_step"] == 10 * kept[-1] and run["best_dev_success"] == 7 / 24


def test_a_preset_runs_on_one_domain_as_the_paper_trains(tmp_path):
    """`lab run --domain repo`: the data, the dev and test episodes and the tables are that domain's
    alone (one model per domain, as the paper trains), here on the long-horizon domain."""
    from dataclasses import replace

    from pivotrl.errors import DataError
    from pivotrl.lab.experiment import PRESETS, run_lab

    tiny = PRESETS["tiny"]
    one = tiny.for_domain("repo")
    assert one.domains == ("repo",) and one.eval.domains == ("repo",) and one.domain_weights is None
    assert one.trajectories == {"repo": tiny.trajectories["code"]} and PRESETS["full"].for_domain("search").trajectories == \
        {"search": PRESETS["full"].trajectories["search"]}
    with pytest.raises(DataError, match="unknown lab domain"):
        tiny.for_domain("nope")
    paper = PRESETS["paper"]  # the ablations on tooluse alone, E2E RL on repo alone, as the paper compares them
    assert paper.for_domain("tooluse").arms == ("sft", "pivotrl", "sft_pivotrl", "pivotrl_no_filter", "pivotrl_exact")
    assert paper.for_domain("repo").arms == ("sft", "pivotrl", "sft_pivotrl", "e2e")
    assert paper.for_domain("search").arms == paper.arms == ("sft", "pivotrl", "sft_pivotrl")
    results = run_lab(replace(one, arms=("sft", "pivotrl")), tmp_path)
    work = tmp_path / "work"
    trajectories = [json.loads(line) for line in (work / "data" / "train_trajectories.jsonl").read_text().splitlines()]
    assert {t["domain"] for t in trajectories} == {"repo"} and len(trajectories) == tiny.trajectories["code"]
    assert list(json.loads((work / "eval_base.json").read_text())["episodes"]) == ["repo"]
    assert all(list(results["table"][arm]["in_domain"]) == ["repo"] for arm in ("base", "sft", "pivotrl"))
    head = (tmp_path / "table.md").read_text().splitlines()[0]
    assert "| repo |" in head and "tooluse" not in head
    # the renamed-tools variant is measured but not shown: it asks about tooluse skills, not trained here
    assert "tooluse_variant" in results["table"]["base"]["ood"]
    assert "renamed-tools" not in head and "tooluse_variant" not in (tmp_path / "table.md").read_text()
    # `lab claims` reads one-domain runs: here one, so the mean over domains is repo's own difference
    r = CliRunner().invoke(app, ["lab", "claims", str(tmp_path), "-o", str(tmp_path / "claims")])
    assert r.exit_code == 0, r.output
    claims = json.loads((tmp_path / "claims" / "claims.json").read_text())["claims"]
    assert claims["pivotrl_vs_sft_in_domain"]["per_seed"] == pytest.approx(results["claims"]["pivotrl_vs_sft_in_domain"]["per_seed"])
    assert claims["pivotrl_vs_sft_in_domain"]["domains"] == ["repo"]


def test_the_registered_claims_are_read_over_domains_seed_by_seed():
    from pivotrl.errors import DataError
    from pivotrl.lab.report import across_domains, across_table, paired

    def run(domain, base, sft, pivot, seeds=3):
        def ev(score, ood):
            return {"in_domain_mean": score, "ood_reasoning_mean": ood, "episodes": {domain: [score]}, "ood_items": [ood]}

        evals = {"base": [ev(base, 0.5)], "sft": [ev(sft + 0.01 * s, 0.3) for s in range(seeds)],
                 "pivotrl": [ev(pivot + 0.02 * s, 0.5 - 0.001 * s) for s in range(seeds)]}
        claims = {n: {"paper": n, **paired(evals, a, b, key, d)} for n, a, b, key, d in
                  (("pivotrl_vs_sft_in_domain", "pivotrl", "sft", "in_domain", "+"),
                   ("sft_vs_base_ood", "sft", "base", "ood", "-"), ("pivotrl_vs_base_ood", "pivotrl", "base", "ood", "keeps"))}
        table = {a: {"in_domain_mean": {"mean": e[0]["in_domain_mean"], "std": 0.0, "n": len(e)}} for a, e in evals.items()}
        return {"seeds": list(range(seeds)), "claims": claims, "table": table}

    out = across_domains({"search": run("search", 0.3, 0.5, 0.45), "code": run("code", 0.4, 0.5, 0.6)})
    one = out["claims"]["pivotrl_vs_sft_in_domain"]
    # per seed: search -0.05 + 0.01 s, code +0.10 + 0.01 s, averaged
    assert one["per_seed"] == pytest.approx([0.025, 0.035, 0.045]) and one["domains"] == ["code", "search"]
    assert one["verdict"].startswith("holds")
    assert out["claims"]["sft_vs_base_ood"]["verdict"] == "holds (interval below 0)"
    assert out["claims"]["pivotrl_vs_base_ood"]["verdict"].startswith("holds")
    # a domain whose seeds are not all evaluated is left out, and named
    short = run("repo", 0.1, 0.2, 0.1, seeds=2)
    short["seeds"] = [0, 1, 2]
    out = across_domains({"search": run("search", 0.3, 0.5, 0.45), "repo": short})
    assert out["claims"]["pivotrl_vs_sft_in_domain"]["domains"] == ["search"] and out["pending"]["sft_vs_base_ood"] == ["repo"]
    assert "Not yet counted" in across_table(out) and "| search |" in across_table(out)
    # the cost claim is repo's own, seed by seed; a seed without a target is counted apart
    repo = run("repo", 0.1, 0.2, 0.1)
    row = {"matched": True, "turns_ratio": 5.0, "turns_ratio_with_profiling": 3.0, "seconds_ratio": 2.0}
    repo["cost_to_match"] = [row, {**row, "turns_ratio": 2.0}, {"matched": False}]
    cost = across_domains({"repo": repo})["claims"]["repo: e2e_turns_vs_pivotrl"]["verdict"]
    assert cost.startswith("1 of 2 matched seeds at 4x or more (0 with the profiling counted; E2E slower in wall-clock in 2; 1 ")
    with pytest.raises(DataError, match="different numbers of seeds"):
        across_domains({"search": run("search", 0.3, 0.5, 0.45), "repo": run("repo", 0.1, 0.2, 0.1, seeds=2)})
