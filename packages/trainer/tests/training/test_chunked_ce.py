"""The chunked LM-head cross entropy against the plain full-logits path: loss and gradients, on CPU and CUDA."""

from __future__ import annotations

import pytest
import torch

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import IGNORE_INDEX
from foveal.trainer.training.chunked_ce import (
    chunked_token_nll,
    chunked_token_scores,
    chunked_weighted_nll,
    linear_token_scores,
)
from foveal.trainer.training.loss import token_nll


def _problem(tokens: int, width: int, vocab: int, bias: bool, dtype: torch.dtype, device: str = "cpu") -> tuple:
    """Hidden `[1, T, H]`, a head, labels with every fourth one ignored, and a random upstream gradient `[1, T]`."""
    generator = torch.Generator(device).manual_seed(0)
    hidden = torch.randn(1, tokens, width, generator=generator, device=device, dtype=dtype).requires_grad_(True)
    head = torch.nn.Linear(width, vocab, bias=bias, device=device, dtype=dtype)
    labels = torch.randint(0, vocab, (1, tokens), generator=generator, device=device)
    labels[:, ::4] = IGNORE_INDEX
    upstream = torch.randn(1, tokens, generator=generator, device=device)
    return hidden, head, labels, upstream


def _loss_and_grads(nll: torch.Tensor, upstream: torch.Tensor, hidden: torch.Tensor, head: torch.nn.Module) -> list:
    grads = torch.autograd.grad((nll * upstream).sum(), [hidden, *head.parameters()])
    return [nll.detach(), *grads]


