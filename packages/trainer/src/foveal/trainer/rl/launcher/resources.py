"""How `foveal rl` shares one machine between its processes: GPUs for servers and trainer, CPU threads.

GPUs: each server takes `tensor_parallel x data_parallel` consecutive GPUs, the trainer the rest (run
with torchrun when it has several). A machine with one GPU runs everything on it. Each child sees only
its GPUs (`CUDA_VISIBLE_DEVICES`), as torchrun and vLLM expect.

CPU threads: without GPUs every torch process would start one thread per core, and two such processes
on the same cores slow each other down several times over (spinning OpenMP workers), so each torch
child gets `cores // processes` threads through OMP_NUM_THREADS, as torchrun does for its workers. A
value the user exported is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class ResourceError(ValueError):
    """The machine cannot hold the processes the config asks for; names the settings."""


@dataclass(frozen=True)
class DevicePlan:
    """The GPU indices each server and the trainer may use."""

    servers: tuple[tuple[int, ...], ...]
    trainer: tuple[int, ...]


def plan_gpus(num_gpus: int, num_servers: int, gpus_per_server: int) -> DevicePlan | None:
    """Who gets which GPU; None without GPUs."""
    if num_gpus == 0:
        return None
    if num_gpus == 1:
        return DevicePlan(servers=((0,),) * num_servers, trainer=(0,))
    needed = num_servers * gpus_per_server
    if needed >= num_gpus:
        raise ResourceError(
            f"inference.num_servers x tensor_parallel x data_parallel = {needed} GPUs leaves none of this "
            f"machine's {num_gpus} for the trainer; use fewer, or run the servers as their own job (--connect)"
        )
    servers = tuple(tuple(range(i * gpus_per_server, (i + 1) * gpus_per_server)) for i in range(num_servers))
    return DevicePlan(servers=servers, trainer=tuple(range(needed, num_gpus)))


def visible(gpus: tuple[int, ...]) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}


def cpu_threads(torch_processes: int) -> dict[str, str]:
    """OMP_NUM_THREADS for each torch child, unless the user set it."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"OMP_NUM_THREADS": str(max(1, cores // max(torch_processes, 1)))}


def count_gpus() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    import torch  # here, so the launcher's other work never waits for torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
