"""What a launch holds in accelerator memory, per device, before it starts: `pivotrl plan`, and the
refusal `train` makes on a GPU when the plan does not fit.

Arithmetic, not a measurement: the parameter count is exact (the model is built on the `meta`
device from its config, which allocates nothing), the rest follows how the step is run:

- weights, gradients and AdamW's two moments: float32 master weights, 4 + 4 + 8 bytes a trainable
  parameter (`pivotrl.train.common.load_policy`); with LoRA the frozen base once in bf16 (2 bytes a
  parameter) and the adapters as above; ZeRO-3 and FSDP (full sharding) divide all of it by the
  number of devices, plus the largest layer gathered at a time;
- activations: `sequences` (per device per micro-batch) x (prompt + completion) tokens; with
  gradient checkpointing each layer keeps its input (hidden x 2 bytes in bf16) and one layer is
  recomputed at a time (about 16 hidden-sized values a token, and with eager attention its per-head
  scores); without it every layer keeps about 16 hidden-sized values a token (a dense MLP's; an MoE
  layer's experts are counted as one);
- the LM head: TRL 1.16 computes log-probabilities with its fused, chunked kernel
  (`trl.trainer.utils.add_fused_lm_head`), which never builds the (tokens x vocabulary) logits: one
  tile of `TOKEN_CHUNK_SIZE` tokens x `_CHUNKED_LOGPROB_CHUNK_SIZE` vocabulary entries in bf16 (read
  from the installed TRL), and a few float32 values a completion token;
- generation without vLLM: the key/value cache of the rollouts (2 x layers x key/value heads x head
  size x tokens x 2 bytes); with vLLM colocated: its `vllm_gpu_memory_utilization` share of the
  device, which must hold vLLM's bf16 weights (divided by its tensor parallelism) and a key/value
  cache for one sequence of `max_model_len` (TRL passes `vllm_max_model_length`, else vLLM takes the
  model's whole context), and its own activations and CUDA graphs (`VLLM_RUNTIME`, an allowance):
  vLLM refuses to start otherwise. In server mode vLLM is on other GPUs and counts nothing here;
- evaluation and refresh (step 0, then every `eval_every` / `refresh_every`): the policy as one rank
  generates with it alone (`pivotrl.train.distributed.generation_policy`): under ZeRO-3 every
  parameter gathered in bf16 (2 bytes x P on each rank), under FSDP a replica from the full state
  dict in the sharded parameters' float32 (4 bytes x P; bf16 for a LoRA base), beside the sharded
  weights, gradients and optimizer, and the key/value cache of its batch. More GPUs do not shrink
  that copy: a model whose copy does not fit trains without in-training evaluation
  (`--eval_max_states 0`, refresh off) and is evaluated after, checkpoint by checkpoint.

Good to a factor of about 1.5 (allocator slack, CUDA context, temporary buffers): a plan well under
the device fits, one over it does not. The recipes of the README and docs/guides/training.md are
checked against it by the tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

GiB = 1 << 30
SHARDINGS = ("none", "zero3", "fsdp")
EVAL_BATCH = 8  # prompts per evaluation `generate` call (`EvalCallback`'s batch_size)
# vLLM's own activations (its profiling run over max_num_batched_tokens) and CUDA graphs, an allowance
# beside its weights and cache: about a GiB on 8B-class models (vLLM's start-up log reports both)
VLLM_RUNTIME = 1.0 * GiB


@dataclass
class StepMemory:
    parameters: int
    trainable: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    generation: float
    total: float  # the training step's peak
    evaluation: float = 0.0  # the peak while evaluating or re-profiling (not during a step)
    vllm_needs: float = 0.0  # what vLLM's colocated share must hold: weights / TP + one max_model_len of KV
    vllm_share: float = 0.0  # that share of the device
    problems: list[str] = field(default_factory=list)  # why it does not fit (empty: it fits)

    def as_gib(self) -> dict:
        return {k: (round(v / GiB, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()
                if k != "problems"}

    @property
    def fits(self) -> bool:
        return not self.problems


def count_parameters(model_config) -> tuple[int, int]:
    """(parameters, the largest layer's) of a model built from its config on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    total = sum(p.numel() for p in model.parameters())
    layers = getattr(getattr(model, "model", model), "layers", None)
    largest = max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0) if layers else 0
    return total, largest


