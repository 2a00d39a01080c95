"""Several processes under ``torchrun``: the process group read from its environment, results computed on rank 0
and handed to every rank, and how a global batch is split over the ranks and their micro-batches."""

from __future__ import annotations

import gc
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch.utils.data import Sampler

from .config import TrainConfig

__all__ = ["DIST_TIMEOUT", "Distributed", "on_rank0", "split_batch", "StepBatchSampler"]

#: How long a collective (or the rendezvous) may wait for the other ranks before it fails. It bounds the
#: time a rank can hang when another one died outside torchrun (torchrun itself stops the others at once).
DIST_TIMEOUT = timedelta(minutes=30)

T = TypeVar("T")



@dataclass
class Distributed:
    """Process-group facts read from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    ``enabled`` is True when there is more than one rank; a single rank (plain ``python``, or ``torchrun``
    with one process) trains without a process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False
    backend: str = ""

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join the process group torchrun describes (``device``: the ``--device`` flag); else one process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if "RANK" not in os.environ or world_size <= 1:
            return cls()
        d = cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")), True)
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"--device {device} under torchrun: use auto, cuda or cpu "
                             "(each rank takes the GPU of its LOCAL_RANK)")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            if not torch.cuda.is_available():
                raise ValueError("--device cuda, but CUDA is not available")
            if d.local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                                 "start at most one process per GPU (--nproc_per_node)")
            torch.cuda.set_device(d.local_rank)
        d.backend = "nccl" if use_cuda else "gloo"
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend=d.backend, timeout=DIST_TIMEOUT)
        return d

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            # Free the DDP reducer (held in reference cycles) before its process group goes away: destroyed
            # afterwards, at interpreter exit, it can abort the process ("terminate called without an active
            # exception") after a successful run.
            gc.collect()
            torch_dist.destroy_process_group()


def on_rank0(dist: Distributed, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result to every rank; its exception is raised on every rank."""
    result: Any = None
    error: BaseException | None = None
    if dist.is_main:
        try:
            result = fn()
        except Exception as e:  # sent to the other ranks, so that all of them stop with the same error
            error = e
    if dist.enabled:
        if error is not None:
            try:
                pickle.dumps(error)
            except Exception:
                error = RuntimeError(f"{type(error).__name__}: {error}")
        box = [(result, error)]
        torch_dist.broadcast_object_list(box, src=0)
        if not dist.is_main:
            result, error = box[0]
    if error is not None:
        raise error
    return result


def split_batch(batch_size: int, world_size: int, micro_batch: int | None) -> tuple[int, int, int]:
    """``(per-rank batch, micro-batch, accumulation steps)`` for a global batch over ``world_size`` ranks."""
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {world_size} ranks; "
                         f"choose a multiple of {world_size} (--batch-size) or another number of ranks")
    local = batch_size // world_size
    micro = min(micro_batch or local, local)
    if micro < 1 or local % micro:
        raise ValueError(f"per-rank batch {local} (= {batch_size} / {world_size} ranks) is not divisible by "
                         f"micro-batch {micro}")
    return local, micro, local // micro


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of dataset indices, step after step, from ``start_step``."""

    def __init__(self, cfg: TrainConfig, start_step: int, dist: Distributed) -> None:
        self.local, self.micro, self.accum = split_batch(cfg.batch_size, dist.world_size, cfg.micro_batch)
        self.cfg, self.start, self.rank = cfg, start_step, dist.rank

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.cfg.iterations):
            first = step * self.cfg.batch_size + self.rank * self.local
            for m in range(0, self.local, self.micro):
                yield list(range(first + m, first + m + self.micro))

    def __len__(self) -> int:
        return max(0, self.cfg.iterations - self.start) * self.accum


