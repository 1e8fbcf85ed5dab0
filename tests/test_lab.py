"""The lab world: domains, environments, experts, verifiers, the restricted shell."""

import json
import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from pivotrl import extract_states, get_verifier
from pivotrl.data.loaders import normalise_record
from pivotrl.eval.episodes import run_episodes
from pivotrl.lab import get_domain, list_domains
from pivotrl.lab.domains import IN_DOMAIN, LONG_HORIZON
from pivotrl.lab.restricted_shell import RestrictedShell
from pivotrl.sampling import PromptResult, Sample, Sampler

SAMPLE_SIZE = {"tooluse": 30, "terminal": 30, "search": 30, "code": 6, "repo": 3}
ALL = IN_DOMAIN + LONG_HORIZON


def test_the_four_domains_the_long_horizon_one_and_the_held_out_variant_are_registered():
    assert set(IN_DOMAIN) == {"tooluse", "terminal", "search", "code"} and LONG_HORIZON == ("repo",)
    assert set(list_domains()) == set(IN_DOMAIN) | {"tooluse_variant", "repo"}


@pytest.mark.parametrize("name", ALL)
def test_splits_never_overlap_and_are_reproducible(name):
    dom = get_domain(name)
    n = {"code": 30, "repo": 12}.get(name, 60)
    ids = {split: {t["id"] for t in dom.tasks(split, n)} for split in ("train", "dev", "test")}
    assert all(len(v) == n for v in ids.values())
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"]) and not (ids["dev"] & ids["test"])
    assert [t["id"] for t in dom.tasks("test", 5)] == [t["id"] for t in dom.tasks("test", 5)]


@pytest.mark.parametrize("name", ALL)
def test_each_expert_solves_its_own_tasks(name):
    dom = get_domain(name)
    rng = random.Random(0)
    for task in dom.tasks("test", SAMPLE_SIZE[name], seed=3):
        traj = dom.expert(task, rng)  # raises if the environment says the episode failed
        record = normalise_record(traj)  # and the trajectory is valid OpenAI-format data
        assert record.messages[-1]["role"] == "assistant" and not record.messages[-1].get("tool_calls")


def _paired_states(name, n_tasks):
    """Two experts (different surface forms) on the same tasks; states of the same turns."""
    dom = get_domain(name)
    tasks = dom.tasks("dev", n_tasks, seed=5)
    a = extract_states([normalise_record(dom.expert(t, random.Random(1))) for t in tasks])
    b = extract_states([normalise_record(dom.expert(t, random.Random(2))) for t in tasks])
    by_turn = {(s.trajectory_id, s.turn_index): s for s in b}
    return dom, [(s, by_turn[(s.trajectory_id, s.turn_index)]) for s in a
                 if (s.trajectory_id, s.turn_index) in by_turn
                 and [c.name for c in s.reference.calls] == [c.name for c in by_turn[(s.trajectory_id, s.turn_index)].reference.calls]]


def render(action):
    from pivotrl.demo import render as r

    return r(action)


@pytest.mark.parametrize("name", ALL)
def test_verifier_accepts_the_experts_paraphrases_where_exact_match_does_not(name):
    dom, pairs = _paired_states(name, 8 if name not in ("code", "repo") else 4)
    functional = get_verifier(dom.verifier, **dom.verifier_options)
    exact = get_verifier("exact")
    accepted = [functional.score(render(other.reference), s).reward for s, other in pairs]
    assert sum(accepted) == len(accepted), "the functional verifier must accept every expert surface form"
    exact_accepts = [exact.score(render(other.reference), s).reward for s, other in pairs]
    assert sum(exact_accepts) < len(exact_accepts), "surface forms vary, so exact match must miss some"


def _wrong(action):
    """The same tool call with every string value changed (or a wrong answer for a message)."""
    from pivotrl.data.types import Action, ToolCall

    if action.kind == "message":
        return "I could not find it, sorry: zzz."
    c = action.calls[0]
    args = {k: (v + "9" if isinstance(v, str) else v) for k, v in c.arguments.items()}
    if not args:
        return render(Action.tool_calls([ToolCall("no_such_tool", {})]))
    return render(Action.tool_calls([ToolCall(c.name, args)]))


