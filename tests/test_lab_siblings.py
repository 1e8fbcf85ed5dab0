"""The generalist base's pretraining data: sibling task families that share the lab domains'
decision primitives but none of their tools, entities or trajectories; and the base's selection by
the regime gate (earliest passing checkpoint)."""

import dataclasses
import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pivotrl.lab import siblings
from pivotrl.lab.siblings import BUG_FAMILIES, FAMILIES, LATER_FAMILIES

EVERY_FAMILY = {**FAMILIES, **LATER_FAMILIES}

seeds = st.integers(0, 2**32 - 1)


def calls(messages):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"]), c["id"])
            for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]


@settings(max_examples=60, deadline=None)
@given(seed=seeds, family=st.sampled_from(sorted(EVERY_FAMILY)))
def test_every_document_is_a_well_formed_trajectory(seed, family):
    messages, tools = EVERY_FAMILY[family](random.Random(seed))
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    for name, args, call_id in calls(messages):
        assert name in schemas, name
        assert set(args) == set(schemas[name]["required"]) == set(schemas[name]["properties"])
        assert call_id in answered
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"] and not messages[-1].get("tool_calls")


def lab_vocabulary():
    """The tool names, system prompts and entity words of every lab domain and the held-out variant."""
    from pivotrl.lab.domains import search, terminal, tooluse
    from pivotrl.lab.domains.base import get_domain, list_domains

    names, systems = set(), set()
    for d in list_domains():
        dom = get_domain(d)
        names |= {t["function"]["name"] for t in dom.tools()}
        task = dom.tasks("train", 1)[0]
        systems.add(task["prompt"][0]["content"])
    words = set(tooluse.FIRST) | set(tooluse.LAST) | set(tooluse.ITEMS) | set(terminal.CITIES) | set(terminal.KEYS) \
        | set(terminal.WORDS) | set(search.REGIONS) | set(search.JOBS)
    return names, systems, words


def test_no_tool_prompt_or_entity_of_a_lab_domain_appears():
    names, systems, words = lab_vocabulary()
    rng = random.Random(0)
    for family, make in EVERY_FAMILY.items():
        for _ in range(300):
            messages, tools = make(rng)
            assert not {t["function"]["name"] for t in tools} & names, family
            assert messages[0]["content"] not in systems
            text = set(re.findall(r"\w+", json.dumps(messages)))
            assert not text & words, (family, text & words)


@settings(max_examples=80, deadline=None)
@given(seed=seeds)
def test_desk_acts_on_and_reports_the_record_the_customer_named(seed):
    messages, _ = siblings.desk_doc(random.Random(seed))
    request = messages[1]["content"]
    value = messages[3]["content"]
    (_, ask, _), (_, find, _), (_, listing, _), *rest = calls(messages)
    assert value in find.values() and find["name"] in request  # the name asked, the value answered
    uid = messages[5]["content"]
    assert list(listing.values()) == [uid]
    records = json.loads(messages[7]["content"])
    record_id, field = next(k for k in records[0] if k.endswith("_id")), [k for k in records[0] if k not in ("status",)][1]
    target = [r for r in records if re.search(rf"\b{re.escape(r[field])}\b", request)]
    assert len(target) == 1
    assert target[0][record_id] in messages[-1]["content"]
    if rest:  # it changed that record, which was open
        assert list(rest[0][1].values()) == [target[0][record_id]]
    else:
        assert target[0]["status"] in messages[-1]["content"]


@settings(max_examples=80, deadline=None)
@given(seed=seeds)
def test_keyed_reads_the_asked_file_and_answers_the_asked_keys_value(seed):
    """Every entity made up, none repeated within a document: the only way to the answer is the
    asked file's name copied into `cat` and the asked key's line found among the others."""
    messages, _ = siblings.keyed_doc(random.Random(seed))
    question, final = messages[1]["content"], messages[-1]["content"]
    commands = [list(args.values())[0] for _, args, _ in calls(messages)]
    outputs = [m["content"] for m in messages if m["role"] == "tool"]
    written = re.fullmatch(r"Put (\w+) into a new file (\S+)\.|Make (\S+) hold the word (\w+)\.", question)
    if written:
        content, target = (written[1], written[2]) if written[1] else (written[4], written[3])
        assert commands[0].endswith(f"> {target}") and content in commands[0]
        assert commands[-1] == f"cat {target}" and outputs[-1] == content
        return
    asked = re.fullmatch(r"Which (\w+) does (\w+) have\?|Look up (\w+) for (\w+) in \w+\.|Read (\w+) from the (\w+) file\.",
                         question)
    key, name = [w for w in asked.groups() if w]
    assert re.fullmatch(rf"cat \w+/{name}\.\w+", commands[-1])
    lines = dict(line.split("=") for line in outputs[-1].splitlines())
    assert len(lines) >= 3 and name not in lines and key in lines
    assert lines[key] in final.replace(".", " ").split()