def lm_head_tile() -> tuple[int, int]:
    """(tokens, vocabulary entries) of one tile of TRL's chunked log-prob kernel, from the installed TRL."""
    try:
        from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        return TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE
    except ImportError:  # another TRL: its 1.16 tile
        return 4096, 32768


def kv_bytes_per_token(c, dtype_bytes: int = 2) -> float:
    """Keys and values of one token over every layer (bf16 by default)."""
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return 2.0 * c.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def step_memory(model_config, *, sequences: int, prompt_tokens: int, completion_tokens: int, devices: int = 1,
                sharding: str = "none", lora: bool = False, lora_r: int = 16, gradient_checkpointing: bool = True,
                use_vllm: bool = False, vllm_share: float = 0.3, device_bytes: float | None = None,
                rollouts: int | None = None, vllm_mode: str = "colocate", vllm_tp: int = 1,
                vllm_max_model_len: int | None = None, eval_tokens: int | None = None,
                evaluate: bool = True) -> StepMemory:
    """Per-device bytes of one GRPO step and of an evaluation. `sequences`: samples in one
    micro-batch on one device; `rollouts`: samples generated at once on one device (default:
    `sequences`); `eval_tokens`: prompt + budget of an evaluated state (default: the step's)."""
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}")
    c = model_config
    hidden, layers, vocab = c.hidden_size, c.num_hidden_layers, c.vocab_size
    total, largest = count_parameters(c)
    shard = devices if sharding != "none" else 1
    if lora:  # adapters on the attention and MLP projections: about r x (in + out) per matrix, 7 a layer
        trainable = layers * 7 * lora_r * 2 * hidden
        weights = 2.0 * total / shard + 4.0 * trainable
    else:
        trainable = total
        weights = 4.0 * total / shard + (4.0 * largest if shard > 1 else 0.0)
    gradients, optimizer = 4.0 * trainable / shard, 8.0 * trainable / shard
    tokens = sequences * (prompt_tokens + completion_tokens)
    per_layer = 16 * hidden * 2.0 * tokens  # bf16 values a token in one layer's forward (MLP, attention, norms)
    # eager attention materialises every head's scores (one layer at a time); SDPA and flash attention,
    # transformers' default, do not
    eager = getattr(c, "_attn_implementation", None) == "eager"
    scores = sequences * c.num_attention_heads * (prompt_tokens + completion_tokens) ** 2 * 2.0 if eager else 0.0
    if gradient_checkpointing:
        activations = layers * hidden * 2.0 * tokens + per_layer + scores
    else:
        activations = layers * (per_layer + scores)
    # TRL's fused LM head: one bf16 tile (and its recomputation in the backward), float32 per-token statistics
    scored = sequences * completion_tokens
    tile_tokens, tile_vocab = lm_head_tile()
    logits = 2 * min(scored, tile_tokens) * min(vocab, tile_vocab) * 2.0 + scored * 8 * 4.0
    kv = kv_bytes_per_token(c)
    colocated = use_vllm and vllm_mode == "colocate"
    vllm_needs = have = 0.0
    if colocated:
        have = vllm_share * device_bytes if device_bytes else 0.0
        max_len = vllm_max_model_len or getattr(c, "max_position_embeddings", prompt_tokens + completion_tokens)
        vllm_needs = (2.0 * total + kv * max_len) / max(vllm_tp, 1) + VLLM_RUNTIME
        generation = have
    elif use_vllm:
        generation = 0.0  # vLLM in server mode: its own GPUs
    else:
        generation = kv * (rollouts or sequences) * (prompt_tokens + completion_tokens)
    grand = weights + gradients + optimizer + activations + logits + generation
    # evaluation: the sharded state stays; the policy a rank generates with alone comes on top
    copy = 0.0
    if sharding == "zero3":
        copy = 2.0 * total
    elif sharding == "fsdp":
        copy = (2.0 if lora else 4.0) * total
    eval_kv = kv * EVAL_BATCH * (eval_tokens or prompt_tokens + completion_tokens)
    evaluation = (weights + gradients + optimizer + copy + eval_kv + (have if colocated else 0.0)) if evaluate else 0.0
    mem = StepMemory(total, trainable, weights, gradients, optimizer, activations, logits, generation, grand,
                     evaluation, vllm_needs, have)
    if device_bytes:
        mem.problems = problems(mem, device_bytes, max_len if colocated else None, vllm_tp)
    return mem


