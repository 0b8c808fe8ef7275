"""The SFT warm start of `foveal rl` (`rl.warmup_sft_steps` > 0): answers of the environments' train splits.

RL learns from the rewards of the model's own samples, so a model that never says anything a rubric
accepts learns nothing; a short SFT on (prompt, reference answer) pairs first teaches the answer format.
The dataset is drawn from the RL mixture itself: `warmup_sft_steps x warmup_sft_batch_size` train rows,
environments chosen by their weights (their own seeded stream, see `orchestrator.prompts`), each prompt
followed by an assistant turn with the row's answer. Images go to the warm-up run's image store and
the rows name them by `file://` URI, so the JSONL is self-contained.

It runs as `foveal sft` in `<run dir>/warmup/` with an SFTConfig derived from the RL config (same model,
renderer, image settings, sequence limits, device and seed; SFT objective, `warmup_sft_lr` held constant
after a short linear ramp, one checkpoint at the end). RL then starts from that checkpoint: it is `model.name_or_path` of
the orchestrator and the trainer, and weight version 0 of the servers, which load the configured model
and then this checkpoint through `update_weights` (vLLM cannot start from a folder that also holds an
optimizer state; the same path serves every backend). A warm-up whose checkpoint exists is not run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import orjson

from pydantic import SecretStr

from foveal.configs import CheckpointConfig, LoggingConfig, OptimConfig, ScheduleConfig, SFTConfig, SFTSection
from foveal.configs import TrainerConfig
from foveal.configs.jobs import ImagesSeen
from foveal.configs.runs import RLConfig
from foveal.renderers.atomic_files import write_atomic
from foveal.renderers.inference.client import RemoteInferenceClient
from foveal.verifiers.blind import run_image_store
from foveal.verifiers.policy import store_images

from foveal.trainer.rl.orchestrator.mixture import load_mixture
from foveal.trainer.rl.orchestrator.prompts import PromptSampler
from foveal.trainer.rl.orchestrator.weight_sync import push_weights
from foveal.trainer.runs.layout import DATA_DIR, WARMUP_DIR, checkpoint_name, checkpoints_dir



def warmup_dir(config: RLConfig) -> Path:
    return config.logging.run_dir / WARMUP_DIR


def warmup_checkpoint(config: RLConfig) -> Path:
    """Where the warm-up's final checkpoint is (or will be): the model RL starts from."""
    return checkpoints_dir(warmup_dir(config)) / checkpoint_name(config.rl.warmup_sft_steps)


def sft_config(config: RLConfig) -> SFTConfig:
    """The warm-up's SFT run: the RL run's model and data settings, an SFT objective and schedule.

    A warm-up on grey images keeps the vision side frozen: its gradient there carries no signal, yet AdamW's
    normalized steps would still move every vision weight by about lr per step, a random walk that (measured
    on the tiny Qwen2.5-VL, 200 steps at 2e-3) grows the image features 15-fold while the colours stay as far
    apart as before: relative to the features they nearly merge, and RL on `colors` stalls at 0.75."""
    steps, trainer = config.rl.warmup_sft_steps, config.trainer
    return SFTConfig(
        model=config.model,
        multimodal=config.multimodal,
        renderer=config.renderer,
        logging=LoggingConfig(run_dir=warmup_dir(config), plots=config.logging.plots),
        trainer=TrainerConfig(
            optim=OptimConfig(lr=config.rl.warmup_sft_lr),
            schedule=ScheduleConfig(kind="constant", warmup_steps=min(10, steps // 10)),
            checkpoint=CheckpointConfig(every_steps=steps, keep_last=1, resume=True),
            seq_len=trainer.seq_len,
            micro_batch_tokens=trainer.micro_batch_tokens,
            overlong_text=trainer.overlong_text,
            max_grad_norm=trainer.max_grad_norm,
            freeze_vision=trainer.freeze_vision or warmup_images(config) == "blank",
            precision=trainer.precision,
            device=trainer.device,
            seed=trainer.seed,
        ),
        sft=SFTSection(
            dataset=str(warmup_dir(config) / DATA_DIR / "train.jsonl"),
            batch_size=config.rl.warmup_sft_batch_size,
            max_steps=steps,
            epochs=1,
            shuffle_seed=config.orchestrator.seed,
        ),
    )


def warmup_images(config: RLConfig) -> ImagesSeen:
    """Grey images for a warm-up that must teach only the format (`rl.warmup_images`) and for a blind run."""
    return "blank" if "blank" in (config.rl.warmup_images, config.rl.images) else "real"


def write_warmup_dataset(config: RLConfig, sft: SFTConfig) -> Path:
    """`<warm-up dir>/data/train.jsonl`: one conversation (prompt + reference answer) per warm-up sample."""
    mixture = load_mixture(config.orchestrator.environments)
    count = config.rl.warmup_sft_steps * config.rl.warmup_sft_batch_size
    sampler = PromptSampler(mixture.train_sizes(), mixture.weights, count, config.orchestrator.seed, stream="warmup")
    store = run_image_store(sft.multimodal, sft.logging.run_dir, warmup_images(config))
    lines = []
    for draw in sampler.step(1):
        example = mixture.environments[draw.environment].dataset("train")[draw.row]
        prompt, _ = store_images(example.prompt, store)
        messages = [message.model_dump(mode="json") for message in prompt]
        row = {"id": example.example_id, "messages": [*messages, {"role": "assistant", "content": example.answer}]}
        lines.append(orjson.dumps(row) + b"\n")
    return write_atomic(Path(sft.sft.dataset), b"".join(lines))


def load_warm_start(endpoints: Sequence[str], token: SecretStr | None, checkpoint: Path) -> float:
    """Load the warm-up checkpoint into the servers as weight version 0; returns the seconds it took."""

    async def load() -> float:
        secret = token.get_secret_value() if token else None
        clients = [RemoteInferenceClient.for_url(url, secret) for url in endpoints]
        try:
            return (await push_weights(clients, str(checkpoint), 0))[1]
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(load())
