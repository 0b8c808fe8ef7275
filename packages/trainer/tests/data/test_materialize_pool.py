"""A step's images materialized on a thread pool: same batches as one thread, in plan order, errors named."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from foveal.configs import SFTConfig, load_config
from foveal.renderers.errors import MissingAsset
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.data.collate import PackedBatch
from foveal.trainer.data.pool import materialize_share, materialize_threads
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.data.steps import StepBatch
from foveal.trainer.data.stream import StepStream
from foveal.trainer.sft.data import build_sft_data

CPU = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _samples(count: int) -> list[TrainingSample]:
    return [TrainingSample(sample_id=f"s{i}", token_ids=[1, 2, 3], loss_weights=[0.0, 1.0, 1.0]) for i in range(count)]


def test_results_keep_index_order_whatever_order_threads_finish_in() -> None:
    samples = _samples(8)
    finished: list[str] = []
    lock = threading.Lock()

    def prepare(sample: TrainingSample) -> str:
        time.sleep(0.01 * (8 - int(sample.sample_id[1:])))  # later samples finish first
        with lock:
            finished.append(sample.sample_id)
        return sample.sample_id.upper()

    indices = [5, 0, 7, 2, 1]
    with ThreadPoolExecutor(4) as pool:
        result = materialize_share(samples, indices, prepare, pool)
    assert list(result.items()) == [(i, f"S{i}") for i in indices]
    assert result == materialize_share(samples, indices, prepare)  # inline: the same mapping
    assert finished[:5] != [f"s{i}" for i in indices]  # the pool really ran them out of order


def test_a_failing_sample_is_named_and_samples_not_started_are_cancelled() -> None:
    samples = _samples(12)
    started: list[str] = []
    release = threading.Event()

    def prepare(sample: TrainingSample) -> str:
        started.append(sample.sample_id)
        if sample.sample_id == "s0":
            raise MissingAsset("raw_image_uri", "file:///gone.png", "an existing stored file")
        release.wait(5)  # the others hold both threads until the failure has been raised
        return sample.sample_id

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(MissingAsset) as error:
            materialize_share(samples, range(12), prepare, pool)
        release.set()
    assert "while materializing sample 's0'" in error.value.__notes__
    assert len(started) <= 3  # s0, and at most the two that held the threads: the rest were cancelled


def test_default_thread_count_is_bounded_by_cpus_and_eight() -> None:
    assert 1 <= materialize_threads(None) <= 8
    assert materialize_threads(3) == 3


def _config(run_dir: Path, model_dir: Path, threads: int) -> SFTConfig:
    args = ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--sft.dataset", "shapes:16",
            "--sft.batch_size", "8", "--trainer.seq_len", "128", "--trainer.micro_batch_tokens", "256",
            "--multimodal.materialize_threads", str(threads)]  # fmt: skip
    return load_config(SFTConfig, [], args)


def _steps(data: StepStream) -> list[StepBatch]:
    with data:
        return list(data.steps(DataPosition(), 2))


def _same_batch(a: PackedBatch, b: PackedBatch) -> None:
    assert a.sample_ids == b.sample_ids
    for name in ("input_ids", "labels", "loss_weights", "position_ids", "cu_seqlens"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.pixel_kwargs.keys() == b.pixel_kwargs.keys()
    for name, tensor in a.pixel_kwargs.items():
        assert torch.equal(tensor, b.pixel_kwargs[name]), name


def test_stream_with_four_threads_yields_exactly_the_one_thread_batches(
    tiny_model_dir: Callable[[str], Path], tiny_processor: Callable, load_tiny_model: Callable, tmp_path: Path
) -> None:
    """Real images through the real tiny Qwen2.5-VL processor, shared Materializer and PixelCache."""
    family, model_dir = "qwen2_5_vl", tiny_model_dir("qwen2_5_vl")
    processor, model = tiny_processor(family), load_tiny_model(family)
    runs = {}
    for threads in (1, 4):
        cfg = _config(tmp_path / f"run{threads}", model_dir, threads)
        data = build_sft_data(cfg, str(model_dir), processor, model, CPU)
        assert data.materialize_threads == threads
        runs[threads] = _steps(data)
        assert data._pool is None  # closing the stream shut its pool down
    serial, pooled = runs[1], runs[4]
    assert [step.images for step in pooled] == [step.images for step in serial] == [8, 8]
    for one, four in zip(serial, pooled, strict=True):
        assert len(one.micro_batches) == len(four.micro_batches)
        for a, b in zip(one.micro_batches, four.micro_batches, strict=True):
            _same_batch(a, b)
