"""Thinking models (templates that open `<think>` in the prompt, as Qwen3-*-Thinking-2507's): a cut
sample is no action, reasoning is stripped alike everywhere, and one budget governs profiling,
training and evaluation."""

import json

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner

from pivotrl import Action, ToolCall, as_reward_function, get_verifier
from pivotrl.cli import app
from pivotrl.rewards import parse_action, safe_score
from pivotrl.rewards.parse import as_turn, opens_reasoning

runner = CliRunner()
THINKING_PROMPT = "<|im_start|>user\nCancel my order.<|im_end|>\n<|im_start|>assistant\n<think>\n"
PLAIN_PROMPT = "<|im_start|>user\nCancel my order.<|im_end|>\n<|im_start|>assistant\n"


class S:
    def __init__(self, reference):
        self.reference, self.tools, self.domain, self.meta, self.context = reference, [], "default", {}, []


def test_text_cut_mid_reasoning_is_no_action():
    cut = "The user wants the order cancelled, so first I"
    assert opens_reasoning(THINKING_PROMPT) and not opens_reasoning(PLAIN_PROMPT)
    assert not opens_reasoning("<think>x</think> done")
    message_turn = S(Action.message("Your order is cancelled."))
    v = get_verifier("tool_call")
    assert v.score(as_turn(THINKING_PROMPT, cut), message_turn).reason == "no_action_found"
    assert v.score(as_turn(PLAIN_PROMPT, cut), message_turn).reward == 1.0  # no reasoning opened: a message
    done = as_turn(THINKING_PROMPT, "Cancel it.</think>\n\nYour order is cancelled.")
    assert parse_action(done) == Action.message("Your order is cancelled.", reasoning="Cancel it.")
    call_turn = S(Action.tool_calls([ToolCall("cancel", {"order_id": "O1"})]))
    call = 'Cancel O1.</think><tool_call>{"name": "cancel", "arguments": {"order_id": "O1"}}</tool_call>'
    assert v.score(as_turn(THINKING_PROMPT, call), call_turn).reward == 1.0
    assert as_turn(THINKING_PROMPT, "<think>already tagged") == "<think>already tagged"


@given(st.text(max_size=300), st.text(max_size=100))
def test_whatever_a_thinking_model_writes_before_closing_its_reasoning_is_no_action(reasoning, after):
    reasoning = reasoning.replace("</think>", "")
    after = after.replace("<think>", "").replace("</think>", "")
    assert parse_action(as_turn(THINKING_PROMPT, reasoning)).kind == "none"
    closed, plain = parse_action(as_turn(THINKING_PROMPT, reasoning + "</think>" + after)), parse_action(after)
    assert (closed.kind, closed.calls, closed.text) == (plain.kind, plain.calls, plain.text)  # reasoning stripped


def test_a_cut_sample_scores_zero_in_profiling_and_in_the_trainer_reward(tmp_path):
    from pivotrl import states_to_dataset
    from pivotrl.pivots.state import State
    from pivotrl.train.ledger import Ledger
    from pivotrl.train.pivotrl_trainer import counting_reward

    message_turn = S(Action.message("Done."))
    assert safe_score(get_verifier("tool_call"), "Done.", message_turn, truncated=True).reason == "truncated"
    state = State("s1", "t1", 1, 2, [{"role": "user", "content": "hi"}], [], Action.message("Done."))
    cols = {k: v for k, v in states_to_dataset([state]).to_dict().items() if k != "prompt"}
    eos, pad = 7, 0
    fn = as_reward_function("tool_call", end_token_ids=[eos, pad])
    # ended by end of turn: scored; cut by the budget: 0; a thinking prompt: the completion is read whole
    assert fn(["Done."], completion_ids=[[5, eos]], prompts=[PLAIN_PROMPT], **cols) == [1.0]
    assert fn(["Done."], completion_ids=[[5, 6]], prompts=[PLAIN_PROMPT], **cols) == [0.0]
    assert fn(["still thinking"], completion_ids=[[5, eos]], prompts=[THINKING_PROMPT], **cols) == [0.0]
    assert fn(["ok</think>Done."], completion_ids=[[5, eos]], prompts=[THINKING_PROMPT], **cols) == [1.0]
    assert as_reward_function("tool_call")(["Done."], completion_ids=[[5, 6]], **cols) == [1.0]  # no end ids given
    trainer_reward = counting_reward("tool_call", Ledger(tmp_path, "pivotrl"), [eos, pad])  # what GRPOTrainer calls
    assert trainer_reward(["Done.", "Done."], completion_ids=[[5, eos], [5, 6]], prompts=[PLAIN_PROMPT] * 2,
                          **{k: v * 2 for k, v in cols.items()}) == [1.0, 0.0]


