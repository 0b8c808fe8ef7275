"""`foveal dflash`: train a DFlash draft for a frozen (vision-)language target.

    uv run foveal dflash --config examples/dflash_tiny.toml
    torchrun --nproc-per-node 8 -m foveal.configs dflash --config examples/dflash_qwen2_5_vl_3b.toml

`run_dflash` reads top to bottom like the method: load the frozen target and the data (the target regenerates
the responses it will later verify), build the draft from the target's shape, then for each step take the
next packed batch (the SFT data stream: text and image samples packed together, 3-D rope positions per
sample), draw anchors, capture the target's features of each micro-batch, run the draft on the blocks,
backward the weighted block loss, clip, step, log, evaluate acceptance when due, checkpoint when due.

The draft is FSDP2-sharded like the SFT model (its layers, then the root); the target is replicated on every
rank (frozen, forward only). Ranks share the regeneration (`foveal.trainer.dflash.regenerate`) and a step's
micro-batches (`rank_share`); anchors are drawn per micro-batch of the whole step and the draft starts from
the seed alone, so N ranks train as one process does (test_two_ranks). Every rank runs as many draft forwards
per micro-batch as the rank with the most anchor chunks: FSDP2 all-gathers on every forward, and ranks whose
counts differ would wait on each other forever. Acceptance is measured on rank 0 with a gathered, unsharded
copy of the draft.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from foveal.configs import Command, add_config_arguments, config_from_args
from foveal.configs.dflash import DFlashConfig
from foveal.renderers.factory import build_renderer
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.training.checkpoint import Checkpointer, DataPosition, TrainingState
from foveal.trainer.data.collate import Packable
from foveal.trainer.data.pool import materialize_threads
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.dflash.blocks import chunks, default_target_layer_ids, plan_blocks, text_positions
from foveal.trainer.dflash.data import Generation, open_dflash_data, prompt_of, training_samples
from foveal.trainer.dflash.draft import DFlashDraft, DraftSpec
from foveal.trainer.dflash.loss import block_loss
from foveal.trainer.dflash.speculate import EvalResult, EvalSequence, eval_sequences, evaluate
from foveal.trainer.dflash.target import FrozenTarget
from foveal.trainer.dflash.weights import required_setting, rope_theta, text_setting
from foveal.trainer.training.distributed import (
    DistributedContext,
    close_distributed,
    init_distributed,
    set_gradient_sync,
    shard_model,
)
from foveal.trainer.training.metrics import METRICS_FILE, MetricsLogger, StepMetrics, reduce_step
from foveal.trainer.model.loading import Precision, load_model, load_processor, resolve_precision, resolve_source
from foveal.trainer.training.optim import build_optimizer, build_scheduler, clip_gradients
from foveal.trainer.training.plots import plot_metrics
from foveal.trainer.training.progress import TrainingProgress
from foveal.trainer.training.seeding import seed_everything
from foveal.trainer.data.materialize import build_materializer
from foveal.trainer.data.sources import ConversationSource
from foveal.trainer.data.steps import PackingLimits, count_steps
from foveal.trainer.data.stream import StepStream

PLOT_FILE = "dflash.png"
PLOT_KEYS = ("loss", "accuracy", "eval_acceptance_length", "tokens_per_second")


@dataclass(frozen=True)
class DFlashStepMetrics(StepMetrics):
    """A step's training metrics plus the draft's block accuracy and, on eval steps, its acceptance."""

    accuracy: float = 0.0
    """Share of supervised block positions whose argmax is the label."""
    blocks: int = 0
    """Blocks that carry loss, over all ranks (a padding micro-batch's weightless block is not counted)."""
    eval_acceptance_length: float | None = None
    eval_speedup: float | None = None

    def as_dict(self) -> dict[str, float | int]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class DFlashResult:
    """How a run went: steps, loss at its first and last step, acceptance before training and at the end."""

    run_dir: Path
    rank: int
    first_step: int
    last_step: int
    initial_loss: float | None
    final_loss: float | None
    initial_eval: EvalResult | None
    """The untrained draft's acceptance (fresh runs, rank 0)."""
    final_eval: EvalResult | None
    seconds: float
    checkpoint: Path | None
    metrics_path: Path


def run_dflash(config: DFlashConfig) -> DFlashResult:
    """Train a draft for `config.model`; resumes from the latest checkpoint when asked to."""
    started = time.perf_counter()
    context = init_distributed(config.trainer.device)
    run_dir, settings = config.logging.run_dir, config.dflash
    seed_everything(config.trainer.seed, context.rank)
    checkpointer = Checkpointer(
        config.trainer.checkpoint.dir or run_dir / "checkpoints", config.trainer.checkpoint, context
    )
    resume_from = checkpointer.resume_point()
    precision = resolve_precision(config.trainer.precision, context.device)

    # The frozen target, its renderer and data; the target writes the responses it will verify.
    source = resolve_source(config.model.name_or_path)
    target = build_target(config, source, context.device)
    processor = load_processor(config.model, source)
    stream, held_out = build_data(config, source, processor, target, context, precision)

    # The draft, shaped after the target (or read back from the checkpoint), and its optimizer.
    draft = DFlashDraft.from_pretrained(resume_from) if resume_from else new_draft(config, target)
    draft = shard_model(draft.to(context.device), context)
    total_steps = count_steps(len(stream.source), settings.batch_size, settings.epochs, settings.max_steps)
    optimizer = build_optimizer(draft, config.trainer.optim)
    scheduler = build_scheduler(optimizer, config.trainer.schedule, total_steps)
    fresh = TrainingState(data=DataPosition(shuffle_seed=settings.shuffle_seed), world_size=context.world_size)
    state = checkpointer.restore(resume_from, draft, optimizer, scheduler, fresh)
    logger = MetricsLogger(run_dir, config.logging, context.is_main, config.model_dump(mode="json"), state.step)
    initial_eval = None if resume_from else measure(draft, target, held_out, settings.block_size, context, precision)

    history: list[DFlashStepMetrics] = []
    checkpoint, final_eval = resume_from, None
    clock = time.perf_counter()
    with TrainingProgress(total_steps, state.step, context.is_main, "dflash") as progress, stream:
        for step, batch in enumerate(stream.steps(state.data, total_steps - state.step), start=state.step + 1):
            step_started = time.perf_counter()
            plans = [
                plan_blocks(mb, settings.block_size, settings.anchors_per_sample, settings.loss_decay_gamma, generator)
                for mb, generator in zip(batch.micro_batches, anchor_generators(config, step, context), strict=False)
            ]
            total_weight = context.sum([sum(float(plan.weights.sum()) for plan in plans)])[0]
            forwards = context.max([len(chunks(plan.count, settings.anchor_chunk)) for plan in plans])
            optimizer.zero_grad(set_to_none=True)
            rank_loss, correct, supervised = 0.0, 0, 0
            for index, (micro_batch, blocks) in enumerate(zip(batch.micro_batches, plans, strict=True)):
                micro_batch = micro_batch.to(context.device)
                set_gradient_sync(draft, index == len(plans) - 1)
                with precision.autocast():
                    features = target.capture(micro_batch)
                    term = block_loss(
                        draft,
                        target.weights,
                        features,
                        text_positions(micro_batch),
                        blocks.to(context.device),
                        total_weight,
                        settings.anchor_chunk,
                        int(forwards[index]),
                    )
                term.loss.backward()
                rank_loss += term.loss.item()
                correct, supervised = correct + term.correct, supervised + term.supervised
            grad_norm = clip_gradients(draft.parameters(), config.trainer.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()

            rank_step = batch.rank_step(rank_loss, time.perf_counter() - clock, waited=step_started - clock)
            blocks_with_loss = sum(plan.weighted_count for plan in plans)
            all_correct, all_supervised, all_blocks = context.sum([correct, supervised, blocks_with_loss])
            metrics = reduce_step(
                context,
                rank_step,
                step=step,
                epoch=batch.position.epoch,
                lr=lr,
                grad_norm=grad_norm,
                loss_tokens=int(all_supervised),
                micro_batch_tokens=config.trainer.micro_batch_tokens,
            )
            evaluation = None
            if step == total_steps or (settings.eval_every and step % settings.eval_every == 0):
                evaluation = measure(draft, target, held_out, settings.block_size, context, precision)
                final_eval = evaluation
            row = DFlashStepMetrics(
                **asdict(metrics),
                accuracy=all_correct / max(all_supervised, 1),
                blocks=int(all_blocks),
                eval_acceptance_length=evaluation.acceptance_length if evaluation else None,
                eval_speedup=evaluation.speedup if evaluation else None,
            )
            history.append(row)
            logger.log(row, total_steps)
            progress.advance(row)
            if checkpointer.due(step, total_steps):
                state = TrainingState(step=step, data=batch.position, world_size=context.world_size)
                checkpoint = checkpointer.save(draft, processor, optimizer, scheduler, state)
                write_plot(config, context.is_main)
            clock = time.perf_counter()

    logger.close()
    close_distributed(context)
    return DFlashResult(
        run_dir=run_dir,
        rank=context.rank,
        first_step=history[0].step if history else state.step,
        last_step=history[-1].step if history else state.step,
        initial_loss=history[0].loss if history else None,
        final_loss=history[-1].loss if history else None,
        initial_eval=initial_eval,
        final_eval=final_eval,
        seconds=time.perf_counter() - started,
        checkpoint=checkpoint,
        metrics_path=logger.path,
    )


def build_target(config: DFlashConfig, source: str, device: torch.device) -> FrozenTarget:
    """The frozen target with the configured (or DFlash's default) captured layers."""
    model = load_model(config.model, source, device)
    depth = int(required_setting(model.config, "num_hidden_layers"))
    layer_ids = config.dflash.target_layer_ids or default_target_layer_ids(depth, config.draft.num_layers)
    return FrozenTarget.wrap(model, layer_ids, config.dflash.embed_weight, config.dflash.lm_head_weight)


def draft_spec(config: DFlashConfig, target: FrozenTarget) -> DraftSpec:
    """The draft's shape: the `[draft]` settings, the rest from the target's text config."""
    text, draft = target.model.config, config.draft
    hidden = target.weights.hidden_size
    heads = draft.num_attention_heads or int(required_setting(text, "num_attention_heads"))
    return DraftSpec(
        hidden_size=hidden,
        num_layers=draft.num_layers,
        num_attention_heads=heads,
        num_key_value_heads=draft.num_key_value_heads or int(required_setting(text, "num_key_value_heads")),
        head_dim=draft.head_dim or int(text_setting(text, "head_dim") or hidden // heads),
        intermediate_size=draft.intermediate_size or int(required_setting(text, "intermediate_size")),
        rope_theta=draft.rope_theta or rope_theta(text),
        rms_norm_eps=draft.rms_norm_eps,
        block_size=config.dflash.block_size,
        target_layer_ids=target.layer_ids,
        embed_weight=config.dflash.embed_weight,
        lm_head_weight=config.dflash.lm_head_weight,
    )


def new_draft(config: DFlashConfig, target: FrozenTarget) -> DFlashDraft:
    """A freshly initialised draft whose mask embedding starts at the target's mean token embedding.

    Initialised from `trainer.seed` alone, so every rank builds the same draft before FSDP2 keeps each rank's shard.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.trainer.seed)
        return DFlashDraft(draft_spec(config, target), mask_embedding=target.weights.embed.float().mean(0))


def build_data(
    config: DFlashConfig,
    source: str,
    processor: Any,
    target: FrozenTarget,
    context: DistributedContext,
    precision: Precision,
) -> tuple[StepStream, list[EvalSequence]]:
    """The training stream (over samples whose responses are ready) and, on rank 0, the held-out sequences.

    Rank 0 opens the data first (it may generate the demo files into the run folder), then the others.
    """
    run_dir, settings = config.logging.run_dir, config.dflash
    if not context.is_main:
        context.barrier()
    examples = (settings.train_examples, settings.eval_examples)
    data = open_dflash_data(settings.dataset, settings.eval_dataset, *examples, run_dir, config.trainer.seed)
    if context.is_main:
        context.barrier()
    multimodal = config.multimodal.model_copy(
        update={"allowed_image_roots": [*config.multimodal.allowed_image_roots, *data.roots]}
    )
    store = ImageStore.from_config(multimodal, run_dir, durable=False)
    renderer = build_renderer(source, config.renderer, store=store, multimodal=multimodal)
    materialize = build_materializer(renderer.adapter.layout_family, processor, store, multimodal)
    generation = Generation(settings.max_new_tokens, settings.generate_batch_size)
    with precision.autocast():
        samples = training_samples(data.train, renderer, settings.responses, target, materialize, generation, context)
        held_out = (
            held_out_sequences(data.held_out, renderer, materialize, target, generation) if context.is_main else []
        )
    trainer = config.trainer
    limits = PackingLimits(settings.batch_size, trainer.seq_len, trainer.micro_batch_tokens, trainer.overlong_text)
    stream = StepStream(
        data.train,
        lambda conversation: samples[conversation.sample_id],
        materialize,
        target.positions,
        limits,
        context,
        settings.epochs,
        materialize_threads(config.multimodal.materialize_threads),
    )
    return stream, held_out


def held_out_sequences(
    conversations: ConversationSource,
    renderer: Renderer,
    materialize: Callable[[TrainingSample], Packable],
    target: FrozenTarget,
    generation: Generation,
) -> list[EvalSequence]:
    """The held-out prompts with the target's greedy continuations and features (what `measure` replays)."""
    prompts = [materialize(prompt_of(renderer, conversations[i])) for i in range(len(conversations))]
    stops = renderer.stop_token_ids
    return eval_sequences(target, prompts, generation.max_new_tokens, stops, generation.batch_size)


def measure(
    draft: torch.nn.Module,
    target: FrozenTarget,
    held_out: list[EvalSequence],
    block_size: int,
    context: DistributedContext,
    precision: Precision,
) -> EvalResult | None:
    """Acceptance of the draft on the held-out sequences (rank 0; None on the others)."""
    local = unsharded_copy(draft, context)
    result = None
    if local is not None:
        with precision.autocast():
            result = evaluate(local, target.weights, held_out, block_size)
    context.barrier()
    return result


def unsharded_copy(draft: torch.nn.Module, context: DistributedContext) -> DFlashDraft | None:
    """The draft itself in a world of one; under FSDP2 a full copy on rank 0 (a collective on every rank)."""
    if not context.is_distributed:
        return cast(DFlashDraft, draft)
    full = get_model_state_dict(draft, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not context.is_main:
        return None
    spec: DraftSpec = draft.spec  # type: ignore[assignment]
    local = DFlashDraft(spec)
    local.load_state_dict(full)
    return local.to(context.device)


def anchor_generators(config: DFlashConfig, step: int, context: DistributedContext) -> Iterator[torch.Generator]:
    """One anchor generator per micro-batch of this rank, seeded by the micro-batch's index in the whole step.

    Rank r's i-th micro-batch is the step's micro-batch r + i * world (`rank_share`), so the draw is a pure function
    of (seed, step, micro-batch): a resumed run, and a run on any number of ranks, draws the same anchors.
    """
    for index in itertools.count(context.rank, context.world_size):
        yield torch.Generator().manual_seed(anchor_seed(config.trainer.seed, step, index))


def anchor_seed(seed: int, step: int, micro_batch: int) -> int:
    return (seed * 1_000_003 + step) * 4099 + micro_batch


def write_plot(config: DFlashConfig, is_main: bool) -> Path | None:
    """Loss, accuracy, acceptance and throughput panels of the run so far (rank 0, when `logging.plots`)."""
    if not (config.logging.plots and is_main):
        return None
    run_dir = config.logging.run_dir
    return plot_metrics(run_dir / METRICS_FILE, run_dir / PLOT_FILE, PLOT_KEYS)


def _run(args: argparse.Namespace) -> int:
    result = run_dflash(config_from_args(args, DFlashConfig))
    if result.rank != 0:
        return 0
    if result.initial_loss is not None:
        print(
            f"dflash: steps {result.first_step}-{result.last_step}  loss {result.initial_loss:.4f} -> "
            f"{result.final_loss:.4f}  {result.seconds:.1f} s  run {result.run_dir}"
        )
    for name, evaluation in (("untrained", result.initial_eval), ("trained", result.final_eval)):
        if evaluation is not None:
            print(
                f"dflash: {name} draft: acceptance length {evaluation.acceptance_length:.2f}, simulated speedup "
                f"{evaluation.speedup:.2f}x over {evaluation.samples} held-out prompts"
            )
    print(f"dflash: checkpoint {result.checkpoint}" if result.checkpoint else "dflash: no checkpoint written")
    return 0


command = Command(
    name="dflash",
    help="train a DFlash block-drafting speculative decoder for a (vision-)language target",
    configure=add_config_arguments,
    run=_run,
)
