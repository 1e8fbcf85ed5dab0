import json

from hypothesis import given, settings, strategies as st

from pivotrl import parse_action

TOOLS = [{"type": "function", "function": {"name": "edit", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "line": {"type": "integer"}, "dry_run": {"type": "boolean"},
    "tags": {"type": "array"}}}}}]


def test_hermes_blocks_after_thinking():
    a = parse_action('<think>I should look.</think>\nLet me check.\n<tool_call>\n{"name": "edit", '
                     '"arguments": {"path": "a.py", "line": 3}}\n</tool_call>\n<tool_call>{"name": "edit", '
                     '"arguments": "{\\"path\\": \\"b.py\\"}"}</tool_call>')
    assert a.kind == "tool_calls" and a.reasoning == "I should look." and a.text == "Let me check."
    assert [(c.name, c.arguments) for c in a.calls] == [("edit", {"path": "a.py", "line": 3}), ("edit", {"path": "b.py"})]


def test_qwen3_coder_blocks_are_typed_by_schema():
    text = ("<tool_call>\n<function=edit>\n<parameter=path>\nsrc/a b.py\n</parameter>\n<parameter=line>\n42\n"
            "</parameter>\n<parameter=dry_run>\ntrue\n</parameter>\n<parameter=tags>\n[\"x\"]\n</parameter>\n"
            "</function>\n</tool_call>")
    a = parse_action(text, TOOLS)
    assert a.calls[0].name == "edit"
    assert a.calls[0].arguments == {"path": "src/a b.py", "line": 42, "dry_run": True, "tags": ["x"]}


def test_openai_message_and_trl_message_list():
    msg = {"role": "assistant", "content": None,
           "tool_calls": [{"id": "1", "type": "function", "function": {"name": "edit", "arguments": "{\"line\": 1}"}}]}
    assert parse_action(msg).calls[0].arguments == {"line": 1}
    assert parse_action([{"role": "assistant", "content": "All done."}]).text == "All done."


def test_no_action_when_thinking_never_ends_or_output_is_empty():
    assert parse_action("<think>hmm, the user wants").kind == "none"
    assert parse_action("<think>x</think>   ").kind == "none"
    assert parse_action("").kind == "none" and parse_action(None).kind == "none"


def test_malformed_calls_are_kept_as_malformed():
    a = parse_action('<tool_call>{"name": "edit", "arguments": {"line": </tool_call>')
    assert a.kind == "tool_calls" and a.calls[0].malformed and a.calls[0].name == "edit"
    b = parse_action('<tool_call>{"name": "edit", "arguments": "not json"}</tool_call>')
    assert b.calls[0].malformed and b.calls[0].raw_arguments == "not json"
    c = parse_action('<tool_call>{"name": "edit", "arguments": {}}')  # cut off before the closing tag
    assert c.calls[0].name == "edit" and not c.calls[0].malformed


def test_deep_nesting_and_invalid_utf8_do_not_raise():
    deep = "<tool_call>" + '{"name": "edit", "arguments": ' + "[" * 100_000 + "</tool_call>"
    assert parse_action(deep).calls[0].malformed
    assert parse_action(b"\xff\xfe<tool_call>\xc3").kind in ("tool_calls", "message")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), json_values,
                 st.builds(lambda v: f"<tool_call>{json.dumps(v)}</tool_call>", json_values),
                 st.builds(lambda n, v: f'<tool_call>{{"name": {json.dumps(n)}, "arguments": {json.dumps(v)}}}</tool_call>',
                           st.text(max_size=10), json_values)))
def test_parser_never_raises(x):
    a = parse_action(x, TOOLS)
    assert a.kind in ("tool_calls", "message", "none")
    assert (a.kind == "tool_calls") == bool(a.calls)
