"""The SFT data path: dataset files, step planning, the shuffled stream and its resume, and ranks' shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.configs import SFTConfig, load_config
from foveal.renderers.errors import OverlongSample
from foveal.trainer.training.checkpoint import DataPosition
from foveal.trainer.training.distributed import DistributedContext
from foveal.trainer.data.packing import PackItem
from foveal.trainer.data.positions import TextPositions
from foveal.trainer.data.samples import TrainingSample
from foveal.trainer.training.loss import local_loss_tokens
from foveal.trainer.data.materialize import text_only_sample
from foveal.trainer.data.sources import DatasetError, HFConversations, JsonlConversations, open_dataset
from foveal.trainer.data.steps import PackingLimits, count_steps, pack_step, plan_step
from foveal.trainer.data.stream import StepStream, epoch_order
from foveal.trainer.sft.data import build_sft_data
from foveal.verifiers.datasets import generate_example, iter_examples, write_shapes_dataset


def context(rank: int = 0, world_size: int = 1) -> DistributedContext:
    return DistributedContext(rank=rank, world_size=world_size, local_rank=rank, device=torch.device("cpu"))


def config(run_dir: Path, model_dir: Path, *overrides: str) -> SFTConfig:
    base = ["--model.name_or_path", str(model_dir), "--logging.run_dir", str(run_dir), "--sft.dataset", "shapes:20",
            "--sft.batch_size", "6", "--trainer.seq_len", "128", "--trainer.micro_batch_tokens", "128"]  # fmt: skip
    return load_config(SFTConfig, [], [*base, *overrides])


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 64), min_size=1, max_size=30),
    seq_len=st.integers(64, 128),
    rows_per_micro_batch=st.integers(1, 3),
)
def test_plan_covers_every_sample_once_within_both_limits(
    lengths: list[int], seq_len: int, rows_per_micro_batch: int
) -> None:
    limits = PackingLimits(batch_size=len(lengths), seq_len=seq_len, micro_batch_tokens=seq_len * rows_per_micro_batch)
    plan = plan_step([PackItem(f"s{i}", n, True) for i, n in enumerate(lengths)], limits)
    assert sorted(i for group in plan for i in group) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in group) <= limits.micro_batch_tokens for group in plan)
    assert len(plan) <= -(-sum(lengths) // seq_len) * 2  # rows are packed, not one sample per micro-batch


def test_plan_rejects_a_multimodal_sample_longer_than_seq_len_naming_it() -> None:
    items = [PackItem("short", 10, False), PackItem("shapes-7", 300, True)]
    limits = PackingLimits(batch_size=2, seq_len=256, micro_batch_tokens=512, overlong_text="truncate")
    with pytest.raises(OverlongSample, match="shapes-7") as raised:
        plan_step(items, limits)
    assert "300" in str(raised.value) and "256" in str(raised.value)


def test_overlong_text_is_refused_by_default_and_truncated_when_allowed() -> None:
    items = [PackItem("long-text", 300, False), PackItem("short", 10, False)]
    with pytest.raises(OverlongSample, match="long-text"):
        plan_step(items, PackingLimits(batch_size=2, seq_len=256, micro_batch_tokens=512))
    plan = plan_step(items, PackingLimits(batch_size=2, seq_len=256, micro_batch_tokens=512, overlong_text="truncate"))
    assert sorted(i for group in plan for i in group) == [0, 1]


def test_a_step_truncates_overlong_text_samples_with_their_per_token_fields() -> None:
    sample = TrainingSample(sample_id="t", token_ids=tuple(range(1, 301)), loss_weights=(1.0,) * 300,
                            inference_logprobs=(-0.5,) * 300, advantages=(0.25,) * 300)  # fmt: skip
    limits = PackingLimits(batch_size=1, seq_len=256, micro_batch_tokens=256, overlong_text="truncate")
    step = pack_step([sample], text_only_sample, TextPositions(), limits, context(), DataPosition())
    (batch,) = step.micro_batches
    assert batch.input_ids[0].tolist() == list(range(1, 257)) and step.tokens == 256
    assert batch.loss_weights.shape == batch.logprobs.shape == batch.advantages.shape == (1, 256)


def test_epoch_order_is_a_seeded_permutation() -> None:
    assert sorted(epoch_order(50, 3, 0)) == list(range(50))
    assert epoch_order(50, 3, 0) == epoch_order(50, 3, 0)
    assert epoch_order(50, 3, 0) != epoch_order(50, 3, 1) != epoch_order(50, 4, 0)


def test_run_length_is_max_steps_or_the_epochs() -> None:
    assert count_steps(dataset_size=100, batch_size=8, epochs=2, max_steps=1000) == 25
    assert count_steps(dataset_size=100, batch_size=8, epochs=2, max_steps=10) == 10


def test_jsonl_rows_resolve_image_paths_against_the_file_folder(tmp_path: Path) -> None:
    path = write_shapes_dataset(tmp_path / "set", 3, seed=4)
    source, roots = open_dataset(str(path), tmp_path / "run", seed=0)
    conversation = source[1]
    image = conversation.messages[0].content[0].image
    assert Path(image).is_absolute() and Path(image).is_file() and Path(image).parent.parent.parent == path.parent
    assert conversation.sample_id == "shapes-4-train-000001"
    assert roots == (path.parent.resolve(),)


def test_a_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n{not json\n")
    source = JsonlConversations.read(path)
    assert source[0].messages[0].text() == "hi"
    with pytest.raises(DatasetError, match=r"bad.jsonl\[line 2\]"):
        source[1]
    with pytest.raises(DatasetError, match="sft.dataset"):
        open_dataset(str(tmp_path / "missing.jsonl"), tmp_path, seed=0)
    with pytest.raises(DatasetError, match="shapes:<positive"):
        open_dataset("shapes:many", tmp_path, seed=0)


def stream(tiny_processor: Callable, load_tiny_model: Callable, cfg: SFTConfig) -> StepStream:
    family = "qwen2_5_vl"
    return build_sft_data(cfg, cfg.model.name_or_path, tiny_processor(family), load_tiny_model(family), context())


def test_a_resumed_stream_yields_the_rest_of_the_uninterrupted_one(
    tiny_model_dir: Callable[[str], Path], tiny_processor: Callable, load_tiny_model: Callable, tmp_path: Path
) -> None:
    cfg = config(tmp_path, tiny_model_dir("qwen2_5_vl"), "--sft.epochs", "2")
    data = stream(tiny_processor, load_tiny_model, cfg)
    with data:
        whole = list(data.steps(DataPosition(), 10))
    # 20 samples, 6 per step, 2 epochs: 7 steps, the 4th spanning the epoch boundary, the last holding 4.
    assert [step.samples for step in whole] == [6, 6, 6, 6, 6, 6, 4]
    assert [step.position for step in whole[2:4]] == [DataPosition(epoch=0, index=18), DataPosition(epoch=1, index=4)]
    with data:
        rest = list(data.steps(whole[2].position, 10))
    assert [ids(step) for step in rest] == [ids(step) for step in whole[3:]]
    every = {f"shapes-0-train-{i:06d}" for i in range(20)}
    first_three = [i for step in whole[:3] for i in ids(step)]
    assert len(set(first_three)) == 18 and len(every - set(first_three)) == 2
    assert every - set(first_three) <= set(ids(whole[3]))  # epoch 0's last two open step 4


def test_ranks_split_the_micro_batches_and_pad_with_weightless_copies(
    tiny_model_dir: Callable[[str], Path], tiny_processor: Callable, load_tiny_model: Callable, tmp_path: Path
) -> None:
    cfg = config(tmp_path, tiny_model_dir("qwen2_5_vl"), "--sft.batch_size", "5")  # ~53 tokens each: 3 micro-batches
    single = stream(tiny_processor, load_tiny_model, cfg)
    with single:
        whole = next(iter(single.steps(DataPosition(), 1)))
    shares = []
    for rank in (0, 1):  # what each of two ranks prepares (no process group is needed to prepare data)
        data = StepStream(single.source, single.render, single.materialize, single.positions, single.limits,
                             context(rank, 2), single.epochs)  # fmt: skip
        with data:
            shares.append(next(iter(data.steps(DataPosition(), 1))))
    assert len(whole.micro_batches) == 3
    assert [len(share.micro_batches) for share in shares] == [2, 2]  # rank 1 repeats one of its own, weightless
    padding = shares[1].micro_batches[1]
    assert float(padding.sample_weights.sum()) == 0 and padding.sample_ids == shares[1].micro_batches[0].sample_ids
    assert sorted(i for share in shares for i in ids(share)) == sorted(ids(whole))
    assert sum(local_loss_tokens(share.micro_batches) for share in shares) == local_loss_tokens(whole.micro_batches)
    assert sum(share.tokens for share in shares) == whole.tokens and whole.images == 5


def ids(step) -> list[str]:
    """The samples a step trains on (padding micro-batches, which weigh nothing, left out)."""
    return [i for batch in step.micro_batches if float(batch.sample_weights.sum()) > 0 for i in batch.sample_ids]


def hf_rows(count: int) -> list[dict]:
    """Rows shaped as `datasets` returns them: every part carries every key (None where absent)."""
    rows = []
    for example in iter_examples(count, seed=9):
        user = [{"type": "image", "text": None}, {"type": "text", "text": example.question.text}]
        answer = [{"type": "text", "text": example.question.answer}]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        rows.append({"id": example.example_id, "images": [example.image], "messages": messages})
    return rows


def test_hf_rows_take_their_pictures_from_the_images_column() -> None:
    source = HFConversations("shapes-hf", hf_rows(3))
    conversation = source[1]
    example = generate_example(1, seed=9)
    assert conversation.sample_id == example.example_id
    assert conversation.messages[0].content[0].image.tobytes() == example.image.tobytes()
    assert conversation.messages[1].text() == example.question.answer


def test_a_hf_dataset_folder_loads_through_datasets(tmp_path: Path) -> None:
    import datasets  # foveal-trainer[hf], in the dev groups: a missing install fails here rather than skipping

    table = datasets.Dataset.from_list(hf_rows(4)).cast_column("images", datasets.Sequence(datasets.Image()))
    (tmp_path / "set").mkdir()
    table.to_parquet(str(tmp_path / "set" / "train.parquet"))
    source, roots = open_dataset(str(tmp_path / "set"), tmp_path / "run", seed=0)
    assert (len(source), roots) == (4, ())
    for index, example in enumerate(iter_examples(4, seed=9)):  # the rows `hf_rows` wrote, read back from parquet
        conversation = source[index]
        assert conversation.sample_id == example.example_id
        assert conversation.messages[0].content[0].image.tobytes() == example.image.tobytes()
        assert conversation.messages[1].text() == example.question.answer
