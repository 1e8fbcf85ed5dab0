import json

import pytest
from hypothesis import given, settings, strategies as st

from pivotrl import Action, DataError, ToolCall, as_reward_function, get_verifier, list_verifiers, states_to_dataset
from pivotrl.rewards import Score, safe_score
from pivotrl.rewards.shell import canonical_command

TOOLS = [{"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
    "flight": {"type": "string"}, "seats": {"type": "integer"}, "insured": {"type": "boolean", "default": False},
    "cabin": {"type": "string", "enum": ["economy", "business"]}, "note": {"type": "string"},
    "price": {"type": "number"}}, "required": ["flight", "seats"]}}}]


class S:
    def __init__(self, reference, tools=TOOLS, domain="default", meta=None, context=()):
        self.reference, self.tools, self.domain, self.meta, self.context = reference, tools, domain, meta or {}, list(context)
        self.id = "s"


def calls(*argss, name="book"):
    return "".join(f"<tool_call>{json.dumps({'name': name, 'arguments': a})}</tool_call>" for a in argss)


def ref(*argss, name="book"):
    return S(Action.tool_calls([ToolCall(name, a) for a in argss]))


# --- tool_call_schema ---------------------------------------------------------------------------
SCHEMA_CASES = [
    ({"flight": "SK1", "seats": 2}, {"seats": "2", "flight": "SK1"}, 1.0, "match"),  # "2" -> 2, order free
    ({"flight": "SK1", "seats": 2}, {"flight": "SK1", "seats": 2.0}, 1.0, "match"),
    ({"flight": "SK1", "seats": 2, "insured": True}, {"flight": "SK1", "seats": 2, "insured": "true"}, 1.0, "match"),
    ({"flight": "SK1", "seats": 2}, {"flight": "SK1", "seats": 2, "insured": False}, 1.0, "match"),  # default = absent
    ({"flight": "SK1", "seats": 2}, {"flight": "SK1", "seats": 2, "insured": True}, 0.0, "wrong_arguments"),
    ({"flight": "SK1", "seats": 2, "cabin": "business"}, {"flight": "SK1", "seats": 2, "cabin": " Business "}, 1.0, "match"),
    ({"flight": "SK1", "seats": 2}, {"flight": "sk1", "seats": 2}, 0.0, "wrong_value"),  # identifiers exact
    ({"flight": "SK1", "seats": 2}, {"flight": "SK2", "seats": 2}, 0.0, "wrong_value"),
    ({"flight": "SK1", "seats": 2, "note": "window seat near the front please"},
     {"flight": "SK1", "seats": 2, "note": "Window seat near the front, please"}, 1.0, "match"),  # free text fuzzy
    ({"flight": "SK1", "seats": 2, "note": "window seat near the front please"},
     {"flight": "SK1", "seats": 2, "note": "aisle seat at the back"}, 0.0, "wrong_value"),
    ({"flight": "SK1", "seats": 2, "price": 10}, {"flight": "SK1", "seats": 2, "price": "10.0"}, 1.0, "match"),
    ({"flight": "SK1", "seats": 2}, {"flight": "SK1", "seats": "two"}, 0.0, "schema_invalid"),
    ({"flight": "SK1", "seats": 2}, {"flight": "SK1"}, 0.0, "schema_invalid"),  # required missing
    ({"flight": "SK1", "seats": 2}, {"flight": "SK1", "seats": 2, "cabin": "first"}, 0.0, "schema_invalid"),
]


@pytest.mark.parametrize("expected,generated,reward,reason", SCHEMA_CASES)
def test_schema_verifier(expected, generated, reward, reason):
    s = get_verifier("tool_call_schema").score(calls(generated), ref(expected))
    assert (s.reward, s.reason) == (reward, reason)


def test_schema_verifier_parallel_calls_are_a_multiset():
    v = get_verifier("tool_call_schema")
    r = ref({"flight": "A", "seats": 1}, {"flight": "B", "seats": 1})
    assert v.score(calls({"flight": "B", "seats": "1"}, {"flight": "A", "seats": 1}), r).reward == 1.0
    assert v.score(calls({"flight": "A", "seats": 1}), r).reason == "call_count_different"
    assert v.score(calls({"flight": "A", "seats": 1}, {"flight": "A", "seats": 1}), r).reward == 0.0
    assert v.score(calls({"flight": "A", "seats": 1}, {"flight": "A", "seats": 1}, {"flight": "B", "seats": 1}), r).reward == 0.0


