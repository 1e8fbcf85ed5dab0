"""Malformed profiles through the CLI as a user runs it: exit code 2, one line naming the file, the
row and the column, never a traceback (select, report, info, convert)."""

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import write_lines
from pivotrl import DataError
from pivotrl.cli import main
from pivotrl.pivots.profile import read_records, write_records
from pivotrl.pivots.profile_records import PROFILE_COLUMNS, check_record, read_profile


def record(state, rewards):
    n = len(rewards)
    mean = sum(rewards) / n
    var = sum((r - mean) ** 2 for r in rewards) / n
    return {"state_id": state.id, "trajectory_id": state.trajectory_id, "domain": state.domain,
            "turn_index": state.turn_index, "num_turns": state.num_turns, "k": n, "rewards": rewards,
            "reward_mean": mean, "reward_var": var, "reward_std": var ** 0.5, "reasons": ["r"] * n,
            "n_truncated": 0, "prompt_tokens": 10, "completion_tokens": [3] * n, "num_unique_actions": 2,
            "skipped": "", "model": "m", "verifier": "v", "seconds": 0.1, "samples": ["x"] * n,
            "state": json.dumps(state.to_dict())}


@pytest.fixture
def good(sample_states):
    return [record(s, [1.0, 0.0, 0.0, 1.0][: 2 + i % 3]) for i, s in enumerate(sample_states[:6])]


