"""Process-group plumbing for multi-GPU / multi-node training under ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; with ``WORLD_SIZE`` > 1 we join the group (NCCL on GPUs, gloo
on CPUs). A single process needs none of it and every helper degrades to a
no-op, so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from distill.tta.predictor import resolve_device


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the group, so we tear it down

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def setup(device: str = "auto") -> DistEnv:
    """Joins the process group when launched by torchrun and picks this rank's device."""
    owns = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_cuda = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    else:
        rank, world, local = 0, 1, 0
    return DistEnv(rank, world, local, _device(device, local), owns)


def _device(device: str, local_rank: int) -> torch.device:
    """``device`` as inference reads it (cpu, cuda, cuda:N or auto, checked there); a GPU
    without an index is this process's own."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        # One GPU per process: torchrun's LOCAL_RANK picks it unless one was named.
        dev = torch.device("cuda", dev.index if dev.index is not None else local_rank)
        torch.cuda.set_device(dev)
    return dev


def all_gather(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(env: DistEnv, values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean across ranks (identity for one process)."""
    if not env.distributed:
        return values
    # Collectives run on the group's device: NCCL needs CUDA tensors.
    buf = values.to(env.device if dist.get_backend() == "nccl" else "cpu").clone()
    dist.all_reduce(buf)
    return buf.cpu() / env.world_size


def barrier(env: DistEnv) -> None:
    """Waits for every rank (no-op for one process)."""
    if env.distributed:
        dist.barrier()


def teardown(env: DistEnv) -> None:
    """Leaves the group if :func:`setup` joined it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()