@settings(max_examples=80, deadline=None)
@given(seed=seeds)
def test_files_answers_with_the_value_of_the_asked_key(seed):
    messages, _ = siblings.files_doc(random.Random(seed))
    question, final = messages[1]["content"], messages[-1]["content"]
    outputs = [m["content"] for m in messages if m["role"] == "tool"]
    if question.startswith(("What is the", "Find ")):
        key = re.search(r"(?:What is the|Find) (\w+)", question).group(1)
        line = next(ln for ln in outputs[-1].splitlines() if key in ln)
        value = re.split(r"[=, :]+", line.split(":", 1)[-1] if re.match(r"\d+:", line) else line)[-1]
        assert value in final.replace(".", " ").split()
    elif question.startswith(("How many", "Count")):
        assert outputs[-1] in final
    else:
        assert outputs[-1] in question  # the written file read back holds the asked content


@settings(max_examples=80, deadline=None)
@given(seed=seeds)
def test_lookup_reads_both_hops_and_answers_the_second(seed):
    messages, _ = siblings.lookup_doc(random.Random(seed))
    (_, q1, _), (_, open1, _), (_, q2, _), (_, open2, _) = calls(messages)
    results = [m["content"] for m in messages if m["role"] == "tool"]
    assert f"{list(open1.values())[0]}:" in results[0] and f"{list(open2.values())[0]}:" in results[2]
    first, second = results[1], results[3]
    assert second.split(" is a ")[0] in first  # the second hop is the entity the first document names
    assert second.rstrip(".").split()[-1] in messages[-1]["content"]


@settings(max_examples=60, deadline=None)
@given(seed=seeds, modules=st.sampled_from([1, 2, 3]))
def test_bugs_edits_leave_every_function_correct(seed, modules):
    """Replay the expert's edits on the files as it viewed them: every function ends with its
    family's correct body, and each failure report named a function that was then fixed."""
    messages, tools = siblings.bugs_doc(random.Random(seed), modules)
    view, edit, test = (t["function"]["name"] for t in tools)
    files, outputs = {}, {m["tool_call_id"]: m["content"] for m in messages if m["role"] == "tool"}
    good = {f[0]: f[2] for f in BUG_FAMILIES}
    reported = []
    for name, args, call_id in calls(messages):
        values = list(args.values())
        if name == view:
            files.setdefault(values[0], outputs[call_id])
        elif name == edit:
            path, old, new = (args[k] for k in tools[1]["function"]["parameters"]["required"])
            assert files[path].count(old) == 1
            files[path] = files[path].replace(old, new)
        elif outputs[call_id].startswith("FAILED"):
            reported.append(re.search(r"test_(\w+)(?:;|$)", outputs[call_id].split(";")[0] + ";").group(1))
    assert outputs[calls(messages)[-1][2]].endswith("passed") and "FAILED" not in outputs[calls(messages)[-1][2]]
    defs = [(m.group(1), m.group(2)) for text in files.values() for m in re.finditer(r"def (\w+)\(\w+\):\n    return (.+)", text)]
    assert defs and all(body == good[name] for name, body in defs)
    assert set(reported) <= {name for name, _ in defs}


def test_primitives_answer_from_the_prompt():
    rng = random.Random(1)
    for _ in range(200):
        messages, tools = siblings.primitive_doc(rng)
        assert tools == [] and messages[-1]["content"].split()[0] in messages[0]["content"]