# --- terminus -----------------------------------------------------------------------------------
def term(keys, done=False):
    return json.dumps({"analysis": "a", "plan": "p", "commands": [{"keystrokes": k, "duration": 0.1} for k in keys],
                       "task_complete": done})


def term1(keys, done=False):
    return json.dumps({"state_analysis": "s", "explanation": "e", "is_task_complete": done,
                       "commands": [{"keystrokes": k, "is_blocking": True, "timeout_sec": 5} for k in keys]})


def terminal_state(answer: str, harness: str | None = "terminus_2", **row):
    """A Terminal pivot row as `gym_row_to_state` reads it: `expected_answer`, `metadata.harness`."""
    from pivotrl.pivots.gym import gym_row_to_state

    md = {"harness": harness} if harness else {}
    return gym_row_to_state({"responses_create_params": {"input": [{"role": "user", "content": "fix it"}]},
                             "expected_answer": answer, "metadata": md, **row})


def test_terminus_string_mode():
    v = get_verifier("terminus")
    r = terminal_state(term(["ls -la\n", "cat notes.txt\n"]))
    assert v.score(term(["ls -la\n", "cat notes.txt\n"]), r) == Score(1.0, "none")
    assert v.score("<think>plan</think>" + term(["ls -la\n", "cat notes.txt\n"]), r).reward == 1.0
    assert v.score("```json\n" + term(["ls -la\n", "cat notes.txt\n"]) + "\n```", r).reason == "model_output_invalid"
    assert v.score(term(["rm -rf /tmp/x\n"]), r).reason == "string_similarity_below_threshold"
    assert v.score('{"commands": "ls"}', r).reason == "schema_check_failed"
    assert v.score('["ls"]', r).reason == "model_output_invalid"  # JSON, not an object
    assert v.score("", r).reason == "model_output_invalid"
    assert v.score(json.dumps({"analysis": "a", "plan": "p", "commands": [], "extra": 1}), r).reason == \
        "schema_check_failed"  # no other keys
    # keystrokes joined by nothing, as the server does: "ls" + "-la" is "ls-la", not "ls -la"
    split = terminal_state(term(["ls", "-la"]))
    strict = {"string_similarity_threshold": 0.99}
    assert get_verifier("terminus", **strict).score(term(["ls-la"]), split).reward == 1.0
    assert get_verifier("terminus", **strict).score(term(["ls -la"]), split).reward == 0.0
    assert get_verifier("terminus", separator=" ", **strict).score(term(["ls -la"]), split).reward == 1.0
    assert v.score(term([]), terminal_state(term([]))).reward == 1.0  # two empty lists: identical
    assert v.score(term([]), split).reason == "string_similarity_below_threshold"  # one empty: 0


def test_terminus_only_a_completing_reference_binds_the_flag():
    v = get_verifier("terminus")
    done = terminal_state(term(["exit\n"], done=True))
    assert v.score(term(["exit\n"], done=False), done).reason == "task_complete_check_failed"
    assert v.score(term(["exit\n"], done=True), done).reward == 1.0
    open_ = terminal_state(term(["ls\n"], done=False))
    assert v.score(term(["ls\n"], done=True), open_).reward == 1.0  # completing early is not checked
    one = terminal_state(term1(["exit\n"], done=True), harness="terminus_1")
    assert v.score(term1(["exit\n"], done=True), one).reward == 1.0
    assert v.score(term1(["exit\n"], done=False), one).reason == "task_complete_check_failed"