def _judged(name, state) -> bool:
    """Whether a wrong version of this state's action must be refused. Accepted rightly: a question
    that still asks for the zip code (the store answers it the same), and any message where the
    task's check does not read the message (code's final turn, terminal "create" tasks)."""
    from pivotrl.lab.domains.base import task_of

    ref = state.reference
    if ref.kind == "message":
        return name in ("search", "tooluse") or (name == "terminal" and task_of(state).get("kind") != "create")
    return ref.calls[0].name != "ask_user"


@pytest.mark.parametrize("name", ALL)
def test_verifier_rejects_wrong_actions(name):
    dom = get_domain(name)
    tasks = dom.tasks("dev", 4, seed=9)
    states = extract_states([normalise_record(dom.expert(t, random.Random(0))) for t in tasks])
    v = get_verifier(dom.verifier, **dom.verifier_options)
    judged = [s for s in states if _judged(name, s)]
    assert judged
    assert [v.score(_wrong_for(s), s).reward for s in judged] == [0.0] * len(judged)


def _wrong_for(state):
    """A wrong action for this state; for a search, a query about another entity whose results do
    not list the document the reference finds (one that does list it is rightly accepted)."""
    from pivotrl.data.types import Action, ToolCall
    from pivotrl.lab.domains.search import SearchEnv
    from pivotrl.lab.domains.base import task_of

    ref = state.reference
    if ref.kind == "tool_calls" and ref.calls[0].name == "search":
        docs = task_of(state)["docs"]
        env = SearchEnv()
        env.reset(docs=docs)
        wanted = env.search(ref.calls[0].arguments["query"]).splitlines()[0].split(":")[0]
        query = next(q for q in (" ".join(text.split()[:2]) for text in docs.values())
                     if wanted not in [line.split(":")[0] for line in env.search(q).splitlines()])
        return render(Action.tool_calls([ToolCall("search", {"query": query})]))
    return _wrong(ref)


HOSTILE = [
    "cat /etc/passwd", "cat ../outside.txt", "ls ..", "cat data/../../outside.txt", "python3 -c 'print(1)'",
    "bash -c ls", "sh", "curl http://127.0.0.1", "wget x", "rm -rf /", "ls; cat /etc/passwd", "ls && id",
    "echo $(id)", "echo `id`", "cat link_out", "ls link_dir/", "cat < /etc/passwd", "echo x > /tmp/evil",
    "echo x > ../evil", "ln -s /etc x", "find / -name passwd", "env", "cd /", "sleep 10", "ls ~", "cat ${HOME}",
    "echo hi | python3", "cp data/a.txt /tmp/stolen", "mv data/a.txt ../a.txt", "ls link_dir", "echo x >> link_out",
    "dd if=/dev/zero of=big", "nc -l 1234",
]


@pytest.fixture
def sandbox(tmp_path):
    root = tmp_path / "task"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("temp=3\nrain=7\n")
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", root / "link_out")
    os.symlink(tmp_path, root / "link_dir")
    return root


@pytest.mark.parametrize("command", HOSTILE)
def test_restricted_shell_refuses_hostile_commands(sandbox, command):
    out = RestrictedShell(sandbox).run(command)
    assert out.startswith("refused:"), (command, out)
    assert "secret" not in out and "root:" not in out
    assert not (sandbox.parent / "evil").exists() and not Path("/tmp/stolen").exists()


def test_restricted_shell_runs_real_commands_inside(sandbox):
    sh = RestrictedShell(sandbox, max_output=50)
    assert sh.run("cat data/a.txt") == "temp=3\nrain=7"
    assert sh.run("grep rain data/a.txt") == "rain=7"
    assert sh.run("ls data | wc -l") == "1"
    assert sh.run("echo hello > out.txt") == "(no output)" and (sandbox / "out.txt").read_text() == "hello\n"
    assert sh.run("cat nope.txt").startswith("cat:")
    big = sandbox / "big.txt"
    big.write_text("x" * 1000)
    assert sh.run("cat big.txt").endswith("[output truncated]")


class ScriptedPolicy(Sampler):
    """A 'model' that says what the test tells it to: for driving environments without torch."""

    def __init__(self, script):
        self.script, self.turn = script, 0

    def sample(self, prompts, params, seed=None):
        out = []
        for _ in prompts:
            text = self.script[min(self.turn, len(self.script) - 1)]
            out.append(PromptResult([Sample(text, 5, False)], 10))
        self.turn += 1
        return out


