"""Per-token NLL through the LM head a chunk of tokens at a time, so `[T, vocab]` logits never exist at once.

The plain path (`packed_logits` then `token_nll`) holds the row's fp32 logits: 38.7 GiB at peak for a
16,384-token row over Qwen's 151,936-token vocabulary. `_LinearCrossEntropy` runs the head `chunk_tokens`
rows at a time: forward keeps only each row's logsumexp, and backward recomputes one chunk's logits, turns
them into the cross entropy's gradient in place (softmax minus the one-hot label, times the upstream
gradient) and accumulates the hidden states' and the head's gradients chunk by chunk. The head's matmuls
run in the dtype autocast gives them (as the plain path's `head(hidden)`), the softmax in fp32.

Own chunked implementation rather than liger-kernel's fused linear cross entropy (now the optional `gpu` extra,
used for RMSNorm/SwiGLU): liger's returns a reduced loss, while the RL loss needs each token's log-probability
(and entropy) before its nonlinear objective, Tinker's losses each datum's, and DFlash a frozen head with argmax;
and this one runs (and is tested) on the CPU too. For the SFT loss, whose upstream gradient per token is its
weight, `chunked_weighted_nll` makes the gradients in the forward pass as liger does (no recomputed logits).
Cost of the recomputing form, head + loss forward and backward alone on an H100 (16,384 x 2,048 x 151,936, bf16):
81 ms plain at 27.8 GiB peak; 139 ms at 2.4 GiB in chunks of 1,024; 122 ms at 5.9 GiB in chunks of 4,096.
`torch.utils.checkpoint` per chunk measured the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import IGNORE_INDEX, PackedBatch
from foveal.trainer.model.forward import packed_hidden, packed_logits
from foveal.trainer.training.loss import packed_token_weights, sft_nll_loss, token_nll


@dataclass(frozen=True)
class TokenScores:
    """Per-token scores of a packed row under the model: `[1, T]` fp32 each."""

    nll: torch.Tensor
    """Negative log-likelihood of each label (0 at IGNORE_INDEX); differentiable."""
    entropy: torch.Tensor
    """Entropy of each position's next-token distribution, in nats; differentiable (the RL entropy bonus)."""
    predicted: torch.Tensor
    """Each position's most likely token (argmax of its logits), int64."""


