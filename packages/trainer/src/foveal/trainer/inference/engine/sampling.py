"""Choosing the next token: temperature, top-k and top-p over fp32 logits, with a generator per sequence.

The logprob reported for a sampled token is always taken from the raw model distribution,
`log_softmax(logits)` before temperature, top-k or top-p: that is the distribution an RL trainer
recomputes from the same weights, so the two can be compared token by token (and importance-weighted)
whatever sampling settings produced the rollout.
"""

from __future__ import annotations

import torch
import xxhash

from foveal.renderers.inference.wire import SamplingParams


def sequence_generator(seed: int | None, sample_index: int, device: torch.device) -> torch.Generator:
    """The generator of one completion: `(seed, sample_index)` reproduces it; no seed draws a fresh one."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(xxhash.xxh3_64_intdigest(f"{seed}:{sample_index}".encode()))
    return generator


def raw_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """`[B, V]` log-probabilities of the model itself, in fp32."""
    return torch.log_softmax(logits.float(), dim=-1)


def filtered_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """One row `[V]` of fp32 logits scaled by temperature, with tokens outside top-k / top-p set to -inf."""
    scaled = logits.float() / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Keep a token when the mass before it is below top_p, so the most likely token always stays.
        drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def choose_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """The next token for one row `[V]`: argmax when temperature is 0, else a draw from the filtered distribution."""
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(filtered_logits(logits, params), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
