import json

import pytest

from pivotrl import DataError
from pivotrl.pivots.profile import journal_path, meta_path, profile_states, read_records
from pivotrl.sampling import SamplingParams, get_sampler

PARAMS = SamplingParams(n=3, max_tokens=12)


@pytest.fixture(scope="module")
def sampler(tiny_model):
    return get_sampler("transformers", model=tiny_model, num_threads=1)


def same(a, b):
    """Records equal in everything but the wall-clock they took."""
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]  # noqa: E731
    return strip(a) == strip(b)


def run(states, sampler, out, **kw):
    kw.setdefault("batch_size", 3)
    return profile_states(states, sampler, "tool_call", k=3, params=PARAMS, output=out, keep_samples=True, **kw)


def test_profile_gives_k_scored_samples_per_state(tmp_path, sampler, sample_states):
    states = sample_states[:7]
    recs = run(states, sampler, tmp_path / "p.parquet")
    assert [r["state_id"] for r in recs] == [s.id for s in states]
    for r in recs:
        assert len(r["rewards"]) == len(r["reasons"]) == len(r["samples"]) == len(r["completion_tokens"]) == 3
        assert all(x in (0.0, 1.0) for x in r["rewards"])
        assert r["reward_mean"] == pytest.approx(sum(r["rewards"]) / 3)
        assert r["reward_var"] == pytest.approx(sum((x - r["reward_mean"]) ** 2 for x in r["rewards"]) / 3)
        assert r["prompt_tokens"] > 0 and 0 <= r["n_truncated"] <= 3 and not r["skipped"]
    assert read_records(tmp_path / "p.parquet") == recs and all(r["seconds"] > 0 for r in recs)
    meta = json.loads(meta_path(tmp_path / "p.parquet").read_text())
    assert meta["samples"] == 21 and meta["verifier_calls"] == 21 and meta["generated_tokens"] == sum(
        sum(r["completion_tokens"]) for r in recs)


class Interrupted(Exception):
    pass


class DiesAfter:
    """Wraps a sampler and dies (as a killed job would) after n batches."""

    def __init__(self, inner, n):
        self.inner, self.n = inner, n

    def sample_batches(self, batches):
        for i, out in enumerate(self.inner.sample_batches(batches)):
            if i == self.n:
                raise Interrupted
            yield out


def test_resume_gives_the_same_records_as_an_uninterrupted_run(tmp_path, sampler, sample_states):
    states = sample_states[:10]
    whole = run(states, sampler, tmp_path / "whole.jsonl")
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(Interrupted):
        run(states, DiesAfter(sampler, 2), out)
    assert not out.exists()  # nothing half-written in place of the output
    assert len(read_records(journal_path(out))) == 6  # the two finished batches
    with open(journal_path(out), "a") as fh:
        fh.write('{"state_id": "torn li')  # the job died mid-line
    with pytest.raises(Interrupted):  # a resume that appends a batch, then dies again
        run(states, DiesAfter(sampler, 1), out)
    assert len(read_records(journal_path(out))) == 9  # the torn line was cut, the new batch kept whole
    resumed = run(states, sampler, out)
    assert same(resumed, whole)
    assert not journal_path(out).exists()
    assert [json.loads(x)["state_id"] for x in out.read_text().splitlines()] == [s.id for s in states]
    again = run(states, DiesAfter(sampler, 0), out)  # nothing left to do: no sampling at all
    assert same(again, whole)
    assert json.loads(meta_path(out).read_text())["states"] == 10  # cost counted once across runs


def test_a_prompt_too_long_is_skipped_not_fatal(tmp_path, tiny_model, sample_states):
    short = get_sampler("transformers", model=tiny_model, max_context=900)
    states = sample_states[:6]
    recs = run(states, short, tmp_path / "p.jsonl")
    skipped = [r for r in recs if r["skipped"]]
    assert skipped and all(r["skipped"].startswith("prompt_too_long") and r["rewards"] == [] for r in skipped)
    assert any(len(r["rewards"]) == 3 for r in recs)


def test_gym_format_carries_nvidia_profiling_columns(tmp_path, sampler, sample_states):
    from pivotrl.pivots import load_states

    out = tmp_path / "rows.jsonl"
    recs = run(sample_states[:4], sampler, out, fmt="gym")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for row, rec in zip(rows, recs):
        assert row["rewards"] == rec["rewards"] and row["reward_mean"] == rec["reward_mean"]
        assert row["pass_rate_total"] == 3 and row["pass_rate_passed"] == sum(x == 1.0 for x in rec["rewards"])
        assert row["pass_rate"] == row["pass_rate_passed"] / 3 and row["reward_var"] == rec["reward_var"]
        assert "responses_create_params" in row and "expected_action" in row
    assert [s.id for s in load_states(out)] == [s.id for s in sample_states[:4]]


def test_no_chat_template_is_a_clear_error(tmp_path, tiny_model, sample_states):
    s = get_sampler("transformers", model=tiny_model)
    s.tokenizer.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        run(sample_states[:1], s, tmp_path / "p.jsonl")
    s.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"  # what --chat-template gives
    assert len(run(sample_states[:1], s, tmp_path / "p.jsonl")[0]["rewards"]) == 3


def test_duplicate_state_ids_are_refused(tmp_path, sampler, sample_states):
    with pytest.raises(DataError, match="not unique"):
        run([sample_states[0], sample_states[0]], sampler, tmp_path / "p.jsonl")


def test_ray_pool_gives_the_same_records_as_the_local_path(tmp_path, sampler, tiny_model, sample_states):
    pytest.importorskip("ray")
    from pivotrl.sampling import RaySampler

    states = sample_states[:6]
    local = run(states, sampler, tmp_path / "local.jsonl", batch_size=2)
    pool = RaySampler("transformers", {"model": tiny_model, "num_threads": 1}, num_workers=2)
    try:
        distributed = run(states, pool, tmp_path / "ray.jsonl", batch_size=2)
    finally:
        pool.close()
    assert same(distributed, local)
