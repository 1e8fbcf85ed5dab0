"""The task-aware interval on simulated seeds x tasks tables with a known answer: it covers the true
difference about 95% of the time when task noise is large, where the interval over seeds alone does
not; it recovers the variance components it is built on."""

import random
import statistics

import pytest

from pivotrl.lab.intervals import crossed_interval
from pivotrl.lab.report import mean_interval


def simulate(rng: random.Random, mu: float, seeds: int, tasks: int, sd_seed: float, sd_task: float, sd_res: float):
    seed_fx = [rng.gauss(0, sd_seed) for _ in range(seeds)]
    task_fx = [rng.gauss(0, sd_task) for _ in range(tasks)]
    return [[mu + a + b + rng.gauss(0, sd_res) for b in task_fx] for a in seed_fx]


def coverage(rng, n: int, **kw) -> tuple[float, float]:
    crossed = seeds_only = 0
    for _ in range(n):
        d = simulate(rng, 2.0, **kw)
        c = crossed_interval(d)
        o = mean_interval([statistics.fmean(row) for row in d])
        crossed += c["low"] <= 2.0 <= c["high"]
        seeds_only += o["low"] <= 2.0 <= o["high"]
    return crossed / n, seeds_only / n


def test_the_crossed_interval_covers_the_true_difference_where_the_seeds_alone_do_not():
    rng = random.Random(0)
    crossed, seeds_only = coverage(rng, 300, seeds=5, tasks=60, sd_seed=1.0, sd_task=6.0, sd_res=3.0)
    assert 0.90 <= crossed <= 0.995, crossed
    assert seeds_only < 0.85, seeds_only  # conditional on the drawn tasks: too narrow for a claim about the method
    crossed, seeds_only = coverage(rng, 300, seeds=5, tasks=60, sd_seed=2.0, sd_task=0.0, sd_res=3.0)
    assert 0.90 <= crossed <= 0.995 and 0.90 <= seeds_only <= 0.995  # no task noise: both are right


def test_the_variance_components_are_recovered():
    rng = random.Random(1)
    got = [crossed_interval(simulate(rng, 0.0, seeds=20, tasks=200, sd_seed=2.0, sd_task=3.0, sd_res=1.0))["components"]
           for _ in range(20)]
    assert statistics.fmean(g["seed"] for g in got) == pytest.approx(4.0, rel=0.25)
    assert statistics.fmean(g["task"] for g in got) == pytest.approx(9.0, rel=0.15)
    assert statistics.fmean(g["residual"] for g in got) == pytest.approx(1.0, rel=0.05)


def test_a_constant_difference_has_a_point_interval_and_bad_tables_are_refused():
    iv = crossed_interval([[1.0, 1.0], [1.0, 1.0]])
    assert iv["mean"] == 1.0 and iv["high"] - iv["low"] < 1e-100
    for bad in ([[1.0, 2.0]], [[1.0], [2.0]], [[1.0, 2.0], [1.0]]):
        with pytest.raises(ValueError):
            crossed_interval(bad)


def test_lab_claims_reads_the_runs_over_seeds_and_tasks(tmp_path):
    """Two one-domain runs written as `lab run` leaves them (results.json, work/eval_*.json): `lab
    claims` writes both statistics; with `--statistic tasks` the verdicts are the task-aware ones."""
    import json

    from typer.testing import CliRunner

    from pivotrl.cli import app
    from pivotrl.lab.intervals import claims_over_seeds_and_tasks

    rng = random.Random(2)
    runs = {}
    for domain, lift in (("search", 0.1), ("code", -0.05)):
        run = tmp_path / domain
        (run / "work").mkdir(parents=True)
        seeds, rates = [0, 1, 2], {"base": None, "sft": 1e-4, "pivotrl": 2e-5}

        def evaluation(p, q):
            return {"episodes": {domain: [int(rng.random() < p) for _ in range(40)]},
                    "ood_items": [float(rng.random() < q) for _ in range(30)]}

        (run / "work" / "eval_base.json").write_text(json.dumps(evaluation(0.3, 0.5)))
        for s in seeds:
            (run / "work" / f"eval_sft-lr0.0001-s{s}.json").write_text(json.dumps(evaluation(0.5, 0.3)))
            (run / "work" / f"eval_pivotrl-lr2e-05-s{s}.json").write_text(json.dumps(evaluation(0.5 + lift, 0.5)))
        table = {arm: {"learning_rate": rate, "in_domain": {domain: {"mean": 0.3}},
                       "in_domain_mean": {"mean": 0.3, "std": 0.0, "n": 3}} for arm, rate in rates.items()}
        claims = {n: {"paper": n, "per_seed": [0.0, 0.1, 0.2], "seeds": {"mean": 0.1, "low": -0.1, "high": 0.3, "n": 3}}
                  for n in ("pivotrl_vs_sft_in_domain", "sft_vs_base_ood", "pivotrl_vs_base_ood")}
        (run / "results.json").write_text(json.dumps({"seeds": seeds, "table": table, "claims": claims}))
        runs[domain] = run
    tasks = claims_over_seeds_and_tasks(runs)
    one = tasks["pivotrl_vs_sft_in_domain"]
    per_domain = []
    for domain, run in runs.items():  # the grand mean is the mean over domains of each domain's mean difference
        diffs = []
        for s in range(3):
            a = json.loads((run / "work" / f"eval_pivotrl-lr2e-05-s{s}.json").read_text())["episodes"][domain]
            b = json.loads((run / "work" / f"eval_sft-lr0.0001-s{s}.json").read_text())["episodes"][domain]
            diffs += [x - y for x, y in zip(a, b)]
        per_domain.append(statistics.fmean(diffs))
    assert one["seeds_and_tasks"]["mean"] == pytest.approx(statistics.fmean(per_domain))
    assert one["tasks_per_seed"] == 80 and one["domains"] == ["code", "search"]
    out = tmp_path / "claims"
    res = CliRunner().invoke(app, ["lab", "claims", str(runs["search"]), str(runs["code"]), "-o", str(out),
                                   "--statistic", "tasks"])
    assert res.exit_code == 0, res.output
    written = json.loads((out / "claims.json").read_text())
    assert written["statistic"] == "tasks" and written["seeds_and_tasks"]["sft_vs_base_ood"]["tasks_per_seed"] == 60
    assert written["claims"]["pivotrl_vs_sft_in_domain"]["verdict"].endswith("(over seeds x tasks)")
    assert "Over seeds x test tasks" in (out / "claims.md").read_text()