def chunked_token_nll(
    hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """`token_nll(head(hidden), labels)` (`[1, T]` fp32, 0 at IGNORE_INDEX) computed `chunk_tokens` rows at a time.

    `hidden` is `[1, T, H]` (after the model's final norm); `head` is the LM head (`get_output_embeddings()`),
    a linear layer whose `weight` is `[vocab, H]`, with or without a bias.
    """
    return chunked_token_scores(hidden, head, labels, chunk_tokens, entropy=False).nll


def chunked_token_scores(
    hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, chunk_tokens: int, entropy: bool = True
) -> TokenScores:
    """`chunked_token_nll` and, when asked, each position's entropy from the same chunk of logits (an extra
    elementwise pass over it; no second matmul). Without `entropy` the entropy is all zeros."""
    return linear_token_scores(hidden, head.weight, head.bias, labels, chunk_tokens, entropy)


def linear_token_scores(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    chunk_tokens: int,
    entropy: bool = False,
) -> TokenScores:
    """The scores of `labels` (any shape) under `softmax(hidden @ weight.T + bias)` (`hidden`: that shape plus
    the width), `chunk_tokens` positions at a time. A `weight` without `requires_grad` (a frozen head) gets no
    gradient computed."""
    if chunk_tokens < 1:
        raise ContractError("trainer.loss_chunk_tokens", chunk_tokens, "a positive chunk size for the chunked loss")
    if hidden.shape[:-1] != labels.shape:
        expected = f"the shape of the hidden states without their width {list(hidden.shape[:-1])}"
        raise ContractError("labels", list(labels.shape), expected)
    flat = hidden.reshape(-1, hidden.shape[-1])
    outputs = _LinearCrossEntropy.apply(flat, weight, bias, labels.reshape(-1), chunk_tokens, entropy)
    return TokenScores(*(output.view(labels.shape) for output in outputs))


class _LinearCrossEntropy(torch.autograd.Function):
    """NLL `[T]` of `labels` under `softmax(hidden @ weight.T + bias)`, never holding more than a chunk's logits;
    and the entropy `[T]` of that softmax when `with_entropy`, differentiable too: with p = softmax(z),
    dH/dz = -p * (log p + H), added to the cross entropy's gradient from the same recomputed chunk."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        chunk_tokens: int,
        with_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ignored = labels == IGNORE_INDEX
        targets = labels.masked_fill(ignored, 0)
        lse = hidden.new_empty(labels.shape, dtype=torch.float32)
        picked = hidden.new_empty(labels.shape, dtype=torch.float32)
        entropy = hidden.new_zeros(labels.shape, dtype=torch.float32)
        predicted = torch.empty_like(targets)
        for span in _spans(len(labels), chunk_tokens):
            logits = F.linear(hidden[span], weight, bias)  # autocast picks the matmul's dtype, as for `head(hidden)`
            ctx.compute_dtype = logits.dtype
            logits = logits.float()
            lse[span] = logits.logsumexp(-1)
            picked[span] = logits.gather(1, targets[span, None]).squeeze(1)
            predicted[span] = logits.argmax(-1)
            if with_entropy:  # H = lse - sum(p * logits)
                entropy[span] = lse[span] - (logits - lse[span, None]).exp_().mul_(logits).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, ignored, lse, entropy)
        ctx.chunk_tokens = chunk_tokens
        ctx.set_materialize_grads(False)  # an unused entropy arrives as None: no extra pass over the logits
        ctx.mark_non_differentiable(predicted)
        return torch.where(ignored, 0.0, lse - picked), entropy, predicted

    @staticmethod
    def backward(
        ctx: Any, grad_nll: torch.Tensor | None, grad_entropy: torch.Tensor | None, *_: Any
    ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, ignored, lse, entropy = ctx.saved_tensors
        dtype = ctx.compute_dtype
        grad_nll = torch.zeros_like(lse) if grad_nll is None else grad_nll
        scale = torch.where(ignored, 0.0, grad_nll.float())
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = _accumulator(weight, ctx.needs_input_grad[1])
        grad_bias = _accumulator(bias, ctx.needs_input_grad[2])
        grads = _ChunkGradients(grad_hidden, grad_weight, grad_bias)
        for span in _spans(len(targets), ctx.chunk_tokens):
            h = hidden[span].to(dtype)
            log_probs = F.linear(h, w, b).float().sub_(lse[span, None])
            if grad_entropy is not None:  # the entropy's share first, while log p is still at hand
                upstream = -grad_entropy[span, None].float()
                extra = log_probs.add(entropy[span, None]).mul_(log_probs.exp()).mul_(upstream)
                grads.add(span, log_probs.exp_(), targets[span], scale[span], h, w, extra)
            else:
                grads.add(span, log_probs.exp_(), targets[span], scale[span], h, w)  # softmax, in place
        return (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
        )


def chunked_weighted_nll(
    hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, weights: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """`sum(weights * chunked_token_nll(...))`, a scalar, with the head's and the hidden states' gradients computed
    in the forward pass: when each token's upstream gradient is its weight, known before backward (the SFT loss),
    the logits need not be recomputed, so the head costs three matmuls per chunk as on the plain path, not four.
    Backward only scales the stored gradients by the scalar's upstream gradient.
    """
    if chunk_tokens < 1:
        raise ContractError("trainer.loss_chunk_tokens", chunk_tokens, "a positive chunk size for the chunked loss")
    if hidden.shape[:-1] != labels.shape or weights.shape != labels.shape:
        expected = f"the shape of the hidden states without their width {list(hidden.shape[:-1])}"
        raise ContractError("labels/weights", [list(labels.shape), list(weights.shape)], expected)
    flat = hidden.reshape(-1, hidden.shape[-1])
    return _WeightedLinearCrossEntropy.apply(
        flat, head.weight, head.bias, labels.reshape(-1), weights.reshape(-1).float(), chunk_tokens
    )


class _WeightedLinearCrossEntropy(torch.autograd.Function):
    """`sum(weights * NLL)` under `softmax(hidden @ weight.T + bias)`, gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        weights: torch.Tensor,
        chunk_tokens: int,
    ) -> torch.Tensor:
        ignored = labels == IGNORE_INDEX
        targets = labels.masked_fill(ignored, 0)
        scale = torch.where(ignored, 0.0, weights)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = _accumulator(weight, ctx.needs_input_grad[1])
        grad_bias = _accumulator(bias, ctx.needs_input_grad[2])
        grads = _ChunkGradients(grad_hidden, grad_weight, grad_bias)
        total = hidden.new_zeros((), dtype=torch.float32)
        w = None
        for span in _spans(len(labels), chunk_tokens):
            logits = F.linear(hidden[span], weight, bias)  # autocast picks the matmul's dtype, as for `head(hidden)`
            dtype = logits.dtype
            w = weight.to(dtype) if w is None else w  # cast once, not once per chunk
            logits = logits.float()
            lse = logits.logsumexp(-1)
            picked = logits.gather(1, targets[span, None]).squeeze(1)
            total += ((lse - picked) * scale[span]).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            grads.add(span, probs, targets[span], scale[span], hidden[span].to(dtype), w)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            grad_hidden * grad_total.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * grad_total).to(weight_dtype),
            None if grad_bias is None else (grad_bias * grad_total).to(bias_dtype),
            None,
            None,
            None,
        )