def test_the_mixture_holds_no_lab_domain_trajectory_unless_asked(tmp_path):
    from pivotrl.lab.pretrain import PretrainConfig, build_mixture, corpus_documents

    names, _, _ = lab_vocabulary()
    cfg = PretrainConfig(output_dir=str(tmp_path), sibling_docs=20, reasoning_items=8, toolcall_docs=500,
                         domain_tasks={"tooluse": 2, "terminal": 2, "search": 2, "code": 1})
    pools = build_mixture(cfg)
    assert set(pools) == {"siblings", "toolcall", "reasoning"} and len(pools["siblings"]) == 20 * len(FAMILIES)
    used = {t["function"]["name"] for docs in pools.values() for _, tools in docs for t in tools}
    assert not used & names
    cfg.mix = {**cfg.mix, "domains": 0.05}
    with_domains = build_mixture(cfg)
    assert len(with_domains["domains"]) == 7
    assert corpus_documents(cfg) == {k: len(v) for k, v in with_domains.items()}
    # a family's own count: more of its documents (the first ones the same), the others as before
    cfg.family_docs = {"files": 50, "lookup": 0}
    weighted = build_mixture(cfg)
    assert len(weighted["siblings"]) == 20 * (len(FAMILIES) - 2) + 50
    assert corpus_documents(cfg) == {k: len(v) for k, v in weighted.items()}
    assert list(FAMILIES)[:3] == ["desk", "files", "lookup"]
    old, new = pools["siblings"], weighted["siblings"]
    assert new[:40] == old[:40] and new[70:] == old[60:] and new[40:70] != old[40:70]
    cfg.family_docs = {"keyed": 7}  # a later family: only when named, after the others
    later = build_mixture(cfg)["siblings"]
    assert later[:-7] == old and corpus_documents(cfg)["siblings"] == len(later) == 20 * len(FAMILIES) + 7


def fake_gate(passing_from: int, calls_made: list):
    def measure(cfg, log=print):
        step = int(cfg.model.rsplit("-", 1)[-1])
        calls_made.append(step)
        ok = step >= passing_from
        return {"model": cfg.model, "config": {"tasks_per_domain": cfg.tasks_per_domain, "k": cfg.k},
                "success": {"tooluse": 0.2}, "pivots": 30, "candidates": 100, "passed": ok,
                "checks": [{"criterion": "pivots among candidates", "value": 0.3, "rule": "0.15-0.35", "holds": ok}]}
    return measure


def test_the_base_is_the_earliest_checkpoint_the_gate_passes_and_selection_resumes(tmp_path, monkeypatch):
    import pivotrl.lab.gate as gate
    from pivotrl.lab.pretrain import PretrainConfig, model_card, select_base

    made: list = []
    monkeypatch.setattr(gate, "measure_gate", fake_gate(400, made))
    cfg = PretrainConfig(output_dir=str(tmp_path), gate_from=200)
    ckpts = [str(tmp_path / "checkpoints" / f"step-{s}") for s in (100, 200, 300, 400, 500)]
    measured = select_base(ckpts, cfg, log=lambda *_: None)
    assert made == [200, 300, 400] and [m["passed"] for m in measured] == [False, False, True]
    made.clear()
    assert [m["step"] for m in select_base(ckpts, cfg, log=lambda *_: None)] == [200, 300, 400] and made == []
    summary = {"parameters": 1e6, "steps": 500, "tokens": 1e6, "train_minutes": 9, "corpus_tokens": {},
               "selected": ckpts[3], "gate": [{k: v for k, v in m.items() if k != "figures"} for m in measured]}
    card = model_card(summary, measured[-1]["figures"], cfg)
    assert "step-400" in card and "| step-300 | 0 of 1 |" in card and "| pivots among candidates | 0.3 |" in card


def test_no_base_when_no_checkpoint_passes(tmp_path, monkeypatch):
    import pivotrl.lab.gate as gate
    import pivotrl.lab.pretrain as pretrain

    monkeypatch.setattr(gate, "measure_gate", fake_gate(10**9, []))
    cfg = pretrain.PretrainConfig(output_dir=str(tmp_path), gate_from=0)
    trained = {"parameters": 1, "steps": 2, "tokens": 3, "train_minutes": 0.1, "corpus_tokens": {},
               "checkpoints": [str(tmp_path / "c" / "step-1")], "config": json.loads(json.dumps(
                   pretrain.asdict(cfg)))}
    (tmp_path / "trained.json").write_text(json.dumps(trained))
    summary = pretrain.pretrain(cfg, log=lambda *_: None)
    assert summary["selected"] is None and summary["base"] is None and not (tmp_path / "base").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["gate"][0]["passed"] is False


