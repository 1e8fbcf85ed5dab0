"""The `tool_call` verifier against the documented behaviour of NeMo Gym's
single_step_tool_use_with_argument_comparison comparator (the reward of NVIDIA's tool-use and function-calling pivot datasets)."""

import itertools
import json

import pytest
from hypothesis import given, settings, strategies as st

from pivotrl import Action, ToolCall, get_verifier
from pivotrl.rewards.tool_call import maximum_matching


def call(args, name="f"):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


class S:  # the two fields a verifier reads
    def __init__(self, reference, tools=()):
        self.reference, self.tools, self.meta, self.domain = reference, list(tools), {}, "default"


def ref_call(args, name="f"):
    return S(Action.tool_calls([ToolCall.from_arguments(name, json.dumps(args))]))


# (expected arguments, generated arguments, threshold, reward, reason)
CASES = [
    ({"q": "find cheap flights"}, {"q": "find cheap flights"}, 0.1, 1.0, "expected_tool_call"),
    ({"q": "find cheap flights"}, {"q": "find cheap flights"}, 0.5, 1.0, "expected_tool_call"),  # scores exactly 0.5
    ({"q": "find cheap flights"}, {"q": "find cheap flights"}, 0.51, 0.0, "argument_value_different"),
    ({"q": "Hello World"}, {"q": "hello   world"}, 0.1, 1.0, "expected_tool_call"),  # lower-cased, split
    ({"q": "red shoes"}, {"q": "blue boots"}, 0.1, 0.0, "argument_value_different"),
    ({"q": "red shoes"}, {"q": "blue boots"}, 0.0, 1.0, "expected_tool_call"),  # SWE threshold 0 accepts
    ({"q": "a b c d e f g h i j"}, {"q": "a x y z"}, 0.1, 0.0, "argument_value_different"),  # 1/14 < 0.1
    ({"q": "a b c d e f g h i j"}, {"q": "a b x y"}, 0.1, 1.0, "expected_tool_call"),  # 2/14 >= 0.1
    ({"city": "Oslo"}, {"city": "oslo"}, 0.1, 0.0, "argument_value_different"),  # one word: exact
    ({"city": "Oslo"}, {"city": "Oslo"}, 0.1, 1.0, "expected_tool_call"),
    ({"city": "Oslo"}, {"city": "Oslo Norway"}, 0.1, 0.0, "argument_value_different"),  # <2 words on one side
    ({"city": ""}, {"city": ""}, 0.1, 1.0, "expected_tool_call"),
    ({"city": ""}, {"city": " "}, 0.1, 0.0, "argument_value_different"),
    ({"n": 1}, {"n": True}, 0.1, 1.0, "expected_tool_call"),  # bool is an int, and True == 1
    ({"n": 0}, {"n": False}, 0.1, 1.0, "expected_tool_call"),
    ({"n": 2}, {"n": True}, 0.1, 0.0, "argument_value_different"),
    ({"b": True}, {"b": 1}, 0.1, 0.0, "argument_value_type_different"),  # int is not a bool
    ({"x": 1.0}, {"x": 1}, 0.1, 0.0, "argument_value_type_different"),  # int is not a float
    ({"x": 1}, {"x": 1.0}, 0.1, 0.0, "argument_value_type_different"),
    ({"x": 0.3}, {"x": 0.1 + 0.2}, 0.1, 1.0, "expected_tool_call"),  # within 1e-6
    ({"x": 1.0}, {"x": 1.00001}, 0.1, 0.0, "argument_value_different"),
    ({"n": 3}, {"n": "3"}, 0.1, 0.0, "argument_value_type_different"),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, 0.1, 1.0, "expected_tool_call"),  # key order free
    ({"a": 1, "b": 2}, {"a": 1}, 0.1, 0.0, "argument_object_keys_different"),
    ({"a": 1}, {"a": 1, "b": 2}, 0.1, 0.0, "argument_object_keys_different"),
    ({"l": [1, 2]}, {"l": [2, 1]}, 0.1, 0.0, "argument_value_different"),  # lists in order
    ({"l": [1, 2]}, {"l": [1, 2, 3]}, 0.1, 0.0, "argument_list_length_different"),
    ({"l": [{"k": "v"}]}, {"l": [{"k": "w"}]}, 0.1, 0.0, "argument_value_different"),
    ({"o": {"in": [1]}}, {"o": {"in": 1}}, 0.1, 0.0, "argument_value_type_different"),
    ({"v": None}, {"v": None}, 0.1, 1.0, "expected_tool_call"),
    ({"v": None}, {"v": 0}, 0.1, 0.0, "argument_value_type_different"),
    ({}, {}, 0.1, 1.0, "expected_tool_call"),
]


