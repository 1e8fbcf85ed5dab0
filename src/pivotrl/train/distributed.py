"""Several training processes (`torch.distributed.run`, `accelerate launch`): who writes the run's
files, and the few numbers every rank must agree on.

Every rank counts its own rollouts; the ledger sums them over ranks at each line and only the main
process writes files. Decisions that change what ranks do next (stop on the wall clock, the pool
after a refresh) are made by the main process and sent to all, since ranks that disagree would
hang at the next collective. Each function is a no-op in a single process.
"""

from __future__ import annotations

import os


def rank() -> int:
    """This process's global rank, from the launcher's environment (known before any trainer exists)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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
