"""The committed base model, lab evaluation, and the lab pipeline end to end at a tiny size."""

import json

import pytest

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
    from pivotrl.lab.experiment import ARMS, PRESETS, run_lab

    stages = []
    results = run_lab(PRESETS["tiny"], tmp_path, progress=stages.append)
    for name in ("results.json", "table.md", "success_vs_cost.png", "in_domain_vs_ood.png"):
        assert (tmp_path / name).exists()
    assert set(results["table"]) == {"base", *ARMS}
    pivot = results["table"]["pivotrl"]["cost"]
    assert pivot["profiling_turns"]["mean"] > 0  # PivotRL is charged its profiling
    assert results["table"]["sft"]["cost"]["rollout_turns"]["mean"] == 0
    assert results["table"]["e2e"]["cost"]["rollout_turns"]["mean"] > 0
    table = (tmp_path / "table.md").read_text()
    assert "PivotRL, exact-match reward" in table and "E2E RL" in table
    assert "profiling turns" in table and "basic_arithmetic" in table  # the cost ledger and OOD per task
    claims = results["claims"]
    train, prof = pivot["rollout_turns"]["mean"], pivot["profiling_turns"]["mean"]
    e2e_turns = results["table"]["e2e"]["cost"]["rollout_turns"]["mean"]
    assert claims["turns_ratio_e2e_over_pivotrl_with_profiling"] == pytest.approx(e2e_turns / (train + prof))
    assert claims["turns_ratio_e2e_over_pivotrl_training"] == pytest.approx(e2e_turns / train)
    assert results["machine"]["cpus"] >= 1
    again = []
    run_lab(PRESETS["tiny"], tmp_path, progress=again.append)
    assert all("skipped" in s for s in again) and len(again) == len(stages)


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


def test_turns_to_reach_reads_the_first_curve_point_at_or_above_the_e2e_final():
    from pivotrl.lab.experiment import _turns_to_reach

    def curve(*points):
        return {"curve": [{"rollout_turns": t, "wall_clock_s": 0.0, "eval_success": s} for t, s in points]}

    runs = {"pivotrl": [curve((0, 0.1), (100, 0.2), (200, 0.3)), curve((0, 0.1), (100, 0.15))],
            "e2e": [curve((0, 0.1), (800, 0.25)), curve((0, 0.1), (900, 0.2))]}
    out = _turns_to_reach(runs)
    assert out["curve_e2e_final_turns"] == [800, 900]
    assert out["curve_pivotrl_turns_to_reach_e2e_final"] == [200, None]  # seed 2 never got there
