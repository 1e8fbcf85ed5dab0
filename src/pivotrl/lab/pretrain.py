"""`pivotrl lab pretrain`: the lab's tiny base model, from scratch, from a seed.

Mixture (documents sampled by weight, packed into blocks):
- `toolcall`: generic tool-call formatting with random tools and values to copy;
- `domains`: a small share of the four domains' expert trajectories, from tasks drawn with a
  different seed than the SFT data, so SFT still has something to add;
- `reasoning`: the OOD suite's reasoning-gym task types (other seeds than the OOD evaluation).
A byte-level BPE tokenizer is trained on the rendered mixture; the model is transformers'
Qwen3 architecture. Training runs a fixed number of steps (so the same seed gives the same model;
a wall-clock cap is optional), saving a checkpoint every `checkpoint_every` steps; the base is the
checkpoint with the largest share of mixed-outcome states on dev states (measured here: mixed outcomes
exist only in a window around the jump in copying ability), profiled with K samples each.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pivotrl.lab.domains import IN_DOMAIN
from pivotrl.lab.domains.base import get_domain
from pivotrl.lab.ood import GENERATORS
from pivotrl.models.tiny import train_tokenizer

TOOL_WORDS = ["get", "set", "find", "list", "open", "send", "book", "check", "move", "track", "order", "note"]
NOUNS = ["user", "file", "room", "price", "ticket", "city", "item", "song", "task", "score", "car", "plan"]


@dataclass
class PretrainConfig:
    output_dir: str = "runs/lab/pretrain"
    steps: int = 1140                 # ~8.8M tokens; 18 minutes on this 2-core CPU
    minutes: float | None = None      # optional wall-clock cap
    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    max_positions: int = 1024
    block_size: int = 1024            # whole documents per block (never split): every trajectory fits
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    # per-document weights; reasoning documents are ~7x shorter: tokens come out ~37% toolcall,
    # ~17% domains, ~46% reasoning
    mix: dict = field(default_factory=lambda: {"toolcall": 0.25, "domains": 0.05, "reasoning": 1.0})
    domain_tasks: dict = field(default_factory=lambda: {"tooluse": 600, "terminal": 600, "search": 600, "code": 200})
    reasoning_items: int = 3000
    toolcall_docs: int = 3000
    checkpoint_every: int = 60
    select_states_per_domain: int = 25
    select_k: int = 4
    # A share estimated from ~100 states x K=4 has a standard error of ~0.05: among checkpoints
    # within that of the best, the latest (most trained) wins.
    select_tolerance: float = 0.05


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


def build_mixture(cfg: PretrainConfig) -> dict[str, list[tuple[list, list]]]:
    import reasoning_gym

    rng = random.Random(cfg.seed)
    pools = {"toolcall": [toolcall_doc(rng) for _ in range(cfg.toolcall_docs)], "domains": [], "reasoning": []}
    for name in IN_DOMAIN:
        dom = get_domain(name)
        drng = random.Random(f"pretrain:{name}:{cfg.seed}")
        for task in dom.tasks("train", cfg.domain_tasks[name], seed=1000 + cfg.seed):
            traj = dom.expert(task, drng)
            pools["domains"].append((traj["messages"], traj["tools"]))
    per = max(1, cfg.reasoning_items // len(GENERATORS))
    for name, gen in GENERATORS.items():
        ds = reasoning_gym.create_dataset(name, size=per, seed=7 + cfg.seed, **gen)
        for e in ds:
            pools["reasoning"].append(([{"role": "user", "content": e["question"]},
                                        {"role": "assistant", "content": str(e["answer"])}], []))
    return pools


def render_all(pools, template_tokenizer) -> dict[str, list[str]]:
    return {k: [template_tokenizer.apply_chat_template(m, tools=t or None, tokenize=False) for m, t in docs]
            for k, docs in pools.items()}


def pretrain(cfg: PretrainConfig, log=print) -> dict:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    t0 = time.time()
    pools = build_mixture(cfg)
    log(f"mixture: {', '.join(f'{k} {len(v)} docs' for k, v in pools.items())} ({time.time() - t0:.0f}s)")
    boot = train_tokenizer([json.dumps(m) for docs in pools.values() for m, _ in docs[:200]], 300, compact_tools=True)
    texts = render_all(pools, boot)
    tok = train_tokenizer([t for docs in texts.values() for t in docs], cfg.vocab_size, compact_tools=True)
    ids = {k: [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in docs] for k, docs in texts.items()}
    tokens = {k: sum(map(len, v)) for k, v in ids.items()}
    log(f"tokenizer: {len(tok)} tokens; corpus tokens {tokens}")

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
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
    names, weights = list(cfg.mix), [cfg.mix[k] for k in cfg.mix]
    blocks = packed_blocks(lambda: rng.choice(ids[rng.choices(names, weights)[0]]), cfg.block_size + 1, PAD)

    start, step, seen = time.time(), 0, 0
    ckpts, history = [], []
    model.train()
    while step < cfg.steps:
        if cfg.minutes is not None and time.time() - start >= cfg.minutes * 60:
            break
        progress = step / cfg.steps  # warmup, then cosine to 10% of the peak
        lr = cfg.learning_rate * min(1.0, (step + 1) / cfg.warmup_steps) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = torch.tensor([next(blocks) for _ in range(cfg.batch_size)])
        loss = _loss(model, batch, PAD)
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
            ckpts.append(_save(model, tok, out / "checkpoints" / f"step-{step}"))
    if not ckpts or not ckpts[-1].endswith(f"step-{step}"):
        ckpts.append(_save(model, tok, out / "checkpoints" / f"step-{step}"))
    (out / "pretrain_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    train_seconds = time.time() - start
    log(f"trained {step} steps, {seen / 1e6:.1f}M tokens in {train_seconds / 60:.1f} min")
    choice = select_base(ckpts, cfg, log)
    base = out / "base"
    if base.exists():
        shutil.rmtree(base)
    shutil.copytree(choice["checkpoint"], base)
    summary = {"parameters": n_params, "steps": step, "tokens": seen, "train_minutes": train_seconds / 60,
               "corpus_tokens": tokens, "selected": choice, "base": str(base)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def packed_blocks(draw, size: int, pad: int):
    """Blocks of `size` tokens holding whole documents from `draw()`, packed until the next one does
    not fit (it opens the next block); the rest is padding, which the loss ignores. A document is
    never split (one longer than a block is cut), so the model sees every trajectory from its
    start: with 512-token blocks and split documents, tooluse episodes of 545-621 tokens never were."""
    pending = None
    while True:
        block: list[int] = []
        while True:
            doc = (pending if pending is not None else draw())[:size]
            if block and len(block) + len(doc) > size:
                pending = doc
                break
            pending = None
            block += doc
        yield block + [pad] * (size - len(block))


def _loss(model, batch, pad_id: int):
    import torch.nn.functional as F

    logits = model(input_ids=batch[:, :-1]).logits
    labels = batch[:, 1:].masked_fill(batch[:, 1:] == pad_id, -100)  # padding teaches nothing
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


def _save(model, tok, path: Path) -> str:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def dev_states(per_domain: int, seed: int = 0):
    from pivotrl.lab.evaluate import expert_states

    return expert_states("dev", IN_DOMAIN, max(2, per_domain // 3), seed, "dev:{name}", per_domain)


def mixed_share(model_dir: str, states, k: int, max_tokens: int = 48) -> dict:
    from pivotrl.lab.evaluate import lab_verifier
    from pivotrl.pivots.profile import summarise
    from pivotrl.rewards import safe_score
    from pivotrl.sampling import Prompt, SamplingParams, get_sampler

    sampler = get_sampler("transformers", model=model_dir)
    verifier = lab_verifier()
    res = sampler.sample([Prompt(s.context, s.tools) for s in states], SamplingParams(n=k, max_tokens=max_tokens), seed=0)
    stats = [summarise([safe_score(verifier, x.completion, s, truncated=x.truncated).reward for x in r.samples])
             for s, r in zip(states, res) if r.samples]
    return {"mixed_share": sum(st["reward_var"] > 0 for st in stats) / max(len(stats), 1),
            "mean_reward": sum(st["reward_mean"] for st in stats) / max(len(stats), 1), "states": len(stats)}


def select_base(ckpts: list[str], cfg: PretrainConfig, log=print) -> dict:
    states = dev_states(cfg.select_states_per_domain, cfg.seed)
    measured = []
    for c in ckpts:
        m = mixed_share(c, states, cfg.select_k)
        log(f"{Path(c).name}: mixed share {m['mixed_share']:.3f}, mean reward {m['mean_reward']:.3f}")
        measured.append({"checkpoint": c, **m})
    return choose_checkpoint(measured, cfg.select_tolerance)


def choose_checkpoint(measured: list[dict], tolerance: float) -> dict:
    """The latest checkpoint whose mixed share is within `tolerance` of the best one's."""
    best = max(m["mixed_share"] for m in measured)
    return [m for m in measured if m["mixed_share"] >= best - tolerance][-1]
