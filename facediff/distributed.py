"""Sampling and evaluation across processes: ``accelerate launch -m facediff sample ...``
(or ``torchrun``) splits the images over the processes.

The images are split by whole batches: batch ``k`` (images ``k*B .. k*B+B-1``, seeds
``seed + index``) goes to process ``k mod world``, so every process computes exactly the
batches one process would have, and the images are the same as one process's in any
precision (bf16 rounding depends on what else is in a batch). Results are gathered in
image order; only the main process writes files that are not per image, and prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def launched() -> bool:
    """Whether this process is one of several (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes sampling together."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # the process's own device (None: not launched)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def starts(self, n: int, batch_size: int) -> list[int]:
        """The first image index of each batch this process samples."""
        return list(range(0, n, batch_size))[self.rank::self.world]

    def gather(self, items: Sequence[tuple[int, T]]) -> list[T]:
        """Every process's ``(first index, value)`` pairs, on every process, in index
        order (one process: its own)."""
        pairs = list(items)
        if self.world > 1:
            from accelerate.utils import gather_object

            pairs = gather_object(pairs)
        return [v for _, v in sorted(pairs, key=lambda p: p[0])]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed

            torch.distributed.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first (it fills caches the others then read)."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()


def shard() -> Shard:
    """This process's shard: rank 0 of 1 unless launched as one of several processes (the
    process group is then set up by accelerate, gloo on CPUs and NCCL on GPUs)."""
    if not launched():
        return Shard()
    import torch
    from accelerate import PartialState

    # without CUDA, accelerate forms the group (gloo) only when told to use the CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state.device)


def device_for(name: str, here: Shard, resolve: Callable[[str], torch.device]) -> torch.device:
    """``--device`` for this process: launched, ``auto`` and ``cuda`` mean the process's own
    GPU (or the CPU), so eight processes use eight GPUs."""
    if here.device is not None and name in ("auto", "cuda"):
        return here.device
    return resolve(name)

