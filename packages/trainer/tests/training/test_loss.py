"""The SFT loss against a naive per-token reference, and accumulation by loss tokens equal to one big batch."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import IGNORE_INDEX, PackSample, collate_packed
from foveal.trainer.data.positions import TextPositions
from foveal.trainer.training.loss import (
    count_loss_tokens,
    local_loss_tokens,
    micro_batch_loss,
    sft_loss,
    token_nll,
    token_weights,
    weighted_nll_sum,
)

VOCAB = 11


def naive_step_loss(samples: list[PackSample], logits_of: dict[str, torch.Tensor]) -> float:
    """Per sample, per position: -log softmax(logits)[next token], weighted, over the step's counted tokens."""
    total, counted = 0.0, 0
    for sample in samples:
        logits = logits_of[sample.sample_id]
        for t in range(len(sample.token_ids) - 1):
            weight = float(sample.loss_weights[t + 1]) * sample.sample_weight
            if weight > 0:
                row = [float(x) for x in logits[t]]
                top = max(row)
                log_z = top + math.log(sum(math.exp(x - top) for x in row))
                total += weight * (log_z - row[sample.token_ids[t + 1]])
                counted += 1
    return total / max(counted, 1)


def random_samples(seed: int, count: int, zero_weight: set[int] = frozenset()) -> list[PackSample]:
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(count):
        length = int(torch.randint(2, 9, (1,), generator=generator))
        ids = torch.randint(0, VOCAB, (length,), generator=generator).tolist()
        mask = torch.randint(0, 3, (length,), generator=generator).mul(0.5).tolist()  # weights 0, 0.5 and 1
        samples.append(PackSample(f"s{i}", ids, mask, sample_weight=0.0 if i in zero_weight else 1.0))
    return samples


def logits_for(samples: list[PackSample], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        s.sample_id: torch.randn(len(s.token_ids), VOCAB, generator=generator, dtype=torch.float64) for s in samples
    }


def packed_logits_of(batch, logits_of: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([logits_of[sample_id] for sample_id in batch.sample_ids]).unsqueeze(0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 6), cut=st.integers(0, 6))
def test_packed_micro_batches_sum_to_the_naive_step_loss(seed: int, count: int, cut: int) -> None:
    samples = random_samples(seed, count, zero_weight={1})
    logits_of = logits_for(samples, seed + 1)
    micro_batches = [group for group in (samples[: min(cut, count)], samples[min(cut, count) :]) if group]
    batches = [collate_packed(group, TextPositions()) for group in micro_batches]
    step_tokens = local_loss_tokens(batches)
    total = sum(float(sft_loss(packed_logits_of(b, logits_of), b, step_tokens)) for b in batches)
    assert total == pytest.approx(
        naive_step_loss(samples, logits_of), rel=1e-6, abs=1e-7
    )  # the loss is computed in fp32


def test_zero_weight_samples_add_nothing_and_are_not_counted() -> None:
    samples = random_samples(3, 4)
    silenced = [PackSample(s.sample_id, s.token_ids, s.loss_weights, sample_weight=0.0 if i == 2 else 1.0)
                for i, s in enumerate(samples)]  # fmt: skip
    logits_of = logits_for(samples, 4)
    batch = collate_packed(silenced, TextPositions())
    without = [s for i, s in enumerate(samples) if i != 2]
    expected = naive_step_loss(without, logits_of)
    assert float(sft_loss(packed_logits_of(batch, logits_of), batch, local_loss_tokens([batch]))) == pytest.approx(
        expected
    )
    assert local_loss_tokens([batch]) == local_loss_tokens([collate_packed(without, TextPositions())])


def test_accumulating_by_step_tokens_gives_the_big_batch_gradient_and_per_micro_mean_does_not() -> None:
    torch.manual_seed(0)
    embed = torch.nn.Embedding(VOCAB, 8)
    head = torch.nn.Linear(8, VOCAB)
    samples = random_samples(7, 6)
    big = collate_packed(samples, TextPositions())
    parts = [collate_packed(samples[:1], TextPositions()), collate_packed(samples[1:], TextPositions())]

    def gradient(batches, normalizer) -> torch.Tensor:
        head.zero_grad()
        for batch in batches:
            sft_loss(head(embed(batch.input_ids)), batch, normalizer(batch)).backward()
        return head.weight.grad.clone()

    reference = gradient([big], lambda b: local_loss_tokens([big]))
    by_step_tokens = gradient(parts, lambda b: local_loss_tokens(parts))
    by_own_tokens = gradient(parts, lambda b: local_loss_tokens([b]))
    torch.testing.assert_close(by_step_tokens, reference, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(by_own_tokens, reference, rtol=1e-3, atol=1e-5)


def test_token_nll_matches_log_softmax_and_ignores_ignored_labels() -> None:
    logits = torch.randn(1, 5, VOCAB)
    labels = torch.tensor([[1, 4, IGNORE_INDEX, 0, 10]])
    nll = token_nll(logits, labels)
    expected = -torch.log_softmax(logits, -1)[0, [0, 1, 3, 4], [1, 4, 0, 10]]
    torch.testing.assert_close(nll[0, [0, 1, 3, 4]], expected)
    assert nll[0, 2] == 0 and nll.dtype == torch.float32


def test_bf16_logits_are_scored_in_fp32() -> None:
    logits = torch.randn(1, 3, VOCAB).to(torch.bfloat16)
    assert token_nll(logits, torch.tensor([[1, 2, 3]])).dtype == torch.float32


def test_sample_weights_spread_over_their_tokens() -> None:
    weights = token_weights(torch.ones(1, 5), torch.tensor([0.5, 0.0]), torch.tensor([0, 3, 5], dtype=torch.int32))
    assert weights.tolist() == [[0.5, 0.5, 0.5, 0.0, 0.0]]
    assert count_loss_tokens(weights) == 3


def test_a_step_without_loss_tokens_is_zero_not_nan() -> None:
    loss = micro_batch_loss(torch.randn(1, 3, VOCAB), torch.tensor([[1, 2, IGNORE_INDEX]]), torch.zeros(1, 3), 0)
    assert float(loss) == 0.0


@pytest.mark.parametrize(
    ("call", "refusal"),
    [
        (lambda: token_nll(torch.randn(1, 4, VOCAB), torch.zeros(1, 3, dtype=torch.long)),
         ("labels", [1, 3], "the shape of logits without the vocabulary [1, 4]")),
        (lambda: token_weights(torch.ones(1, 5), torch.ones(3), torch.tensor([0, 5], dtype=torch.int32)),
         ("sample_weights", [3], "one weight per sample (1)")),
        (lambda: token_weights(torch.ones(1, 5), torch.ones(2), torch.tensor([0, 2, 4], dtype=torch.int32)),
         ("cu_seqlens", 4, "ending at the row length 5")),
        (lambda: weighted_nll_sum(torch.ones(1, 3), torch.ones(1, 2)),
         ("weights", [1, 2], "the shape of the token losses [1, 3]")),
        (lambda: micro_batch_loss(torch.randn(1, 2, VOCAB), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), -1),
         ("step_loss_tokens", -1, "a non-negative token count")),
    ],
    ids=["labels", "sample-weights", "cu-seqlens", "weights", "step-loss-tokens"],
)  # fmt: skip
def test_refusals_name_the_field_the_value_and_what_was_expected(
    call: Callable[[], object], refusal: tuple[str, object, str]
) -> None:
    with pytest.raises(ContractError) as caught:
        call()
    assert (caught.value.field, caught.value.value, caught.value.expected) == refusal