@pytest.mark.parametrize("expected,generated,threshold,reward,reason", CASES)
def test_argument_comparison_table(expected, generated, threshold, reward, reason):
    v = get_verifier("tool_call", word_count_similarity_threshold=threshold)
    s = v.score(call(generated), ref_call(expected))
    assert (s.reward, s.reason) == (reward, reason)


def test_action_types():
    v = get_verifier("tool_call")
    msg = S(Action.message("Your order is cancelled."))
    s = v.score("Anything at all.", msg)
    assert (s.reward, s.reason) == (1.0, "expected_chat_message_found")
    assert v.score(call({}), msg).reason == "no_expected_chat_message"
    assert v.score("just text", ref_call({})).reason == "no_expected_tool_call"
    assert v.score("<think>still thinking", ref_call({})).reason == "no_action_found"
    assert v.score("<think>still thinking", msg).reason == "no_action_found"
    assert v.score(call({}, name="g"), ref_call({})).reason == "unexpected_tool"
    bad = '<tool_call>{"name": "f", "arguments": "{not json"}</tool_call>'
    s = v.score(bad, ref_call({}))
    assert (s.reward, s.reason) == (0.0, "arguments_decode_error")


A, B, C = {"id": "1"}, {"id": "2"}, {"id": "3"}


def batch(*argss):
    return S(Action.tool_calls([ToolCall.from_arguments("f", json.dumps(a)) for a in argss]))


BATCH_CASES = [
    # (config, expected calls, generated calls, reward, reason)
    ({}, [A, B], [B, A], 1.0, "expected_tool_call_batch"),
    ({}, [A, B], [A, B, C], 1.0, "expected_tool_call_batch"),  # surplus calls are free by default
    ({}, [A, B], [A], 0.0, "function_call_batch_length_different"),
    ({}, [A, B], [A, C], 0.0, "argument_value_different"),
    ({}, [A], [C, A], 1.0, "expected_tool_call"),
    ({}, [A], [B, C], 0.0, "argument_value_different"),
    ({"parallel_tool_call_rewarding": True}, [A, B], [A, B, C], 0.0, "function_call_batch_length_different"),
    ({"parallel_tool_call_rewarding": True, "allow_superset": True}, [A, B], [C, B, A], 1.0, "expected_tool_call_batch"),
    ({"parallel_tool_call_rewarding": True}, [A, B], [A], 0.0, "function_call_batch_length_different"),
    ({"parallel_tool_call_rewarding": True, "allow_subset": True}, [A, B], [A], 1.0, "expected_tool_call_batch"),
    ({"parallel_tool_call_rewarding": True, "parallel_tool_call_reward_mode": "fractional"}, [A, B, C], [A, C, {"id": "9"}],
     2 / 3, "argument_value_different"),
    ({"parallel_tool_call_rewarding": True, "allow_superset": True, "parallel_tool_call_reward_mode": "fractional"},
     [A, B], [A, C, C], 0.5, "argument_value_different"),
    ({"parallel_tool_call_rewarding": True, "allow_superset": True, "parallel_tool_call_reward_mode": "f1"},
     [A, B], [A, B, C], 0.8, "function_call_batch_length_different"),
    ({"parallel_tool_call_rewarding": True, "allow_subset": True, "parallel_tool_call_reward_mode": "f1"},
     [A, B], [B], 2 / 3, "function_call_batch_length_different"),
]


@pytest.mark.parametrize("config,expected,generated,reward,reason", BATCH_CASES)
def test_parallel_calls(config, expected, generated, reward, reason):
    v = get_verifier("tool_call", **config)
    s = v.score("\n".join(call(g) for g in generated), batch(*expected))
    assert s.reward == pytest.approx(reward) and s.reason == reason


def test_matching_undoes_an_early_pairing():
    # Generated call 0 fits both expected calls, call 1 only the first: only augmenting paths find 2.
    exp = [{"q": "red shoes"}, {"q": "red boots"}]
    gen = [{"q": "red shoes boots"}, {"q": "shoes red"}]
    v = get_verifier("tool_call", word_count_similarity_threshold=0.3)
    assert v.score("".join(call(g) for g in gen), batch(*exp)).reward == 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), max_size=5, unique=True), max_size=5))
def test_maximum_matching_is_maximum(candidates):
    m = maximum_matching(candidates)
    assert all(e in range(len(candidates)) and a in candidates[e] for a, e in m.items())
    assert len(set(m.values())) == len(m)
    best = 0  # brute force over assignments
    for choice in itertools.product(*[[None] + c for c in candidates]):
        used = [a for a in choice if a is not None]
        if len(used) == len(set(used)):
            best = max(best, len(used))
    assert len(m) == best