def test_terminus_harnesses_references_and_thresholds():
    v = get_verifier("terminus")
    one = terminal_state(term1(["ls -la\n"]), harness="terminus_1")
    assert v.score(term1(["ls -la\n"]), one).reward == 1.0
    assert v.score(term(["ls -la\n"]), one).reason == "schema_check_failed"  # the row's harness decides
    assert v.score(term(["ls\n"]), terminal_state(term(["ls\n"]), harness="terminus_9")).reason == "unknown_harness"
    assert v.score(term(["ls\n"]), terminal_state(term(["ls\n"]), harness=None)).reason == "unknown_harness"
    bare = S(Action.message(term(["ls\n"])), tools=[])  # a state from a trajectory: harness inferred
    assert v.score(term(["ls\n"]), bare).reward == 1.0
    assert get_verifier("terminus", infer_harness=False).score(term(["ls\n"]), bare).reason == "unknown_harness"
    loose = terminal_state(term(["cat notes.txt\n"]), threshold=0.5)
    assert v.score(term(["cat note.md\n"]), loose).reward == 1.0  # a row's own threshold wins
    assert v.score(term(["cat note.md\n"]), terminal_state(term(["cat notes.txt\n"]))).reward == 0.0
    assert v.score(term(["ls\n"]), terminal_state("not json")).reason == "expected_answer_invalid"
    # a reference that breaks its own harness's schema is the data's fault, not the candidate's
    assert v.score(term(["ls\n"]), terminal_state(term1(["ls\n"]))).reason == "expected_answer_invalid"
    # the reference may sit in the row's metadata only
    from pivotrl.pivots.gym import gym_row_to_state
    hidden = gym_row_to_state({"responses_create_params": {"input": []},
                               "metadata": {"harness": "terminus_2", "expected_answer": term(["pwd\n"])}})
    assert v.score(term(["pwd\n"]), hidden).reward == 1.0
    # both checks off: the schema and the flag decide
    assert get_verifier("terminus", enable_string_similarity=False).score(term(["rm x\n"]), loose).reward == 1.0


def test_terminus_reads_every_assistant_message_of_a_response():
    v = get_verifier("terminus")
    r = terminal_state(term(["ls\n"]))
    msg = lambda text: {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    assert v.score([{"type": "reasoning", "summary": []}, msg(term(["ls\n"]))], r).reward == 1.0
    # two messages are joined (the server does so, and the joined text is no longer one JSON object)
    assert v.score([msg(term(["ls\n"])), msg(term(["ls\n"]))], r).reason == "model_output_invalid"
    assert v.score([{"type": "function_call", "name": "x", "arguments": "{}"}], r).reason == "model_output_invalid"


def test_terminus_judge_mode_asks_twice_with_the_answers_swapped():
    prompts = []

    def judge(prompt):
        prompts.append(prompt)
        return "Same effect. [[A=B]] they are equivalent" if len(prompts) == 1 else "No. [[A!=B]] not equivalent"

    gold, cand = term(["grep -n foo src/a.py\n"]), term(["cat src/a.py | grep foo\n"])
    r = terminal_state(gold)
    once = get_verifier("terminus", judge=judge)
    assert once.score(cand, r) == Score(1.0, "none") and len(prompts) == 1
    assert prompts[0].index(gold) < prompts[0].index(cand)  # GOLD first
    prompts.clear()
    twice = get_verifier("terminus", judge=judge, check_twice_swap=True, reward_if_swap_fails=-1.0)
    assert twice.score(cand, r) == Score(-1.0, "judge_not_equivalent") and len(prompts) == 2
    assert prompts[1].index(cand) < prompts[1].index(gold)  # swapped
    prompts.clear()
    assert safe_score(twice, cand, r).reward == -1.0  # a configured penalty survives safe_score
    # the verdict is the last label near the end of the reply, else the first one anywhere
    assert get_verifier("terminus", judge=lambda p: "[[A!=B]] ... [[A=B]]").score(cand, r).reward == 1.0
    early = "[[A=B]] at first, but " + "on reflection " * 20 + "[[A!=B]]" + "." * 190
    assert get_verifier("terminus", judge=lambda p: early).score(cand, r).reward == 0.0
    first_only = "[[A=B]] then [[A!=B]]" + " filler" * 40
    assert get_verifier("terminus", judge=lambda p: first_only).score(cand, r).reward == 1.0
    assert get_verifier("terminus", judge=lambda p: "no label").score(cand, r).reason == "judge_parsing_failed"
    swap_silent = iter(["[[A=B]]", "no label"])
    v = get_verifier("terminus", judge=lambda p: next(swap_silent), check_twice_swap=True, reward_if_swap_fails=0.5)
    assert v.score(cand, r) == Score(0.0, "judge_swap_parsing_failed")
    # custom labels and a system message (the judge then gets the chat messages)
    seen = []
    custom = get_verifier("terminus", judge=lambda m: seen.append(m) or "<<SAME>>", judge_equal_label="<<SAME>>",
                          judge_not_equal_label="<<DIFF>>", judge_system_message="You grade.")
    assert custom.score(cand, r).reward == 1.0 and seen[0][0] == {"role": "system", "content": "You grade."}


@given(st.text(max_size=400))
def test_the_judges_last_label_near_the_end_decides(reply):
    from pivotrl.rewards.terminus import parse_verdict

    assert parse_verdict(reply + "\n[[A=B]] they are equivalent") is True
    assert parse_verdict(reply + "\n[[A!=B]] they are not") is False
    if "[[A=B]]" not in reply and "[[A!=B]]" not in reply:
        assert parse_verdict(reply) is None


# --- string_similarity, exact -------------------------------------------------------------------
def test_string_similarity():
    r = S(Action.message("Your order O123 has been cancelled."))
    v = get_verifier("string_similarity", threshold=0.8)
    assert v.score("your order O123 has been cancelled", r).reward == 1.0
    assert v.score("I could not find your order.", r).reward == 0.0
    g = get_verifier("string_similarity", graded=True).score("Your order O123 was cancelled.", r).reward
    assert 0.5 < g < 1.0
    arg = get_verifier("string_similarity", argument="note", threshold=0.9)
    assert arg.score(calls({"note": "Window seat"}), ref({"note": "window seat"})).reward == 1.0
    assert arg.score(calls({"note": "Window seat"}, name="other"), ref({"note": "window seat"})).reason == "wrong_tool"


def test_exact_is_strict_about_spelling():
    v = get_verifier("exact")
    r = ref({"flight": "SK1", "seats": 2})
    assert v.score(calls({"flight": "SK1", "seats": 2}), r).reward == 1.0
    assert v.score(calls({"seats": 2, "flight": "SK1"}), r).reward == 0.0
    assert v.score(calls({"flight": "SK1", "seats": 2.0}), r).reward == 0.0
    assert v.score(" Done. ", S(Action.message("Done."))).reward == 1.0


# --- shell ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,same", [
    ("ls -la /tmp", "ls -al /tmp", True),
    ("ls -la /tmp", "ls -l -a /tmp", True),
    ("grep -r -n foo src", "grep -nr foo src", True),
    ("sort --reverse data.txt | head -n 3", "sort --reverse data.txt|head -n 3", True),
    ("ls /tmp", "ls /var", False),
    ("ls -la", "ls -l", False),
    ("cp a b", "cp b a", False),
    ("cat 'my file.txt'", 'cat "my file.txt"', True),
    ("echo hi > out.txt", "echo hi >> out.txt", False),
])
def test_shell_equivalence(a, b, same):
    v = get_verifier("shell")
    assert (v.score(b, S(Action.message(a), tools=[])).reward == 1.0) is same
    assert (canonical_command(a) == canonical_command(b)) is same


