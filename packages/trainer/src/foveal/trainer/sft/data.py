"""The SFT data stream: `sft.dataset` rendered into TrainingSamples and cut into this rank's packed steps.

The shared parts live in `foveal.trainer.data`: sources (`data.sources`), step planning and packing
(`data.steps`), the prefetching stream (`data.stream`) and the materializer (`data.materialize`).
"""

from __future__ import annotations

from typing import Any

from foveal.configs.runs import SFTConfig
from foveal.renderers.factory import build_renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.data.materialize import build_materializer
from foveal.trainer.data.pool import materialize_threads
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import render_sample
from foveal.trainer.data.sources import open_dataset
from foveal.trainer.data.steps import PackingLimits
from foveal.trainer.data.stream import StepStream
from foveal.trainer.training.distributed import DistributedContext


def build_sft_data(
    config: SFTConfig, source: str, processor: Any, model: Any, context: DistributedContext
) -> StepStream:
    """The run's data stream: dataset, renderer and image store, materializer, the model's position scheme.

    Rank 0 opens the dataset first (it may generate the demo data into the run folder), then the others.
    The store is not durable (no fsync per image): it is this run's own cache of rendered images, and a
    crashed run renders them again, so nothing that outlives the process points into it unsynced.
    """
    run_dir = config.logging.run_dir
    if not context.is_main:
        context.barrier()
    conversations, roots = open_dataset(config.sft.dataset, run_dir, config.trainer.seed)
    if context.is_main:
        context.barrier()
    multimodal = config.multimodal.model_copy(
        update={"allowed_image_roots": [*config.multimodal.allowed_image_roots, *roots]}
    )
    store = ImageStore.from_config(multimodal, run_dir, durable=False)
    renderer = build_renderer(source, config.renderer, store=store, multimodal=multimodal)
    layout = renderer.adapter.layout_family
    materialize = build_materializer(layout, processor, store, multimodal)
    trainer = config.trainer
    limits = PackingLimits(config.sft.batch_size, trainer.seq_len, trainer.micro_batch_tokens, trainer.overlong_text)
    return StepStream(
        conversations,
        lambda c: render_sample(renderer, c),
        materialize,
        position_scheme(model),
        limits,
        context,
        config.sft.epochs,
        materialize_threads=1 if layout is None else materialize_threads(multimodal.materialize_threads),
    )