def problems(mem: StepMemory, device_bytes: float, max_model_len: int | None, vllm_tp: int = 1) -> list[str]:
    out = []
    if mem.total > device_bytes:
        out.append(f"a training step holds {mem.total / GiB:.1f} GiB per GPU, over the {device_bytes / GiB:.0f} GiB "
                   "there are")
    if mem.evaluation > device_bytes:
        out.append(f"evaluation and refresh hold {mem.evaluation / GiB:.1f} GiB per GPU (the policy whole on each "
                   f"rank beside the sharded state), over {device_bytes / GiB:.0f} GiB")
    if mem.vllm_needs > mem.vllm_share and max_model_len:
        out.append(f"vLLM's share ({mem.vllm_share / GiB:.1f} GiB) cannot hold its bf16 weights and a key/value cache "
                   f"for one max_model_len={max_model_len:,} sequence ({mem.vllm_needs / GiB:.1f} GiB with tensor "
                   f"parallel {vllm_tp}): vLLM refuses to start")
    return out


@dataclass
class Recipe:
    """What a plan is made of: the model's config and the knobs of a launch."""

    model_config: object
    sequences: int
    prompt_tokens: int
    completion_tokens: int
    devices: int = 1
    sharding: str = "none"
    lora: bool = False
    lora_r: int = 16
    gradient_checkpointing: bool = True
    use_vllm: bool = False
    vllm_share: float = 0.3
    rollouts: int | None = None
    vllm_mode: str = "colocate"
    vllm_tp: int = 1
    vllm_max_model_len: int | None = None
    group_size: int | None = None  # num_generations: what one micro-batch holds with group_micro_batches
    evaluate: bool = True  # held-out evaluation or refresh during training (each generates with the whole policy)

    def memory(self, device_bytes: float) -> StepMemory:
        kw = {k: v for k, v in asdict(self).items() if k not in ("model_config", "group_size")}
        return step_memory(self.model_config, device_bytes=device_bytes, **kw)