@pytest.mark.parametrize("family", sorted(EVERY_FAMILY))
def test_documents_render_with_the_chat_template(family):
    from transformers import AutoTokenizer

    from pivotrl.lab import BASE_MODEL

    tok = AutoTokenizer.from_pretrained(str(BASE_MODEL))
    messages, tools = EVERY_FAMILY[family](random.Random(7))
    text = tok.apply_chat_template(messages, tools=tools or None, tokenize=False)
    assert messages[-1]["content"] in text


def test_a_later_phase_goes_on_from_a_checkpoint_with_its_tokenizer(tmp_path):
    """`init_from`: a second phase (here with a small in-domain share) keeps the first phase's
    tokenizer and starts from its weights; a finished training is not redone for the gate's settings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pivotrl.lab.pretrain import PretrainConfig, same_training, train_checkpoints

    small = dict(hidden_size=16, layers=1, heads=2, vocab_size=300, block_size=256, max_positions=256, batch_size=2,
                 steps=2, checkpoint_every=1, warmup_steps=1, sibling_docs=4, reasoning_items=8, toolcall_docs=4)
    first = PretrainConfig(output_dir=str(tmp_path / "one"), **small)
    one = train_checkpoints(first, log=lambda *_: None)
    start = one["checkpoints"][-1]
    second = PretrainConfig(output_dir=str(tmp_path / "two"), init_from=start,
                            mix={"siblings": 1.0, "domains": 0.5},
                            domain_tasks={"tooluse": 2, "terminal": 0, "search": 2, "code": 0}, **{**small, "steps": 1})
    two = train_checkpoints(second, log=lambda *_: None)
    assert two["corpus_tokens"]["domains"] > 0
    assert AutoTokenizer.from_pretrained(two["checkpoints"][-1]).get_vocab() == AutoTokenizer.from_pretrained(start).get_vocab()
    before, after = (AutoModelForCausalLM.from_pretrained(c).state_dict() for c in (start, two["checkpoints"][-1]))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    # one Adam step at lr 3e-3 moves a weight by about the learning rate: it went on from `start`
    assert max((before[k] - after[k]).abs().max().item() for k in before) < 0.01
    assert same_training(one["config"], PretrainConfig(output_dir=str(tmp_path / "one"), **{**small, "gate_from": 1}))
    assert not same_training(one["config"], PretrainConfig(output_dir=str(tmp_path / "one"), **{**small, "steps": 3}))


def test_a_phase_can_hold_the_long_horizon_domains_trajectories_when_named():
    """repo's expert trajectories join the in-domain pool only when `domain_tasks` names it, drawn
    from the train split with the pool's own seed (the default pool, and older phases', stay the four)."""
    from pivotrl.lab.domains import get_domain
    from pivotrl.lab.pretrain import PretrainConfig, build_mixture, corpus_documents

    small = dict(sibling_docs=1, reasoning_items=8, toolcall_docs=1, mix={"siblings": 1.0, "domains": 1.0})
    none = dict.fromkeys(("tooluse", "terminal", "search", "code"), 0)
    cfg = PretrainConfig(domain_tasks={**none, "repo": 2}, **small)
    pool = build_mixture(cfg)["domains"]
    repo_tools = {t["function"]["name"] for t in get_domain("repo").tools()}
    assert len(pool) == corpus_documents(cfg)["domains"] == 2
    assert all({t["function"]["name"] for t in tools} == repo_tools and len(messages) > 20 for messages, tools in pool)
    assert "repo" not in PretrainConfig().domain_tasks


def test_a_phases_in_domain_trajectories_are_played_once_and_taken_again_on_a_rerun(tmp_path, monkeypatch):
    """A rerun (a resumed phase) takes the kept trajectories, equal to those played, without playing
    any; another task count plays them again."""
    import pivotrl.lab.pretrain as pretrain
    from pivotrl.lab.domains import get_domain

    cfg = pretrain.PretrainConfig(domain_tasks={"code": 2}, mix={"domains": 1.0})
    played = pretrain.domain_trajectories(cfg, "code", tmp_path)
    assert (tmp_path / "code.json").exists() and len(played) == 2

    def no_play(*a, **k):
        raise AssertionError("played again")

    monkeypatch.setattr(pretrain, "get_domain", lambda name: dataclasses.replace(get_domain(name), expert=no_play))
    assert pretrain.domain_trajectories(cfg, "code", tmp_path) == played
    with pytest.raises(AssertionError, match="played again"):
        pretrain.domain_trajectories(pretrain.PretrainConfig(domain_tasks={"code": 3}), "code", tmp_path)


def test_the_in_domain_pool_never_holds_a_task_of_the_comparisons_sft_data(monkeypatch):
    """A pool task that is also SFT data (here made so) is replaced by the next one drawn."""
    import pivotrl.lab.pretrain as pretrain
    from pivotrl.lab.domains import get_domain
    from pivotrl.lab.presets import PRESETS

    dom = get_domain("tooluse")
    sft = pretrain.sft_task_ids("tooluse")
    assert sft == {t["id"] for t in dom.tasks("train", PRESETS["paper"].trajectories["tooluse"], seed=0)}
    drawn = dom.tasks("train", 3, seed=1000)
    assert not sft & {t["id"] for t in dom.tasks("train", 600, seed=1000)}  # the default pool's, as it is
    monkeypatch.setattr(pretrain, "sft_task_ids", lambda name: {drawn[0]["id"]} if name == "tooluse" else set())
    cfg = pretrain.PretrainConfig(sibling_docs=1, reasoning_items=8, toolcall_docs=1,
                                  mix={"siblings": 1.0, "domains": 1.0},
                                  domain_tasks={"tooluse": 2, "terminal": 0, "search": 0, "code": 0})
    pool = pretrain.build_mixture(cfg)["domains"]
    prompts = [messages[:len(t["prompt"])] for (messages, _), t in zip(pool, drawn[1:])]
    assert len(pool) == 2 and prompts == [t["prompt"] for t in drawn[1:]]


def test_an_interrupted_pretraining_goes_on_from_its_last_checkpoint_as_if_never_stopped(tmp_path, monkeypatch):
    """Killed after its second checkpoint, a rerun of the same training (another --minutes) goes on
    from there: the same blocks, optimizer state and schedule, so its weights equal an uninterrupted
    run's; a different training does not take that state."""
    import torch
    from transformers import AutoModelForCausalLM

    import pivotrl.lab.pretrain as pretrain
    from pivotrl.lab.pretrain import RESUME_FILE, PretrainConfig, resume_state, train_checkpoints

    small = dict(hidden_size=16, layers=1, heads=2, vocab_size=300, block_size=256, max_positions=256, batch_size=2,
                 steps=4, checkpoint_every=1, warmup_steps=1, sibling_docs=4, reasoning_items=8, toolcall_docs=4)
    whole = train_checkpoints(PretrainConfig(output_dir=str(tmp_path / "whole"), **small), log=lambda *_: None)
    cfg = PretrainConfig(output_dir=str(tmp_path / "cut"), minutes=5, **small)
    save = pretrain._save

    def killed_at_step_3(model, tok, path):
        if path.name == "step-3":
            raise KeyboardInterrupt
        return save(model, tok, path)

    monkeypatch.setattr(pretrain, "_save", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_checkpoints(cfg, log=lambda *_: None)
    monkeypatch.setattr(pretrain, "_save", save)
    assert resume_state(cfg)["step"] == 2
    assert resume_state(PretrainConfig(output_dir=cfg.output_dir, **{**small, "learning_rate": 1e-3})) is None
    cfg.minutes = 9  # the next sitting's cap
    logged = []
    cut = train_checkpoints(cfg, log=logged.append)
    assert any("resuming from" in line and "step 2 of 4" in line for line in logged)
    assert (cut["steps"], cut["tokens"], [Path(c).name for c in cut["checkpoints"]]) == \
           (4, whole["tokens"], [f"step-{i}" for i in range(1, 5)])
    a, b = (AutoModelForCausalLM.from_pretrained(r["checkpoints"][-1]).state_dict() for r in (whole, cut))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (tmp_path / "cut" / RESUME_FILE).exists()  # finished: nothing left to resume


@settings(max_examples=60, deadline=None)
@given(seed=seeds, order=st.randoms())
def test_a_drill_counts_as_copied_only_with_every_value_on_its_own_key(seed, order):
    from pivotrl.lab.pretrain import drill_copied, toolcall_doc

    doc = toolcall_doc(random.Random(seed))
    fn = doc[0][1]["tool_calls"][0]["function"]
    args = json.loads(fn["arguments"])
    keys = list(args)
    order.shuffle(keys)

    def text(name, arguments):
        return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"

    assert drill_copied(text(fn["name"], {k: args[k] for k in keys}), doc) == (True, True)  # key order aside
    assert drill_copied(text(fn["name"] + "s", args), doc) == (False, False)
    assert drill_copied("I would call " + fn["name"], doc) == (False, False)
    assert drill_copied(text(fn["name"], {**args, keys[0]: "X" + str(args[keys[0]])}), doc) == (True, False)
    if len(set(map(str, args.values()))) > 1:  # the same values, bound to the wrong keys
        swapped = dict(zip(keys, [args[k] for k in keys[1:] + keys[:1]]))
        assert drill_copied(text(fn["name"], swapped), doc) == (True, False)


def test_copy_drills_are_measured_once_per_checkpoint_from_gate_from(tmp_path, monkeypatch):
    import pivotrl.lab.pretrain as pretrain

    made, looked = [], []
    monkeypatch.setattr(pretrain, "copy_drills", lambda c: made.append(c) or {"drills": 30, "names": 9, "values": 2})
    monkeypatch.setattr(pretrain, "lookup_drills", lambda c: looked.append(c) or {"drills": 20, "cat": 5, "values": 1})
    cfg = pretrain.PretrainConfig(output_dir=str(tmp_path), gate_from=200)
    trained = {"checkpoints": [str(tmp_path / "checkpoints" / f"step-{s}") for s in (100, 200, 300)]}
    first = pretrain.measure_drills(trained, cfg, log=lambda *_: None)
    assert [d["step"] for d in first] == [200, 300] and [c.rsplit("-", 1)[-1] for c in made] == ["200", "300"]
    assert looked == made and first[1]["lookup"] == {"drills": 20, "cat": 5, "values": 1}
    trained["checkpoints"].append(str(tmp_path / "checkpoints" / "step-400"))  # a later rerun: only the new one
    again = pretrain.measure_drills(trained, cfg, log=lambda *_: None)
    assert [d["step"] for d in again] == [200, 300, 400] and len(made) == 3 and again[2]["values"] == 2
    assert json.loads((tmp_path / "drills.json").read_text()) == again and len(looked) == 3
    # a drills.json written before the lookup drills: only those are measured, the copy drills kept
    older = [{k: v for k, v in d.items() if k != "lookup"} for d in again]
    (tmp_path / "drills.json").write_text(json.dumps(older))
    filled = pretrain.measure_drills(trained, cfg, log=lambda *_: None)
    assert len(made) == 3 and len(looked) == 6 and all(d["lookup"]["cat"] == 5 for d in filled)


def test_lookup_drills_count_the_asked_file_and_the_asked_value(monkeypatch):
    """Scored on what the documents ask: the exact `cat` call, and the asked key's value in the
    answer (not another line's)."""
    import pivotrl.lab.pretrain as pretrain

    def answers(right_cat: bool, right_value: bool):
        def complete(model_dir, prompts, max_new_tokens=96):
            n = len(prompts) // 2
            out = []
            for messages, _ in prompts[:n]:  # the `cat` prompts: up to the listing
                want = messages[-1]["content"]  # the listing; the document's own cat call is not in the prompt
                shell = messages[0]["content"].split("Use ")[1].split(" to run")[0]
                name = re.search(r"(?:does|for|the) (\w+)(?: have| in| file)", messages[1]["content"]).group(1)
                path = next(f for f in want.splitlines() if f.split(".")[0] == name)
                folder = re.search(r"ls (?:-1 )?(\w+)", json.dumps(messages[2])).group(1)
                target = path if right_cat else "other" + path
                param = json.loads(messages[2]["tool_calls"][0]["function"]["arguments"])
                out.append("<tool_call>" + json.dumps({"name": shell, "arguments": {
                    k: f"cat {folder}/{target}" for k in param}}) + "</tool_call>")
            for messages, _ in prompts[n:]:  # the answer prompts: up to cat's lines
                lines = dict(line.split("=") for line in messages[-1]["content"].splitlines())
                key = next(k for k in lines if k in messages[1]["content"].split())
                other = next(v for k, v in lines.items() if v != lines[key]) if not right_value else lines[key]
                out.append(f"The {key} is {other}.")
            return out
        return complete

    monkeypatch.setattr(pretrain, "greedy_completions", answers(True, True))
    assert pretrain.lookup_drills("unused", n=12) == {"drills": 12, "cat": 12, "values": 12}
    monkeypatch.setattr(pretrain, "greedy_completions", answers(False, False))
    assert pretrain.lookup_drills("unused", n=12) == {"drills": 12, "cat": 0, "values": 0}


def test_copy_drills_runs_a_real_model_on_fresh_drills():
    from pivotrl.lab import BASE_MODEL
    from pivotrl.lab.pretrain import copy_drills

    got = copy_drills(str(BASE_MODEL), n=4)
    assert got["drills"] == 4 and 0 <= got["values"] <= got["names"] <= 4
    from pivotrl.lab.pretrain import lookup_drills

    got = lookup_drills(str(BASE_MODEL), n=2)
    assert got["drills"] == 2 and 0 <= got["cat"] <= 2 and 0 <= got["values"] <= 2


def test_pretrain_command_passes_a_phases_settings_to_its_config(tmp_path, monkeypatch):
    """`lab pretrain --train-only` with a later phase's settings: they reach the training's config
    (and so its trained.json), the rest stays PretrainConfig's."""
    from typer.testing import CliRunner

    import pivotrl.lab.pretrain as pretrain
    from pivotrl.cli import app

    got = []
    monkeypatch.setattr(pretrain, "finished_training", lambda cfg: None)
    monkeypatch.setattr(pretrain, "train_checkpoints", lambda cfg, log: got.append(cfg) or {"checkpoints": []})
    monkeypatch.setattr(pretrain, "measure_drills", lambda trained, cfg, log: [])
    res = CliRunner().invoke(app, ["lab", "pretrain", "-o", str(tmp_path), "--train-only", "--steps", "7",
                                   "--learning-rate", "0.0015", "--warmup-steps", "5", "--gate-from", "400",
                                   "--domain-share", "0.1", "--init-from", str(tmp_path / "phase1"),
                                   "--domain-tasks", "tooluse=900, terminal=0, repo=40", "--checkpoint-every", "100",
                                   "--family-docs", "files=32000,primitives=0", "--mix", "siblings=3, toolcall=0.5"])
    assert res.exit_code == 0, res.output
    (cfg,) = got
    assert (cfg.steps, cfg.learning_rate, cfg.warmup_steps, cfg.gate_from, cfg.checkpoint_every) == (7, 0.0015, 5, 400, 100)
    assert cfg.mix == {**pretrain.PretrainConfig().mix, "domains": 0.1, "siblings": 3.0, "toolcall": 0.5}
    assert cfg.init_from == str(tmp_path / "phase1")
    assert cfg.batch_size == pretrain.PretrainConfig().batch_size
    assert cfg.domain_tasks == {**pretrain.PretrainConfig().domain_tasks, "tooluse": 900, "terminal": 0, "repo": 40}
    assert cfg.family_docs == {"files": 32000, "primitives": 0}
    for option, bad in [("--domain-tasks", b) for b in ("tooluse", "chess=5", "code=-1", "search=many")] + \
                       [("--family-docs", b) for b in ("files", "tooluse=5", "desk=-1", "desk=1.5")] + \
                       [("--mix", b) for b in ("siblings", "files=1", "toolcall=-1", "reasoning=nan", "domains=x")]:
        res = CliRunner().invoke(app, ["lab", "pretrain", "-o", str(tmp_path), "--train-only", option, bad])
        assert res.exit_code == 2 and option in res.output and len(got) == 1, (bad, res.output)
    res = CliRunner().invoke(app, ["lab", "pretrain", "-o", str(tmp_path), "--train-only", "--hidden-size", "192",
                                   "--layers", "6", "--heads", "6"])
    assert res.exit_code == 0, res.output
    assert (got[-1].hidden_size, got[-1].layers, got[-1].heads, got[-1].init_from) == (192, 6, 6, None)
    for bad in (["--hidden-size", "192", "--init-from", str(tmp_path)], ["--hidden-size", "100", "--heads", "3"]):
        res = CliRunner().invoke(app, ["lab", "pretrain", "-o", str(tmp_path), "--train-only", *bad])
        assert res.exit_code == 2 and bad[-2] in res.output and len(got) == 2, (bad, res.output)


def test_the_model_card_states_a_late_in_domain_share_and_the_phase_before(tmp_path):
    """A base with in-domain trajectories must not be described as having none: the card gives the
    share (weight and expected tokens) and the earlier phase it went on from."""
    from pivotrl.lab.pretrain import PretrainConfig, model_card, token_shares

    earlier = tmp_path / "phase1"
    earlier.mkdir()
    (earlier / "trained.json").write_text(json.dumps({"steps": 1793, "tokens": 13.7e6, "train_minutes": 86,
                                                      "config": {"mix": {"siblings": 1.0}}}))
    gate = {"config": {"tasks_per_domain": 100, "k": 8}, "checks": []}
    summary = {"parameters": 1e6, "steps": 400, "tokens": 3e6, "train_minutes": 15, "selected": "c/step-400",
               "gate": [], "corpus_tokens": {"siblings": 4000, "toolcall": 1000, "reasoning": 100, "domains": 300}}
    plain = PretrainConfig(output_dir=str(tmp_path), sibling_docs=8, toolcall_docs=10, reasoning_items=10)
    assert "no trajectory of a lab domain" in model_card(summary, gate, plain)
    assert "per family" not in model_card(summary, gate, plain)
    plain.family_docs = {"files": 32}
    assert 'sibling documents per family: {"files": 32}, others 8' in model_card(summary, gate, plain)
    plain.family_docs = {}
    mixed = PretrainConfig(output_dir=str(tmp_path), sibling_docs=8, toolcall_docs=10, reasoning_items=10,
                           init_from=str(earlier), mix={**plain.mix, "domains": 0.1},
                           domain_tasks={"tooluse": 1, "terminal": 1, "search": 1, "code": 0})
    shares = token_shares(mixed, summary["corpus_tokens"])
    assert abs(sum(shares.values()) - 1) < 1e-3 and 0 < shares["domains"] < shares["siblings"]
    card = model_card(summary, gate, mixed)
    assert "no trajectory of a lab domain" not in card and "small late in-domain share" in card
    assert f"{100 * shares['domains']:.1f}% of this phase's tokens" in card and "1793 steps" in card


@settings(max_examples=80, deadline=None)
@given(seed=seeds, listed=st.booleans())
def test_records_answers_every_question_from_the_printed_lines(seed, listed):
    """One `cat` of the file the question names (listed first, by its stem, in `listed_records`), then
    each answer holds the asked key's value."""
    make = siblings.listed_records_doc if listed else siblings.records_doc
    messages, _ = make(random.Random(seed))
    commands = [list(args.values())[0] for _, args, _ in calls(messages)]
    if listed:
        ask = re.fullmatch(r"What is the \w+ value for (\w+)\?|Find the \w+ of (\w+) in (\w+)\.", messages[1]["content"])
        stem = ask[1] or ask[2]
        assert commands[0].startswith("ls ") and any(f.startswith(stem + ".") for f in messages[3]["content"].split())
        path = commands[1].removeprefix("cat ")
        assert path.split("/")[-1].startswith(stem + ".") and len(commands) == 2
        first = 5
    else:
        path = re.fullmatch(r"(?:What is the \w+ in|Read \w+ from) (\S+?)\??\.?", messages[1]["content"])[1]
        assert commands == [f"cat {path}"]
        first = 3
    lines = dict(line.split("=") for line in messages[first]["content"].splitlines())
    assert len(lines) >= 3
    questions = [messages[1]["content"]] + [m["content"] for m in messages[first + 2::2]]
    answers = [m["content"] for m in messages[first + 1::2]]
    assert len(questions) == len(answers) >= 3
    for q, a in zip(questions, answers):
        key = next(k for k in lines if re.search(rf"\b{k}\b", q.replace(path, "")))
        assert lines[key] in a.rstrip(".").split()
