"""The task-aware interval on simulated seeds x tasks tables with a known answer: it covers the true
difference about 95% of the time when task noise is large, where the interval over seeds alone does
not; it recovers the variance components it is built on."""

import random
import statistics

import pytest

from pivotrl.lab.intervals import crossed_interval, nested_interval


def simulate(rng: random.Random, mu: float, seeds: int, tasks: int, sd_seed: float, sd_task: float, sd_res: float):
    seed_fx = [rng.gauss(0, sd_seed) for _ in range(seeds)]
    task_fx = [rng.gauss(0, sd_task) for _ in range(tasks)]
    return [[mu + a + b + rng.gauss(0, sd_res) for b in task_fx] for a in seed_fx]


def coverage(rng, n: int, **kw) -> tuple[float, float]:
    crossed = seeds_only = 0
    for _ in range(n):
        d = simulate(rng, 2.0, **kw)
        c = crossed_interval(d)
        o = nested_interval([statistics.fmean(row) for row in d])
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
