"""`swe_pivot`: NeMo Gym's SWE pivot reward, one test per level and failure code (rows written here)."""

import json
from difflib import SequenceMatcher

import pytest

from pivotrl import Action, ToolCall, get_verifier
from pivotrl.rewards.swe_pivot import tool_category


class S:
    def __init__(self, reference, tools=(), meta=None):
        self.reference, self.tools, self.meta, self.context, self.domain = reference, list(tools), meta or {}, [], "swe"


def expect(name, **args):
    return S(Action.tool_calls([ToolCall(name, args)]))


def call(name, **args):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


V = get_verifier("swe_pivot")
CONT = get_verifier("swe_pivot", reward_mode="continuous")


@pytest.mark.parametrize("name,category", [
    ("str_replace_editor", "edit"), ("StrReplaceEditor", "edit"), ("apply_patch", "edit"), ("execute_bash", "bash"),
    ("ExecuteBash", "bash"), ("terminal", "bash"), ("grep", "search"), ("list_directory", "search"),
    ("read_file", "read"), ("view", "read"), ("finish", "finish"), ("think", "think"), ("todo_write", "planning"),
    ("launch_rockets", "unknown")])
def test_tool_categories(name, category):
    assert tool_category(name) == category


def test_level0_tool_name():
    assert V.score(call("execute_bash", command="ls src/"), expect("shell", command="ls src/")).reason == "none"
    assert V.score(call("Execute_Bash", command="ls"), expect("execute_bash", command="ls")).reward == 1.0
    assert V.score(call("grep", pattern="x"), expect("str_replace_editor", command="view", path="/a.py")) \
        .reason == "tool_name_mismatch"
    assert V.score(call("tool_a"), expect("tool_b")).reason == "tool_name_mismatch"  # unknowns match only themselves
    assert V.score(call("custom_tool", x=1), expect("custom_tool", x=1)).reward == 1.0


def test_level1_edit_target():
    want = expect("str_replace_editor", command="str_replace", path="/workspace/proj/src/models.py", old_str="a", new_str="b")
    assert V.score(call("code_editor", command="str_replace", path="/repo/src/models.py", old_str="a", new_str="b"),
                   want).reason == "none"  # another root, same last two components
    assert V.score(call("str_replace_editor", command="str_replace", path="/workspace/proj/src/views.py",
                        old_str="a", new_str="b"), want).reason == "target_mismatch"
    assert V.score(call("str_replace_editor", command="view", path="/workspace/proj/src/models.py"),
                   want).reason == "target_mismatch"


@pytest.mark.parametrize("got,ok", [([190, 260], True), ([210, 260], True), ([240, 290], False), ([1, 50], False),
                                    (None, True), ("[200, 250]", True)])
def test_level1_view_range_covers_80_percent(got, ok):
    want = expect("str_replace_editor", command="view", path="/foo.py", view_range=[200, 250])
    args = {"command": "view", "path": "/foo.py"} | ({"view_range": got} if got is not None else {})
    assert (V.score(call("str_replace_editor", **args), want).reason == "none") is ok


def test_level1_bash_target():
    want = expect("execute_bash", command="grep -n 'pattern' src/utils/")
    assert V.score(call("execute_bash", command="grep -r 'pattern' src/utils/"), want).reason == "none"
    assert V.score(call("execute_bash", command="grep -r 'pattern' src/views/"), want).reason == "target_mismatch"
    assert V.score(call("execute_bash", command="pytest tests/"), want).reason == "target_mismatch"  # another verb
    cd = expect("execute_bash", command="cd /workspace/backend && ls")
    assert V.score(call("execute_bash", command="cd /workspace/frontend && ls"), cd).reason == "target_mismatch"
    short = expect("execute_bash", command="ls")  # same verb, no paths, too different: the 0.3 floor
    assert V.score(call("execute_bash", command="ls -la --color=auto --group-directories-first -h"),
                   short).reason == "target_mismatch"


