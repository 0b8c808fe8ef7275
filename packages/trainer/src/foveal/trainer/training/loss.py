"""The SFT objective as pure functions over packed rows: weighted token cross entropy, normalized per step.

Every token of a packed row carries a weight: the renderer's loss weight for that token (1 on assistant
tokens, 0 elsewhere, 0 at each sample's last position because it predicts nothing) times its sample's
weight (0 for a sample whose image was replaced under `placeholder_zero_loss`). A token "counts" when
its weight is positive.

The loss of an optimizer step is the weighted sum of token losses over ALL its micro-batches (on all
ranks) divided by the step's number of counted tokens. Each micro-batch therefore divides its own sum by
the step-wide count, not by its own: the gradients of the micro-batches then add up to the gradient of
one big batch, however the samples were packed or split across ranks. A step whose tokens all weigh 0
divides by 1 and contributes nothing, rather than dividing by zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import IGNORE_INDEX, PackedBatch


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each label, `[1, T]` in fp32 (0 where the label is IGNORE_INDEX).

    Computed in fp32 even under bf16 autocast: the log-softmax over a large vocabulary loses the small
    probabilities in bf16.
    """
    if logits.shape[:-1] != labels.shape:
        raise ContractError(
            "labels", list(labels.shape), f"the shape of logits without the vocabulary {list(logits.shape[:-1])}"
        )
    flat = logits.reshape(-1, logits.shape[-1]).float()
    nll = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return nll.view(labels.shape)


def token_weights(loss_weights: torch.Tensor, sample_weights: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Per-token weight `[1, T]`: each token's loss weight times the weight of the sample it belongs to."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.long)
    if sample_weights.shape != lengths.shape:
        raise ContractError("sample_weights", list(sample_weights.shape), f"one weight per sample ({len(lengths)})")
    if int(cu_seqlens[-1]) != loss_weights.shape[-1]:
        raise ContractError("cu_seqlens", int(cu_seqlens[-1]), f"ending at the row length {loss_weights.shape[-1]}")
    per_token = torch.repeat_interleave(sample_weights.to(loss_weights.dtype), lengths.to(loss_weights.device))
    return loss_weights * per_token.view(loss_weights.shape)


def count_loss_tokens(weights: torch.Tensor) -> int:
    """How many tokens carry loss (positive weight): the normalizer contribution of one micro-batch."""
    return int((weights > 0).sum())


def weighted_nll_sum(nll: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of weight * nll over the row: the micro-batch's share of the step loss before normalizing."""
    if nll.shape != weights.shape:
        raise ContractError("weights", list(weights.shape), f"the shape of the token losses {list(nll.shape)}")
    return (nll * weights.to(nll.dtype)).sum()


def micro_batch_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, step_loss_tokens: int
) -> torch.Tensor:
    """This micro-batch's term of the step loss: its weighted token losses over the step's counted tokens.

    Summing this over every micro-batch of the step (and every rank) gives exactly the mean weighted
    token loss of the whole step, so backward on each term accumulates one big batch's gradient.
    """
    return nll_micro_batch_loss(token_nll(logits, labels), weights, step_loss_tokens)


def nll_micro_batch_loss(nll: torch.Tensor, weights: torch.Tensor, step_loss_tokens: int) -> torch.Tensor:
    """`micro_batch_loss` from token losses already computed (`token_nll`, or the chunked head's)."""
    if step_loss_tokens < 0:
        raise ContractError("step_loss_tokens", step_loss_tokens, "a non-negative token count")
    return weighted_nll_sum(nll, weights) / max(step_loss_tokens, 1)


def packed_token_weights(batch: PackedBatch) -> torch.Tensor:
    """The per-token weights of a packed row (loss weights times sample weights)."""
    return token_weights(batch.loss_weights, batch.sample_weights, batch.cu_seqlens)


def local_loss_tokens(batches: Sequence[PackedBatch]) -> int:
    """Counted tokens of this rank's micro-batches; summed over ranks it is the step's normalizer."""
    return sum(count_loss_tokens(packed_token_weights(batch)) for batch in batches)


def sft_loss(logits: torch.Tensor, batch: PackedBatch, step_loss_tokens: int) -> torch.Tensor:
    """`micro_batch_loss` of a packed row from its logits."""
    return sft_nll_loss(token_nll(logits, batch.labels), batch, step_loss_tokens)


def sft_nll_loss(nll: torch.Tensor, batch: PackedBatch, step_loss_tokens: int) -> torch.Tensor:
    """`micro_batch_loss` of a packed row from its token NLL `[1, T]`: what the training loop calls backward on."""
    return nll_micro_batch_loss(nll, packed_token_weights(batch), step_loss_tokens)
