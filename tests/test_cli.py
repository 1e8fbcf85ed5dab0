import json

from typer.testing import CliRunner

from conftest import openai_record, write_lines
from pivotrl.cli import app
from pivotrl.pivots import load_states

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_extract_prints_counts_and_writes_states(tmp_path, sample_path):
    out = tmp_path / "states.jsonl"
    r = run("extract", sample_path, "-o", out)
    assert r.exit_code == 0, r.output
    states = load_states(out)
    assert "trajectories" in r.output and "40" in r.output and str(len(states)) in r.output
    gym = tmp_path / "rows.jsonl"
    assert run("extract", sample_path, "-o", gym, "--to", "gym").exit_code == 0
    assert [s.id for s in load_states(gym)] == [s.id for s in states]


def test_extract_skip_invalid_reports_reasons(tmp_path):
    bad = openai_record(id="b")
    bad["messages"][1]["role"] = "narrator"
    p = write_lines(tmp_path / "t.jsonl", [openai_record(), bad])
    r = runner.invoke(app, ["extract", str(p), "-o", str(tmp_path / "s.jsonl")])
    assert r.exit_code != 0 and isinstance(r.exception, Exception)
    r = run("extract", p, "-o", tmp_path / "s.jsonl", "--skip-invalid")
    assert r.exit_code == 0 and "unknown_role" in r.output


def test_verify_reports_distribution_and_reasons(tmp_path, sample_path):
    states_path = tmp_path / "states.jsonl"
    run("extract", sample_path, "-o", states_path)
    states = load_states(states_path)
    calls = [s for s in states if s.reference.kind == "tool_calls"][:3]
    pairs = [{"state_id": s.id, "completion": "<tool_call>" + json.dumps(
        {"name": s.reference.calls[0].name, "arguments": s.reference.calls[0].arguments}) + "</tool_call>"} for s in calls[:1]]
    pairs += [{"state": calls[1].to_dict(), "completion": "I will not call a tool."}]
    p = write_lines(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "scores.jsonl"
    r = run("verify", p, "--states", states_path, "--verifier", "tool_call", "-O", "word_count_similarity_threshold=0.1",
            "-o", out)
    assert r.exit_code == 0, r.output
    scores = [json.loads(x) for x in out.read_text().splitlines()]
    assert [s["reward"] for s in scores] == [1.0, 0.0]
    assert "no_expected_tool_call" in r.output and "mean reward 0.500" in r.output


def test_convert_round_trips_through_gym_and_openai(tmp_path, sample_path):
    rows = tmp_path / "rows.jsonl"
    assert run("convert", sample_path, rows, "--to", "gym").exit_code == 0
    chat = tmp_path / "chat.jsonl"
    assert run("convert", rows, chat, "--to", "openai").exit_code == 0
    again = tmp_path / "again.jsonl"
    assert run("extract", chat, "-o", again).exit_code == 0
    # each converted record ends with its demonstrated action: the last state of each is the original
    orig = {(json.dumps(s.reference.to_dict()), json.dumps(s.context)) for s in load_states(rows)}
    last = {}
    for s in load_states(again):
        last[s.trajectory_id] = s
    assert {(json.dumps(s.reference.to_dict()), json.dumps(s.context)) for s in last.values()} == orig


def test_info_on_trajectories_and_states(tmp_path, sample_path):
    r = run("info", sample_path)
    assert r.exit_code == 0 and "trajectories" in r.output and "find_user" in r.output
    states = tmp_path / "s.jsonl"
    run("extract", sample_path, "-o", states)
    r = run("info", states)
    assert r.exit_code == 0 and "message actions" in r.output


def test_demo_runs_and_shows_functional_beats_exact(tmp_path):
    r = run("demo", "--out", tmp_path / "demo", "--n", "12")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())["verification"]
    assert summary["same calls, reordered"]["tool_call"] == 1.0
    assert summary["numbers as strings"]["tool_call_schema"] == 1.0
    assert summary["paraphrased reply"]["exact"] == 0.0
    assert all(summary[k][v] == 0.0 for k in ("wrong tool", "broken call / cut off", "wrong argument value")
               for v in ("exact", "tool_call", "tool_call_schema"))