def test_shell_unparsable_and_execution(tmp_path):
    v = get_verifier("shell")
    r = S(Action.message("cat notes.txt"), tools=[])
    assert v.score("cat 'unterminated", r).reason == "unparsable"
    (tmp_path / "notes.txt").write_text("hello\n")
    ex = get_verifier("shell", execute=True, workdir=str(tmp_path))
    assert ex.score("cat ./notes.txt", r).reason == "same_effect"
    assert ex.score("head -n 1 notes.txt", r).reason == "same_effect"
    assert ex.score("rm notes.txt", r).reason == "different_effect"
    assert (tmp_path / "notes.txt").exists()  # ran in a throwaway copy
    # folders and hidden files are effects too: the same output beside them is not the same effect
    assert ex.score("cat notes.txt; mkdir -p junk/a/b", r).reason == "different_effect"
    assert ex.score("cat notes.txt; touch .hidden", r).reason == "different_effect"
    assert ex.score("cat notes.txt; ln -s notes.txt .l", r).reason == "different_effect"
    via_arg = get_verifier("shell", argument="cmd")
    rr = S(Action.tool_calls([ToolCall("run", {"cmd": "ls -la"})]), tools=[])
    assert via_arg.score(calls({"cmd": "ls -al"}, name="run"), rr).reward == 1.0


