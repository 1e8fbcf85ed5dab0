import json

import pytest

from conftest import write_lines
from pivotrl import DataError
from pivotrl.pivots.profile import write_records
from pivotrl.pivots.select import gym_row_stats, load_candidates, select


def record(state, rewards, skipped=""):
    n = len(rewards)
    mean = sum(rewards) / n if n else float("nan")
    var = sum((r - mean) ** 2 for r in rewards) / n if n else float("nan")
    return {"state_id": state.id, "rewards": rewards, "reward_mean": mean, "reward_var": var,
            "reward_std": var ** 0.5, "skipped": skipped, "num_unique_actions": 1,
            "state": json.dumps(state.to_dict())}


# (rewards per state): hand-made so each rule's answer is known
PROFILE = [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0.5, 0.5, 0.5, 0.5], [], [0, 1, 0, 1]]


@pytest.fixture
def profile_path(tmp_path, sample_states):
    recs = [record(s, [float(x) for x in r], "" if r else "prompt_too_long") for s, r in zip(sample_states, PROFILE)]
    path = tmp_path / "profile.parquet"
    write_records(path, recs)
    return path


def ids(cands):
    return [c.state.id for c in cands]


def test_rules_keep_exactly_what_they_define(profile_path, sample_states):
    cands = load_candidates(profile_path)
    s = [x.id for x in sample_states]
    assert ids(select(cands, "pivot", lambda_diff=0.75)) == [s[2], s[3], s[7]]  # var > 0, mean < 0.75
    assert ids(select(cands, "pivot", lambda_diff=0.8)) == [s[2], s[3], s[4], s[7]]  # 0.75 < 0.8
    assert ids(select(cands, "pivot", lambda_diff=0.5)) == [s[2]]  # mean 0.5 is not < 0.5
    assert ids(select(cands, "all")) == [s[i] for i in (0, 1, 2, 3, 4, 5, 7)]  # never the skipped one
    assert ids(select(cands, "mean_band", lo=0.25, hi=0.5)) == [s[2], s[3], s[5], s[7]]
    assert ids(select(cands, "variance_top_k", top_k=2)) == [s[3], s[7]]  # var 0.25 twice, input order kept
    assert ids(select(cands, "variance_top_k", top_k=3)) == [s[2], s[3], s[7]]  # then 0.1875 (ties: first)
    with pytest.raises(DataError, match="unknown rule"):
        select(cands, "best")


def test_gym_rows_are_reselected_without_sampling(tmp_path, sample_states):
    from pivotrl.pivots.gym import state_to_gym_row

    rows = []
    for s, (mean, var) in zip(sample_states, [(0.5, 0.25), (0.9, 0.09), (0.0, 0.0), (0.7, 0.21)]):
        row = state_to_gym_row(s)
        row.update(reward_mean=mean, reward_var=var, pass_rate=mean)
        rows.append(row)
    path = write_lines(tmp_path / "nvidia.jsonl", rows)
    cands = load_candidates(path)
    assert len(select(cands, "pivot", lambda_diff=0.6)) == 1
    assert len(select(cands, "pivot", lambda_diff=0.75)) == 2
    assert len(select(cands, "pivot", lambda_diff=1.0)) == 3


@pytest.mark.parametrize("row,expected", [
    ({"rewards": [1, 0, 0, 0]}, (0.25, 0.1875)),
    ({"reward_mean": 0.5, "reward_var": 0.2}, (0.5, 0.2)),
    ({"reward_mean": 0.5, "reward_std": 0.5}, (0.5, 0.25)),
    ({"pass_rate": 0.25}, (0.25, 0.1875)),  # binary rewards: p(1 - p)
])
def test_gym_row_stats_from_any_release_columns(row, expected):
    assert gym_row_stats(row) == pytest.approx(expected)


def test_row_without_profiling_names_the_line(tmp_path, sample_states):
    from pivotrl.pivots.gym import state_to_gym_row

    path = write_lines(tmp_path / "rows.jsonl", [{**state_to_gym_row(sample_states[0]), "pass_rate": 0.5},
                                                  state_to_gym_row(sample_states[1])])
    with pytest.raises(DataError, match=r"rows\.jsonl:2: row has no profiling columns"):
        load_candidates(path)


@pytest.mark.parametrize("columns,message", [
    ({"reward_mean": "abc"}, "'reward_mean' must be a number"),
    ({"rewards": ["a", None, {}, 1]}, "'rewards' must be a number"),
    ({"rewards": "1,0"}, "'rewards' must be a list of numbers"),
    ({"pass_rate": [0.5]}, "'pass_rate' must be a number"),
    ({"reward_mean": 0.5, "reward_var": {}}, "'reward_var' must be a number"),
])
def test_profiling_columns_of_the_wrong_type_name_the_line(tmp_path, sample_states, columns, message):
    from pivotrl.pivots.gym import state_to_gym_row

    path = write_lines(tmp_path / "rows.jsonl", [{**state_to_gym_row(sample_states[0]), "pass_rate": 0.5},
                                                  {**state_to_gym_row(sample_states[1]), **columns}])
    with pytest.raises(DataError, match=r"rows\.jsonl:2: profiling column " + message.split(" ")[0]) as err:
        load_candidates(path)
    assert message in str(err.value)


