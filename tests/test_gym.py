import copy
import json

import datasets
import pytest

from conftest import write_lines
from pivotrl import DataError, extract_states, gym_row_to_state, load_states, load_trajectories, state_to_gym_row
from pivotrl.pivots.gym import items_to_messages

TOOLS = [{"type": "function", "name": "search_flights", "description": "Find flights.", "strict": False,
          "parameters": {"type": "object", "properties": {"origin": {"type": "string"}, "when": {"type": "string"}},
                         "required": ["origin"]}}]


def gym_row(expected, **extra):
    row = {
        "responses_create_params": {
            "input": [
                {"role": "system", "content": "You book flights."},
                {"role": "user", "content": [{"type": "input_text", "text": "Flights from OSL?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "search"}]},
                {"type": "function_call", "call_id": "fc_1", "name": "search_flights", "arguments": "{\"origin\": \"OSL\"}"},
                {"type": "function_call_output", "call_id": "fc_1", "output": "[\"SK123\"]"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "SK123 leaves at 9."}]},
                {"role": "user", "content": "And tomorrow?"},
            ],
            "tools": TOOLS, "temperature": 1.0, "parallel_tool_calls": True,
        },
        "expected_action": expected,
        "agent_ref": {"type": "responses_api_agents", "name": "single_step_tool_use_with_argument_comparison_agent"},
        "trajectory_id": "traj-42",
        "meta_info": {"turn": 3, "step": 2, "assistant_depth": 2},
        "rewards": [1.0, 0.0, 1.0, 0.0], "reward_mean": 0.5, "reward_std": 0.5, "reward_var": 0.25,
        "pass_rate": 0.5, "pass_rate_total": 4, "pass_rate_passed": 2, "num_unique_actions": 3,
    }
    row.update(extra)
    return row


EXPECTED = [
    {"type": "function_call", "name": "search_flights", "arguments": "{\"origin\":\"OSL\",  \"when\": \"tomorrow\"}"},
    {"type": "message", "content": "Which destination?"},
    {"type": "function_call_batch", "calls": [
        {"type": "function_call", "name": "search_flights", "arguments": "{\"origin\": \"OSL\"}"},
        {"type": "function_call", "name": "search_flights", "arguments": "{\"origin\": \"BGO\"}"}]},
]


@pytest.mark.parametrize("expected", EXPECTED, ids=["call", "message", "batch"])
def test_rows_to_states_to_rows_is_lossless(expected):
    row = gym_row(expected)
    state = gym_row_to_state(copy.deepcopy(row))
    assert state_to_gym_row(state) == row


def test_row_renders_to_chat_messages():
    state = gym_row_to_state(gym_row(EXPECTED[0]))
    roles = [m["role"] for m in state.context]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]  # reasoning dropped
    assert state.context[1]["content"] == "Flights from OSL?"
    assert state.context[2]["tool_calls"][0]["function"]["name"] == "search_flights"
    assert state.context[3]["tool_call_id"] == "fc_1"
    assert state.tools[0] == {"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}
    assert state.reference.calls[0].arguments == {"origin": "OSL", "when": "tomorrow"}
    assert state.trajectory_id == "traj-42" and state.turn_index == 2


def test_trajectory_states_to_rows_and_back(sample_path):
    states = extract_states(load_trajectories(sample_path))
    for s in states:
        back = gym_row_to_state(state_to_gym_row(s))
        assert back.id == s.id and back.reference == s.reference and back.tools == s.tools
        assert back.context == s.context


def test_load_states_reads_gym_jsonl_and_parquet(tmp_path):
    rows = [gym_row(e, trajectory_id=f"t{i}") for i, e in enumerate(EXPECTED)]
    p = write_lines(tmp_path / "pivots.jsonl", rows)
    states = load_states(p)
    assert [s.reference.kind for s in states] == ["tool_calls", "message", "tool_calls"]
    # In parquet, Arrow gives every input item every key (None where absent) and content one type.
    plain = [gym_row(e, trajectory_id=f"t{i}") for i, e in enumerate(EXPECTED[:2])]
    for r in plain:
        r["responses_create_params"]["input"] = [
            {**it, "content": it["content"] if isinstance(it["content"], str) else it["content"][0]["text"]}
            if "content" in it else it for it in r["responses_create_params"]["input"] if it.get("type") != "reasoning"]
    pq = tmp_path / "pivots.parquet"
    datasets.Dataset.from_list([{**r, "expected_action": json.dumps(r["expected_action"])} for r in plain]).to_parquet(str(pq))
    from_pq = load_states(pq)  # expected_action as a JSON string column is accepted too
    from_jsonl = load_states(write_lines(tmp_path / "plain.jsonl", plain))
    assert [s.context for s in from_pq] == [s.context for s in from_jsonl]
    assert [s.reference for s in from_pq] == [s.reference for s in from_jsonl]


def test_duplicate_turns_get_distinct_ids(tmp_path):
    p = write_lines(tmp_path / "pivots.jsonl", [gym_row(EXPECTED[0]), gym_row(EXPECTED[1])])
    a, b = load_states(p)
    assert a.id != b.id and b.id.startswith(a.id)


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("expected_action"), "without 'expected_action'"),
    (lambda r: r["expected_action"].__setitem__("arguments", "{oops"), "not a JSON object"),
    (lambda r: r["responses_create_params"]["input"].append({"type": "web_search_call"}), "unknown item type"),
    (lambda r: r["expected_action"].__setitem__("type", "dance"), "unknown expected_action type"),
])
def test_bad_rows_name_the_line(tmp_path, mutate, message):
    bad = gym_row(dict(EXPECTED[0]))
    mutate(bad)
    p = write_lines(tmp_path / "pivots.jsonl", [gym_row(EXPECTED[1]), bad])
    with pytest.raises(DataError, match=message) as err:
        load_states(p)
    assert err.value.line == 2


