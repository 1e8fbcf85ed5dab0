"""`pivotrl lab pretrain`: the lab's generalist base model, from scratch, from a seed.

Mixture (documents sampled by weight, packed into blocks); no trajectory of a lab domain unless a phase asks:
- `siblings`: agentic task families that share the lab domains' decision primitives on other tools,
  entities and templates (`pivotrl.lab.siblings`: a hotel/library/clinic/airline desk, config and
  log folders, a catalogue, text and list bug families in one or several modules) and drills of the
  primitives alone;
- `toolcall`: generic tool-call formatting with random tools and values to copy;
- `reasoning`: the OOD suite's reasoning-gym task types (other seeds than the OOD evaluation);
- `domains` (weight 0 unless asked): expert trajectories of the lab's domains on tasks drawn with
  another seed than the SFT data; the bundled v1 base used 5% of documents, the generalist's phase 2
  weight 0.1 (~6% of its tokens; `results/pretrain/phase2/`).
A byte-level BPE tokenizer is trained on the rendered mixture; the model is transformers' Qwen3
architecture. Training runs a fixed number of steps (so the same seed gives the same model; a
wall-clock cap is optional), saving a checkpoint every `checkpoint_every` steps. The base is the
earliest checkpoint that passes the regime gate (`pivotrl.lab.gate`) on dev; the gate's figures for
every checkpoint it measured go into `summary.json` and the model card.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pivotrl.artifacts import atomic_open
from pivotrl.lab.domains import IN_DOMAIN, LONG_HORIZON
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.ood import GENERATORS, pretraining_reasoning
from pivotrl.lab.siblings import FAMILIES, LATER_FAMILIES, keyed_doc
from pivotrl.models.tiny import train_tokenizer

# No verb_noun here names a lab domain's tool (no "user": `find_user` is the store's).
TOOL_WORDS = ["get", "set", "find", "list", "open", "send", "book", "check", "move", "track", "order", "note"]
NOUNS = ["badge", "file", "room", "price", "ticket", "city", "item", "song", "task", "score", "car", "plan"]


POOL_DOMAINS = IN_DOMAIN + LONG_HORIZON  # whose expert trajectories a phase's in-domain share may hold


@dataclass
class PretrainConfig:
    output_dir: str = "runs/lab/pretrain"
    steps: int = 2400                 # ~18M tokens, ~57 minutes on this 2-core CPU (5,300 tokens/s)
    minutes: float | None = None      # optional wall-clock cap
    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    max_positions: int = 2048
    block_size: int = 2048            # whole documents per block (never split): repo episodes run to ~1,900 tokens
    batch_size: int = 4
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    # Per-document weights; tokens come out ~54% siblings, ~26% toolcall, ~20% reasoning. The tool-call
    # drills, where copying values from the context is the only way to the next token, carry the
    # copying: with them at 0.15 (~5% of tokens) a run still made up names and zip codes, even in
    # sibling episodes, after 1,400 steps.
    mix: dict = field(default_factory=lambda: {"siblings": 1.0, "toolcall": 1.0, "reasoning": 2.0, "domains": 0.0})
    sibling_docs: int = 8000          # per family
    # A family's own count instead (e.g. {"files": 32000}): drawn uniformly from the sibling pool, a
    # family with more documents weighs more; none repeated, so none learnt by heart.
    family_docs: dict = field(default_factory=dict)
    # (repo, the long-horizon domain, only when named: a default without it keeps older phases' configs)
    domain_tasks: dict = field(default_factory=lambda: {"tooluse": 600, "terminal": 600, "search": 600, "code": 200})
    reasoning_items: int = 3000
    toolcall_docs: int = 30000        # seen about once each: values to copy, never to learn by heart
    checkpoint_every: int = 200
    gate_from: int = 800              # the first checkpoint the gate measures (earlier ones cannot act yet)
    gate_tasks: int = 100             # the gate's dev episodes per domain (its default)
    # A later phase (e.g. a small late in-domain share, `mix["domains"]`): start from this checkpoint,
    # its tokenizer and weights, instead of from scratch.
    init_from: str | None = None


def toolcall_doc(rng: random.Random) -> list[dict]:
    name = f"{rng.choice(TOOL_WORDS)}_{rng.choice(NOUNS)}"
    params = rng.sample(NOUNS, rng.randint(1, 3))
    args = {p: (rng.randint(0, 999) if rng.random() < 0.4 else f"{rng.choice('ABCDEFGH')}{rng.randint(10, 9999)}")
            for p in params}
    tool = {"type": "function", "function": {"name": name, "description": f"{name.replace('_', ' ').capitalize()}.",
                                             "parameters": {"type": "object",
                                                            "properties": {p: {"type": "integer" if isinstance(v, int)
                                                                               else "string"} for p, v in args.items()},
                                                            "required": params}}}
    ask = " and ".join(f"{p} {v}" for p, v in args.items())
    call_args = dict(args)
    keys = list(call_args)
    rng.shuffle(keys)
    msgs = [{"role": "user", "content": rng.choice([f"Please {name.replace('_', ' ')} with {ask}.",
                                                    f"Use {name} for {ask}."])},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c0", "type": "function", "function": {
                "name": name, "arguments": json.dumps({k: call_args[k] for k in keys})}}]},
            {"role": "tool", "tool_call_id": "c0", "content": rng.choice(["ok", "done", "saved"])},
            {"role": "assistant", "content": rng.choice(["Done.", f"I called {name}.", "All set."])}]
    return [msgs, [tool]]


def drill_copied(text: str, doc: list, turn: int = 1) -> tuple[bool, bool]:
    """Whether a completion for the call at message `turn` of drill `doc` calls its tool (name
    right) with every value bound to its own key (values right: its arguments exactly, key order aside)."""
    from pivotrl.rewards.parse import parse_action

    (messages, tools) = doc
    want = messages[turn]["tool_calls"][0]["function"]
    action = parse_action(text, tools)
    call = action.calls[0] if len(action.calls) == 1 else None
    name_ok = call is not None and call.name == want["name"]
    return name_ok, name_ok and call.arguments == json.loads(want["arguments"])


def greedy_completions(model_dir: str, prompts: list[tuple[list, list]], max_new_tokens: int = 96) -> list[str]:
    """The checkpoint's greedy completion of each `(messages, tools)` prompt, one at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = []
    for messages, tools in prompts:
        prompt = tok.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False)
        texts.append(tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def copy_drills(model_dir: str, n: int = 30, seed: str = "copy-drills") -> dict:
    """Greedy answers to `n` fresh tool-call drills (a seed no pretraining draws with): how many
    name the asked tool, and how many also copy every value to its key. A cheap proxy for the
    regime gate, which needs tool names and values copied from the context in every domain."""
    rng = random.Random(seed)
    docs = [toolcall_doc(rng) for _ in range(n)]
    texts = greedy_completions(model_dir, [(messages[:1], tools) for messages, tools in docs])
    scored = [drill_copied(text, doc) for text, doc in zip(texts, docs)]
    return {"drills": n, "names": sum(a for a, _ in scored), "values": sum(b for _, b in scored)}


def lookup_drills(model_dir: str, n: int = 20, seed: str = "lookup-drills") -> dict:
    """Greedy on `n` fresh `keyed` documents that read a value (a seed no pretraining draws with):
    how many `cat` the asked file after its listing (the call exactly), and how many answer the
    asked key's value from the lines `cat` printed (as the terminal's reward reads an answer). The
    terminal's lookup, a routine turn of the gate that no phase has taught (results/pretrain/README.md)."""
    rng, docs = random.Random(seed), []
    while len(docs) < n:
        messages, tools = keyed_doc(rng)
        if "=" in messages[-2]["content"]:  # the file-writing ones read back one word
            docs.append((messages, tools))
    texts = greedy_completions(model_dir, [(m[:4], t) for m, t in docs] + [(m[:-1], t) for m, t in docs])
    cats = values = 0
    for doc, cat_text, answer_text in zip(docs, texts[:n], texts[n:]):
        cats += drill_copied(cat_text, doc, turn=4)[1]  # message 4: the `cat` call, after the listing
        value = doc[0][-1]["content"].rstrip(".").split()[-1]
        values += value in answer_text.replace(".", " ").split()
    return {"drills": n, "cat": cats, "values": values}


def build_mixture(cfg: PretrainConfig, keep_in: Path | None = None) -> dict[str, list[tuple[list, list]]]:
    """Every document kind's pool; the in-domain trajectories kept in (and taken again from) `keep_in`."""
    rng = random.Random(cfg.seed)
    pools = {"toolcall": [toolcall_doc(rng) for _ in range(cfg.toolcall_docs)], "siblings": [], "domains": [],
             "reasoning": []}
    for name, family in sibling_families(cfg).items():
        frng = random.Random(f"pretrain:{name}:{cfg.seed}")
        pools["siblings"] += [family(frng) for _ in range(family_count(cfg, name))]
    for name in POOL_DOMAINS if cfg.mix.get("domains") else ():
        pools["domains"] += domain_trajectories(cfg, name, keep_in)
    per = reasoning_per_generator(cfg)
    for name in GENERATORS:
        for e in pretraining_reasoning(name, per, cfg.seed):
            pools["reasoning"].append(([{"role": "user", "content": e["question"]},
                                        {"role": "assistant", "content": str(e["answer"])}], []))
    return {k: v for k, v in pools.items() if v}


def domain_trajectories(cfg: PretrainConfig, name: str, keep_in: Path | None = None) -> list[tuple[list, list]]:
    """The expert trajectories of `name` in a phase's in-domain pool, kept in `keep_in` once played
    (a phase keeps them in OUT/domain_pool/): repo's expert runs its tests in the sandbox, ~2.5 s an
    episode here, which a resumed phase should not pay again."""
    n = cfg.domain_tasks.get(name, 0)
    if not n:
        return []
    held_out = sft_task_ids(name)
    key = {"tasks": n, "seed": cfg.seed, "held_out": len(held_out)}
    cache = keep_in / f"{name}.json" if keep_in else None
    if cache and cache.exists():
        kept = json.loads(cache.read_text())
        if kept["key"] == key:
            return [tuple(doc) for doc in kept["trajectories"]]
    dom = get_domain(name)
    drng = random.Random(f"pretrain:{name}:{cfg.seed}")
    drawn = dom.tasks("train", n + len(held_out), seed=1000 + cfg.seed)
    docs = []
    for task in [t for t in drawn if t["id"] not in held_out][:n]:  # the same first n when none is held out
        traj = dom.expert(task, drng)
        docs.append((traj["messages"], traj["tools"]))
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _write_json(cache, {"key": key, "trajectories": docs})
    return docs


def sft_task_ids(domain: str) -> set[str]:
    """The train-split tasks of any preset's SFT data for `domain` (`lab.experiment.make_data` draws
    them with seed 0, so the largest preset's hold every smaller one's): a base pretrained on their
    trajectories would have seen the comparison's SFT data before SFT does. A preset whose seeds draw
    their own data (`data_per_seed`) draws with other seeds, and is not counted (the bases are pretrained)."""
    from pivotrl.lab.presets import PRESETS

    most = max(p.trajectories.get(domain, 0) for p in PRESETS.values() if not p.data_per_seed)
    return {t["id"] for t in get_domain(domain).tasks("train", most, seed=0)}


def sibling_families(cfg: PretrainConfig) -> dict:
    """The sibling families of the mixture: every one of `FAMILIES`, and a later one if named."""
    return {**FAMILIES, **{k: v for k, v in LATER_FAMILIES.items() if cfg.family_docs.get(k)}}


def family_count(cfg: PretrainConfig, name: str) -> int:
    return cfg.family_docs.get(name, cfg.sibling_docs)


def reasoning_per_generator(cfg: PretrainConfig) -> int:
    """Reasoning items drawn from each reasoning-gym generator (at least one)."""
    return max(1, cfg.reasoning_items // len(GENERATORS))


def corpus_documents(cfg: PretrainConfig) -> dict[str, int]:
    """How many documents `build_mixture(cfg)` makes of each kind (without building them)."""
    docs = {"toolcall": cfg.toolcall_docs, "siblings": sum(family_count(cfg, f) for f in sibling_families(cfg)),
            "domains": sum(cfg.domain_tasks.get(d, 0) for d in POOL_DOMAINS) if cfg.mix.get("domains") else 0,
            "reasoning": reasoning_per_generator(cfg) * len(GENERATORS)}
    return {k: v for k, v in docs.items() if v}


def token_shares(cfg: PretrainConfig, corpus_tokens: dict[str, int]) -> dict[str, float]:
    """Each kind's expected share of the tokens trained on: documents are drawn by weight, so a
    kind's share is its weight times its mean document length, over the sum of those."""
    docs = corpus_documents(cfg)
    mass = {k: cfg.mix.get(k, 0) * corpus_tokens[k] / docs[k] for k in corpus_tokens if docs.get(k)}
    total = sum(mass.values())
    return {k: round(v / total, 4) for k, v in mass.items()}


def render_all(pools, template_tokenizer) -> dict[str, list[str]]:
    return {k: [template_tokenizer.apply_chat_template(m, tools=t or None, tokenize=False) for m, t in docs]
            for k, docs in pools.items()}


def train_checkpoints(cfg: PretrainConfig, log=print) -> dict:
    """Build the mixture and tokenizer, train, save a checkpoint every `checkpoint_every` steps."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    t0 = time.time()
    pools = build_mixture(cfg, keep_in=out / "domain_pool")
    log(f"mixture: {', '.join(f'{k} {len(v)} docs' for k, v in pools.items())} ({time.time() - t0:.0f}s)")
    resume = resume_state(cfg)
    if resume:
        log(f"resuming from {resume['checkpoint']} (step {resume['step']} of {cfg.steps})")
    # a later phase, or this one resumed, goes on from that checkpoint's tokenizer and weights
    start_from = resume["checkpoint"] if resume else cfg.init_from
    if start_from:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(start_from)
        texts = render_all(pools, tok)
    else:
        boot = train_tokenizer([json.dumps(m) for docs in pools.values() for m, _ in docs[:200]], 300, compact_tools=True)
        texts = render_all(pools, boot)
        tok = train_tokenizer([t for docs in texts.values() for t in docs], cfg.vocab_size, compact_tools=True)
    ids = {k: [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in docs] for k, docs in texts.items()}
    tokens = {k: sum(map(len, v)) for k, v in ids.items()}
    log(f"tokenizer: {len(tok)} tokens; corpus tokens {tokens}")

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if start_from:
        model = Qwen3ForCausalLM.from_pretrained(start_from, dtype=torch.float32)
    else:
        config = Qwen3Config(vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size,
                             num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                             head_dim=cfg.hidden_size // cfg.heads, max_position_embeddings=cfg.max_positions,
                             tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: Qwen3, {n_params / 1e6:.2f}M parameters")
    PAD = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))
    rng = random.Random(cfg.seed)
    names = [k for k in cfg.mix if cfg.mix[k] > 0 and k in ids]
    weights = [cfg.mix[k] for k in names]
    blocks = packed_blocks(lambda: rng.choice(ids[rng.choices(names, weights)[0]]), cfg.block_size + 1, PAD)

    step, seen, ckpts, history, before = 0, 0, [], [], 0.0
    if resume:
        opt.load_state_dict(resume["optimizer"])
        step, seen, ckpts, history, before = (resume[k] for k in ("step", "seen", "checkpoints", "history", "seconds"))
        for _ in range(step * cfg.batch_size):  # the same blocks as an uninterrupted run from here on
            next(blocks)
    sitting = time.time()
    start = sitting - before  # seconds and tokens/s count every sitting; --minutes caps this one

    def checkpoint():
        ckpts.append(_save(model, tok, out / "checkpoints" / f"step-{step}"))
        state = {"checkpoint": ckpts[-1], "step": step, "seen": seen, "checkpoints": list(ckpts), "history": history,
                 "seconds": time.time() - start, "optimizer": opt.state_dict(), "config": asdict(cfg)}
        with atomic_open(out / RESUME_FILE, "wb") as fh:
            torch.save(state, fh)

    model.train()
    while step < cfg.steps:
        if cfg.minutes is not None and time.time() - sitting >= cfg.minutes * 60:
            break
        progress = step / cfg.steps  # warmup, then cosine to 10% of the peak
        lr = cfg.learning_rate * min(1.0, (step + 1) / cfg.warmup_steps) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        rows = [next(blocks) for _ in range(cfg.batch_size)]
        batch, positions = torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])
        loss = _loss(model, batch, positions, PAD)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += int((batch != PAD).sum())
        if step % 50 == 0:
            history.append({"step": step, "seconds": round(time.time() - start, 1), "loss": round(loss.item(), 4),
                            "tokens": seen, "lr": lr})
            log(f"step {step} loss {loss.item():.4f} tokens {seen / 1e6:.2f}M {seen / (time.time() - start):.0f} tok/s")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
    if not ckpts or not ckpts[-1].endswith(f"step-{step}"):
        checkpoint()
    (out / "pretrain_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    train_seconds = time.time() - start
    log(f"trained {step} steps, {seen / 1e6:.1f}M tokens in {train_seconds / 60:.1f} min")
    trained = {"parameters": n_params, "steps": step, "tokens": seen, "train_minutes": round(train_seconds / 60, 2),
               "corpus_tokens": tokens, "checkpoints": ckpts, "config": asdict(cfg)}
    _write_json(out / "trained.json", trained)
    if step == cfg.steps:
        (out / RESUME_FILE).unlink(missing_ok=True)  # finished: nothing to go on from
    return trained


def pretrain(cfg: PretrainConfig, log=print) -> dict:
    """Train (unless `trained.json` says this configuration already did), then gate the checkpoints
    in order and copy the earliest that passes to `base/`. Each checkpoint's gate is kept in
    `gate/step-N.json`, so an interrupted selection resumes where it stopped."""
    out = Path(cfg.output_dir)
    trained = finished_training(cfg)
    if trained is None:
        trained = train_checkpoints(cfg, log)
    else:
        log(f"{out / 'trained.json'}: trained already ({trained['steps']} steps); gating its checkpoints")
    measured = select_base(trained["checkpoints"], cfg, log)
    chosen = next((m for m in measured if m["passed"]), None)
    base = out / "base"
    if base.exists():
        shutil.rmtree(base)
    if chosen is not None:
        shutil.copytree(chosen["checkpoint"], base)
    summary = {**{k: v for k, v in trained.items() if k != "config"},
               "gate": [{k: v for k, v in m.items() if k != "figures"} for m in measured],
               "selected": chosen and chosen["checkpoint"], "base": str(base) if chosen else None}
    _write_json(out / "summary.json", summary)
    if chosen is None:
        log("no checkpoint passed the regime gate: no base (see summary.json and gate/)")
    else:
        (base / "README.md").write_text(model_card(summary, chosen["figures"], cfg))
    return summary


def measure_drills(trained: dict, cfg: PretrainConfig, log=print) -> list[dict]:
    """`copy_drills` and `lookup_drills` on each checkpoint from `gate_from` on, kept in `drills.json`
    (a rerun measures only what is new): a training phase's progress, at a fraction of the gate's cost."""
    from pivotrl.train.common import checkpoint_step

    path = Path(cfg.output_dir) / "drills.json"
    done = {d["checkpoint"]: d for d in json.loads(path.read_text())} if path.exists() else {}
    for c in trained["checkpoints"]:
        step = checkpoint_step(c)
        if step < cfg.gate_from:
            continue
        if c not in done:
            done[c] = {"checkpoint": c, "step": step, **copy_drills(c)}
            log(f"step-{step}: copy drills: tool named in {done[c]['names']}, every value copied in "
                f"{done[c]['values']} of {done[c]['drills']}")
            _write_json(path, _by_step(done))
        if "lookup" not in done[c]:  # a drills.json from before lookup drills lacks it
            done[c]["lookup"] = lookup_drills(c)
            log(f"step-{step}: lookup drills: the asked file read in {done[c]['lookup']['cat']}, the asked "
                f"key's value answered in {done[c]['lookup']['values']} of {done[c]['lookup']['drills']}")
            _write_json(path, _by_step(done))
    return _by_step(done)


def _by_step(drills: dict) -> list[dict]:
    return sorted(drills.values(), key=lambda d: d["step"])


def finished_training(cfg: PretrainConfig) -> dict | None:
    """`trained.json` of OUT when it records a training of what `cfg` asks, else None."""
    done = Path(cfg.output_dir) / "trained.json"
    trained = json.loads(done.read_text()) if done.exists() else None
    return trained if trained is not None and same_training(trained["config"], cfg) else None


def same_training(recorded: dict, cfg: PretrainConfig, aside: tuple = ()) -> bool:
    """Whether `recorded` (a finished training's config) trained what `cfg` asks: every setting both
    know, the gate's and `aside` apart (a field added later counts only if it moved from its default)."""
    now = json.loads(json.dumps(asdict(cfg)))
    default = json.loads(json.dumps(asdict(PretrainConfig())))
    skip = {"gate_from", "gate_tasks", *aside}
    return all(recorded.get(k, default[k]) == v for k, v in now.items() if k not in skip)


RESUME_FILE = "resume.pt"


def resume_state(cfg: PretrainConfig) -> dict | None:
    """What the last checkpoint of an unfinished training of `cfg` left to go on from (its step,
    tokens, optimizer state), or None. A run stopped by its wall-clock cap or killed resumes here:
    rerun it with another --minutes (the cap is per sitting; the schedule and data run on as if
    never stopped)."""
    import torch

    path = Path(cfg.output_dir) / RESUME_FILE
    if not path.exists():
        return None
    state = torch.load(path, weights_only=True)
    fits = same_training(state["config"], cfg, aside=("minutes",)) and Path(state["checkpoint"]).exists()
    return state if fits and state["step"] < cfg.steps else None


def _write_json(path: Path, data) -> None:
    with atomic_open(path) as fh:
        fh.write(json.dumps(data, indent=2, default=str))


def packed_blocks(draw, size: int, pad: int):
    """Blocks of `size` tokens holding whole documents from `draw()`, packed until the next one does
    not fit (it opens the next block); the rest is padding, which the loss ignores. A document is
    never split (one longer than a block is cut), so the model sees every trajectory from its
    start: with 512-token blocks and split documents, tooluse episodes of 545-621 tokens never were.
    Yields (tokens, position ids), the positions starting again at 0 with each document: given
    them, transformers masks attention to each document's own tokens (`find_packed_sequence_indices`),
    so a key such as `zip` is looked up in its own document, not in the dozen packed before it."""
    pending = None
    while True:
        block: list[int] = []
        positions: list[int] = []
        while True:
            doc = (pending if pending is not None else draw())[:size]
            if block and len(block) + len(doc) > size:
                pending = doc
                break
            pending = None
            block += doc
            positions += range(len(doc))
        yield block + [pad] * (size - len(block)), positions + list(range(size - len(block)))


def _loss(model, batch, positions, pad_id: int):
    import torch.nn.functional as F

    # use_cache=False: with a cache, transformers builds one causal mask over the whole block
    logits = model(input_ids=batch[:, :-1], position_ids=positions[:, :-1], use_cache=False).logits
    labels = batch[:, 1:].masked_fill(batch[:, 1:] == pad_id, -100)  # padding teaches nothing
    # a document's first token is not predicted from the one before it, which it cannot see
    labels = labels.masked_fill(positions[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


def _save(model, tok, path: Path) -> str:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def select_base(ckpts: list[str], cfg: PretrainConfig, log=print) -> list[dict]:
    """The regime gate on each checkpoint from `gate_from` on, in training order, until one passes
    (the earliest passing checkpoint is the base: the least pretraining that puts the lab in the
    paper's regime). Returns what was measured, one entry per checkpoint gated."""
    from pivotrl.lab.gate import GateConfig, measure_gate
    from pivotrl.train.common import checkpoint_step

    measured = []
    for c in ckpts:
        step = checkpoint_step(c)
        if step < cfg.gate_from:
            continue
        cached = Path(cfg.output_dir) / "gate" / f"step-{step}.json"
        if cached.exists():
            figures = json.loads(cached.read_text())
        else:
            t0 = time.time()
            figures = measure_gate(GateConfig(model=c, tasks_per_domain=cfg.gate_tasks, seed=cfg.seed), log=log)
            figures["seconds"] = round(time.time() - t0, 1)
            cached.parent.mkdir(parents=True, exist_ok=True)
            _write_json(cached, figures)
        held = sum(x["holds"] for x in figures["checks"])
        log(f"step-{step}: gate {'PASSED' if figures['passed'] else 'fails'} ({held} of {len(figures['checks'])}); "
            f"success {', '.join(f'{d} {v:.2f}' for d, v in figures['success'].items())}; "
            f"pivots {figures['pivots']}/{figures['candidates']}")
        measured.append({"checkpoint": c, "step": step, "passed": figures["passed"], "held": held,
                         "criteria": len(figures["checks"]), "success": figures["success"],
                         "pivot_share": round(figures["pivots"] / max(figures["candidates"], 1), 4), "figures": figures})
        if figures["passed"]:
            break
    return measured


def model_card(summary: dict, gate: dict, cfg: PretrainConfig) -> str:
    """The base's README: what it is, how it was made, and the regime gate's figures on it."""
    rows = "\n".join(f"| {c['criterion']} | {c['value']:g} | {c['rule']} | {'holds' if c['holds'] else 'FAILS'} |"
                     for c in gate["checks"])
    tried = "\n".join(f"| {m['checkpoint'].rsplit('/', 1)[-1]} | {m['held']} of {m['criteria']} | "
                       f"{', '.join(f'{d} {v:.2f}' for d, v in m['success'].items())} | {m['pivot_share']:.2f} |"
                       for m in summary["gate"])
    origin, earlier = "from scratch", Path(cfg.init_from or "") / "trained.json"
    if cfg.init_from:
        origin = f"from `{cfg.init_from}` (an earlier phase: its tokenizer and weights"
        if earlier.is_file():
            e = json.loads(earlier.read_text())
            origin += (f", {e['steps']} steps, {e['tokens'] / 1e6:.1f}M tokens, {e['train_minutes']:.0f} minutes, "
                       f"mixture {json.dumps(e['config']['mix'])}")
        origin += ")"
    shares = token_shares(cfg, summary["corpus_tokens"]) if summary["corpus_tokens"] else {}
    if cfg.mix.get("domains"):
        data = (f"with a **small late in-domain share**: expert trajectories of the lab's four domains on "
                f"{sum(cfg.domain_tasks.get(d, 0) for d in POOL_DOMAINS)} train-split tasks drawn with another seed than "
                f"the SFT data's (document weight {cfg.mix['domains']:g}, about "
                f"{100 * shares.get('domains', 0):.1f}% of this phase's tokens)")
    else:
        data = "with **no trajectory of a lab domain**"
    families = f"; sibling documents per family: {json.dumps(cfg.family_docs)}, others {cfg.sibling_docs}" \
        if cfg.family_docs else ""
    return f"""# The lab's generalist base

A {summary['parameters'] / 1e6:.2f}M-parameter Qwen3 (hidden {cfg.hidden_size}, {cfg.layers} layers, context
{cfg.max_positions}, byte-level BPE of {cfg.vocab_size}) pretrained {origin} by `pivotrl lab pretrain`
(seed {cfg.seed}) for {summary['steps']} steps, {summary['tokens'] / 1e6:.1f}M tokens, {summary['train_minutes']:.0f}
minutes on 2 CPU cores, on sibling agentic task families (`pivotrl.lab.siblings`: the lab domains'
decision primitives at other desks, folders, catalogues and bug families), tool-call formatting and the
OOD suite's reasoning-gym task types, {data} (mixture weights per document: {json.dumps(cfg.mix)}{families}).
Corpus tokens: {json.dumps(summary['corpus_tokens'])}; expected share of the tokens trained on: {json.dumps(shares)}.

This is `{summary['selected'].rsplit('/', 1)[-1]}`, the earliest checkpoint that passes the regime gate
(`pivotrl lab gate`, fixed before any arm trains; PivotRL, arXiv 2603.21383, post-trains a base that is
competent turn by turn and loses episodes at a few turns where its samples disagree).

## Checkpoints gated, in order

| checkpoint | criteria held | dev episode success | pivots among candidates |
| --- | --- | --- | --- |
{tried}

## The regime gate on this base (dev split, {gate['config']['tasks_per_domain']} episodes a domain, K={gate['config']['k']})

| criterion | value | rule | |
| --- | --- | --- | --- |
{rows}
"""
