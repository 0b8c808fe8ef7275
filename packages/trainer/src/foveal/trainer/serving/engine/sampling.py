"""Choosing the next token of every row at once: temperature, top-k and top-p over fp32 logits, with a
generator per sequence.

Image and video placeholder tokens are never sampled (`suppressed`): a completion holding one could not be
trained on, since placeholders may only appear inside an image's span. Each row keeps its own settings and its
own `torch.Generator` (so `seed` reproduces a completion whatever else shares the batch), yet the whole batch
is filtered and sampled in a few tensor operations: a row draws by the Gumbel-max trick (`argmax(logits +
Gumbel noise)` is an exact sample of `softmax(logits)`), with the noise drawn from that row's generator.
Greedy rows (temperature 0) take the argmax.

The logprob reported for a sampled token is always taken from the raw model distribution,
`log_softmax(logits)` before temperature, top-k or top-p: that is the distribution an RL trainer recomputes
from the same weights, so the two can be compared token by token (and importance-weighted) whatever sampling
settings produced the rollout. Rows that ask for `top_logprobs` also get that many most likely tokens of the
same raw distribution (one `topk` over just those rows; other rows cost nothing more). Suppressed ids are left
out of them, as are tokens of logprob -inf: neither could have been sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import xxhash

from foveal.renderers.inference.wire import Alternative, SamplingParams


@dataclass(frozen=True)
class SampledRows:
    """One sampled token per row, its raw-model logprob, and its row's alternatives (`()` unless asked for)."""

    tokens: list[int]
    logprobs: list[float]
    alternatives: list[tuple[Alternative, ...]]


def sequence_generator(seed: int | None, sample_index: int, device: torch.device) -> torch.Generator:
    """The generator of one completion: `(seed, sample_index)` reproduces it; no seed draws a fresh one."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(xxhash.xxh3_64_intdigest(f"{seed}:{sample_index}".encode()))
    return generator


def sample_batch(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
    suppressed: Sequence[int] = (),
) -> SampledRows:
    """One token per row of `[B, V]` logits, and its raw-model logprob (fp32); `suppressed` ids are never chosen."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    logits = logits.float()
    suppressed_ids = torch.tensor(suppressed, dtype=torch.long, device=logits.device) if suppressed else None
    if suppressed_ids is not None:  # out of place: the logits may be inference-mode tensors
        logits = logits.index_fill(1, suppressed_ids, float("-inf"))
    tokens = torch.argmax(logits, dim=-1)
    sampled = [row for row, p in enumerate(params) if p.temperature > 0.0]
    if sampled:
        rows = torch.tensor(sampled, device=logits.device)
        filtered = filtered_logits(logits[rows], [params[row] for row in sampled])
        noise = torch.stack([_gumbel(logits.shape[-1], generators[row], logits.device) for row in sampled])
        tokens[rows] = torch.argmax(filtered + noise, dim=-1)
    chosen = logprobs.gather(1, tokens.view(-1, 1))[:, 0]
    return SampledRows(tokens.tolist(), chosen.tolist(), top_alternatives(logprobs, params, suppressed_ids))


def top_alternatives(
    logprobs: torch.Tensor, params: Sequence[SamplingParams], suppressed_ids: torch.Tensor | None = None
) -> list[tuple[Alternative, ...]]:
    """Each row's `top_logprobs` most likely tokens of `[B, V]` raw logprobs, best first; `()` for rows asking none."""
    alternatives: list[tuple[Alternative, ...]] = [()] * len(params)
    wanted = [row for row, p in enumerate(params) if p.top_logprobs > 0]
    if not wanted:
        return alternatives
    rows = logprobs[torch.tensor(wanted, device=logprobs.device)]
    if suppressed_ids is not None:
        rows = rows.index_fill(1, suppressed_ids, float("-inf"))
    count = min(max(params[row].top_logprobs for row in wanted), rows.shape[-1])
    values, ids = torch.topk(rows, count, dim=-1)
    for row, row_ids, row_values in zip(wanted, ids.tolist(), values.tolist(), strict=True):
        kept = params[row].top_logprobs
        best = zip(row_ids[:kept], row_values[:kept], strict=True)
        alternatives[row] = tuple((token, value) for token, value in best if value > float("-inf"))  # NaN too
    return alternatives


def filtered_logits(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """`[B, V]` fp32 logits scaled by each row's temperature, with tokens outside its top-k / top-p at -inf."""
    device, vocab = logits.device, logits.shape[-1]
    temperature = torch.tensor([p.temperature for p in params], device=device).view(-1, 1)
    scaled = logits / temperature
    top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], device=device).view(-1, 1)
    if bool((top_k < vocab).any()) or bool((top_p < 1.0).any()):
        ordered, order = torch.sort(scaled, dim=-1, descending=True)
        rank = torch.arange(vocab, device=device).view(1, -1)
        probs = torch.softmax(ordered, dim=-1)
        # Keep a token when it is within top-k and the mass before it is below top-p: the best always stays.
        drop = (rank >= top_k.view(-1, 1)) | ((torch.cumsum(probs, dim=-1) - probs) >= top_p)
        scaled = scaled.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    return scaled


def _gumbel(vocab: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    uniform = torch.rand(vocab, generator=generator, device=device).clamp_(min=torch.finfo(torch.float32).tiny)
    return -torch.log(-torch.log(uniform))