# --- judge ----------------------------------------------------------------------------------------
def test_judge_parses_strictly_and_caches(tmp_path):
    replies = []

    def judge(prompt):
        replies.append(prompt)
        return "Same order, same reason.\nVERDICT: YES" if "O123" in prompt.split("Candidate action:")[1] else "VERDICT: NO"

    cache = tmp_path / "judge.jsonl"
    v = get_verifier("judge", judge=judge, cache_path=str(cache))
    r = S(Action.message("Order O123 is cancelled."))
    assert v.score("I cancelled O123 for you.", r).reason == "judge_yes"
    assert v.score("I cancelled O999.", r).reason == "judge_no"
    assert v.score("I cancelled O123 for you.", r).reward == 1.0
    assert len(replies) == 2  # the repeated pair was not judged again
    again = get_verifier("judge", judge=judge, cache_path=str(cache))
    assert again.score("I cancelled O123 for you.", r).reward == 1.0 and len(replies) == 2  # cache on disk
    rambling = get_verifier("judge", judge=lambda p: "VERDICT: YES, probably")
    assert rambling.score("x", r).reason == "judge_unparseable"
    broken = get_verifier("judge", judge=lambda p: 1 / 0)
    assert broken.score("x", r).reason == "judge_error"


# --- dispatch, registry, TRL adapter -------------------------------------------------------------
def test_dispatch_by_domain_action_and_agent():
    v = get_verifier("dispatch", default="tool_call", by_domain={"terminal": "terminus"},
                     by_action={"message": {"name": "string_similarity", "threshold": 0.9}},
                     by_agent={"swe_agent": {"name": "tool_call", "word_count_similarity_threshold": 0.0}})
    assert v.score("totally different", S(Action.message("Your order is cancelled."))).reward == 0.0
    assert v.score("Your order is cancelled.", S(Action.message("Your order is cancelled."))).reward == 1.0
    t = S(Action.message(term(["ls\n"])), domain="terminal")
    assert v.score(term(["ls\n"]), t).reward == 1.0
    swe = ref({"note": "red shoes"})
    assert v.score(calls({"note": "blue boots"}), swe).reward == 0.0
    swe.meta = {"gym": {"extra": {"agent_ref": {"name": "swe_agent"}}}}
    assert v.score(calls({"note": "blue boots"}), swe).reward == 1.0


def test_dispatch_routes_nemo_gym_rows_by_agent_or_layout_and_refuses_to_guess():
    from pivotrl.pivots.gym import gym_row_to_state
    from pivotrl.rewards import check_states

    v = get_verifier("dispatch", options={"terminus": {"string_similarity_threshold": 0.5}})
    base = {"responses_create_params": {"input": [{"role": "user", "content": "go"}]}}
    terminal = gym_row_to_state({**base, "expected_answer": term(["ls\n"]), "metadata": {"harness": "terminus_2"}})
    assert v.choose(terminal).name == "terminus" and v.choose(terminal).threshold == 0.5  # no agent_ref: by layout
    # a message that is not Terminus JSON: the terminus rule gives 0 where tool_call would pay any message
    assert v.score("I am done.", terminal) == Score(0.0, "model_output_invalid")
    tooluse = gym_row_to_state({**base, "expected_action": {"type": "message", "content": "Hi."}})
    assert v.choose(tooluse).name == "tool_call"  # the row format's default agent
    stranger = gym_row_to_state({**base, "expected_action": {"type": "message", "content": "Hi."},
                                 "agent_ref": {"type": "responses_api_agents", "name": "my_custom_agent"}})
    unknown = gym_row_to_state({**base, "expected_answer": "do X"})  # an answer, but for which server?
    for state in (stranger, unknown):
        with pytest.raises(DataError, match="no verifier"):
            check_states(v, [tooluse, state], "rows.jsonl")
        assert v.score("Hi.", state) == Score(0.0, "unroutable")  # mid-run: never a guess, never a crash
    routed = get_verifier("dispatch", by_agent={"my_custom_agent": "tool_call"})
    check_states(routed, [stranger])
    check_states(get_verifier("dispatch", nemo_gym_agents=False), [stranger, unknown])  # rules off: by action


def prefers_short(completion, state):
    return 1.0 if len(str(completion)) < 10 else 0.0


def test_registry_loads_user_verifiers():
    assert {"tool_call", "tool_call_schema", "terminus", "string_similarity", "shell", "judge", "exact",
            "dispatch"} <= set(list_verifiers())
    v = get_verifier(f"{__name__}:prefers_short")
    assert v.score("hi", None).reward == 1.0 and v.score("a long answer", None).reward == 0.0
    with pytest.raises(DataError, match="unknown verifier"):
        get_verifier("nope")
    with pytest.raises(DataError, match="cannot load"):
        get_verifier("no_such_module_xyz:f")