@pytest.mark.parametrize(
    ("tokens", "chunk", "bias"), [(37, 8, False), (37, 8, True), (5, 64, False), (32, 16, True), (1, 1, False)]
)
def test_chunked_nll_and_gradients_match_the_full_logits_in_fp32(tokens: int, chunk: int, bias: bool) -> None:
    """Odd sizes: a last partial chunk, a chunk larger than the row, exact multiples; ignored labels give 0."""
    hidden, head, labels, upstream = _problem(tokens, 24, 97, bias, torch.float32)
    plain = _loss_and_grads(token_nll(head(hidden), labels), upstream, hidden, head)
    chunked_nll = chunked_token_nll(hidden, head, labels, chunk)
    chunked = _loss_and_grads(chunked_nll, upstream, hidden, head)
    assert chunked_nll.shape == labels.shape and chunked_nll.dtype == torch.float32
    assert torch.all(chunked_nll[labels == IGNORE_INDEX] == 0)
    for got, want in zip(chunked, plain, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_chunked_nll_under_bf16_autocast_matches_the_plain_path_under_it() -> None:
    """The head runs in bf16 under autocast on both paths (checkpoint replays autocast), the loss in fp32.

    The NLL is the same; the head's gradient is summed over chunks in fp32 rather than in one bf16 matmul
    output, so it agrees to bf16 rounding (1e-2 of its largest entry) rather than to 1e-5.
    """
    hidden, head, labels, upstream = _problem(29, 16, 53, True, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_nll = token_nll(head(hidden), labels)
        chunked_nll = chunked_token_nll(hidden, head, labels, 8)
    plain, chunked = (_loss_and_grads(nll, upstream, hidden, head) for nll in (plain_nll, chunked_nll))
    torch.testing.assert_close(chunked[0], plain[0], atol=1e-5, rtol=0)
    for got, want in zip(chunked[1:], plain[1:], strict=True):
        torch.testing.assert_close(got, want, atol=1e-2 * float(want.abs().max()), rtol=0)


def test_bad_chunk_size_or_label_shape_is_refused_naming_the_field() -> None:
    hidden, head, labels, _ = _problem(6, 8, 11, False, torch.float32)
    with pytest.raises(ContractError, match="trainer.loss_chunk_tokens"):
        chunked_token_nll(hidden, head, labels, 0)
    with pytest.raises(ContractError, match="labels"):
        chunked_token_nll(hidden, head, labels[:, :5], 4)


def _peak_and_grads(nll_of: object, hidden: torch.Tensor, head: torch.nn.Module, upstream: torch.Tensor) -> tuple:
    """Peak CUDA memory over forward and backward beyond what was allocated before, with the results."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    results = _loss_and_grads(nll_of(), upstream, hidden, head)  # type: ignore[operator]
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before, results


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunked_nll_on_a_qwen_sized_row_in_bf16_matches_and_peaks_far_lower() -> None:
    """16,384 tokens x 2,048 wide over Qwen's 151,936 vocabulary in bf16, chunks of 1,024 tokens (the default).

    Both paths run the head in bf16 and the loss in fp32, so they agree to bf16 rounding of the matmuls:
    NLL within 2e-2 absolute, gradients within 2e-2 of the largest gradient entry. The plain path's peak
    holds the row's bf16 and fp32 logits and their gradients (27.8 GiB measured on an H100); the chunked one,
    one chunk's logits (1,024 x 151,936) and the head's fp32 gradient accumulator (a few GiB).
    """
    hidden, head, labels, upstream = _problem(16384, 2048, 151936, False, torch.bfloat16, "cuda")
    head.weight.data.mul_(0.02 * 2048**0.5)  # logits of the scale of a trained model's, not Linear's tiny init
    chunked_peak, chunked = _peak_and_grads(
        lambda: chunked_token_nll(hidden, head, labels, 1024), hidden, head, upstream
    )
    plain_peak, plain = _peak_and_grads(lambda: token_nll(head(hidden), labels), hidden, head, upstream)
    print(f"peak beyond inputs: plain {plain_peak / 2**30:.2f} GiB, chunked {chunked_peak / 2**30:.2f} GiB")
    torch.testing.assert_close(chunked[0], plain[0], atol=2e-2, rtol=0)
    for got, want in zip(chunked[1:], plain[1:], strict=True):
        scale = float(want.abs().max())
        torch.testing.assert_close(got.float(), want.float(), atol=2e-2 * scale, rtol=0)
    assert chunked_peak < plain_peak / 4
    # The SFT form, gradients made in the forward pass, with fractional weights: the same tolerances.
    weights, params = upstream.abs(), [hidden, *head.parameters()]
    fused = torch.autograd.grad(chunked_weighted_nll(hidden, head, labels, weights, 1024), params)
    plain_weighted = torch.autograd.grad((token_nll(head(hidden), labels) * weights).sum(), params)
    for got, want in zip(fused, plain_weighted, strict=True):
        torch.testing.assert_close(got.float(), want.float(), atol=2e-2 * float(want.abs().max()), rtol=0)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_entropy_matches_the_softmax_entropy_and_leaves_the_gradients_alone(chunk: int) -> None:
    hidden, head, labels, upstream = _problem(37, 16, 50, bias=True, dtype=torch.float32)
    scores = chunked_token_scores(hidden, head, labels, chunk)
    expected = torch.distributions.Categorical(logits=head(hidden).detach()).entropy()
    torch.testing.assert_close(scores.entropy, expected, atol=1e-5, rtol=0)
    with_entropy = _loss_and_grads(scores.nll, upstream, hidden, head)
    without = _loss_and_grads(chunked_token_nll(hidden, head, labels, chunk), upstream, hidden, head)
    for got, want in zip(with_entropy, without, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert torch.equal(chunked_token_scores(hidden, head, labels, chunk, entropy=False).entropy, torch.zeros(1, 37))


@pytest.mark.parametrize(("chunk", "bias"), [(1, False), (5, True), (64, True)])
def test_chunked_entropy_gradient_matches_the_full_logits(chunk: int, bias: bool) -> None:
    """The RL entropy bonus differentiates the entropy: its gradient, alone and added to the NLL's, is the
    plain path's (dH/dz = -p (log p + H) from the recomputed chunk)."""
    hidden, head, labels, upstream = _problem(37, 16, 50, bias=bias, dtype=torch.float32)
    bonus = torch.randn(1, 37, generator=torch.Generator().manual_seed(1))
    logits = head(hidden)
    plain_entropy = torch.distributions.Categorical(logits=logits).entropy()
    for nll_weight in (0.0, 1.0):
        plain = (token_nll(logits, labels) * upstream * nll_weight + plain_entropy * bonus).sum()
        want = torch.autograd.grad(plain, [hidden, *head.parameters()], retain_graph=True)
        scores = chunked_token_scores(hidden, head, labels, chunk)
        chunked = (scores.nll * upstream * nll_weight + scores.entropy * bonus).sum()
        got = torch.autograd.grad(chunked, [hidden, *head.parameters()])
        for one, other in zip(got, want, strict=True):
            torch.testing.assert_close(one, other, atol=1e-5, rtol=0)


def test_frozen_head_gets_no_gradient_and_the_argmax_matches_the_logits() -> None:
    hidden, head, labels, upstream = _problem(29, 16, 50, bias=False, dtype=torch.float32)
    flat_hidden, flat_labels = hidden[0], labels[0].clamp(min=0)  # DFlash's shape: [N, H] and [N], no ignored
    frozen = head.weight.detach()
    scores = linear_token_scores(flat_hidden, frozen, None, flat_labels, 8)
    logits = torch.nn.functional.linear(flat_hidden, frozen)
    assert torch.equal(scores.predicted, logits.argmax(-1))
    expected = torch.nn.functional.cross_entropy(logits, flat_labels, reduction="none")
    torch.testing.assert_close(scores.nll, expected, atol=1e-5, rtol=0)
    (got,) = torch.autograd.grad((scores.nll * upstream[0]).sum(), [flat_hidden])
    (want,) = torch.autograd.grad((expected * upstream[0]).sum(), [flat_hidden])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("chunk", "bias"), [(8, False), (8, True), (64, False), (1, True)])
def test_weighted_nll_with_gradients_made_in_forward_matches_the_plain_path(chunk: int, bias: bool) -> None:
    hidden, head, labels, upstream = _problem(37, 16, 50, bias=bias, dtype=torch.float32)
    weights = upstream.abs()  # fractional token weights; the ignored labels' weights must not count
    fused = chunked_weighted_nll(hidden, head, labels, weights, chunk) * 0.37
    plain = (token_nll(head(hidden), labels) * weights).sum() * 0.37
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-6)
    params = [hidden, *head.parameters()]
    for got, want in zip(torch.autograd.grad(fused, params), torch.autograd.grad(plain, params), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    frozen = torch.nn.Linear(16, 50, bias=False)
    frozen.weight.requires_grad_(False)
    (grad,) = torch.autograd.grad(chunked_weighted_nll(hidden, frozen, labels, weights, chunk), [hidden])
    (want,) = torch.autograd.grad((token_nll(frozen(hidden), labels) * weights).sum(), [hidden])
    torch.testing.assert_close(grad, want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ContractError, match="labels/weights"):
        chunked_weighted_nll(hidden, head, labels, weights[:, :3], chunk)
