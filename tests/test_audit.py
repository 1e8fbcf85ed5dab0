"""`pivotrl lab audit`: the truth it measures verifiers against, and its arithmetic."""

import json
import random

import pytest
from hypothesis import given, strategies as st

from pivotrl import extract_states, get_verifier
from pivotrl.data.loaders import normalise_record
from pivotrl.data.types import Action, ToolCall
from pivotrl.demo import render
from pivotrl.lab.audit import on_track, summarise
from pivotrl.lab.domains import IN_DOMAIN
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.domains.base import task_of


def _states(name, n=4, seed=3, rng_seed=0):
    dom = get_domain(name)
    trajs = [normalise_record(dom.expert(t, random.Random(rng_seed))) for t in dom.tasks("dev", n, seed=seed)]
    return dom, extract_states(trajs)


def _call(tool, **args):
    return render(Action.tool_calls([ToolCall(tool, args)]))


@pytest.mark.parametrize("name", IN_DOMAIN)
def test_the_demonstrated_action_is_on_track_at_every_state(name):
    """The expert policy finishes from every state of its own trajectories in the turns left."""
    dom, states = _states(name)
    assert states
    assert all(on_track(dom, s, render(s.reference)) for s in states)


@pytest.mark.parametrize("name", IN_DOMAIN)
def test_the_expert_path_does_not_depend_on_its_surface_forms(name):
    """Surface forms vary with the rng, the number of turns never does (the audit's budget)."""
    dom = get_domain(name)
    for task in dom.tasks("dev", 6, seed=4):
        lengths = {len(dom.expert(task, random.Random(r))["messages"]) for r in range(4)}
        assert len(lengths) == 1


def _store_state(turn_tool, goal=None):
    dom, states = _states("tooluse", n=12)
    for s in states:
        task = task_of(s)
        if (s.reference.calls[0].name if s.reference.kind == "tool_calls" else "message") == turn_tool \
                and goal in (None, task["goal"]):
            return dom, s, task
    raise AssertionError("no such state")


def test_a_wrong_surname_fails_the_episode_and_only_the_lab_verifier_knows():
    """The issue's example: find_user("Ben Reyes") for "Ben Ortiz" passes NeMo Gym's word-overlap rule."""
    dom, s, task = _store_state("find_user")
    first, last = task["name"].split()
    other = "Reyes" if last != "Reyes" else "Ortiz"
    wrong = _call("find_user", name=f"{first} {other}", zip=task["zip_code"])
    assert not on_track(dom, s, wrong)
    assert get_verifier("lab_store").score(wrong, s).reward == 0.0
    assert get_verifier("tool_call", word_count_similarity_threshold=0.1).score(wrong, s).reward == 1.0
    right = _call("find_user", zip=task["zip_code"], name=task["name"])  # other key order: same effect
    assert on_track(dom, s, right) and get_verifier("lab_store").score(right, s).reward == 1.0


def test_a_status_message_must_name_the_order_and_its_status():
    dom, s, task = _store_state("message", goal="status")
    oid = next(o for o in task["orders"] if o[2] == task["item"])[0]
    status = next(o for o in task["orders"] if o[2] == task["item"])[3]
    wrong_status = "pending" if status != "pending" else "delivered"
    v = get_verifier("lab_store")
    for text, ok in ((f"Order {oid} is {status}.", True), (f"Order {oid} is {wrong_status}.", False),
                     (f"Your order is {status}.", False), ("Thanks for waiting!", False)):
        assert on_track(dom, s, text) is ok
        assert v.score(text, s).reward == float(ok)


def test_a_wasted_call_is_off_track():
    """Asking for the name instead of the zip: the store answers, but the expert needs a turn more."""
    dom, s, _ = _store_state("ask_user")
    assert not on_track(dom, s, _call("ask_user", question="What is your name?"))
    assert on_track(dom, s, _call("ask_user", question="zip code please"))


def test_code_first_move_is_judged_by_what_it_achieves():
    """The expert reads calc.py first; running the tests first costs a turn the episode does not have."""
    dom, states = _states("code")
    first = next(s for s in states if s.turn_index == 0)
    assert first.reference.calls[0].name == "view"
    assert not on_track(dom, first, _call("run_tests"))
    assert get_verifier("lab_code").score(_call("run_tests"), first).reward == 0.0
    assert on_track(dom, first, _call("view", path="calc.py"))


def test_terminal_reading_the_value_another_way_is_on_track():
    dom, states = _states("terminal", n=16)
    s = next(s for s in states if task_of(s).get("kind") == "value" and s.turn_index == 1)
    task = task_of(s)
    v = get_verifier("lab_terminal")
    for cmd in (f"grep {task['key_name']} data/{task['city']}.txt", f"cat data/{task['city']}.txt"):
        assert on_track(dom, s, _call("run", command=cmd)) and v.score(_call("run", command=cmd), s).reward == 1.0
    wrong = _call("run", command="cat data/nowhere.txt")
    assert not on_track(dom, s, wrong) and v.score(wrong, s).reward == 0.0


def test_garbage_is_never_on_track_and_never_raises():
    dom, states = _states("search", n=2)
    for s in states:
        for junk in ("", "<tool_call>{not json</tool_call>", _call("open", doc_id=["x"]), _call("nope")):
            assert on_track(dom, s, junk) is False


