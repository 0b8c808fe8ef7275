"""Data-parallel training over processes launched by torchrun: FSDP2 sharding, micro-batch shares, reductions.

One process per device. `torchrun` tells each process its place through RANK / WORLD_SIZE / LOCAL_RANK (the
launcher's protocol, not configuration: no setting of the run is read from the environment). NCCL joins
CUDA processes, gloo joins CPU processes; a run started without torchrun is a world of one and touches no
process group at all.

Sharding: FSDP2 (`torch.distributed.fsdp.fully_shard`) on every decoder layer, then on the root, on CPU and
CUDA alike. FSDP2 does run on CPU with gloo in torch 2.13 (checked by running it: forward, backward,
gradient clipping on DTensor shards, full-state-dict checkpoints and their reload); test_distributed
trains 2 gloo processes against 1 process through this code. Two things gloo needs: reductions must be
plain SUM (`set_force_sum_reduction_for_comms`; gloo has no PREMUL_SUM, which a divide factor otherwise
uses), and the FSDP settings below are per unit, so they are set on every layer, not only on the root
(set on the root alone, the layers' gradients were still averaged: half the single-process gradient).

The vision tower is left in the root unit on purpose: a rank whose micro-batch has no image never runs the
tower, and a tower sharded into its own units would then miss their all-gathers and hang the other ranks.
`reduce_scatter_unused_params` covers the gradients such a rank does not produce (zeros, like DDP's
`find_unused_parameters`).

Gradient arithmetic: every micro-batch loss is already divided by the step's global loss-token count
(`foveal.trainer.training.loss`), so the step's gradient is the SUM of the ranks' gradients, not their mean; the
divide factor is 1 accordingly. Gradients are reduced once per step, on its last backward.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard

DeviceSetting = Literal["auto", "cpu", "cuda"]
T = TypeVar("T")


class DistributedSetupError(RuntimeError):
    """The launcher's environment or the requested device cannot give this process a place; names the value."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank, world size and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files (metrics, plots, checkpoints' shared parts) and shows progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank; a no-op in a world of one."""
        if self.is_distributed:
            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of `values` over ranks (fp64, so token counts stay exact)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def max(self, values: Sequence[float]) -> list[float]:
        """Element-wise max over ranks (e.g. step time: the step takes as long as its slowest rank)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def gather_token_lists(self, lists: Sequence[Sequence[int]]) -> list[list[list[int]]]:
        """Every rank's `lists` (token ids), indexed by rank: one int64 tensor per rank, no pickle on the wire.

        A rank's lists travel as `[count, len_0 .. len_{count-1}, tokens...]`, padded to the longest rank's.
        """
        flat = torch.tensor(
            [len(lists), *(len(item) for item in lists), *(int(t) for item in lists for t in item)],
            dtype=torch.int64,
            device=self._comm_device(),
        )
        if not self.is_distributed:
            return [_token_lists(flat)]
        sizes = [torch.zeros(1, dtype=torch.int64, device=flat.device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([flat.numel()], dtype=torch.int64, device=flat.device))
        longest = int(max(size.item() for size in sizes))
        padded = torch.nn.functional.pad(flat, (0, longest - flat.numel()))
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        return [_token_lists(rows) for rows in gathered]

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def _token_lists(flat: torch.Tensor) -> list[list[int]]:
    """Decode `[count, lengths..., tokens...]` (trailing padding ignored)."""
    values = flat.tolist()
    count = values[0]
    lists, start = [], 1 + count
    for length in values[1 : 1 + count]:
        lists.append(values[start : start + length])
        start += length
    return lists


def init_distributed(device: DeviceSetting, timeout_s: float = 1800.0) -> DistributedContext:
    """Join the process group torchrun set up (if any) and pick this process's device.

    `device` is `trainer.device`: auto prefers CUDA; under torchrun each process takes `cuda:LOCAL_RANK`.
    """
    rank, world_size, local_rank = _launcher_place()
    chosen = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=chosen if chosen.type == "cuda" else None,
        )
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def close_distributed(context: DistributedContext) -> None:
    """Leave the process group (after a final barrier, so no rank exits while others still talk)."""
    if context.is_distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(setting: DeviceSetting, local_rank: int = 0) -> torch.device:
    """`trainer.device` as a torch device: auto is CUDA when present, else CPU."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedSetupError(
            f"trainer.device: a CUDA device to be present (got {setting!r} on a machine without one)"
        )
    if local_rank >= torch.cuda.device_count():
        raise DistributedSetupError(
            f"LOCAL_RANK: below the {torch.cuda.device_count()} visible CUDA devices (got {local_rank})"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def shard_model(model: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """FSDP2-shard `model` in place: each decoder layer, then the root. A world of one is left as it is."""
    if not context.is_distributed:
        return model
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    for unit in model.modules():
        if isinstance(unit, FSDPModule):  # these settings are per unit: the root's do not reach the layers
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM
            _reduce_unused_parameters(unit)
    return model


def _reduce_unused_parameters(unit: FSDPModule) -> None:
    """Zero gradients for parameters a rank did not use: torch 2.13 (the locked one) has the switch.

    Older torch (2.11 on the lent GPU machines) lacks the switch: there every rank must use the same
    parameters in a step, which holds when every micro-batch of a VLM run carries an image.
    """
    switch = getattr(unit, "set_reduce_scatter_unused_params", None)
    if switch is not None:
        switch(True, recurse=False)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The text decoder's blocks, found through transformers' `get_decoder()` (VLMs and text models alike)."""
    get_decoder = getattr(model, "get_decoder", None)
    layers = getattr(get_decoder(), "layers", None) if callable(get_decoder) else None
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise DistributedSetupError(
            f"model: a transformers model whose get_decoder() has `layers` (got {type(model).__name__})"
        )
    return list(layers)


def set_gradient_sync(model: torch.nn.Module, enabled: bool) -> None:
    """Reduce gradients in the coming backward (the step's last micro-batch) or only accumulate them locally."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


def rank_share(items: Sequence[T], context: DistributedContext) -> list[T]:
    """Items `rank, rank + world, ...`: this rank's share of the step's micro-batches, in plan order."""
    return list(items[context.rank :: context.world_size])


def padded_share(items: Sequence[T], context: DistributedContext) -> tuple[list[T], list[T]]:
    """This rank's share and the padding that brings it to the largest share's length.

    Padding repeats the rank's first item (or the first item overall when the rank has none); the caller
    makes it weightless. Every rank then runs the same number of forward/backward passes, which FSDP2's
    collectives need.
    """
    mine = rank_share(items, context)
    filler = mine[0] if mine else items[0]
    return mine, [filler] * (shares_per_rank(len(items), context.world_size) - len(mine))


def shares_per_rank(count: int, world_size: int) -> int:
    """Micro-batches every rank runs in a step: the largest share, so all ranks run the same collectives."""
    return -(-count // world_size)


def _launcher_place() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    raw = {name: os.environ.get(name) for name in names}
    if raw["WORLD_SIZE"] is None:
        return 0, 1, 0
    try:
        rank, world, local = (int(raw[name] or "0") for name in names)
    except ValueError:
        raise DistributedSetupError(f"RANK/WORLD_SIZE/LOCAL_RANK: integers set by torchrun (got {raw})") from None
    if not 0 <= rank < world:
        raise DistributedSetupError(f"RANK: between 0 and WORLD_SIZE - 1 = {world - 1} (got {rank})")
    return rank, world, local
