"""Several training processes (`torch.distributed.run`, `accelerate launch`): who writes the run's
files, and the few numbers every rank must agree on.

Every rank counts its own rollouts; the ledger sums them over ranks at each line and only the main
process writes files. Decisions that change what ranks do next (stop on the wall clock, the pool
after a refresh) are made by the main process and sent to all, since ranks that disagree would
hang at the next collective. Each function is a no-op in a single process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext


def rank() -> int:
    """This process's global rank, from the launcher's environment (known before any trainer exists)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def end_process_group() -> None:
    """Wait for every rank, then take the process group down (torch's documented last call).

    A rank that leaves with the group still up can abort in its exit ("terminate called without an
    active exception", SIGABRT) while another rank is still saving, and the launcher then kills the
    whole job (seen in CI with two CPU ranks on gloo)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (a collective: every rank must call it at the same point)."""
    if not _distributed():
        return list(values)
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(obj):
    """The main process's `obj` on every rank (a collective)."""
    if not _distributed():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def my_share(items) -> list:
    """This rank's part of `items` (every world-size-th, from its rank): work split evenly over ranks."""
    if not _distributed():
        return list(items)
    import torch.distributed as dist

    return list(items)[dist.get_rank()::dist.get_world_size()]


def gather_lists(part: list) -> list:
    """Every rank's `part`, concatenated in rank order, on every rank (a collective)."""
    if not _distributed():
        return list(part)
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return [x for p in parts for x in p]


@contextmanager
def generation_policy(trainer, model):
    """The policy as one rank can generate with it alone, with no collective inside a forward, so that
    every rank evaluates or profiles its own share of the states, however long its samples run:
    one process or DDP: the module itself; DeepSpeed ZeRO-3: its parameters gathered on every rank
    for the while (TRL's `unwrap_model_for_generation`, as TRL's own generation does); FSDP: a plain
    replica built from the full state dict (a collective; its memory is freed on exit). Forwards run
    in the precision training's do (accelerate's autocast), without gradients."""
    import torch

    if trainer is None:  # outside a Trainer (a test, `pivotrl eval`): the model as it is
        with torch.no_grad():
            yield model
        return
    from accelerate.utils import DistributedType
    from trl.models import unwrap_model_for_generation

    acc = trainer.accelerator
    if acc.distributed_type == DistributedType.FSDP:
        holder = nullcontext(full_replica(trainer.model_wrapped, acc.unwrap_model(trainer.model_wrapped)))
    else:
        holder = unwrap_model_for_generation(trainer.model_wrapped, acc, gather_deepspeed3_params=True)
    was_training = model.training
    with holder as policy, torch.no_grad(), acc.autocast():
        policy.eval()
        try:
            yield policy
        finally:
            if was_training:
                policy.train()


def full_replica(wrapped, module):
    """An unsharded copy of an FSDP (1 or 2) module on this rank: the full state dict (torch's
    `get_model_state_dict`, which every rank must call) loaded into the same architecture built
    without memory (meta device), a PEFT adapter included, with the module's own non-persistent
    buffers."""
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM

    state = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True))
    peft = getattr(module, "peft_config", None)
    config = module.get_base_model().config if peft else module.config
    with torch.device("meta"):
        replica = AutoModelForCausalLM.from_config(config)
        if peft:
            from peft import get_peft_model

            replica = get_peft_model(replica, next(iter(peft.values())))
    replica.load_state_dict(state, assign=True)
    # buffers outside the state dict (rotary frequencies) are whole on every rank: take them as they are
    buffers = {name.replace("_fsdp_wrapped_module.", ""): buf for name, buf in module.named_buffers()}
    for name, buf in list(replica.named_buffers()):
        if buf.is_meta:
            owner, _, leaf = name.rpartition(".")
            replica.get_submodule(owner).register_buffer(leaf, buffers[name].clone(), persistent=False)
    if hasattr(replica, "generation_config") and hasattr(module, "generation_config"):
        replica.generation_config = module.generation_config
    return replica