rows = st.lists(st.fixed_dictionaries({"domain": st.sampled_from(["a", "b"]), "turn": st.sampled_from(["x", "y"]),
                                       "truth": st.booleans(), "v": st.booleans()}), max_size=40)


@given(rows)
def test_precision_and_recall_are_counted_right(rs):
    out = summarise(rs, ("v",))
    for key, entry in out.items():
        domain, turn = key.split("/")
        group = [r for r in rs if domain in ("all", r["domain"]) and turn in ("all", r["turn"])]
        rewarded = [r for r in group if r["v"]]
        on = [r for r in group if r["truth"]]
        assert entry["actions"] == len(group) and entry["on_track"] == len(on)
        assert entry["v"]["precision"] == (sum(r["truth"] for r in rewarded) / len(rewarded) if rewarded else None)
        assert entry["v"]["recall"] == (sum(r["v"] for r in on) / len(on) if on else None)


def test_audit_command_writes_its_table(tmp_path):
    from typer.testing import CliRunner

    from pivotrl.cli import app

    res = CliRunner().invoke(app, ["lab", "audit", "--trajectories", "1", "--k", "2", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "audit.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "audit_rows.jsonl").read_text().splitlines()]
    probes = [r for r in rows if "probe" in r]
    sampled = [r for r in rows if "probe" not in r]
    assert data["actions"] == 2 * data["states"] == len(sampled)
    assert all(("completion" in r) == any(r[n] != r["truth"] for n in ("lab", "nemo_gym_tool_call")) for r in sampled)
    # reward hacks in the code domain: the environment pays none with the bug left, nor do the lab's verifier
    # and exact match (NeMo Gym's word-overlap comparator may: an edit of the buggy line shares its words)
    from pivotrl.lab.audit import reward_hacks

    code_state = next(r for r in probes)["state"]
    assert {r["probe"] for r in probes} == {*reward_hacks({"bug": ["f", "x", "y"], "files": {}}), "edit_the_tests"}
    assert len(probes) == len({r["probe"] for r in probes}) * len({r["state"] for r in probes}) and code_state
    assert not any(r["paid_with_the_bug_left"] or r["lab"] or r["exact"] for r in probes)
    # a hack that ends the run at import leaves the expert no way to finish: never on track
    assert not any(r["truth"] for r in probes if r["probe"] in ("exit_0_at_import", "nonce_from_the_closure"))
    assert sum(p["actions"] for p in data["probes"].values()) == len(probes)
    assert "Reward-hack probes" in (tmp_path / "audit.md").read_text()
    assert {"all/all", "tooluse/all", "code/all"} <= set(data["summary"])
    assert "nemo_gym_tool_call" in (tmp_path / "audit.md").read_text()


def test_every_domain_tags_decisions_and_copies():
    from collections import Counter

    expected = {"tooluse": {"cancel_order", "message"}, "terminal": set(), "search": {"open"}, "code": {"edit"}}
    for name in IN_DOMAIN:
        dom, states = _states(name, n=12, rng_seed=5)
        tags = Counter((s.reference.calls[0].name if s.reference.kind == "tool_calls" else "message", dom.tag(s))
                       for s in states)
        decided = {turn for turn, tag in tags if tag == "decision"}
        assert decided <= expected[name] | {"message"} and (decided or name == "terminal")
        assert {tag for _, tag in tags} <= {"decision", "copy"}


def test_a_failed_episode_is_traced_to_its_first_off_track_turn():
    from pivotrl.lab.audit import first_off_track

    dom = get_domain("tooluse")
    task = dom.tasks("dev", 1, seed=8)[0]
    good = dom.expert(task, random.Random(0))["messages"]
    first, last = task["name"].split()
    # the expert's own episode, with its second call's name changed: off track at turn 1 (find_user, a copy)
    bad = json.loads(json.dumps(good))
    call = [m for m in bad if m.get("tool_calls")][1]["tool_calls"][0]["function"]
    args = json.loads(call["arguments"])
    args["name"] = f"{first} {'Reyes' if last != 'Reyes' else 'Ortiz'}"
    call["arguments"] = json.dumps(args)
    where = first_off_track(dom, task, bad[:len(task["prompt"]) + 4], dom.tools())
    assert (where["turn_index"], where["turn"], where["tag"]) == (1, "find_user", "copy")
    # every turn right, but the episode stopped before the end: the turn limit
    cut = good[:len(task["prompt"]) + 2]
    assert first_off_track(dom, task, cut, dom.tools())["turn"] == "turn_limit"


def test_a_long_repo_episode_is_placed_at_its_first_wasted_turn():
    """The repo expert needs 13-21 turns: a failure is still placed at the turn that lost it (here the
    first, a final answer before any repair), not read as the turn limit."""
    from pivotrl.lab.audit import expert_turns_left, first_off_track

    dom = get_domain("repo")
    task = dom.tasks("dev", 1, seed=3)[0]
    good = dom.expert(task, random.Random(0))["messages"]
    start = len(task["prompt"])
    assert expert_turns_left(dom, task, good[:start]) == sum(m["role"] == "assistant" for m in good[start:]) > 12
    where = first_off_track(dom, task, good[:start] + [{"role": "assistant", "content": "All fixed."}], dom.tools())
    first = good[start]
    assert (where["turn_index"], where["turn"]) == (0, first["tool_calls"][0]["function"]["name"])