@pytest.mark.parametrize("name", ALL)
def test_environments_survive_malformed_calls_and_episodes_go_on(name):
    dom = get_domain(name)
    task = dom.tasks("test", 1, seed=11)[0]
    tool = dom.tools()[0]["function"]["name"]
    script = ['<tool_call>{"name": "' + tool + '", "arguments": {"oops": </tool_call>',  # broken JSON
              '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>',  # unknown tool
              '<tool_call>{"name": "' + tool + '", "arguments": {"wrong_arg": 1}}</tool_call>',  # bad arguments
              "I give up."]
    (ep,) = run_episodes(ScriptedPolicy(script), dom.environment, [task], max_turns=6)
    tool_msgs = [m["content"] for m in ep.messages if m["role"] == "tool"]
    assert len(tool_msgs) == 3 and all(m.startswith("Error") for m in tool_msgs), tool_msgs
    assert ep.done and ep.turns == 4 and ep.reward == 0.0


@pytest.mark.parametrize("name", ALL)
def test_replaying_the_expert_through_the_episode_runner_succeeds(name):
    """The environment is the same object for the runner (and TRL) as for the expert."""
    dom = get_domain(name)
    task = dom.tasks("test", 1, seed=13)[0]
    traj = dom.expert(task, random.Random(0))
    script = []
    for m in traj["messages"]:
        if m["role"] == "assistant":
            if m.get("tool_calls"):
                fn = m["tool_calls"][0]["function"]
                script.append('<tool_call>{"name": "%s", "arguments": %s}</tool_call>' % (fn["name"], fn["arguments"]))
            else:
                script.append(m["content"])
    (ep,) = run_episodes(ScriptedPolicy(script), dom.environment, [task], max_turns=len(script))
    assert ep.reward == 1.0 and ep.turns == len(script)


def test_terminal_verifier_accepts_commands_with_the_same_effect():
    from pivotrl.data.types import Action, ToolCall

    dom = get_domain("terminal")
    task = next(t for t in dom.tasks("dev", 30) if t["kind"] == "value")
    traj = normalise_record(dom.expert(task, random.Random(0)))
    state = next(s for s in extract_states([traj]) if s.reference.kind == "tool_calls"
                 and "data/" in s.reference.calls[0].arguments["command"] and "ls" not in s.reference.calls[0].arguments["command"])
    v = get_verifier("lab_terminal")
    f = f"data/{task['city']}.txt"
    same = render(Action.tool_calls([ToolCall("run", {"command": f"cat ./{f}" if "cat" in state.reference.calls[0].arguments["command"] else f"grep {task['key_name']} {f}"})]))
    assert v.score(same, state).reward == 1.0
    other = next(c for c in [t for t in task["files"]] if c != f)
    assert v.score(render(Action.tool_calls([ToolCall("run", {"command": f"cat {other}"})])), state).reward == 0.0


def test_code_verifier_compares_edits_by_their_effect():
    from pivotrl.data.types import Action, ToolCall

    dom = get_domain("code")
    task = dom.tasks("dev", 1, seed=2)[0]
    name, bad, good = task["bug"]
    traj = normalise_record(dom.expert(task, random.Random(0)))
    state = next(s for s in extract_states([traj]) if s.reference.calls and s.reference.calls[0].name == "edit")
    v = get_verifier("lab_code")
    for old, new in [(bad, good), (f"return {bad}", f"return {good}")]:
        ok = render(Action.tool_calls([ToolCall("edit", {"new": new, "old": old, "path": "calc.py"})]))
        assert v.score(ok, state).reward == 1.0
    wrong = render(Action.tool_calls([ToolCall("edit", {"path": "calc.py", "old": bad, "new": bad + " + 1"})]))
    assert v.score(wrong, state).reward == 0.0


def test_lab_generate_writes_tasks_and_trajectories(tmp_path):
    from typer.testing import CliRunner

    from pivotrl.cli import app
    from pivotrl import load_trajectories

    r = CliRunner().invoke(app, ["lab", "generate", "--domain", "search", "-o", str(tmp_path), "--train", "5",
                                 "--dev", "2", "--test", "3"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "search" / "test_tasks.jsonl").read_text().splitlines()) == 3
    trajs = load_trajectories(tmp_path / "train_trajectories.jsonl")
    assert len(trajs) == 5 and all(t.domain == "search" for t in trajs)
    assert json.loads((tmp_path / "search" / "train_tasks.jsonl").read_text().splitlines()[0])["split"] == "train"


@given(st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=40), min_size=1, max_size=30),
       st.integers(10, 60))