def cli(monkeypatch, capsys, *args):
    """`pivotrl ARGS` in this process, as the console script runs it: (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["pivotrl", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def commands(path, tmp_path):
    return [("select", path, "-o", tmp_path / "pivots.jsonl"), ("report", path, "-o", tmp_path / "report"),
            ("info", path), ("convert", path, tmp_path / "rows.jsonl", "--to", "gym")]


def assert_clear_error(code, out, *needles):
    assert code == 2, out
    assert "Traceback" not in out and "error:" in out, out
    for n in needles:
        assert n in out, (n, out)


def test_good_profiles_pass_through_every_command(monkeypatch, capsys, tmp_path, good):
    for name in ("p.parquet", "p.jsonl"):
        path = tmp_path / name
        write_records(path, good)
        for args in commands(path, tmp_path):
            code, out = cli(monkeypatch, capsys, *args)
            assert code == 0, (args, out)
        code, out = cli(monkeypatch, capsys, "info", path)
        assert "profile" in out and "mixed outcomes" in out
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("pass_rate" in r and "responses_create_params" in r for r in rows)


@pytest.mark.parametrize("change,column", [
    ({"rewards": ["1", "0"]}, "'rewards'"),          # strings
    ({"rewards": ["1", 0.0]}, "'rewards'"),          # strings and numbers
    ({"rewards": "1,0"}, "'rewards'"),
    ({"state": 7}, "'state'"),                       # an integer where the state's JSON should be
    ({"state": "{not json"}, "'state'"),
    ({"state": json.dumps({"id": "x"})}, "'state'"),  # an object that is not a state
    ({"rewards": None}, "'rewards'"),                # no rewards
])
def test_a_bad_record_names_file_row_and_column_in_every_command(monkeypatch, capsys, tmp_path, good, change, column):
    rows = good[:2] + [{**good[2], **change}] + good[3:]
    jsonl = write_lines(tmp_path / "bad.jsonl", rows)
    for args in commands(jsonl, tmp_path):
        assert_clear_error(*cli(monkeypatch, capsys, *args), "bad.jsonl:3", column)
    try:  # the same in parquet, where Arrow can hold the column at all
        write_records(tmp_path / "bad.parquet", [{**r, **change} for r in rows])
    except Exception:
        return
    for args in commands(tmp_path / "bad.parquet", tmp_path):
        assert_clear_error(*cli(monkeypatch, capsys, *args), "bad.parquet", column)


def test_a_profile_without_the_rewards_column(monkeypatch, capsys, tmp_path, good):
    rows = [{k: v for k, v in r.items() if k != "rewards"} for r in good]
    write_records(tmp_path / "p.parquet", rows)
    for args in commands(tmp_path / "p.parquet", tmp_path)[:2]:  # info/convert see no profile: trajectories
        assert_clear_error(*cli(monkeypatch, capsys, *args), "p.parquet (record row 0)", "'rewards' missing")


@pytest.mark.parametrize("content", [b"", b"PAR1 this is not parquet", b"{\"state\": 1}\n"])
def test_a_file_that_is_not_parquet_is_one_line(monkeypatch, capsys, tmp_path, good, content):
    path = tmp_path / "p.parquet"
    path.write_bytes(content)
    for args in commands(path, tmp_path):
        assert_clear_error(*cli(monkeypatch, capsys, *args), "p.parquet", "cannot be read as parquet")


def test_a_truncated_parquet_profile_is_one_line(monkeypatch, capsys, tmp_path, good):
    path = tmp_path / "p.parquet"
    write_records(path, good * 50)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 8):
        path.write_bytes(data[:cut])
        for args in commands(path, tmp_path):
            assert_clear_error(*cli(monkeypatch, capsys, *args), "p.parquet", "cannot be read as parquet")


def test_missing_file_and_folder(monkeypatch, capsys, tmp_path):
    assert_clear_error(*cli(monkeypatch, capsys, "select", tmp_path / "none.parquet", "-o", tmp_path / "o.jsonl"),
                       "none.parquet", "not found")
    (tmp_path / "dir.parquet").mkdir()
    assert_clear_error(*cli(monkeypatch, capsys, "select", tmp_path / "dir.parquet", "-o", tmp_path / "o.jsonl"),
                       "dir.parquet", "folder")


WRONG = {"number": "0.5", "integer": 1.5, "count": -1, "string": 3, "reason": 1, "numbers": ["x"],
         "counts": [1.5], "strings": [1], "state": 7}


@pytest.mark.parametrize("column", [c.name for c in PROFILE_COLUMNS])
def test_every_column_of_the_schema_with_a_wrong_type(monkeypatch, capsys, tmp_path, good, column):
    col = next(c for c in PROFILE_COLUMNS if c.name == column)
    path = write_lines(tmp_path / "p.jsonl", good[:1] + [{**good[1], column: WRONG[col.type]}])
    assert_clear_error(*cli(monkeypatch, capsys, "select", path, "-o", tmp_path / "o.jsonl"), "p.jsonl:2", repr(column))


def test_skip_invalid_counts_and_keeps_the_rest(monkeypatch, capsys, tmp_path, good):
    rows = [good[0], {**good[1], "rewards": ["a"]}, "{torn", {**good[2], "state": 5}] + good[3:]
    path = write_lines(tmp_path / "p.jsonl", rows)
    code, out = cli(monkeypatch, capsys, "select", path, "-o", tmp_path / "o.jsonl", "--skip-invalid", "--rule", "all")
    assert code == 0, out
    assert "skipped 3 invalid record(s)" in out and "4 candidate states" in out
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 4


def test_derived_columns_are_filled_and_checked(sample_states):
    minimal = {"state": json.dumps(sample_states[0].to_dict()), "rewards": [1, 0, 0, 0]}
    rec = check_record(minimal)
    assert rec["state_id"] == sample_states[0].id and rec["reward_mean"] == 0.25 and rec["reward_var"] == 0.1875
    assert rec["skipped"] == "" and rec["n_truncated"] == 0
    with pytest.raises(DataError, match="'reasons' has 1 items for 4 rewards"):
        check_record({**minimal, "reasons": ["x"]})
    with pytest.raises(DataError, match="'n_truncated' is 5, more than the 4 rewards"):
        check_record({**minimal, "n_truncated": 5})


def test_a_torn_journal_line_is_left_out_but_a_bad_middle_line_is_an_error(tmp_path, good):
    path = write_lines(tmp_path / "p.partial.jsonl", good[:3])
    with open(path, "a") as fh:
        fh.write(json.dumps(good[3])[:40])  # the append a crash cut short
    assert [r["state_id"] for r in read_records(path, journal=True)] == [r["state_id"] for r in good[:3]]
    with pytest.raises(DataError, match=r"p\.partial\.jsonl:4"):
        read_records(path)  # not a journal: every line counts
    path.write_text(path.read_text().replace(json.dumps(good[1]), "{torn"))
    with pytest.raises(DataError, match=r"p\.partial\.jsonl:2"):
        read_records(path, journal=True)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=3), v, max_size=3),
                           max_leaves=8)


@given(column=st.sampled_from([c.name for c in PROFILE_COLUMNS] + ["extra"]), value=json_values)
def test_any_value_in_any_column_is_a_record_or_a_data_error(sample_states, column, value):
    rec = {"state": json.dumps(sample_states[0].to_dict()), "rewards": [1.0, 0.0], column: value}
    try:
        out = check_record(rec)
    except DataError as exc:
        assert column in str(exc) or column == "state"
        return
    assert isinstance(out["reward_mean"], float) and isinstance(out["rewards"], list)
    assert all(isinstance(r, (int, float)) for r in out["rewards"])


def test_read_profile_round_trips_what_the_writer_writes(tmp_path, good):
    for name in ("p.parquet", "p.jsonl"):
        write_records(tmp_path / name, good)
        assert read_profile(tmp_path / name) == good


def test_the_readme_states_the_schema_the_reader_checks():
    from pathlib import Path

    from pivotrl.pivots.profile_records import schema_table

    assert schema_table() in (Path(__file__).parents[1] / "docs" / "guides" / "data.md").read_text()


def test_an_integer_too_long_to_parse_is_a_line_error_not_a_traceback(monkeypatch, capsys, tmp_path, good):
    path = write_lines(tmp_path / "p.jsonl", good[:2] + ['{"state": 1, "rewards": [' + "1" * 5000 + "]}"])
    assert_clear_error(*cli(monkeypatch, capsys, "select", path, "-o", tmp_path / "o.jsonl"), "p.jsonl:3", "digits")
    code, out = cli(monkeypatch, capsys, "select", path, "-o", tmp_path / "o.jsonl", "--skip-invalid", "--rule", "all")
    assert code == 0 and "bad_json" in out, out