def test_verify_rescores_nemo_gym_rollouts_and_reports_agreement(tmp_path):
    """Rollouts written here in NeMo Gym's format (a Responses `response`, the recorded `reward`), one
    or more per server: tool-use comparison, swe_pivot, terminus_judge string-only."""
    from pathlib import Path

    rollouts = Path(__file__).parent / "data" / "nemo_gym_rollouts.jsonl"
    out = tmp_path / "scores.jsonl"
    r = run("verify", rollouts, "-o", out)
    assert r.exit_code == 0, r.output
    assert "agreement with the recorded rewards: 8 of 8 (100.0%)" in r.output
    scores = [json.loads(x) for x in out.read_text().splitlines()]
    assert [s["reward"] for s in scores] == [s["recorded"] for s in scores]
    assert {s["reason"] for s in scores} >= {"target_mismatch", "task_complete_check_failed", "model_output_invalid"}


def test_a_response_is_read_as_each_nemo_gym_server_reads_it():
    from pivotrl.pivots.gym import gym_row_to_state
    from pivotrl.rewards import get_verifier, parse_action

    def msg(*texts):
        return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": t} for t in texts]}

    output = [{"type": "reasoning", "summary": [{"text": "hidden"}]}, msg("first"),
              {"type": "function_call", "name": "f", "arguments": "{\"a\": 1}", "call_id": "c1"}, msg("last", "part")]
    action = parse_action(output)  # calls first; the first output_text of the first assistant message
    assert action.kind == "tool_calls" and action.calls[0].arguments == {"a": 1} and action.text == "first"
    assert parse_action({"output": output}) == action  # the whole response reads the same
    assert parse_action([msg("")]).kind == "message"  # empty text is still a message, as upstream
    # call blocks written as message text are a message there: the model server parses calls, not the verifier
    text_call = [msg('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>')]
    assert parse_action(text_call).kind == "message"
    row = {"responses_create_params": {"input": [{"role": "user", "content": "go"}]},
           "expected_action": {"type": "function_call", "name": "bash", "arguments": "{\"command\": \"ls src\"}"},
           "agent_ref": {"type": "responses_api_agents", "name": "swe_pivot_tool_simulation_agent"}}
    assert get_verifier("swe_pivot").score(text_call, gym_row_to_state(row)).reason == "model_output_invalid"
    # arguments that are JSON but not an object go through the server's comparison as they are: where it
    # looks a key up in them it breaks (`unknown_error`), where it does not they pass
    def swe(name, raw, reference=row):
        return get_verifier("swe_pivot").score([{"type": "function_call", "name": name, "arguments": raw}],
                                               gym_row_to_state(reference))
    assert swe("bash", "null").reason == "unknown_error"  # 'command' in None
    assert swe("bash", "\"src\"").reward == 1.0  # 'command' in "src" is False: no command to compare
    edit = dict(row, expected_action={"type": "function_call", "name": "str_replace_editor",
                                      "arguments": "{\"command\": \"view\", \"path\": \"a.py\"}"})
    assert swe("str_replace_editor", "\"path\"", edit).reason == "unknown_error"  # "path".get(...)


def test_profile_takes_its_keys_before_or_after_the_states_file(tmp_path, tiny_model, sample_states):
    from pivotrl.pivots import write_states
    from pivotrl.pivots.profile import read_records

    states = tmp_path / "states.jsonl"
    write_states(states, sample_states[:3])
    r = run("profile", "--k", "2", "--max-tokens", "2", "--model", tiny_model, str(states), "-o", tmp_path / "a.jsonl")
    assert r.exit_code == 0, r.output
    r = run("profile", states, "-o", tmp_path / "b.jsonl", "--model", tiny_model, "--k", "2", "--max-tokens", "2",
            "-v", "exact", "--backend_options", '{"batch_size": 2}')
    assert r.exit_code == 0, r.output
    a, b = read_records(tmp_path / "a.jsonl"), read_records(tmp_path / "b.jsonl")
    assert [len(x["rewards"]) for x in a] == [2, 2, 2] and {x["verifier"] for x in b} == {"exact"}


def test_version_and_the_repository_files_a_user_looks_for():
    from importlib.metadata import version
    from pathlib import Path

    r = run("--version")
    assert r.exit_code == 0 and r.output.strip() == f"pivotrl {version('pivotrl')}"
    root = Path(__file__).parent.parent
    assert "Apache License" in (root / "LICENSE").read_text() and "Version 2.0" in (root / "LICENSE").read_text()
    assert "arXiv:2603.21383" in (root / "CITATION.cff").read_text()