def test_pretraining_blocks_hold_whole_documents(docs, size):
    import itertools

    from pivotrl.lab.pretrain import packed_blocks

    blocks = packed_blocks(iter(itertools.cycle(docs)).__next__, size, 0)
    bodies, segments = [], []
    for _ in range(len(docs) + 3):
        block, positions = next(blocks)
        assert len(block) == len(positions) == size
        pad = next((i for i, x in enumerate(reversed(block)) if x), len(block))
        bodies.append(block[:size - pad])
        assert bodies[-1] and not any(x == 0 for x in bodies[-1])
        # positions count up within a document and start again at 0 with the next one
        starts = [i for i, p in enumerate(positions[:size - pad]) if p == 0] + [size - pad]
        assert all(positions[i] == positions[i - 1] + 1 for i in range(1, size - pad) if i not in starts)
        segments += [block[a:b] for a, b in zip(starts, starts[1:])]
    cut = [d[:size] for d in itertools.islice(itertools.cycle(docs), 10 * (len(docs) + 3) * size)]
    assert segments == cut[:len(segments)]  # each run of positions is one whole document
    flat = [x for b in bodies for x in b]
    assert flat == [x for d in cut for x in d][:len(flat)]  # every document, in order: only padding added
    bounds = set(itertools.accumulate((len(d) for d in cut), initial=0))
    assert all(pos in bounds for pos in itertools.accumulate((len(b) for b in bodies), initial=0))  # never split


def test_packed_documents_see_only_themselves():
    """Pretraining's loss on a packed block equals each document's on its own: the position ids
    restarting per document make transformers mask attention across documents."""
    import itertools

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from pivotrl.lab.pretrain import _loss, packed_blocks

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, head_dim=8)).eval()
    docs = [[3, 4, 5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16, 17]]
    block, positions = next(packed_blocks(itertools.cycle(docs).__next__, 16, 0))
    with torch.no_grad():
        packed = _loss(model, torch.tensor([block]), torch.tensor([positions]), 0)
        alone = [_loss(model, torch.tensor([d]), torch.tensor([list(range(len(d)))]), 0) for d in docs]
    n = [len(d) - 1 for d in docs]  # tokens each document predicts
    assert packed.item() == pytest.approx(sum(a.item() * k for a, k in zip(alone, n)) / sum(n), rel=1e-5)


def test_repo_episodes_are_long_and_name_the_failing_file():
    """The long-horizon domain: three to five bugs across modules; the expert's episodes run 12-27
    turns (cap 30), and a test run names the failing test with its file, as the code domain's does not."""
    import statistics

    from pivotrl.lab.domains.code import run_pytest
    from pivotrl.lab.domains.repo import MAX_TURNS

    dom = get_domain("repo")
    tasks = dom.tasks("dev", 8, seed=21)
    turns = [sum(m["role"] == "assistant" for m in dom.expert(t, random.Random(0))["messages"]) for t in tasks]
    assert all(12 <= n <= MAX_TURNS for n in turns) and 13 <= statistics.median(turns) <= 21, turns
    assert all(3 <= len(t["bugs"]) <= 5 and len({f for f in t["files"] if f.startswith("test_")}) >= 3 for t in tasks)
    for t in tasks:  # each function once in the repository: a failing test names one function to fix
        defined = [line.split("(")[0][4:] for f, text in t["files"].items() if not f.startswith("test_")
                   for line in text.splitlines() if line.startswith("def ")]
        assert len(defined) == len(set(defined)) >= 9 and set(t["bugs"]) <= set(defined)
    env = dom.environment()
    env.reset(**{k: v for k, v in tasks[0].items() if k == "files"})
    report = env.run_tests()  # the first failure in file order, with its file
    failed_file, failed_test = report.split(" ")[1].rstrip(";").split("::")
    assert failed_test[len("test_"):] in tasks[0]["bugs"] and failed_file.startswith("test_")
    assert tasks[0]["bugs"][failed_test[len("test_"):]][0] == failed_file[len("test_"):]
    assert env.list_files().splitlines() == sorted(tasks[0]["files"])
    code = get_domain("code").tasks("dev", 1, seed=21)[0]
    code_env = get_domain("code").environment()
    code_env.reset(files=code["files"])
    assert "::" not in code_env.run_tests()  # the code domain's report is as its base model learned it
    assert run_pytest(env.dir, tests=env.tests)[0] is False


