"""The SFT data path: dataset rows -> rendered TrainingSamples -> materialized pixels -> packed micro-batches.

Sources (`sft.dataset`):
  - `tiny:demo` or `shapes` (or `shapes:<count>`): the synthetic shapes dataset of `foveal.verifiers.datasets`,
    generated into `<run dir>/data/shapes` with `trainer.seed` (reused when already there);
  - a `.jsonl` file: one `{"messages": [...], "id"?: ...}` object per line; a relative image path is
    relative to the file's folder, which is therefore an allowed image root for this run;
  - anything else: a Hugging Face `datasets` name or folder (needs `foveal-trainer[hf]`), split `train`,
    rows with `messages` and optionally `images` that fill the image parts without a source, in order.

A step takes the next `sft.batch_size` conversations of a per-epoch shuffle (seeded by `sft.shuffle_seed`
and the epoch), so the data position (epoch, index, shuffle seed) says exactly what comes next and is all a
checkpoint needs. Every rank renders the whole step (cheap: tokens and a cached store lookup per image) and
computes the same plan: rows of at most `trainer.seq_len` tokens (`plan_micro_batches`), grouped in plan
order into micro-batches of at most `trainer.micro_batch_tokens` tokens, each collated into one packed row.
Rank r takes micro-batches r, r + world, ... and materializes only their images; a rank with fewer than
the largest share repeats one of its micro-batches with every weight 0, so all ranks run the same number
of forward/backward passes (FSDP2 collectives) without changing the loss.

Steps are prepared one or two ahead in a background thread (`Prefetcher`), so rendering, image reads and
the processor overlap the previous step's compute; the renderer is only ever used from that one thread.
Within a step, the samples' images are materialized on a small thread pool (`[multimodal].materialize_threads`):
file reads, PNG decoding and the processor's numpy/torch work release the GIL for much of their time, and one
thread alone cannot feed a fast accelerator. Results keep the plan's order whatever order they finish in.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from foveal.configs.multimodal import MultimodalConfig
from foveal.configs.runs import SFTConfig
from foveal.renderers.factory import build_renderer
from foveal.renderers.messages import ImagePart, Message, parse_messages
from foveal.renderers.rendering import RenderedConversation, Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.checkpoint import DataPosition
from foveal.trainer.data.adapters import image_adapter
from foveal.trainer.data.collate import Packable, PackedBatch, PackSample, collate_packed, fit_sample
from foveal.trainer.data.mm_refs import mm_refs_of
from foveal.trainer.data.packing import OverlongText, PackItem, plan_micro_batches
from foveal.trainer.data.pool import materialize_pool, materialize_share, materialize_threads
from foveal.trainer.data.materialize import Materializer
from foveal.trainer.data.positions import PositionScheme, position_scheme
from foveal.trainer.data.prefetch import Prefetcher
from foveal.trainer.data.samples import TrainingSample, loss_weights_from_mask
from foveal.trainer.distributed import DistributedContext, padded_share
from foveal.trainer.metrics import RankStep
from foveal.verifiers.datasets import write_shapes_dataset

DEMO_NAMES = ("tiny:demo", "shapes")
DEMO_EXAMPLES = 2048
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")


class DatasetError(ValueError):
    """A dataset that cannot be read as chat conversations; names the field (row, key) and the value."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: {expected} (got {str(value)[:120]!r})")


@dataclass(frozen=True)
class Conversation:
    """One training conversation, validated; image parts hold absolute paths, URIs or PIL images."""

    sample_id: str
    messages: tuple[Message, ...]