def test_level1_search_and_read_target():
    want = expect("read_file", path="/workspace/a/b/c.py")
    assert V.score(call("view_file", path="/other/a/b/c.py"), want).reason == "none"
    assert V.score(call("grep_files", path="/workspace/a/b/d.py"), want).reason == "tool_name_mismatch"
    assert V.score(call("cat_file", path="/workspace/x/b/c.py"), want).reason == "target_mismatch"
    assert V.score(call("read_file"), want).reason == "none"  # nothing to compare: passes


def test_level2_similarity_binary_and_continuous():
    want = expect("str_replace_editor", command="str_replace", path="/m.py", old_str="return a - b", new_str="return a + b")
    close = call("str_replace_editor", command="str_replace", path="/m.py", old_str="return a - b", new_str="return a+b")
    far = call("str_replace_editor", command="str_replace", path="/m.py", old_str="return a - b", new_str="raise KeyError()")
    mid_new = "return sum([a, b])"
    mid = call("str_replace_editor", command="str_replace", path="/m.py", old_str="return a - b", new_str=mid_new)
    assert V.score(close, want).reward == 1.0 and V.score(close, want).reason == "none"
    assert V.score(far, want).reason == "similarity_below_threshold"
    sim = SequenceMatcher(None, mid_new, "return a + b").ratio()
    assert 0.4 <= sim < 0.8
    assert V.score(mid, want).reason == "similarity_below_threshold"  # binary: nothing below 0.8
    shaping = 1 - 0.1 * min(len("return a - b\n" + mid_new) / 500, 1)
    assert CONT.score(mid, want).reward == pytest.approx((0.5 + 0.5 * (sim - 0.4) / 0.4) * shaping)
    assert CONT.score(close, want).reward == pytest.approx(1 - 0.1 * len("return a - b\nreturn a+b") / 500)
    assert get_verifier("swe_pivot", enable_argument_similarity=False).score(far, want).reward == 1.0


def test_level2_patch_and_bash_similarity():
    want = expect("apply_patch", patch="--- a/x.py\n+++ b/x.py\n-old\n+new")
    assert V.score(call("apply_patch", patch="--- a/x.py\n+++ b/x.py\n-old\n+new "), want).reward == 1.0
    assert V.score(call("apply_patch"), want).reason == "similarity_below_threshold"  # content on one side only
    bash = expect("execute_bash", command="python -m pytest tests/test_models.py -x")
    assert V.score(call("run_bash", command="python -m pytest tests/test_models.py -x -q"), bash).reward == 1.0


def test_expected_and_model_output_failures():
    assert V.score(call("execute_bash", command="ls"), S(Action.message("done"))).reason == "expected_action_invalid"
    assert V.score("I would run ls.", expect("execute_bash", command="ls")).reason == "model_output_invalid"
    broken = '<tool_call>{"name": "execute_bash", "arguments": "{not json"}</tool_call>'
    assert V.score(broken, expect("execute_bash", command="ls")).reason == "none"  # broken arguments: {} as upstream
    assert V.score(call("execute_bash", command="ls") + call("grep", pattern="x"),
                   expect("execute_bash", command="ls")).reward == 1.0  # the first call is the one judged


def test_dispatch_scores_nvidia_rows_by_their_agent():
    from pivotrl.pivots.gym import gym_row_to_state

    row = {"responses_create_params": {"input": [{"role": "user", "content": "fix it"}],
                                       "tools": [{"type": "function", "name": "execute_bash", "parameters": {}}]},
           "expected_action": {"type": "function_call", "name": "execute_bash", "arguments": '{"command": "ls src/"}'},
           "agent_ref": {"type": "responses_api_agents", "name": "swe_pivot_tool_simulation_agent"}}
    state = gym_row_to_state(row)
    dispatch = get_verifier("dispatch")
    assert dispatch.choose(state).name == "swe_pivot"
    assert dispatch.score(call("shell", command="ls src/"), state).reason == "none"  # category match: swe_pivot's rule
    row["agent_ref"]["name"] = "single_step_tool_use_with_argument_comparison_agent"
    assert dispatch.choose(gym_row_to_state(row)).name == "tool_call"
    assert get_verifier("dispatch", by_domain={"tooluse": "exact"}).choose(gym_row_to_state(row)).name == "exact"
