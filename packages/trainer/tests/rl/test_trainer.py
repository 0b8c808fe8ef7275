"""`run_rl_trainer` end to end on the tiny VLM, fed rollout batches built from real rendered samples.

The batches are made here the way the orchestrator makes them: conversations with real PNGs rendered by the
renderer into a real ImageStore, rewards per prompt group turned into advantages, and inference logprobs
from a real forward of the weights the trainer published (the initial model, or a step's checkpoint).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from foveal.configs import RLConfig, load_config
from foveal.configs.cli import main
from foveal.renderers.factory import build_renderer
from foveal.renderers.messages import parse_messages
from foveal.renderers.store import ImageStore
from foveal.trainer.rl.advantages import grouped_advantages, token_advantages
from foveal.trainer.data.collate import collate_packed
from foveal.trainer.data.positions import position_scheme
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.training.loss import token_nll
from foveal.trainer.training.metrics import read_metrics
from foveal.trainer.model.forward import packed_logits
from foveal.trainer.model.loading import load_model, load_processor
from foveal.trainer.runs.rollouts import BatchTimeout, RLBatch, RolloutMetrics, write_batch
from foveal.trainer.rl.packer import build_rl_packer
from foveal.trainer.rl.sync import can_produce
from foveal.trainer.runs.progress import SyncError, read_progress
from foveal.trainer.runs.meta import IncompatibleRun
from foveal.trainer.data.materialize import build_materializer
from foveal.trainer.data.sources import Conversation
from foveal.trainer.data.samples import render_sample
from foveal.trainer.rl.trainer import run_rl_trainer

FAMILY = "qwen2_5_vl"
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 160, 50)}
KL_NEAR_ZERO = 1e-4


def rl_config(run_dir: Path, model_dir: Path, *overrides: str) -> RLConfig:
    base = ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--trainer.device", "cpu",
            "--trainer.seq_len", "128", "--trainer.micro_batch_tokens", "128", "--inference.max_model_len", "128",
            "--orchestrator.max_tokens", "32", "--orchestrator.batch_size", "2",
            "--orchestrator.rollouts_per_prompt", "2", "--rl.max_steps", "3", "--trainer.optim.lr", "2e-3",
            "--trainer.loss.kind", "ppo", "--trainer.rollout_timeout_s", "120"]  # fmt: skip
    return load_config(RLConfig, [], [*base, *overrides])


class ShapesRollouts:
    """Makes each step's RLBatch like the orchestrator: render, score per group, advantages, real logprobs."""

    def __init__(self, config: RLConfig, images: Path) -> None:
        self.config, self.images = config, images
        multimodal = config.multimodal.model_copy(update={"allowed_image_roots": [images]})
        self.store = ImageStore.from_config(multimodal, config.logging.run_dir)
        self.renderer = build_renderer(
            config.model.name_or_path, config.renderer, store=self.store, multimodal=multimodal
        )
        images.mkdir(parents=True, exist_ok=True)

    def batch(self, step: int, policy_version: int, weights: str) -> RLBatch:
        """Two prompts (a shape of one colour each), two answers per prompt, reward 1 for the right colour."""
        names = list(COLORS)
        samples, rewards, groups = [], [], []
        for prompt in range(2):
            truth = names[(step + prompt) % len(names)]
            picture = self._draw(f"step{step}-prompt{prompt}", truth, size=(56 + 28 * prompt, 56))
            for answer in (truth, names[(step + prompt + 1) % len(names)]):
                messages = [{"role": "user", "content": [{"type": "image", "image": str(picture)},
                                                         {"type": "text", "text": "What color is the shape?"}]},
                            {"role": "assistant", "content": f"It is {answer}."}]  # fmt: skip
                sample_id = f"step{step}-p{prompt}-{answer}"
                samples.append(render_sample(self.renderer, Conversation(sample_id, parse_messages(messages))))
                rewards.append(float(answer == truth))
                groups.append(prompt)
        advantages = grouped_advantages(rewards, groups, self.config.orchestrator.advantage)
        logprobs = self.logprobs(samples, weights)
        finished = tuple(
            TrainingSample(
                **sample.model_dump(exclude={"inference_logprobs", "advantages"}),
                inference_logprobs=lp,
                advantages=token_advantages(advantage, sample.loss_weights),
            )
            for sample, lp, advantage in zip(samples, logprobs, advantages, strict=True)
        )
        metrics = RolloutMetrics(rollouts=len(finished), reward_mean=sum(rewards) / len(rewards),
                                 reward_by_environment={"shapes": sum(rewards) / len(rewards)})  # fmt: skip
        return RLBatch(step=step, policy_version=policy_version, samples=finished, metrics=metrics)

    def logprobs(self, samples: list[TrainingSample], weights: str) -> list[tuple[float, ...]]:
        """Per-token logprobs of each sample under `weights`, one sample at a time (as a server scores them)."""
        model = load_model(self.config.model, weights, torch.device("cpu"))
        materialize = build_materializer(
            self.renderer.adapter.layout_family, load_processor(self.config.model, weights), self.store,
            self.config.multimodal,
        )  # fmt: skip
        out = []
        with torch.no_grad():
            for sample in samples:
                row = collate_packed([materialize(sample)], position_scheme(model))
                predicted = -token_nll(packed_logits(model, row), row.labels)[0]
                out.append((0.0, *predicted[:-1].tolist()))  # value i is the logprob of token i
        return out

    def _draw(self, name: str, color: str, size: tuple[int, int]) -> Path:
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), fill=COLORS[color])
        path = self.images / f"{name}.png"
        image.save(path, format="PNG")
        return path