def test_training_takes_the_profiles_budget_and_template_unless_told_otherwise():
    from pivotrl.train.pivotrl_trainer import PivotRLConfig, generation_settings

    profile = {"generation": {"max_tokens": 4096, "chat_template": None,
                              "chat_template_kwargs": {"enable_thinking": True}}}
    cfg = PivotRLConfig(model="m", report_to=[])
    notes = generation_settings(cfg, profile)
    assert cfg.max_completion_length == 4096 and cfg.chat_template_kwargs == {"enable_thinking": True}
    assert len(notes) == 2 and all("as the pivots were profiled" in n for n in notes)
    mine = PivotRLConfig(model="m", report_to=[], max_completion_length=512)
    notes = generation_settings(mine, profile)
    assert mine.max_completion_length == 512 and any(n.startswith("warning: max_completion_length") for n in notes)
    bare = PivotRLConfig(model="m", report_to=[])
    assert generation_settings(bare, None) == [] and bare.max_completion_length == 256


def test_sft_renders_with_the_same_template_options():
    from pivotrl.data.sample import generate_sample_trajectories
    from pivotrl.train.sft import SFTRunConfig, sft_dataset

    trajs = generate_sample_trajectories(3)
    ds = sft_dataset(trajs, {"enable_thinking": False})
    assert ds["chat_template_kwargs"] == [{"enable_thinking": False}] * 3
    assert "chat_template_kwargs" not in sft_dataset(trajs).column_names
    cfg = SFTRunConfig(model="m", report_to=[], chat_template_kwargs='{"enable_thinking": false}')
    assert cfg.chat_template_kwargs == {"enable_thinking": False} and cfg.eval_max_tokens == 256


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory):
    from pivotrl.data.sample import generate_sample_trajectories
    from pivotrl.models import build_tiny_model

    texts = [json.dumps(t.messages) for t in generate_sample_trajectories(40)]
    return str(build_tiny_model(tmp_path_factory.mktemp("thinking"), texts, seed=0, thinking=True))


def test_a_thinking_model_goes_from_profile_to_an_evaluated_checkpoint(tmp_path, thinking_model, sample_states):
    from pivotrl.pivots import write_states
    from pivotrl.pivots.profile import read_records
    from pivotrl.train.ledger import read_ledger

    states = tmp_path / "states.jsonl"
    write_states(states, sample_states[:6])
    write_states(tmp_path / "heldout.jsonl", sample_states[6:8])
    r = runner.invoke(app, ["profile", str(states), "--model", thinking_model, "--k", "2", "--max-tokens", "6",
                            "--keep-samples", "true", "-o", str(tmp_path / "profile.jsonl")])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "were cut by max_tokens=6" in r.output  # a random model never ends in 6
    records = read_records(tmp_path / "profile.jsonl")
    assert all(s.startswith("<think>") for rec in records for s in rec["samples"])  # the turn as a whole
    assert sum(rec["n_truncated"] for rec in records) == 12 and {x for rec in records for x in rec["reasons"]} == \
        {"truncated"}
    meta = json.loads((tmp_path / "profile.jsonl.meta.json").read_text())
    assert meta["generation"]["max_tokens"] == 6 and meta["truncated_samples"] == 12
    r = runner.invoke(app, ["report", str(tmp_path / "profile.jsonl"), "-o", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    assert "samples cut by the token budget (scored 0): 100.0%" in (tmp_path / "report" / "README.md").read_text()
    r = runner.invoke(app, ["select", str(tmp_path / "profile.jsonl"), "-o", str(tmp_path / "pivots.jsonl"),
                            "--rule", "all"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--model", thinking_model, "--pivots", str(tmp_path / "pivots.jsonl"),
                            "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--num_generations", "2",
                            "--prompts_per_step", "1", "--eval_every", "1", "--eval_states",
                            str(tmp_path / "heldout.jsonl"), "--report_to", "none"])
    assert r.exit_code == 0, r.output
    assert "max_completion_length = 6, as the pivots were profiled" in r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_completion_length"] == 6
    evals = [x for x in read_ledger(tmp_path / "run") if x["kind"] == "eval"]
    assert evals and evals[-1]["eval_states"] == 2 and evals[-1]["eval_accuracy"] == 0.0  # every action cut