class ConversationSource(Protocol):
    """Random access to a dataset's conversations."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Conversation: ...


@dataclass(frozen=True)
class JsonlConversations:
    """A JSONL chat dataset held as raw lines; a line is parsed when its conversation is asked for."""

    path: Path
    lines: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> JsonlConversations:
        lines = tuple(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if not lines:
            raise DatasetError("sft.dataset", str(path), "a JSONL file with at least one conversation")
        return cls(path.resolve(), lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> Conversation:
        field = f"{self.path.name}[line {index + 1}]"
        try:
            row = json.loads(self.lines[index])
        except json.JSONDecodeError as error:
            raise DatasetError(field, self.lines[index], f"a JSON object ({error.msg})") from None
        if not isinstance(row, dict) or "messages" not in row:
            raise DatasetError(field, self.lines[index], 'an object with "messages"')
        messages = _with_images_under(parse_messages(row["messages"]), self.path.parent)
        return Conversation(str(row.get("id", f"{self.path.stem}-{index}")), messages)


@dataclass(frozen=True)
class HFConversations:
    """A Hugging Face dataset split whose rows carry `messages` (and optionally `images`)."""

    name: str
    rows: Any

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Conversation:
        row = self.rows[index]
        images = iter(row.get("images") or ())
        messages = [_fill_images(message, images) for message in row["messages"]]
        return Conversation(str(row.get("id", f"{self.name}-{index}")), parse_messages(messages))


def open_dataset(dataset: str, run_dir: Path, seed: int) -> tuple[ConversationSource, tuple[Path, ...]]:
    """The conversations named by `sft.dataset` and the folders their images may be read from."""
    if dataset in DEMO_NAMES or dataset.startswith("shapes:"):
        size = DEMO_EXAMPLES if dataset in DEMO_NAMES else _demo_size(dataset)
        path = write_shapes_dataset(run_dir / "data" / "shapes", size, seed=seed, split="train")
        return JsonlConversations.read(path), (path.parent.resolve(),)
    path = Path(dataset)
    if path.suffix == ".jsonl" or path.is_file():
        if not path.is_file():
            raise DatasetError("sft.dataset", dataset, "an existing JSONL file")
        return JsonlConversations.read(path), (path.parent.resolve(),)
    return _open_hf(dataset), ()


def render_sample(renderer: Renderer, conversation: Conversation) -> TrainingSample:
    """Render a conversation (with its loss mask) and check its image spans into a TrainingSample."""
    rendered = renderer.render(conversation.messages)
    weights = loss_weights_from_mask(rendered.loss_mask)
    return sample_from_render(rendered, renderer.image_token_id, conversation.sample_id, weights)


def sample_from_render(
    rendered: RenderedConversation, image_token_id: int | None, sample_id: str, loss_weights: Sequence[float] | None
) -> TrainingSample:
    """A rendered sequence as a TrainingSample with checked MMRefs; `loss_weights` None means no loss on it."""
    weights = tuple(loss_weights) if loss_weights is not None else (0.0,) * len(rendered.token_ids)
    return TrainingSample(
        sample_id=sample_id,
        token_ids=rendered.token_ids,
        loss_weights=weights,
        mm_refs=mm_refs_of(rendered.token_ids, rendered.images, image_token_id, sample_id=sample_id),
    )


@dataclass(frozen=True)
class PackingLimits:
    """How a step is cut: samples per step, tokens per packed row, tokens per micro-batch, overlong text."""

    batch_size: int
    seq_len: int
    micro_batch_tokens: int
    overlong_text: OverlongText = "error"


@dataclass(frozen=True)
class StepBatch:
    """This rank's part of one optimizer step, and where the data stands after it."""

    micro_batches: tuple[PackedBatch, ...]
    """This rank's share, padded with weightless copies to the largest share."""
    tokens: int
    samples: int
    images: int
    zeroed_samples: int
    position: DataPosition
    """The data position after this step (what a checkpoint taken now resumes from)."""

    def rank_step(self, loss: float, seconds: float, waited: float) -> RankStep:
        """This rank's metrics of the step: its loss terms' sum, its counts, and how long it took and waited."""
        counts = (self.tokens, self.samples, self.images, self.zeroed_samples, len(self.micro_batches))
        return RankStep(loss, *counts, seconds=seconds, data_wait_seconds=waited)


def plan_step(items: Sequence[PackItem], limits: PackingLimits) -> list[list[int]]:
    """Micro-batches as lists of indices into `items`: rows of <= seq_len tokens, grouped up to micro_batch_tokens.

    Rows come from `plan_micro_batches` (which rejects an overlong multimodal sample, and an overlong
    text one unless `overlong_text="truncate"`, naming its sample id); consecutive rows join one
    micro-batch while their total fits, and a micro-batch keeps its rows' samples in row order.
    """
    lengths = [min(item.length, limits.seq_len) for item in items]
    groups: list[list[int]] = []
    used = limits.micro_batch_tokens
    for row in plan_micro_batches(items, limits.seq_len, limits.overlong_text):
        size = sum(lengths[i] for i in row)
        if used + size > limits.micro_batch_tokens:
            groups.append([])
            used = 0
        groups[-1].extend(row)
        used += size
    return groups