@dataclass(frozen=True)
class _ChunkGradients:
    """Where one chunk's cross-entropy gradient goes: the hidden states' rows, and the head's sums (None: frozen)."""

    hidden: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    def add(
        self,
        span: slice,
        probs: torch.Tensor,
        targets: torch.Tensor,
        scale: torch.Tensor,
        h: torch.Tensor,
        w: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> None:
        """Turn the chunk's fp32 softmax `probs` into `scale * (softmax - onehot)` (+ `extra`, another gradient of
        the logits) in place, then back through the head in `h`'s dtype: the rows `span` of the hidden gradient,
        and the head's sums."""
        probs[torch.arange(len(probs), device=probs.device), targets] -= 1.0
        probs.mul_(scale[:, None])
        grad_logits = (probs if extra is None else probs.add_(extra)).to(h.dtype)
        self.hidden[span] = grad_logits @ w
        if self.weight is not None:
            self.weight.add_(grad_logits.T @ h)
        if self.bias is not None:
            self.bias.add_(grad_logits.float().sum(0))


def _accumulator(parameter: torch.Tensor | None, needed: bool) -> torch.Tensor | None:
    """An fp32 gradient sum for a head parameter that takes a gradient; None for a frozen or absent one."""
    if parameter is None or not needed:
        return None
    return torch.zeros(parameter.shape, dtype=torch.float32, device=parameter.device)


def _spans(tokens: int, chunk_tokens: int) -> list[slice]:
    return [slice(start, start + chunk_tokens) for start in range(0, tokens, chunk_tokens)]


def packed_token_scores(
    model: torch.nn.Module, batch: PackedBatch, chunk_tokens: int, entropy_gradient: bool = False
) -> TokenScores:
    """`packed_token_nll` and each position's entropy (see `chunked_token_scores`; from the full logits on the
    plain path, where the entropy keeps its graph, another `[T, vocab]` of memory, only with `entropy_gradient`)."""
    head = model.get_output_embeddings()
    if chunks_through(head, chunk_tokens):
        return chunked_token_scores(packed_hidden(model, batch), head, batch.labels, chunk_tokens)
    logits = packed_logits(model, batch)
    with torch.set_grad_enabled(entropy_gradient and torch.is_grad_enabled()):
        entropy = torch.distributions.Categorical(logits=logits.float()).entropy()
    return TokenScores(token_nll(logits, batch.labels), entropy, logits.detach().argmax(-1))


def packed_token_nll(
    model: torch.nn.Module, batch: PackedBatch, chunk_tokens: int, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token NLL `[1, T]` of a packed row's labels (or of `labels`, `[1, T]`): chunked through the head, or
    from full logits when `chunk_tokens` is 0 or the head cannot be chunked (`chunks_through`).

    Runs the model forward under the caller's autocast; the loss math is fp32 either way.
    """
    labels = batch.labels if labels is None else labels
    head = model.get_output_embeddings()
    if chunks_through(head, chunk_tokens):
        return chunked_token_nll(packed_hidden(model, batch), head, labels, chunk_tokens)
    return token_nll(packed_logits(model, batch), labels)


def packed_sft_loss(
    model: torch.nn.Module, batch: PackedBatch, step_loss_tokens: int, chunk_tokens: int
) -> torch.Tensor:
    """The SFT micro-batch loss `sft_nll_loss(packed_token_nll(...))`, through `chunked_weighted_nll` when the head
    can be chunked (the head's gradients made in the forward pass), else from the full logits."""
    head = model.get_output_embeddings()
    if not chunks_through(head, chunk_tokens):
        return sft_nll_loss(token_nll(packed_logits(model, batch), batch.labels), batch, step_loss_tokens)
    if step_loss_tokens < 0:
        raise ContractError("step_loss_tokens", step_loss_tokens, "a non-negative token count")
    weights = packed_token_weights(batch)
    total = chunked_weighted_nll(packed_hidden(model, batch), head, batch.labels, weights, chunk_tokens)
    return total / max(step_loss_tokens, 1)


def chunks_through(head: torch.nn.Module, chunk_tokens: int) -> bool:
    """Whether the chunked path computes what `head(hidden)` does: it reads the head's weight and bias directly,
    so a head whose forward is hooked or replaced (a LoRA on the unembedding) takes the full-logits path."""
    plain = isinstance(head, torch.nn.Linear) and not head._forward_hooks and not head._forward_pre_hooks
    return chunk_tokens > 0 and plain and "forward" not in head.__dict__
