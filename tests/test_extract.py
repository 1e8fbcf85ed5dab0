import json

from pivotrl import extract_states, load_trajectories, states_to_dataset
from pivotrl.data.sample import generate_sample_trajectories, SAMPLE_PATH
from pivotrl.pivots import ExtractStats, load_states, write_states


def test_bundled_sample_is_what_the_generator_writes():
    lines = SAMPLE_PATH.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [t.to_dict() for t in generate_sample_trajectories(40, 0)]


def test_extraction_counts_match_the_trajectories(sample_path):
    ts = load_trajectories(sample_path)
    stats = ExtractStats()
    states = extract_states(ts, stats)
    n_assistant = sum(m["role"] == "assistant" for t in ts for m in t.messages)
    n_calls = sum(bool(m.get("tool_calls")) for t in ts for m in t.messages if m["role"] == "assistant")
    n_parallel = sum(len(m.get("tool_calls") or []) > 1 for t in ts for m in t.messages)
    assert stats.trajectories == len(ts) == 40
    assert stats.assistant_turns == len(states) == n_assistant
    assert stats.tool_call_turns == n_calls and stats.parallel_call_turns == n_parallel > 0
    assert stats.message_turns == n_assistant - n_calls
    # Every trajectory ends with a final answer: one message state per trajectory at least.
    assert stats.message_turns >= len(ts)


def test_states_hold_the_context_before_the_turn_and_the_demonstrated_action(sample_path):
    ts = load_trajectories(sample_path)
    states = extract_states(ts)
    by_traj = {t.id: t for t in ts}
    for s in states:
        msgs = by_traj[s.trajectory_id].messages
        pos = s.meta["message_index"]
        assert s.context == msgs[:pos] and msgs[pos]["role"] == "assistant"
        if msgs[pos].get("tool_calls"):
            assert [c.name for c in s.reference.calls] == [c["function"]["name"] for c in msgs[pos]["tool_calls"]]
            assert [c.arguments_json for c in s.reference.calls] == [c["function"]["arguments"] for c in msgs[pos]["tool_calls"]]
        else:
            assert s.reference.kind == "message" and s.reference.text == msgs[pos]["content"]
        assert 0 <= s.turn_index < s.num_turns


def test_ids_are_deterministic_and_unique(sample_path):
    a = extract_states(load_trajectories(sample_path))
    b = extract_states(load_trajectories(sample_path))
    assert [s.id for s in a] == [s.id for s in b]
    assert len({s.id for s in a}) == len(a)


def test_states_file_round_trip(tmp_path, sample_path):
    states = extract_states(load_trajectories(sample_path))
    write_states(tmp_path / "s.jsonl", states)
    back = load_states(tmp_path / "s.jsonl")
    assert [s.to_dict() for s in back] == [s.to_dict() for s in states]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def test_dataset_has_trl_conversational_layout(sample_path):
    states = extract_states(load_trajectories(sample_path))[:20]
    ds = states_to_dataset(states)
    assert {"prompt", "tools", "reference", "state_id"} <= set(ds.column_names)
    row = ds[3]
    assert row["prompt"][0]["role"] == "system"
    assert json.loads(row["reference"]) == states[3].reference.to_dict()
    assert json.loads(row["tools"]) == states[3].tools