def weights_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def test_on_policy_run_with_a_live_orchestrator_keeps_the_mismatch_near_zero(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    """max_async_level 0: the batch of step s is sampled with the checkpoint of step s - 1 once it is published."""
    config = rl_config(tmp_path / "run", tiny_model_dir(FAMILY), "--orchestrator.max_async_level", "0",
                       "--logging.plots", "true")  # fmt: skip
    rollouts = ShapesRollouts(config, tmp_path / "images")
    stop = threading.Event()

    def orchestrator() -> list[int]:
        versions = []
        for step in range(1, 4):
            while not stop.is_set():
                progress = read_progress(config.logging.run_dir)
                if progress is not None and can_produce(step, progress.step, max_async_level=0):
                    break
                stop.wait(0.02)
            weights = progress.checkpoint or str(config.model.name_or_path)
            write_batch(config.logging.run_dir, rollouts.batch(step, progress.step, weights))
            versions.append(progress.step)
        return versions

    with ThreadPoolExecutor(max_workers=1) as pool:
        produced = pool.submit(orchestrator)
        try:
            result = run_rl_trainer(config)
        finally:
            stop.set()
        versions = produced.result(timeout=120)

    assert versions == [0, 1, 2]
    rows = read_metrics(result.metrics_path)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["mismatch_kl"] < KL_NEAR_ZERO, row  # the servers' weights are exactly the trainer's
        assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-4) and row["clip_fraction"] == 0.0
        assert row["policy_lag"] == 0 and row["samples"] == 4 and row["images"] == 4 and row["micro_batches"] == 2
        assert row["reward_mean"] == 0.5 and row["reward/shapes"] == 0.5 and row["placeholder_zero_loss"] == 0
        assert row["loss_tokens"] > 0 and row["tokens_per_second"] > 0 and row["train_seconds"] > 0
    progress = read_progress(config.logging.run_dir)
    assert progress is not None and progress.step == 3
    assert progress.checkpoint == str(result.checkpoint) == str(tmp_path / "run" / "checkpoints" / "step-00000003")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    with Image.open(tmp_path / "run" / "rl.png") as plot:
        assert plot.format == "PNG"
    initial = load_model(config.model, str(config.model.name_or_path), torch.device("cpu")).state_dict()
    trained = weights_of(result.checkpoint)
    assert any(not trained[name].equal(initial[name]) for name in trained)