def test_the_lab_verifier_judges_repo_states_by_their_effect():
    """`lab_verifier()` (what profiling and the audit use) routes the long-horizon domain's states to
    its functional verifier: a view of the same file by another path is paid (an argument match would
    not pay it), a view of another file is not."""
    from pivotrl.data.types import Action, ToolCall
    from pivotrl.lab.verifiers import lab_verifier

    dom = get_domain("repo")
    task = dom.tasks("dev", 1, seed=4)[0]
    states = extract_states([normalise_record(dom.expert(task, random.Random(0)))])
    view = next(s for s in states if s.reference.kind == "tool_calls" and s.reference.calls[0].name == "view")
    path = view.reference.calls[0].arguments["path"]
    other = next(f for f in task["files"] if f != path)
    v = lab_verifier()
    same = Action.tool_calls([ToolCall("view", {"path": "./" + path})])
    assert v.score(render(same), view).reward == 1.0
    assert v.score(render(Action.tool_calls([ToolCall("view", {"path": other})])), view).reward == 0.0


@pytest.mark.parametrize("name, n", [("code", 40), ("repo", 8)])
def test_unseen_templates_keep_every_test_bug_out_of_training(name, n):
    """With `unseen_templates`, no train task plants a held-out bug template and every bug of a dev or
    test task is one: a test task's fix is never one training demonstrated (issue 51)."""
    from pivotrl.lab.domains.base import held_out_template

    dom = get_domain(name)
    train = dom.tasks("train", n, seed=3, unseen_templates=True)
    test = dom.tasks("test", n, seed=3, unseen_templates=True)
    trained = {t for task in train for t in dom.bug_templates(task)}
    tested = {t for task in test for t in dom.bug_templates(task)}
    assert trained and tested and not trained & tested
    assert not any(map(held_out_template, trained)) and all(map(held_out_template, tested))
    # the default draw plants held-out templates in training too (what the option removes)
    assert any(held_out_template(t) for task in dom.tasks("train", n, seed=3) for t in dom.bug_templates(task))
    assert {t["id"] for t in train}.isdisjoint(t["id"] for t in test)


def test_unseen_ood_items_are_in_no_base_corpus_and_a_short_generator_is_left_out():
    """`ood_items(unseen=True)` holds no question of any base's pretraining corpus (`BASE_CORPORA`,
    which must name every committed pretraining config), each once; basic_arithmetic, whose questions
    the corpus mostly holds, is left out rather than padded with seen ones."""
    from pivotrl.lab.ood import BASE_CORPORA, GENERATORS, ood_items, ood_left_out, pretraining_questions
    from pivotrl.lab.pretrain import PretrainConfig, reasoning_per_generator

    root = Path(__file__).resolve().parents[1]
    # every committed base's pretraining config (a phase's config or its trained.json), and the bundled
    # base's (`lab pretrain` defaults, seed 0)
    configs = [json.loads(p.read_text()) for p in (root / "results" / "pretrain").glob("*/*.json")]
    configs = [c.get("config", c) for c in configs if isinstance(c, dict)]
    configs = [c for c in configs if "reasoning_items" in c] + [{"reasoning_items": PretrainConfig().reasoning_items}]
    assert len(configs) > 10
    for c in configs:
        cfg = PretrainConfig(reasoning_items=c["reasoning_items"], seed=c.get("seed", 0))
        assert (reasoning_per_generator(cfg), cfg.seed) in BASE_CORPORA
    items = ood_items(50, unseen=True)
    by_task = {}
    for it in items:
        by_task.setdefault(it["task"], []).append(it["question"])
    assert set(by_task) | set(ood_left_out(50)) == set(GENERATORS) and "basic_arithmetic" in ood_left_out(50)
    for task, questions in by_task.items():
        assert len(questions) == len(set(questions)) == 50
        assert not set(questions) & pretraining_questions(task)
    # the default (registered before issue 51) draw is unchanged, leaks included
    seen = ood_items(50)
    assert sum(it["question"] in pretraining_questions("basic_arithmetic") for it in seen if it["task"] == "basic_arithmetic") > 25


def test_a_search_question_names_one_person():
    """Two people of one name made a question ambiguous (seed 1's draw held one: its expert, reading
    the other person's document, answered another region); every person is named once."""
    dom = get_domain("search")
    tasks = dom.tasks("train", 2200, seed=1)
    for task in tasks:
        names = [re.match(r"(.+) is a \w+\.", doc).group(1) for doc in task["docs"].values() if " is a town." not in doc]
        assert len(names) == len(set(names)), task["id"]