def test_reward_function_reads_dataset_columns(sample_path):
    from pivotrl import extract_states, load_trajectories

    states = extract_states(load_trajectories(sample_path))[:12]
    ds = states_to_dataset(states)
    fn = as_reward_function("tool_call")
    good = [s.reference.text if s.reference.kind == "message" else calls(*[c.arguments for c in s.reference.calls],
                                                                               name=s.reference.calls[0].name)
            for s in states]
    # Parallel references call one tool twice, so `calls(..., name=first)` reproduces them.
    cols = {k: ds[k] for k in ds.column_names if k != "prompt"}
    assert fn(good, prompts=ds["prompt"], **cols) == [1.0] * len(states)
    assert fn(["<think>"] * len(states), **cols) == [0.0] * len(states)
    assert fn.__name__ == "tool_call_reward"


# --- every verifier on hostile input -------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=25)
completions = st.one_of(
    st.text(max_size=400), st.binary(max_size=200), json_values,
    st.builds(lambda a: calls(a), st.dictionaries(st.sampled_from(["flight", "seats", "cabin", "note", "x"]), json_values)),
    st.builds(lambda v: f"<tool_call>{json.dumps(v)}</tool_call>", json_values),
    st.just("<tool_call>" + "[" * 50_000), st.just("x" * 300_000),
)
HOSTILE_REFS = [ref({"flight": "SK1", "seats": 2, "note": "window seat please"}), S(Action.message(term(["ls\n"]))),
                ref({"flight": "A", "seats": 1}, {"flight": "B", "seats": 1})]


@settings(max_examples=150, deadline=None)
@given(completions, st.sampled_from(HOSTILE_REFS))
def test_no_verifier_raises_on_hostile_output(completion, state):
    for name in ("tool_call", "tool_call_schema", "terminus", "string_similarity", "shell", "exact"):
        s = safe_score(get_verifier(name), completion, state)
        assert 0.0 <= s.reward <= 1.0 and isinstance(s.reason, str) and s.reason


# --- every registered verifier, garbage completions and garbage states, through safe_score ---------
def _judge(prompt):
    return "It does.\nVERDICT: YES" if len(prompt) % 2 else "no idea"


PROMPT = [{"role": "user", "content": "Go."}]
LAB_TASKS = [{"files": {"data/oslo.txt": "temp=3\nrain=7\n"}, "kind": "value", "answer": "3", "key_name": "temp",
              "domain": "terminal", "prompt": PROMPT},
             {"files": {"calc.py": "def f(x):\n    return x - 1\n"}, "domain": "code", "prompt": PROMPT},
             {"docs": {"d1": "Oslo is in Norway.", "d2": "Lima is in Peru."}, "answer": "Norway", "domain": "search",
              "prompt": PROMPT},
             {"users": [["U1", "Ada Kim", "12345"]], "orders": [["O1", "U1", "lamp", "pending"]], "name": "Ada Kim",
              "zip_code": "12345", "item": "lamp", "goal": "cancel", "domain": "tooluse", "prompt": PROMPT}]
garbage_meta = st.one_of(
    json_values, st.builds(lambda t: {"task": t}, json_values), st.builds(lambda t: {"trajectory_meta": {"task": t}}, json_values),
    st.builds(lambda t: {"trajectory_meta": t}, json_values), st.sampled_from([{"task": t} for t in LAB_TASKS]),
    st.builds(lambda t, k, v: {"task": {**t, k: v}}, st.sampled_from(LAB_TASKS),
              st.sampled_from(["files", "docs", "answer", "key_name", "kind", "domain", "prompt", "users"]), json_values),
    st.builds(lambda g: {"gym": g}, json_values))
references = st.one_of(
    st.sampled_from([Action.message("The temp is 3."), Action.message("ls\n"),
                     Action.tool_calls([ToolCall("run", {"command": "cat data/oslo.txt"})]),
                     Action.tool_calls([ToolCall("edit", {"path": "calc.py", "old": "x - 1", "new": "x + 1"})]),
                     Action.tool_calls([ToolCall("search", {"query": "Oslo"})]),
                     Action.tool_calls([ToolCall("book", {"flight": "SK1", "seats": 2})])]),
    st.builds(lambda n, a: Action.tool_calls([ToolCall(n, a)]), st.text(max_size=8), st.dictionaries(st.text(max_size=6), json_values, max_size=3)))