def test_resume_after_a_stop_trains_each_step_once_and_ends_with_the_uninterrupted_weights(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    shared = ["--orchestrator.max_async_level", "2", "--trainer.checkpoint.keep_last", "3",
              "--multimodal.offload_dir", str(tmp_path / "assets")]  # fmt: skip
    whole_config = rl_config(tmp_path / "whole", model_dir, *shared)
    rollouts = ShapesRollouts(whole_config, tmp_path / "images")
    batches = [rollouts.batch(step, policy_version=0, weights=str(model_dir)) for step in (1, 2, 3)]
    for batch in batches:
        write_batch(whole_config.logging.run_dir, batch)
    whole = run_rl_trainer(whole_config)

    # The other run stops while waiting for step 3 (its orchestrator is gone), then restarts when it is back.
    stopped_dir = tmp_path / "stopped"
    for batch in batches[:2]:
        write_batch(stopped_dir, batch)
    stopped_config = rl_config(stopped_dir, model_dir, *shared, "--trainer.rollout_timeout_s", "0.5")
    with pytest.raises(BatchTimeout, match="step 3"):
        run_rl_trainer(stopped_config)
    assert read_progress(stopped_dir).step == 2
    write_batch(stopped_dir, batches[2])
    resumed = run_rl_trainer(rl_config(stopped_dir, model_dir, *shared, "--trainer.checkpoint.resume", "true"))

    assert (resumed.first_step, resumed.last_step) == (3, 3)
    whole_rows, resumed_rows = read_metrics(whole.metrics_path), read_metrics(resumed.metrics_path)
    assert [row["step"] for row in resumed_rows] == [1, 2, 3]
    assert whole_rows[0]["mismatch_kl"] < KL_NEAR_ZERO  # logprobs of the initial model, trained from it
    assert whole_rows[2]["mismatch_kl"] > 100 * whole_rows[0]["mismatch_kl"]  # two steps later the policy moved
    assert [row["policy_lag"] for row in whole_rows] == [0, 1, 2]
    assert [row["loss"] for row in resumed_rows] == [row["loss"] for row in whole_rows]
    final_whole, final_resumed = weights_of(whole.checkpoint), weights_of(resumed.checkpoint)
    assert all(torch.equal(final_whole[name], final_resumed[name]) for name in final_whole)


def test_a_batch_beyond_the_async_bound_is_refused_and_a_changed_config_cannot_reuse_the_folder(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    config = rl_config(tmp_path / "run", model_dir, "--orchestrator.max_async_level", "0", "--rl.max_steps", "2")
    rollouts = ShapesRollouts(config, tmp_path / "images")
    for step in (1, 2):  # both sampled with the initial weights: step 2's batch lags one step
        write_batch(config.logging.run_dir, rollouts.batch(step, policy_version=0, weights=str(model_dir)))
    with pytest.raises(SyncError, match=r"rollout batch 2.policy_version: between 1 and 1"):
        run_rl_trainer(config)
    assert read_progress(config.logging.run_dir).step == 1

    changed = rl_config(tmp_path / "run", model_dir, "--orchestrator.max_async_level", "0", "--rl.max_steps", "2",
                        "--trainer.loss.kind", "gspo", "--trainer.checkpoint.resume", "true")  # fmt: skip
    with pytest.raises(IncompatibleRun, match="trainer.loss.kind: 'ppo' in the folder, 'gspo' now"):
        run_rl_trainer(changed)


def test_foveal_rl_trainer_command_trains_on_published_batches(
    tiny_model_dir: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tiny_model_dir(FAMILY)
    run_dir = tmp_path / "run"
    overrides = ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--trainer.device", "cpu",
                 "--trainer.seq_len", "256", "--trainer.micro_batch_tokens", "256", "--inference.max_model_len", "256",
                 "--orchestrator.max_tokens", "32", "--rl.max_steps", "1", "--trainer.loss.kind", "gspo"]  # fmt: skip
    rollouts = ShapesRollouts(load_config(RLConfig, [], overrides), tmp_path / "images")
    write_batch(run_dir, rollouts.batch(1, policy_version=0, weights=str(model_dir)))
    assert main(["rl-trainer", *overrides]) == 0
    out = capsys.readouterr().out
    assert "rl-trainer: steps 1-1" in out and str(run_dir / "checkpoints" / "step-00000001") in out
    assert read_metrics(run_dir / "metrics.jsonl")[0]["mismatch_kl"] < KL_NEAR_ZERO


def test_rl_packer_on_four_threads_packs_exactly_what_one_thread_packs(
    tiny_model_dir: Callable[[str], Path], load_tiny_model: Callable, tmp_path: Path
) -> None:
    """A rollout batch of image samples through the real processor, serially and on the packer's pool."""
    model_dir = tiny_model_dir(FAMILY)
    config = rl_config(tmp_path / "run", model_dir)
    batch = ShapesRollouts(config, tmp_path / "images").batch(1, policy_version=0, weights=str(model_dir))
    model, context = load_tiny_model(FAMILY), DistributedContext(0, 1, 0, torch.device("cpu"))
    packed = {}
    for threads in (1, 4):
        multimodal = config.multimodal.model_copy(update={"materialize_threads": threads})
        processor = load_processor(config.model, str(model_dir))
        with build_rl_packer(config.model_copy(update={"multimodal": multimodal}), str(model_dir), processor, model,
                             context) as packer:  # fmt: skip
            assert (packer.pool is None) == (threads == 1)
            packed[threads] = packer.pack(batch)
        if packer.pool is not None:
            with pytest.raises(RuntimeError, match="shutdown"):  # leaving the packer shut its pool down
                packer.pool.submit(int)
    one, four = packed[1], packed[4]
    assert one.images == four.images == 4 and len(one.micro_batches) == len(four.micro_batches) > 1
    for a, b in zip(one.micro_batches, four.micro_batches, strict=True):
        assert a.sample_ids == b.sample_ids
        for name in ("input_ids", "position_ids", "advantages", "logprobs"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        for name in ("pixel_values", "image_grid_thw"):
            assert torch.equal(a.pixel_kwargs[name], b.pixel_kwargs[name]), name