def test_select_and_report_commands(tmp_path, profile_path):
    from typer.testing import CliRunner

    from pivotrl.cli import app
    from pivotrl.pivots import load_states

    r = CliRunner().invoke(app, ["select", str(profile_path), "-o", str(tmp_path / "pivots.jsonl")])
    assert r.exit_code == 0, r.output
    assert len(load_states(tmp_path / "pivots.jsonl")) == 3 and "by turn position" in r.output
    r = CliRunner().invoke(app, ["select", str(profile_path), "-o", str(tmp_path / "g.jsonl"), "--format", "gym",
                                 "--rule", "mean_band", "--band", "0.25", "0.5"])
    assert r.exit_code == 0 and len((tmp_path / "g.jsonl").read_text().splitlines()) == 4
    r = CliRunner().invoke(app, ["report", str(profile_path), "-o", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "README.md", "mean_reward_hist.png", "variance_by_turn.png", "pivots_by_domain.png"}
    assert "pivots (variance > 0 and mean < 0.75): **3**" in (tmp_path / "report" / "README.md").read_text()


def test_saving_pivots_in_python_carries_the_bill_and_the_split(profile_path, tmp_path):
    import json

    from pivotrl.pivots import load_states
    from pivotrl.pivots.profile import meta_path
    from pivotrl.pivots.select import save_pivots
    from pivotrl.pivots.split import heldout_path, read_heldout, write_heldout

    meta_path(profile_path).write_text(json.dumps({"samples": 64, "generated_tokens": 512}))
    write_heldout(heldout_path(profile_path), ["t-1"], fraction=0.1, seed=0, source="test")
    kept = select(load_candidates(profile_path), "pivot")
    out = tmp_path / "pivots.jsonl"
    assert save_pivots(kept, out, source=profile_path, rule="pivot") == len(kept) == len(load_states(out))
    bill = json.loads(meta_path(out).read_text())
    assert bill["samples"] == 64 and bill["selected"] == len(kept) and bill["selected_by"] == "pivot"
    assert read_heldout(heldout_path(out)) == {"t-1"}


def _domain_states(sizes: dict):
    from pivotrl.data.types import Action
    from pivotrl.pivots.state import State

    return [State(f"{d}{i}", f"t{d}{i}", 0, 1, [], [], Action.message("x"), domain=d)
            for d, n in sizes.items() for i in range(n)]


from hypothesis import given, strategies as st  # noqa: E402

from pivotrl.pivots.select import weight_by_domain  # noqa: E402


@given(st.dictionaries(st.sampled_from(["code", "search", "terminal", "tooluse"]), st.integers(1, 30), min_size=1),
       st.data())
def test_domain_weights_set_each_domains_share_and_use_its_pivots_evenly(sizes, data):
    states = _domain_states(sizes)
    weights = {d: data.draw(st.integers(0, 5)) for d in sizes}
    if not any(weights.values()):
        with pytest.raises(DataError, match="weight 0"):
            weight_by_domain(states, weights)
        return
    out = weight_by_domain(states, weights, seed=1)
    assert len(out) == len(states)
    total = sum(weights.values())
    for d in sizes:
        got = [s for s in out if s.domain == d]
        assert abs(len(got) - len(states) * weights[d] / total) < 1  # largest-remainder rounding
        if got:  # every pivot of the domain used, evenly
            uses = [sum(s.id == x.id for s in got) for x in states if x.domain == d]
            assert max(uses) - min(uses) <= 1


def test_domain_weights_default_keeps_the_stream_and_names_missing_domains():
    states = _domain_states({"code": 2, "search": 6})
    assert weight_by_domain(states, None) == states
    with pytest.raises(DataError, match="code"):
        weight_by_domain(states, {"search": 1})
    with pytest.raises(DataError, match=">= 0"):
        weight_by_domain(states, {"search": 1, "code": -1})


def test_select_names_message_pivots_paid_for_any_text_and_hints_when_nothing_is_kept(tmp_path, sample_states):
    from typer.testing import CliRunner

    from pivotrl.cli import app

    message = next(s for s in sample_states if s.reference.kind == "message")
    call = next(s for s in sample_states if s.reference.kind == "tool_calls")
    kind_only = dict(record(message, [1.0, 0.0]), reasons=["expected_chat_message_found", "no_action_found"])
    read = dict(record(call, [1.0, 0.0]), reasons=["expected_tool_call", "unexpected_tool"])
    write_records(tmp_path / "p.jsonl", [kind_only, read])
    r = CliRunner().invoke(app, ["select", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "pivots.jsonl")])
    assert r.exit_code == 0, r.output
    assert "message (any text paid)" in r.output and "message_check" in r.output
    assert f"call: {call.reference.calls[0].name}" in r.output
    r = CliRunner().invoke(app, ["report", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "report")])
    assert "| message (any text paid) | 1 | 1 |" in (tmp_path / "report" / "README.md").read_text()
    solved = dict(record(message, [1.0, 1.0]), reasons=["expected_chat_message_found"] * 2)
    write_records(tmp_path / "solved.jsonl", [solved])
    r = CliRunner().invoke(app, ["select", str(tmp_path / "solved.jsonl"), "-o", str(tmp_path / "none.jsonl")])
    assert r.exit_code == 1 and "no state kept" in r.output and "1 were always right" in r.output
