import json

import datasets
import pytest

from conftest import TOOLS, openai_record, write_lines
from pivotrl import DataError, load_trajectories


def test_openai_jsonl_loads_and_normalises(tmp_path):
    rec = openai_record()
    rec["messages"][1]["content"] = [{"type": "text", "text": "Weather in Oslo?"}]
    p = write_lines(tmp_path / "t.jsonl", [rec])
    ts = load_trajectories(p)
    assert len(ts) == 1
    t = ts[0]
    assert t.id == "t1" and t.tools == TOOLS
    assert t.messages[1]["content"] == "Weather in Oslo?"
    assert [m["role"] for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]


def test_flat_tools_are_wrapped_in_openai_form(tmp_path):
    flat = [{"type": "function", **TOOLS[0]["function"]}]
    ts = load_trajectories(write_lines(tmp_path / "t.jsonl", [openai_record(tools=flat)]))
    assert ts[0].tools == TOOLS


def test_sharegpt_with_function_call_and_observation(tmp_path):
    rec = {"system": "sys", "tools": json.dumps([TOOLS[0]["function"]]), "conversations": [
        {"from": "human", "value": "Weather in Oslo and Bergen?"},
        {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "Oslo"}},
                                                        {"name": "get_weather", "arguments": {"city": "Bergen"}}])},
        {"from": "observation", "value": "rain"},
        {"from": "observation", "value": "sun"},
        {"from": "gpt", "value": "Rain in Oslo, sun in Bergen."},
    ]}
    t = load_trajectories(write_lines(tmp_path / "s.jsonl", [rec]), "sharegpt")[0]
    roles = [m["role"] for m in t.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant"]
    calls = t.messages[2]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    assert [m["tool_call_id"] for m in t.messages[3:5]] == [c["id"] for c in calls]
    assert t.id.startswith("traj-")  # content hash when the record has no id


def test_hf_dataset_on_disk_and_parquet(tmp_path):
    recs = [openai_record(id=f"t{i}") for i in range(3)]
    rows = [{"id": r["id"], "messages": json.dumps(r["messages"]), "tools": json.dumps(r["tools"])} for r in recs]
    ds = datasets.Dataset.from_list([{"id": r["id"], "messages": r["messages"], "tools": json.dumps(r["tools"])}
                                     for r in recs])
    ds.save_to_disk(str(tmp_path / "ds"))
    ts = load_trajectories(tmp_path / "ds")
    assert [t.id for t in ts] == ["t0", "t1", "t2"]
    assert ts[0].messages[2]["tool_calls"][0]["function"]["name"] == "get_weather"
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert len(load_trajectories(tmp_path / "d.parquet")) == 3
    del rows


BAD = {
    "unknown_role": lambda r: r["messages"].__setitem__(1, {"role": "narrator", "content": "x"}),
    "tool_result_without_call": lambda r: r["messages"].insert(2, {"role": "tool", "tool_call_id": "zz", "content": "?"}),
    "malformed_arguments": lambda r: r["messages"][2]["tool_calls"][0]["function"].__setitem__("arguments", "{city: Oslo"),
    "missing_tool_schema": lambda r: r.__setitem__("tools", []),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_records_name_file_and_line(tmp_path, kind):
    bad = openai_record(id="bad")
    BAD[kind](bad)
    p = write_lines(tmp_path / "t.jsonl", [openai_record(), openai_record(id="t2"), bad])
    with pytest.raises(DataError) as err:
        load_trajectories(p)
    assert err.value.file == str(p) and err.value.line == 3
    assert f"{p}:3" in str(err.value)
    ts = load_trajectories(p, skip_invalid=True)
    assert len(ts) == 2 and ts.skipped == {kind: 1}


def test_invalid_json_line_is_named(tmp_path):
    p = write_lines(tmp_path / "t.jsonl", [openai_record(), "{not json"])
    with pytest.raises(DataError, match=r"t\.jsonl:2: invalid JSON"):
        load_trajectories(p)


def test_gym_rows_are_refused_as_trajectories_with_a_hint(tmp_path):
    p = write_lines(tmp_path / "g.jsonl", [{"responses_create_params": {"input": []}, "expected_action": {}}])
    with pytest.raises(DataError, match="load_states"):
        load_trajectories(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_trajectories(tmp_path / "nope.jsonl")


def test_skip_invalid_also_skips_lines_that_are_not_json(tmp_path):
    p = tmp_path / "t.jsonl"
    good = json.dumps(openai_record()) + "\n"
    p.write_bytes(good.encode() + b'{"id": "cut", "messages": [{"ro\n' + b"\xff\xfe\x00garbage\n"
                  + json.dumps(openai_record(id="t2")).encode() + b"\n" + bytes(range(256)) + b"\n")
    with pytest.raises(DataError, match=r"t\.jsonl:2: invalid JSON"):
        load_trajectories(p)
    ts = load_trajectories(p, skip_invalid=True)
    assert [t.id for t in ts] == ["t1", "t2"] and ts.skipped == {"bad_json": 2, "bad_utf8": 2}  # range(256) holds a newline


def test_a_folder_or_an_empty_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load_trajectories(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no trajectories"):
        load_trajectories(tmp_path / "empty.jsonl")
    bad = write_lines(tmp_path / "bad.jsonl", ["{oops", {"messages": "no"}])
    with pytest.raises(DataError, match=r"no trajectories in this file \(2 invalid records skipped"):
        load_trajectories(bad, skip_invalid=True)
    from pivotrl.pivots import load_states

    with pytest.raises(DataError, match="is a folder"):
        load_states(tmp_path)
    with pytest.raises(DataError, match="no states"):
        load_states(tmp_path / "empty.jsonl")


def test_a_parquet_file_that_expands_is_streamed_without_an_arrow_cache(tmp_path):
    """A few KB of parquet holding 400,000 rows (one dictionary value, run-length encoded): read a
    batch at a time, nothing cached on disk (`datasets.Dataset.from_parquet` wrote ~220 MB of Arrow
    cache for a 33 KB file of 5M such rows, measured)."""
    import os
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 400_000
    path = tmp_path / "bomb.parquet"
    col = pa.DictionaryArray.from_arrays(pa.array([0] * n, type=pa.int32()), pa.array(["x" * 40]))
    pq.write_table(pa.table({"text": col}), path, compression="zstd", row_group_size=n)
    assert path.stat().st_size < 16 << 10
    hf = tmp_path / "hf"
    hf.mkdir()
    code = ("from pivotrl.data.loaders import load_trajectories\nfrom pivotrl.errors import DataError\n"
            f"try:\n    load_trajectories({str(path)!r}, skip_invalid=True)\nexcept DataError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "HF_HOME": str(hf)},
                         capture_output=True, text=True, timeout=300)
    assert f"{n} invalid records skipped" in res.stdout, res.stdout + res.stderr
    assert [p for p in hf.rglob("*") if p.is_file()] == []
