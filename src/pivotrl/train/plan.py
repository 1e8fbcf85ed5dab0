"""What a training step holds in accelerator memory, per device, before a launch: `pivotrl plan`.

Arithmetic, not a measurement: the parameter count is exact (the model is built on the `meta`
device from its config, which allocates nothing), the rest follows how the step is run:

- weights, gradients and AdamW's two moments: float32 master weights, 4 + 4 + 8 bytes a trainable
  parameter (`pivotrl.train.common.load_policy`); with LoRA the frozen base once in bf16 (2 bytes a
  parameter) and the adapters as above; ZeRO-3 and FSDP (full sharding) divide all of it by the
  number of devices, plus the largest layer gathered at a time;
- activations: `sequences` (per device per micro-batch) x (prompt + completion) tokens; with
  gradient checkpointing each layer keeps its input (hidden x 2 bytes in bf16) and one layer is
  recomputed at a time (about 16 hidden-sized values a token, and with eager attention its per-head
  scores);
  without it every layer keeps about 16 hidden-sized values a token;
- the completion's logits in float32 (completion tokens x vocabulary x 4 bytes x 2: log-softmax);
- generation without vLLM: the key/value cache of the rollouts (2 x layers x key/value heads x head
  size x tokens x 2 bytes); with vLLM colocated: its `vllm_gpu_memory_utilization` share of the device.

Good to a factor of about 1.5 (allocator slack, CUDA context, temporary buffers): a plan well under
the device fits, one over it does not. The README's recipes were sized with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GiB = 1 << 30
SHARDINGS = ("none", "zero3", "fsdp")


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
    total: float

    def as_gib(self) -> dict:
        return {k: (round(v / GiB, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


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


def step_memory(model_config, *, sequences: int, prompt_tokens: int, completion_tokens: int, devices: int = 1,
                sharding: str = "none", lora: bool = False, lora_r: int = 16, gradient_checkpointing: bool = True,
                use_vllm: bool = False, vllm_share: float = 0.3, device_bytes: float | None = None,
                rollouts: int | None = None) -> StepMemory:
    """Per-device bytes of one GRPO step. `sequences`: samples in one micro-batch on one device;
    `rollouts`: samples generated at once on one device (default: `sequences`)."""
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}")
    c = model_config
    hidden, layers, vocab = c.hidden_size, c.num_hidden_layers, c.vocab_size
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
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
    scores = sequences * heads * (prompt_tokens + completion_tokens) ** 2 * 2.0 if eager else 0.0
    if gradient_checkpointing:
        activations = layers * hidden * 2.0 * tokens + per_layer + scores
    else:
        activations = layers * (per_layer + scores)
    logits = sequences * completion_tokens * vocab * 4.0 * 2
    if use_vllm:
        generation = vllm_share * device_bytes if device_bytes else 0.0
    else:
        generation = 2 * layers * kv_heads * head_dim * 2.0 * (rollouts or sequences) * (prompt_tokens + completion_tokens)
    grand = weights + gradients + optimizer + activations + logits + generation
    return StepMemory(total, trainable, weights, gradients, optimizer, activations, logits, generation, grand)


def plan_for(cfg, devices: int = 1, sharding: str = "none", prompt_tokens: int | None = None,
             device_bytes: float | None = None) -> StepMemory:
    """The plan of a PivotRL config (`PivotRLConfig`): its model's config, micro-batch and budgets."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(cfg.model)
    per_group = getattr(cfg, "group_micro_batches", False)
    sequences = cfg.num_generations if per_group else cfg.per_device_train_batch_size
    # TRL generates for steps_per_generation micro-batches at once (None: gradient_accumulation_steps)
    rollouts = cfg.per_device_train_batch_size * (cfg.steps_per_generation or cfg.gradient_accumulation_steps)
    prompt = prompt_tokens or cfg.max_prompt_length or getattr(model_config, "max_position_embeddings", 4096) // 2
    return step_memory(model_config, sequences=sequences, prompt_tokens=prompt,
                       completion_tokens=cfg.max_completion_length or 256, devices=devices, sharding=sharding,
                       lora=cfg.lora, lora_r=cfg.lora_r, gradient_checkpointing=bool(cfg.gradient_checkpointing),
                       use_vllm=bool(cfg.use_vllm), vllm_share=cfg.vllm_gpu_memory_utilization,
                       device_bytes=device_bytes, rollouts=rollouts)


def launch_warning(cfg) -> str | None:
    """On a GPU, before the model loads: a warning when the plan of this launch (its world size and
    the sharding `accelerate launch` set up) is over the device's memory."""
    import os

    import torch

    if not torch.cuda.is_available():
        return None
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and \
            os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        sharding = "zero3"
    elif os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        sharding = "fsdp"
    else:
        sharding = "none"
    device = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    try:
        mem = plan_for(cfg, devices=int(os.environ.get("WORLD_SIZE", "1")), sharding=sharding, device_bytes=device)
    except Exception:  # noqa: BLE001 - a plan that cannot be made is no reason to stop a launch
        return None
    if mem.total <= device:
        return None
    parts = ", ".join(f"{k} {v:.1f}" for k, v in mem.as_gib().items() if isinstance(v, float) and k != "total")
    return (f"warning: this step plans {mem.total / GiB:.1f} GiB per GPU ({parts}) on {device / GiB:.0f} GiB GPUs "
            f"with sharding {sharding}: it will likely not fit (see `pivotrl plan`)")