garbage_tools = st.one_of(st.just(TOOLS), st.just([]), st.lists(json_values, max_size=3))
garbage_context = st.one_of(st.just([]), st.lists(st.dictionaries(st.sampled_from(["role", "content", "tool_calls"]), json_values), max_size=3),
                            st.lists(json_values, max_size=3))


@settings(max_examples=200, deadline=None)
@given(completions, references, garbage_meta, garbage_tools, garbage_context, st.sampled_from(["default", "terminal", "code", "swe"]))
def test_every_registered_verifier_survives_garbage(completion, reference, meta, tools, context, domain):
    state = S(reference, tools=tools, domain=domain, context=context)
    state.meta = meta
    for name in list_verifiers():
        verifier = get_verifier(name, judge=_judge) if name == "judge" else get_verifier(name)
        s = safe_score(verifier, completion, state)
        assert 0.0 <= s.reward <= 1.0 and isinstance(s.reason, str) and s.reason
        # safe_score would hide a crash as a 0: our own verifiers must not crash at all
        assert not s.reason.startswith("verifier_error"), (name, s.reason)


def test_safe_score_turns_any_exception_into_a_counted_zero():
    class Broken:
        def score(self, completion, state):
            raise KeyError("boom")

    assert safe_score(Broken(), "x", ref({"flight": "A", "seats": 1})) == Score(0.0, "verifier_error:KeyError")


def test_judge_inside_a_trainer_sees_the_state_messages(tiny_model, sample_states):
    """TRL passes the rendered prompt text; the judge must get the conversation, not its characters."""
    from transformers import AutoTokenizer

    from pivotrl.train.common import grpo_dataset

    seen = []

    def judge(prompt):
        seen.append(prompt)
        return "Same effect.\nVERDICT: YES"

    states = sample_states[:3]
    ds = grpo_dataset(states, AutoTokenizer.from_pretrained(tiny_model))
    fn = as_reward_function(get_verifier("judge", judge=judge))
    cols = {k: ds[k] for k in ds.column_names if k != "prompt"}
    assert fn(["Hello there."] * 3, prompts=ds["prompt"], **cols) == [1.0] * 3
    last = states[0].context[-1]
    assert f"{last['role']}: {str(last['content'])[:40]}" in seen[0]


def test_the_terminal_task_pays_one_answer_not_a_list_of_candidates():
    from pivotrl.lab.domains.terminal import answers_with

    assert answers_with("The temp is 17.", "17") and answers_with("17", "17") and answers_with("It is 17.", "17")
    assert not answers_with(" ".join(str(i) for i in range(41)), "17")  # answer spraying
    assert not answers_with("17 or 18", "17") and not answers_with("The temp is 170.", "17")
    assert not answers_with("There are 4 files (data/oslo.txt ...)", "3")


def test_a_judge_that_never_replies_scores_0_after_its_timeout_and_is_not_cached(sample_states):
    import threading
    import time

    release = threading.Event()
    replies = iter(["hung", "VERDICT: YES"])

    def judge(prompt):
        if next(replies) == "hung":
            release.wait(30)  # a dead connection: no reply
        return "VERDICT: YES"

    state = next(s for s in sample_states if s.reference.kind == "tool_calls")
    call = state.reference.calls[0]
    completion = "<tool_call>" + json.dumps({"name": call.name, "arguments": call.arguments}) + "</tool_call>"
    v = get_verifier("judge", judge=judge, timeout_s=0.5)
    t0 = time.monotonic()
    assert v.score(completion, state) == Score(0.0, "judge_timeout")
    assert time.monotonic() - t0 < 5
    assert v.score(completion, state) == Score(1.0, "judge_yes")  # asked again: the timeout was not cached
    release.set()
    gate = threading.Event()
    hung = get_verifier("terminus", judge=lambda p: gate.wait(30) and "[[A=B]]", judge_timeout_s=0.5)
    r = terminal_state(term(["grep -n foo src/a.py\n"]))
    t0 = time.monotonic()
    assert hung.score(term(["cat src/a.py | grep foo\n"]), r) == Score(0.0, "unknown_error")  # as the server's failures
    assert time.monotonic() - t0 < 5
    gate.set()
