"""RL objectives as pure functions over packed rows: token-level policy gradient against the sampling policy.

Per token t that counts (weight w_t > 0: loss weight times sample weight, as in `foveal.trainer.training.loss`):
lp_t is the trainer's log-probability of the sampled token (the gradient flows through it), mu_t the
inference server's (the behaviour policy that sampled it), A_t the advantage, d_t = lp_t - mu_t, r_t = exp(d_t).

`trainer.loss.kind`:
  importance_sampling  l_t = -sg(min(r_t, C)) * A_t * lp_t                       C = importance_cap
      REINFORCE with a truncated importance weight (TIS). The weight corrects for the server and the trainer
      disagreeing (other kernels, or rollouts up to max_async_level steps stale); it is detached, so the
      gradient is -min(r_t, C) A_t grad(lp_t), and the truncation bounds its variance.
  ppo                  l_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)
      PPO's clipped surrogate per token, with the behaviour policy as the old one (one optimizer step per batch).
  gspo                 l_t = -min(s_i A_t, clip(s_i, 1 - eps_low, 1 + eps_high) A_t)   for every token t of sample i
      GSPO: one ratio per sequence, s_i = exp(w-weighted mean of d_t over sample i's tokens), with the samples
      of the packed row found by its cu_seqlens, clipped per sequence. (The paper clips at about 3e-4 / 4e-4,
      far tighter than PPO's defaults: set clip_low / clip_high accordingly.)
Where the trainer agrees with the server (r = 1), all three give the advantage-weighted NLL gradient -A_t grad(lp_t).

KL penalty (`kl_coef` > 0): kl_coef * k3_t per token, k3_t = exp(ref_t - lp_t) - (ref_t - lp_t) - 1, GRPO's
estimator of KL(policy || reference). This trainer loads no frozen reference model: the reference is the
behaviour policy (the inference logprobs), so the term is a soft trust region around the policy that sampled
the rollouts, not GRPO's pull towards the initial model. `reference_logprobs` replaces it when given.

Entropy bonus (`entropy_coef` > 0): -entropy_coef * H_t per token, H_t the entropy of the trainer's next-token
distribution at t. Group-normalized advantages give no signal once every sample of a group agrees, so an answer
the policy stopped sampling is never tried again (on the tiny `colors` job: blue images all answered "green" for
good); the bonus keeps some probability on the alternatives while the advantages decide between them.

Normalization is the SFT loss's: each micro-batch divides its weighted token-loss sum by the step's counted
tokens over all micro-batches and ranks, so gradient accumulation and FSDP ranks add up to one big batch.
That is a token-level mean (as in DAPO); under GSPO a longer sequence therefore weighs more than in the
paper's per-sequence mean.

Measured on counted tokens without gradient (summed here; the loop divides by the step's token count):
  mismatch_kl  k3 estimate of KL(inference || trainer): r_t - 1 - d_t >= 0, unbiased on tokens the server
               sampled, and 0 exactly when the trainer reproduces the server's logprobs;
  ratio        r_t (gspo: s_i at each token of sample i);
  clipped      tokens whose ratio is outside [1 - eps_low, 1 + eps_high] (importance_sampling: above C).
A token that does not count gets d_t = 0 before exp, so a prompt token's placeholder logprob cannot overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foveal.configs.trainer import RL_LOSS_KINDS, LossConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch
from foveal.trainer.training.loss import packed_token_weights, token_nll


@dataclass(frozen=True)
class PolicyStats:
    """Sums over counted tokens of one micro-batch (or, added up, of a whole step on all ranks)."""

    tokens: float = 0.0
    mismatch_kl: float = 0.0
    ratio: float = 0.0
    clipped: float = 0.0
    entropy: float = 0.0

    def __add__(self, other: PolicyStats) -> PolicyStats:
        return PolicyStats(*(a + b for a, b in zip(self.as_list(), other.as_list(), strict=True)))

    def as_list(self) -> list[float]:
        """The sums in field order, for one all-reduce over ranks (`PolicyStats(*reduced)` rebuilds them)."""
        return [self.tokens, self.mismatch_kl, self.ratio, self.clipped, self.entropy]

    def means(self) -> dict[str, float]:
        """Per-token means; a step without counted tokens reports 0 KL, ratio 1, nothing clipped and 0 entropy."""
        if self.tokens == 0:
            return {"mismatch_kl": 0.0, "ratio_mean": 1.0, "clip_fraction": 0.0, "entropy": 0.0}
        return {
            "mismatch_kl": self.mismatch_kl / self.tokens,
            "ratio_mean": self.ratio / self.tokens,
            "clip_fraction": self.clipped / self.tokens,
            "entropy": self.entropy / self.tokens,
        }


@dataclass(frozen=True)
class PolicyLoss:
    """This micro-batch's term of the step loss (call backward on `loss`) and its detached statistics."""

    loss: torch.Tensor
    stats: PolicyStats


def rl_loss(
    logits: torch.Tensor,
    batch: PackedBatch,
    step_loss_tokens: int,
    config: LossConfig,
    reference_logprobs: torch.Tensor | None = None,
) -> PolicyLoss:
    """`policy_loss` of a packed row from the model's logits."""
    entropy = torch.distributions.Categorical(logits=logits.float()).entropy() if config.entropy_coef > 0 else None
    nll = token_nll(logits, batch.labels)
    return rl_nll_loss(nll, batch, step_loss_tokens, config, reference_logprobs, entropy)


