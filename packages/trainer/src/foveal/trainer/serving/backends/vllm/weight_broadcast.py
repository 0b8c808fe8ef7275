"""The optional NCCL path for weight updates: the trainer broadcasts its tensors straight into the workers.

vLLM ships both ends of it (`vllm.distributed.weight_transfer.nccl_engine`): its worker-side engine is
enabled in every vLLM server we start (`launch.engine_args`), and a trainer drives a round with vLLM's
`NCCLTrainerWeightTransferEngine` through any client offering `init_weight_transfer_engine`,
`start_weight_update`, `update_weights` and `finish_weight_update`. These routes are those four calls
behind our control-plane token, with typed bodies: init once (the trainer is NCCL rank 0, the workers
`rank_offset` onwards), then per round pause, start, update (while the trainer broadcasts), finish with
the new weight version, resume. The checkpoint-folder update (`/control/update_weights`) needs none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, Self

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from foveal.renderers.inference.wire import ControlResponse


class BroadcastPaths:
    INIT = "/control/weight_broadcast/init"
    START = "/control/weight_broadcast/start"
    UPDATE = "/control/weight_broadcast/update"
    FINISH = "/control/weight_broadcast/finish"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightBroadcastInit(_Body):
    """The NCCL group: the trainer's TCP rendezvous, this server's first rank, and everyone's count."""

    master_address: str = Field(min_length=1)
    master_port: int = Field(ge=1, le=65535)
    rank_offset: int = Field(ge=1, description="NCCL rank of this server's first worker (the trainer is 0).")
    world_size: int = Field(ge=2, description="Trainer plus every worker of every server in the group.")
    packed: bool = Field(default=True, description="Broadcast in packed buffers (must match the trainer).")
    packed_buffer_size_bytes: int | None = Field(default=None, gt=0)
    packed_num_buffers: int | None = Field(default=None, gt=0)

    def init_info(self) -> dict[str, Any]:
        """vLLM's `NCCLWeightTransferInitInfo` fields; unset buffer settings keep vLLM's defaults."""
        return self.model_dump(exclude_none=True)


class WeightBroadcastUpdate(_Body):
    """What the trainer is about to broadcast, in order: checkpoint names, torch dtype names, shapes."""

    names: tuple[str, ...] = Field(min_length=1)
    dtype_names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @model_validator(mode="after")
    def _aligned(self) -> Self:
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            counts = (len(self.names), len(self.dtype_names), len(self.shapes))
            raise ValueError(f"names, dtype_names and shapes need one entry per tensor (got {counts})")
        return self

    def update_info(self) -> dict[str, Any]:
        """vLLM's `NCCLWeightTransferUpdateInfo` fields."""
        return {
            "names": list(self.names),
            "dtype_names": list(self.dtype_names),
            "shapes": [list(s) for s in self.shapes],
        }


class WeightBroadcastFinish(_Body):
    version: int = Field(ge=0, description="Weight version the server reports after this round.")


class BroadcastReceiver(Protocol):
    """The server side of a round (`VLLMBackend`), named here so these routes need not import the backend."""

    async def init_weight_broadcast(self, request: WeightBroadcastInit) -> ControlResponse: ...
    async def start_weight_broadcast(self) -> ControlResponse: ...
    async def receive_weight_broadcast(self, request: WeightBroadcastUpdate) -> ControlResponse: ...
    async def finish_weight_broadcast(self, version: int) -> ControlResponse: ...


def weight_broadcast_routes(backend: BroadcastReceiver, guard: Callable[[Request], None]) -> APIRouter:
    """The four calls of a broadcast round, each behind `guard` (the control-plane token)."""
    router = APIRouter(dependencies=[Depends(guard)])

    @router.post(BroadcastPaths.INIT)
    async def init(request: WeightBroadcastInit) -> ControlResponse:
        return await backend.init_weight_broadcast(request)

    @router.post(BroadcastPaths.START)
    async def start() -> ControlResponse:
        return await backend.start_weight_broadcast()

    @router.post(BroadcastPaths.UPDATE)
    async def update(request: WeightBroadcastUpdate) -> ControlResponse:
        return await backend.receive_weight_broadcast(request)

    @router.post(BroadcastPaths.FINISH)
    async def finish(request: WeightBroadcastFinish) -> ControlResponse:
        return await backend.finish_weight_broadcast(request.version)

    return router