def nearest_fit(recipe: Recipe, device_bytes: float) -> tuple[list[str], StepMemory] | None:
    """The changes (as train flags) that make `recipe` fit, tried one after another, each kept, in the
    order docs/guides/training.md recommends; None when even all of them do not."""
    length = recipe.prompt_tokens + recipe.completion_tokens
    steps = []
    if recipe.use_vllm and recipe.vllm_mode == "colocate" and (recipe.vllm_max_model_len or 0) != length:
        steps.append((f"--vllm_max_model_length {length}", {"vllm_max_model_len": length}))
    if not recipe.gradient_checkpointing:
        steps.append(("--gradient_checkpointing true", {"gradient_checkpointing": True}))
    if recipe.group_size and recipe.sequences > recipe.group_size:
        steps.append(("--group_micro_batches true", {"sequences": recipe.group_size}))
    if recipe.devices > 1 and recipe.sharding == "none":
        steps.append(("accelerate launch --config_file configs/accelerate_zero3.yaml", {"sharding": "zero3"}))
    if not recipe.lora:
        steps.append(("--lora true", {"lora": True}))
    if recipe.use_vllm and recipe.vllm_mode == "colocate":
        steps.append(("--vllm_mode server (trl vllm-serve on GPUs of its own)", {"vllm_mode": "server"}))
    if recipe.evaluate and recipe.sharding != "none":  # the whole policy on each rank: more GPUs do not help
        steps.append(("--eval_max_states 0 (no evaluation during training: evaluate the checkpoints after, where the "
                      "model fits)",
                      {"evaluate": False}))
    taken: list[str] = []
    current = recipe
    for flag, change in steps:
        current = replace(current, **change)
        taken.append(flag)
        mem = current.memory(device_bytes)
        if not mem.problems:
            return taken, mem
        if mem.vllm_needs > mem.vllm_share > 0:  # the share can grow while the step has room
            room = device_bytes - (mem.total - mem.vllm_share)
            need = mem.vllm_needs * 1.1
            if need <= room:
                share = min(0.95, -(-need / device_bytes * 20 // 1) / 20)  # rounded up to 0.05
                grown = replace(current, vllm_share=share).memory(device_bytes)
                if not grown.problems:
                    return taken + [f"--vllm_gpu_memory_utilization {share:g}"], grown
    return None


def recipe_for(cfg, devices: int = 1, sharding: str = "none", prompt_tokens: int | None = None) -> Recipe:
    """The recipe of a PivotRL config (`PivotRLConfig`): its model's config, micro-batch and budgets."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(cfg.model)
    per_group = getattr(cfg, "group_micro_batches", False)
    sequences = cfg.num_generations if per_group else cfg.per_device_train_batch_size
    # TRL generates for steps_per_generation micro-batches at once (None: gradient_accumulation_steps)
    rollouts = cfg.per_device_train_batch_size * (cfg.steps_per_generation or cfg.gradient_accumulation_steps)
    context = getattr(model_config, "max_position_embeddings", 4096)
    completion = cfg.max_completion_length or 256
    prompt = prompt_tokens or cfg.max_prompt_length or max(context - completion, 1)
    return Recipe(model_config, sequences=sequences, prompt_tokens=prompt, completion_tokens=completion,
                  devices=devices, sharding=sharding, lora=cfg.lora, lora_r=cfg.lora_r,
                  gradient_checkpointing=bool(cfg.gradient_checkpointing), use_vllm=bool(cfg.use_vllm),
                  vllm_share=cfg.vllm_gpu_memory_utilization, rollouts=rollouts, vllm_mode=cfg.vllm_mode,
                  vllm_tp=cfg.vllm_tensor_parallel_size or 1, vllm_max_model_len=cfg.vllm_max_model_length,
                  group_size=cfg.num_generations,
                  evaluate=bool(cfg.eval_max_states or getattr(cfg, "eval_tasks", None) or cfg.refresh_every))


def plan_for(cfg, devices: int = 1, sharding: str = "none", prompt_tokens: int | None = None,
             device_bytes: float | None = None) -> StepMemory:
    return recipe_for(cfg, devices, sharding, prompt_tokens).memory(device_bytes)


def refusal(cfg, devices: int, sharding: str, device_bytes: float, prompt_tokens: int | None = None) -> str | None:
    """Why this launch will not fit, with the numbers and the nearest recipe that does; None if it fits."""
    recipe = recipe_for(cfg, devices, sharding, prompt_tokens)
    mem = recipe.memory(device_bytes)
    if mem.fits:
        return None
    fix = nearest_fit(recipe, device_bytes)
    hint = (f"; it fits ({fix[1].total / GiB:.0f} GiB a step, {fix[1].evaluation / GiB:.0f} GiB evaluating) with "
            f"{' '.join(fix[0])}") if fix else "; no recipe of pivotrl's knobs fits it on these GPUs: more GPUs"
    return (f"{cfg.model} on {devices} x {device_bytes / GiB:.0f} GiB GPUs, sharding {sharding}: "
            f"{'; '.join(mem.problems)}{hint}")


def launch_sharding() -> str:
    """The sharding `accelerate launch` set up for this process (its environment)."""
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and \
            os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return "zero3"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    return "none"


def launch_refusal(cfg, prompt_tokens: int | None = None) -> str | None:
    """On a GPU, before the model loads and after the profile's settings are filled in: why this
    launch (its world size and sharding) will not fit, or None. Off a GPU there is nothing to plan."""
    import os

    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    try:
        return refusal(cfg, int(os.environ.get("WORLD_SIZE", "1")), launch_sharding(), device, prompt_tokens)
    except Exception:  # noqa: BLE001 - a plan that cannot be made (a config we cannot read) stops nothing
        return None
