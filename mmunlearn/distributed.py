"""Rank awareness under a data-parallel launch (`torchrun --nproc_per_node N -m stages.<stage>` or
`accelerate launch`): every process runs the stage's training in step, each on its shard of the
batches, and rank 0 alone evaluates, prints and writes; the others wait at a barrier.

Without a launcher (no WORLD_SIZE in the environment) world_size() is 1, rank() 0, barrier()
does nothing and no process group exists: single-process runs are untouched.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def _group():
    """torch.distributed when a process group is up, else None. A process that has not imported
    torch has no group, and stages that never need torch (analyze, export) do not import it here."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _group()
    return dist.get_world_size() if dist else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    dist = _group()
    return dist.get_rank() if dist else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    dist = _group()
    if dist and dist.get_world_size() > 1:
        dist.barrier()


@contextmanager
def session(timeout_minutes: int = 0):
    """The stage's process group for its whole run when launched with several processes: gloo on
    CPU, NCCL on GPU (one device per local rank), the timeout `timeout_minutes` (0 = torch's
    default): the other ranks wait at barriers while rank 0 evaluates alone, so it must cover the
    longest evaluation. The HF Trainer and accelerate reuse this group. On exit, a barrier (every
    rank leaves together) and the group is destroyed."""
    if world_size() == 1 or _group() is not None:
        yield
        return
    import datetime

    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    kw = {"timeout": datetime.timedelta(minutes=timeout_minutes)} if timeout_minutes else {}
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", **kw)
    try:
        yield
        barrier()
    finally:
        dist.destroy_process_group()
