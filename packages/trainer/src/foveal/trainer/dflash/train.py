"""`foveal dflash`: train a DFlash draft for a frozen (vision-)language target.

    uv run foveal dflash --config examples/dflash_tiny.toml
    torchrun --nproc-per-node 8 -m foveal.configs dflash --config examples/dflash_qwen2_5_vl_3b.toml

`run_dflash` reads top to bottom like the method: load the frozen target and the data (the target regenerates
the responses it will later verify), build the draft from the target's shape, log its untrained acceptance as
step 0 (fresh runs), then for each step take the next packed batch (the SFT data stream: text and image samples
packed together, 3-D rope positions per sample), draw anchors, capture the target's features of each
micro-batch, run the draft on the blocks, backward the weighted block loss, clip, step, evaluate acceptance when
due, log, checkpoint when due (the run's skeleton, shared with SFT and RL, is `foveal.trainer.training.run`).

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
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from foveal.configs import config_from_args
from foveal.configs.dflash import DFlashConfig
from foveal.renderers.factory import build_renderer
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore
from foveal.trainer.training.checkpoint import DataPosition
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
from foveal.trainer.training.distributed import DistributedContext, shard_model
from foveal.trainer.runs.layout import DFLASH_PLOT_FILE
from foveal.trainer.training.metrics import StepMetrics
from foveal.trainer.model.loading import Precision, load_model, load_processor, resolve_source
from foveal.trainer.training.run import RunResult, StepClock, TrainingRun
from foveal.trainer.training.start import start_run
from foveal.trainer.data.materialize import build_materializer
from foveal.trainer.data.sources import ConversationSource
from foveal.trainer.data.steps import PackingLimits, StepBatch, count_steps
from foveal.trainer.data.stream import StepStream

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

    def evaluated(self, evaluation: EvalResult | None) -> DFlashStepMetrics:
        """This row with the acceptance measured after its step (rank 0 measures; the others get None)."""
        if evaluation is None:
            return self
        return replace(self, eval_acceptance_length=evaluation.acceptance_length, eval_speedup=evaluation.speedup)


@dataclass(frozen=True)
class EvalRow:
    """An acceptance measured before any step (the untrained draft's, at step 0): a metrics line with the eval
    fields of the eval steps' rows, so the log and the plot's eval curve start where training did."""

    step: int
    eval_acceptance_length: float
    eval_speedup: float

    @classmethod
    def of(cls, step: int, evaluation: EvalResult) -> EvalRow:
        return cls(step, evaluation.acceptance_length, evaluation.speedup)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class DFlashResult(RunResult):
    """How a run went: steps, loss at its first and last step, acceptance before training and at the end."""

    initial_eval: EvalResult | None
    """The untrained draft's acceptance (fresh runs, rank 0)."""
    final_eval: EvalResult | None


def run_dflash(config: DFlashConfig) -> DFlashResult:
    """Train a draft for `config.model`; resumes from the latest checkpoint when asked to."""
    start, settings = start_run(config), config.dflash
    context, precision = start.context, start.precision

    # The frozen target, its renderer and data; the target writes the responses it will verify.
    source = resolve_source(config.model.name_or_path)
    target = build_target(config, source, context.device)
    processor = load_processor(config.model, source)
    stream, held_out = build_data(config, source, processor, target, context, precision)

    # The draft, shaped after the target (or read back from the checkpoint), and its optimizer.
    draft = DFlashDraft.from_pretrained(start.resume_from) if start.resume_from else new_draft(config, target)
    draft = shard_model(draft.to(context.device), context)
    total_steps = count_steps(len(stream.source), settings.batch_size, settings.epochs, settings.max_steps)
    fresh = DataPosition(shuffle_seed=settings.shuffle_seed)
    run = TrainingRun(start, draft, processor, total_steps, name="dflash", plot_file=DFLASH_PLOT_FILE,
                      plot_keys=PLOT_KEYS, data=fresh)  # fmt: skip
    acceptance = functools.partial(measure, draft, target, held_out, settings.block_size, context, precision)
    initial_eval = None if start.resume_from else acceptance()
    if initial_eval is not None:  # rank 0 of a fresh run: logged as step 0 (a resumed run's log already has it)
        run.logger.log(EvalRow.of(0, initial_eval), total_steps)

    final_eval = None
    with run, stream:
        for step, batch, clock in run.steps(stream.steps(run.state.data, run.steps_left)):
            row = train_step(run, config, target, step, batch, clock)
            if step == total_steps or (settings.eval_every and step % settings.eval_every == 0):
                final_eval = acceptance()
                row = row.evaluated(final_eval)
            run.record(row)
            run.checkpoint_when_due(step, batch.position)
    return run.finish(DFlashResult, initial_eval=initial_eval, final_eval=final_eval)


def train_step(
    run: TrainingRun, config: DFlashConfig, target: FrozenTarget, step: int, batch: StepBatch, clock: StepClock
) -> DFlashStepMetrics:
    """Draw anchors, capture the target's features of each micro-batch, run the draft on the blocks, backward the
    weighted block loss, optimizer step; the step's metrics with the draft's block accuracy."""
    settings, context = config.dflash, run.context
    plans = [
        plan_blocks(mb, settings.block_size, settings.anchors_per_sample, settings.loss_decay_gamma, generator)
        for mb, generator in zip(batch.micro_batches, anchor_generators(config, step, context), strict=False)
    ]
    total_weight = context.sum([sum(float(plan.weights.sum()) for plan in plans)])[0]
    forwards = context.max([len(chunks(plan.count, settings.anchor_chunk)) for plan in plans])
    rank_loss, correct, supervised = 0.0, 0, 0
    for index, micro_batch in enumerate(run.accumulate(batch.micro_batches)):
        with run.precision.autocast():
            features = target.capture(micro_batch)
            term = block_loss(
                run.model,
                target.weights,
                features,
                text_positions(micro_batch),
                plans[index].to(context.device),
                total_weight,
                settings.anchor_chunk,
                int(forwards[index]),
                config.trainer.loss_chunk_tokens,
            )
        term.loss.backward()
        rank_loss += term.loss.item()
        correct, supervised = correct + term.correct, supervised + term.supervised
    update = run.optimizer_step()
    rank_step = batch.rank_step(rank_loss, clock.elapsed(), waited=clock.waited)
    blocks_with_loss = sum(plan.weighted_count for plan in plans)
    all_correct, all_supervised, all_blocks = context.sum([correct, supervised, blocks_with_loss])
    metrics = run.step_metrics(step, rank_step, update, epoch=batch.position.epoch, loss_tokens=int(all_supervised))
    return DFlashStepMetrics(**asdict(metrics), accuracy=all_correct / max(all_supervised, 1), blocks=int(all_blocks))


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


def main(args: argparse.Namespace) -> int:
    """`foveal dflash` (declared in foveal.trainer.commands): train; rank 0 prints losses and acceptance."""
    result = run_dflash(config_from_args(args, DFlashConfig))
    if result.rank == 0:
        evaluations = (("untrained", result.initial_eval), ("trained", result.final_eval))
        result.print_summary("dflash", details=[acceptance_line(name, e) for name, e in evaluations if e is not None])
    return 0


def acceptance_line(name: str, evaluation: EvalResult) -> str:
    return (
        f"{name} draft: acceptance length {evaluation.acceptance_length:.2f}, simulated speedup "
        f"{evaluation.speedup:.2f}x over {evaluation.samples} held-out prompts"
    )
