"""`sample_batch`'s alternatives: the N most likely tokens of the raw distribution, only for rows that ask, never a
suppressed placeholder, and no change to what is sampled or to the sampled token's own logprob."""

from __future__ import annotations

import math

import torch

from foveal.renderers.inference.wire import SamplingParams
from foveal.trainer.serving.engine.sampling import sample_batch, sequence_generator

CPU = torch.device("cpu")


def _generators(count: int, seed: int = 7) -> list[torch.Generator]:
    return [sequence_generator(seed, index, CPU) for index in range(count)]


def _logits(rows: int, vocab: int = 50) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(3)) * 3


def test_alternatives_are_the_highest_raw_logprobs_in_order_whatever_the_sampling_settings() -> None:
    logits = _logits(3)
    params = [
        SamplingParams(temperature=0.7, top_k=2, top_logprobs=5),
        SamplingParams(temperature=0.0, top_logprobs=20),
        SamplingParams(temperature=1.3, top_p=0.5, top_logprobs=1),
    ]
    sampled = sample_batch(logits, params, _generators(3))
    raw = torch.log_softmax(logits.float(), dim=-1)
    for row, p in enumerate(params):
        values, ids = torch.topk(raw[row], p.top_logprobs)
        assert [token for token, _ in sampled.alternatives[row]] == ids.tolist()
        assert [value for _, value in sampled.alternatives[row]] == values.tolist()
        assert sampled.logprobs[row] == raw[row, sampled.tokens[row]].item()
    assert sampled.alternatives[1][0] == (sampled.tokens[1], sampled.logprobs[1])  # greedy: the sampled token first


def test_rows_that_do_not_ask_get_none_and_sampling_is_unchanged_by_asking() -> None:
    logits = _logits(4)
    plain = [SamplingParams(temperature=0.9, top_k=10)] * 4
    asking = [plain[0], plain[1].model_copy(update={"top_logprobs": 3}), plain[2], plain[3]]
    without = sample_batch(logits, plain, _generators(4))
    with_top = sample_batch(logits, asking, _generators(4))
    assert (with_top.tokens, with_top.logprobs) == (without.tokens, without.logprobs)
    assert without.alternatives == [()] * 4
    assert [len(top) for top in with_top.alternatives] == [0, 3, 0, 0]


def test_suppressed_placeholders_are_never_among_the_alternatives() -> None:
    logits = _logits(2)
    placeholder = int(torch.argmax(logits[0]))
    logits[1, placeholder] = logits[1].max() + 5  # the most likely token of both rows
    params = [SamplingParams(temperature=0.0, top_logprobs=4)] * 2
    sampled = sample_batch(logits, params, _generators(2), suppressed=(placeholder,))
    raw = torch.log_softmax(logits, dim=-1)
    for row in range(2):
        ids = [token for token, _ in sampled.alternatives[row]]
        assert placeholder not in ids and len(ids) == 4
        assert ids[0] == sampled.tokens[row]  # greedy picks the best token that can be sampled
        expected = torch.topk(raw[row].index_fill(0, torch.tensor([placeholder]), -math.inf), 4).indices.tolist()
        assert ids == expected


def test_impossible_tokens_are_left_out_so_the_alternatives_stay_json_safe() -> None:
    logits = torch.full((1, 30), -math.inf)
    logits[0, [4, 9]] = torch.tensor([1.0, 2.0])
    sampled = sample_batch(logits, [SamplingParams(temperature=0.0, top_logprobs=5)], _generators(1))
    assert [token for token, _ in sampled.alternatives[0]] == [9, 4]
    assert all(math.isfinite(value) for _, value in sampled.alternatives[0])


def test_more_alternatives_than_the_vocabulary_are_all_of_it() -> None:
    logits = _logits(1, vocab=6)
    sampled = sample_batch(logits, [SamplingParams(top_logprobs=20)], _generators(1))
    assert sorted(token for token, _ in sampled.alternatives[0]) == list(range(6))