def rl_nll_loss(
    nll: torch.Tensor,
    batch: PackedBatch,
    step_loss_tokens: int,
    config: LossConfig,
    reference_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> PolicyLoss:
    """`policy_loss` of a packed row from the trainer's token NLL `[1, T]` (logprob = -nll): what the RL
    training loop calls backward on. `entropy` (`[1, T]`, the policy's entropy per position) feeds the
    statistics and, with `entropy_coef` > 0, the entropy bonus (then it must be given, with its gradient)."""
    for name in ("logprobs", "advantages"):
        if getattr(batch, name) is None:
            raise ContractError(name, None, f"{name} on every sample of an RL batch (samples {batch.sample_ids[:3]})")
    return policy_loss(
        trainer_logprobs=-nll,
        inference_logprobs=batch.logprobs,
        advantages=batch.advantages,
        weights=packed_token_weights(batch),
        cu_seqlens=batch.cu_seqlens,
        config=config,
        step_loss_tokens=step_loss_tokens,
        reference_logprobs=reference_logprobs,
        entropy=entropy,
    )


def policy_loss(
    *,
    trainer_logprobs: torch.Tensor,
    inference_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    cu_seqlens: torch.Tensor,
    config: LossConfig,
    step_loss_tokens: int,
    reference_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> PolicyLoss:
    """The objective of `config.kind` on `[1, T]` rows, divided by the step's counted tokens (see the module doc)."""
    if config.kind not in RL_LOSS_KINDS:
        raise ContractError("trainer.loss.kind", config.kind, f"one of {list(RL_LOSS_KINDS)} for an RL loss")
    if step_loss_tokens < 0:
        raise ContractError("step_loss_tokens", step_loss_tokens, "a non-negative token count")
    named = {"inference_logprobs": inference_logprobs, "advantages": advantages, "weights": weights}
    if reference_logprobs is not None:
        named["reference_logprobs"] = reference_logprobs
    if entropy is not None:
        named["entropy"] = entropy
    elif config.entropy_coef > 0:
        raise ContractError("entropy", None, "the entropy per position when trainer.loss.entropy_coef > 0")
    for name, tensor in named.items():
        if tensor.shape != trainer_logprobs.shape:
            expected = f"the shape of the trainer logprobs {list(trainer_logprobs.shape)}"
            raise ContractError(name, list(tensor.shape), expected)
    counted = weights > 0
    log_ratio = torch.where(counted, trainer_logprobs - inference_logprobs.to(trainer_logprobs.dtype), 0.0)
    if config.kind == "gspo":
        ratio = torch.exp(sequence_mean(log_ratio, weights, cu_seqlens))
    else:
        ratio = torch.exp(log_ratio)
    advantages = advantages.to(trainer_logprobs.dtype)
    if config.kind == "importance_sampling":
        token_loss = -ratio.clamp(max=config.importance_cap).detach() * advantages * trainer_logprobs
        clipped = ratio > config.importance_cap
    else:
        bounded = ratio.clamp(1.0 - config.clip_low, 1.0 + config.clip_high)
        token_loss = -torch.minimum(ratio * advantages, bounded * advantages)
        clipped = (ratio < 1.0 - config.clip_low) | (ratio > 1.0 + config.clip_high)
    if config.kl_coef > 0:
        reference = inference_logprobs if reference_logprobs is None else reference_logprobs
        to_reference = torch.where(counted, reference.to(trainer_logprobs.dtype) - trainer_logprobs, 0.0)
        token_loss = token_loss + config.kl_coef * k3(to_reference)
    if config.entropy_coef > 0:
        token_loss = token_loss - config.entropy_coef * entropy
    loss = (token_loss * weights.to(token_loss.dtype)).sum() / max(step_loss_tokens, 1)
    entropy = torch.zeros_like(trainer_logprobs) if entropy is None else entropy
    return PolicyLoss(loss, _stats(log_ratio, ratio, clipped, counted, entropy))


def sequence_mean(values: torch.Tensor, weights: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Each token's sample's weighted mean of `values` (`[1, T]`); 0 for a sample without weight.

    Samples are the `cu_seqlens` segments of the row, so no value leaks into another sample's mean.
    """
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.long)
    if int(cu_seqlens[-1]) != values.shape[-1]:
        raise ContractError("cu_seqlens", int(cu_seqlens[-1]), f"ending at the row length {values.shape[-1]}")
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=values.device), lengths.to(values.device))
    flat_values, flat_weights = values.reshape(-1), weights.reshape(-1).to(values.dtype)
    total = values.new_zeros(len(lengths)).index_add(0, segment, flat_values * flat_weights)
    weight = values.new_zeros(len(lengths)).index_add(0, segment, flat_weights)
    mean = torch.where(weight > 0, total / weight.clamp(min=torch.finfo(values.dtype).tiny), 0.0)
    return mean[segment].view(values.shape)


def k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """exp(x) - x - 1 >= 0: with x = log(q/p) on samples from p, an unbiased, low-variance estimate of KL(p || q)."""
    return torch.expm1(log_ratio) - log_ratio


def _stats(
    log_ratio: torch.Tensor, ratio: torch.Tensor, clipped: torch.Tensor, counted: torch.Tensor, entropy: torch.Tensor
) -> PolicyStats:
    """The sums over counted tokens, read from the device in one transfer (each read waits for the GPU)."""
    with torch.no_grad():
        mask = counted.to(ratio.dtype)
        values = (mask, k3(log_ratio) * mask, ratio * mask, (clipped & counted).to(ratio.dtype), entropy * mask)
        return PolicyStats(*torch.stack([value.sum() for value in values]).tolist())