def test_consecutive_function_calls_merge_into_one_assistant_turn():
    items = [{"role": "user", "content": "hi"},
             {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
             {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "a", "output": "1"},
             {"type": "function_call_output", "call_id": "b", "output": "2"}]
    msgs = items_to_messages(items)
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool"]
    assert [c["function"]["name"] for c in msgs[1]["tool_calls"]] == ["f", "g"]


def terminal_row(uid: str, turn: int, keystrokes: str) -> dict:
    """A row in the Terminal pivots' layout (written here): `expected_answer` holds the Terminus JSON,
    the source trajectory is `metadata.source_trajectory_uid`, the turn `pivot_agent_turn_index`."""
    answer = json.dumps({"analysis": "list", "plan": "look", "commands": [{"keystrokes": keystrokes, "duration": 0.1}],
                         "task_complete": False})
    return {"responses_create_params": {"input": [{"role": "user", "content": "Find the config file."}]},
            "expected_answer": answer, "metadata": {"source_trajectory_uid": uid, "harness": "terminus_2"},
            "pivot_agent_turn_index": turn, "agent_ref": {"type": "responses_api_agents", "name": "terminus_judge_agent"}}


def test_terminal_pivot_rows_load_round_trip_and_split_by_source(tmp_path):
    from pivotrl.pivots.split import choose_heldout
    from pivotrl.rewards import get_verifier
    from pivotrl.train.common import split_states

    rows = [terminal_row("traj-a", 3, "ls -la\n"), terminal_row("traj-a", 5, "cat cfg.yaml\n"),
            terminal_row("traj-b", 2, "pwd\n")]
    path = write_lines(tmp_path / "terminal.jsonl", rows)
    states = load_states(path)
    assert [s.trajectory_id for s in states] == ["traj-a", "traj-a", "traj-b"]
    assert [s.turn_index for s in states] == [3, 5, 2] and len({s.id for s in states}) == 3
    assert states[0].reference.kind == "message" and json.loads(states[0].reference.text)["commands"]
    assert [state_to_gym_row(s) for s in states] == rows  # nothing added, nothing lost
    held = set(choose_heldout([s.trajectory_id for s in states], 0.5, seed=0))
    train, test = split_states(states, held)
    assert {s.trajectory_id for s in train}.isdisjoint({s.trajectory_id for s in test})  # by source, not row
    good = rows[0]["expected_answer"]
    assert get_verifier("dispatch").score(good, states[0]).reward == 1.0  # scored by the terminus rules


def test_swe_pivot_rows_keep_their_trajectory_and_profiling_columns(tmp_path):
    row = {"responses_create_params": {"input": [{"role": "user", "content": "Fix the failing test."}],
                                       "tools": [{"type": "function", "name": "execute_bash", "parameters": {}}]},
           "expected_action": {"type": "function_call", "name": "execute_bash",
                               "arguments": '{"command": "pytest tests/test_a.py"}'},
           "trajectory_id": "swe-17", "prefix_position": 4, "pass_rate_total": 8, "pass_rate_passed": 3,
           "agent_ref": {"type": "responses_api_agents", "name": "swe_pivot_tool_simulation_agent"}}
    (state,) = load_states(write_lines(tmp_path / "swe.jsonl", [row]))
    assert state.trajectory_id == "swe-17" and state.reference.calls[0].name == "execute_bash"
    assert state_to_gym_row(state) == row
