"""The RL data path: a published rollout batch -> materialized pixels -> this rank's packed micro-batches.

The orchestrator already rendered every sample (tokens, loss weights, MMRefs into the run's image store),
sampled its logprobs and computed its advantages, so the trainer renders nothing: it materializes the
images of its share with the model's own processor (on `[multimodal].materialize_threads` threads) and packs
exactly as SFT does (`data.steps.pack_step`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from foveal.configs.runs import RLConfig
from foveal.renderers.errors import ContractError
from foveal.renderers.factory import build_renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.data.collate import Packable
from foveal.trainer.data.pool import materialize_pool, materialize_threads
from foveal.trainer.data.positions import PositionScheme, position_scheme
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.runs.rollouts import RLBatch
from foveal.trainer.data.materialize import build_materializer
from foveal.trainer.data.steps import PackingLimits, StepBatch, pack_step


@dataclass(frozen=True)
class RLPacker:
    """Turns a step's RLBatch into this rank's `StepBatch`; a context manager that shuts its thread pool down."""

    materialize: Callable[[TrainingSample], Packable]
    positions: PositionScheme
    limits: PackingLimits
    context: DistributedContext
    pool: ThreadPoolExecutor | None = None
    """Materializes a step's images concurrently (`[multimodal].materialize_threads` > 1), as SFT's stream does."""

    def __enter__(self) -> RLPacker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def pack(self, batch: RLBatch) -> StepBatch:
        """Plan, materialize and collate the batch; every sample must carry inference logprobs and advantages.

        The data position is the default one: in RL the step number alone says which batch comes next.
        """
        for sample in batch.samples:
            for name in ("inference_logprobs", "advantages"):
                if getattr(sample, name) is None:
                    field = f"rollout batch {batch.step}: sample {sample.sample_id!r}.{name}"
                    raise ContractError(field, None, "present on every sample of an RL batch")
        position = DataPosition()
        return pack_step(batch.samples, self.materialize, self.positions, self.limits, self.context, position, self.pool)


def build_rl_packer(
    config: RLConfig, source: str, processor: Any, model: Any, context: DistributedContext
) -> RLPacker:
    """The packer of a run: the run's image store (read only here), the family's materializer, the model's positions.

    The renderer is built only to learn the model's layout family, so the materializer checks every
    descriptor against the family this trainer's processor computes. `[inference].max_model_len` is at
    most `seq_len` (a config check), so rollouts fit; `overlong_text` decides about any that does not.
    """
    store = ImageStore.from_config(config.multimodal, config.logging.run_dir, durable=False)
    layout = build_renderer(source, config.renderer, multimodal=config.multimodal).adapter.layout_family
    trainer, orchestrator = config.trainer, config.orchestrator
    samples = orchestrator.batch_size * orchestrator.rollouts_per_prompt
    return RLPacker(
        materialize=build_materializer(layout, processor, store, config.multimodal),
        positions=position_scheme(model),
        limits=PackingLimits(samples, trainer.seq_len, trainer.micro_batch_tokens, trainer.overlong_text),
        context=context,
        pool=materialize_pool(materialize_threads(config.multimodal.materialize_threads)),
    )