def count_steps(dataset_size: int, batch_size: int, epochs: int, max_steps: int) -> int:
    """Optimizer steps of the run: `max_steps`, or fewer when `epochs` passes run out first."""
    return min(max_steps, -(-(dataset_size * epochs) // batch_size))


def epoch_order(size: int, shuffle_seed: int, epoch: int) -> list[int]:
    """The shuffled order of one epoch: a pure function of (size, seed, epoch), so resuming recomputes it."""
    order = list(range(size))
    random.Random(f"foveal.sft:{shuffle_seed}:{epoch}").shuffle(order)
    return order


class SFTDataStream:
    """Yields this rank's `StepBatch` for each step from `start`, prepared ahead in a background thread."""

    def __init__(
        self,
        source: ConversationSource,
        render: Callable[[Conversation], TrainingSample],
        materialize: Callable[[TrainingSample], Packable],
        positions: PositionScheme,
        limits: PackingLimits,
        context: DistributedContext,
        epochs: int,
        materialize_threads: int = 1,
    ) -> None:
        if materialize_threads < 1:
            raise DatasetError("multimodal.materialize_threads", materialize_threads, "at least 1 thread")
        self.source, self.render, self.materialize = source, render, materialize
        self.positions, self.limits, self.context, self.epochs = positions, limits, context, epochs
        self.materialize_threads = materialize_threads
        self._prefetcher: Prefetcher[tuple[list[int], DataPosition], StepBatch] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def steps(self, start: DataPosition, count: int) -> Iterator[StepBatch]:
        """`count` steps starting at `start` (fewer if the epochs run out)."""
        if self._pool is None:
            self._pool = materialize_pool(self.materialize_threads)
        self._prefetcher = Prefetcher(self._step_indices(start, count), self._prepare, workers=1, depth=2)
        return self._prefetcher

    def close(self) -> None:
        """Stop the background preparation (cancels steps not started, waits for the running one), then the pool."""
        if self._prefetcher is not None:
            self._prefetcher.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> SFTDataStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _step_indices(self, start: DataPosition, count: int) -> Iterator[tuple[list[int], DataPosition]]:
        """(sample indices, position after) per step; a step may span the end of one epoch and the next."""
        epoch, index, size = start.epoch, start.index, len(self.source)
        order = epoch_order(size, start.shuffle_seed, epoch)
        for _ in range(count):
            taken: list[int] = []
            while len(taken) < self.limits.batch_size and epoch < self.epochs:
                take = order[index : index + self.limits.batch_size - len(taken)]
                taken.extend(take)
                index += len(take)
                if index == size:
                    epoch, index = epoch + 1, 0
                    order = epoch_order(size, start.shuffle_seed, epoch)
            if not taken:
                return
            yield taken, DataPosition(epoch=epoch, index=index, shuffle_seed=start.shuffle_seed)

    def _prepare(self, step: tuple[list[int], DataPosition]) -> StepBatch:
        indices, position = step
        samples = [self.render(self.source[i]) for i in indices]
        return pack_step(samples, self.materialize, self.positions, self.limits, self.context, position, self._pool)


def pack_step(
    samples: Sequence[TrainingSample],
    materialize: Callable[[TrainingSample], Packable],
    positions: PositionScheme,
    limits: PackingLimits,
    context: DistributedContext,
    position: DataPosition,
    pool: Executor | None = None,
) -> StepBatch:
    """This rank's micro-batches of one step's samples: plan, take the rank's share, materialize, collate.

    Shared by SFT and RL. Only this rank's share (and its padding) is materialized, on `pool` when given (see
    `materialize_share`); a text sample longer than `seq_len` is cut when `overlong_text` allows it
    (`plan_step` refused the rest).
    """
    items = [PackItem(sample.sample_id, sample.num_tokens, bool(sample.mm_refs)) for sample in samples]
    plan = plan_step(items, limits)
    mine, padding = padded_share(plan, context)
    needed = list(dict.fromkeys(i for group in mine + padding for i in group))
    fit = materialize_share(samples, needed, functools.partial(_fitted, materialize, limits), pool)
    batches = [collate_packed([fit[i] for i in group], positions) for group in mine + padding]
    batches[len(mine) :] = [_weightless(batch) for batch in batches[len(mine) :]]
    real = [i for group in mine for i in group]
    return StepBatch(
        micro_batches=tuple(batches),
        tokens=sum(len(fit[i].token_ids) for i in real),
        samples=len(real),
        images=sum(len(samples[i].mm_refs) for i in real),
        zeroed_samples=sum(bool(getattr(fit[i], "missing_images", ())) for i in real),
        position=position,
    )


def _fitted(
    materialize: Callable[[TrainingSample], Packable], limits: PackingLimits, sample: TrainingSample
) -> Packable:
    """The sample materialized, at the length the plan gives it."""
    return fit_sample(materialize(sample), limits.seq_len, limits.overlong_text)


def build_sft_data(
    config: SFTConfig, source: str, processor: Any, model: Any, context: DistributedContext
) -> SFTDataStream:
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
    return SFTDataStream(
        conversations,
        lambda c: render_sample(renderer, c),
        materialize,
        position_scheme(model),
        limits,
        context,
        config.sft.epochs,
        materialize_threads=1 if layout is None else materialize_threads(multimodal.materialize_threads),
    )


def build_materializer(
    layout: str | None, processor: Any, store: ImageStore, multimodal: MultimodalConfig
) -> Callable[[TrainingSample], Packable]:
    """Pixels through the family's adapter for VLMs; text-only models pack their samples as they are."""
    if layout is None:
        return text_only_sample
    adapter = image_adapter(layout, processor, multimodal)
    return Materializer(adapter, store, missing_image_policy=multimodal.missing_image_policy).materialize


def text_only_sample(sample: TrainingSample) -> PackSample:
    """A sample of a text-only model packs as is: there are no pixels to materialize."""
    return PackSample(
        sample.sample_id,
        sample.token_ids,
        sample.loss_weights,
        logprobs=sample.inference_logprobs,
        advantages=sample.advantages,
        sample_weight=sample.sample_weight,
    )


def _weightless(batch: PackedBatch) -> PackedBatch:
    """A padding micro-batch: the same tensors, every sample weighted 0 (runs the collectives, adds no loss)."""
    return dataclasses.replace(batch, sample_weights=batch.sample_weights.new_zeros(batch.sample_weights.shape))


def _with_images_under(messages: tuple[Message, ...], folder: Path) -> tuple[Message, ...]:
    """Relative image paths resolved against the dataset file's folder (the renderer wants absolute ones)."""

    def resolve(part: Any) -> Any:
        source = getattr(part, "image", None)
        if isinstance(source, str) and not _SCHEME.match(source) and not Path(source).is_absolute():
            return ImagePart(image=str(folder / source))
        return part

    return tuple(
        message
        if isinstance(message.content, str)
        else message.model_copy(update={"content": tuple(map(resolve, message.content))})
        for message in messages
    )


def _fill_images(message: dict[str, Any], images: Iterator[Any]) -> dict[str, Any]:
    """A HF row's message as the renderer reads it.

    Arrow stores every part with every key of every other part (`{"type": "image", "text": None}`), so
    keys holding None are dropped; image parts without a source take the next picture of the row's
    separate `images` column, the usual layout of HF vision chat datasets.
    """
    message = {key: value for key, value in message.items() if value is not None}
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return message
    parts = [{key: value for key, value in part.items() if value is not None} for part in content]
    return {**message, "content": [_with_picture(part, images) for part in parts]}


def _with_picture(part: dict[str, Any], images: Iterator[Any]) -> dict[str, Any]:
    """An image part that names no source gets the row's next picture; other parts pass through."""
    if part.get("type") != "image" or {"image", "url", "path"} & set(part):
        return part
    return {**part, "image": next(images)}


def _demo_size(dataset: str) -> int:
    count = dataset.removeprefix("shapes:")
    if not count.isdigit() or int(count) < 1:
        raise DatasetError("sft.dataset", dataset, "'shapes:<positive number of examples>'")
    return int(count)


def _open_hf(dataset: str) -> HFConversations:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            "sft.dataset",
            dataset,
            "a .jsonl file, 'tiny:demo', 'shapes[:N]', or (with foveal-trainer[hf]) a HF dataset",
        ) from None
    return HFConversations(dataset, datasets.load_dataset(dataset, split="train"))
