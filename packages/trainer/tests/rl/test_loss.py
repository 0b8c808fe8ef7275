"""The RL losses against a hand-computed per-token reference (with fractional weights, its gradient too), their
gradients at ratio 1, and packing invariance."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.configs.trainer import RL_LOSS_KINDS, LossConfig
from foveal.renderers.errors import ContractError
from foveal.trainer.data.collate import PackedBatch, PackSample, collate_packed
from foveal.trainer.data.positions import TextPositions
from foveal.trainer.training.loss import local_loss_tokens, packed_token_weights, token_nll
from foveal.trainer.rl.loss import PolicyStats, policy_loss, rl_loss, sequence_mean

VOCAB = 7
KINDS = RL_LOSS_KINDS  # every RL objective the config accepts, so a new kind is held to the same references
TOKEN_WEIGHTS = (0.25, 0.5, 1.5, 1.0)  # cycled over each completion: several different weights in every sample
SAMPLE_WEIGHTS = (1.5, 0.5, 0.0, 0.75)


def random_samples(seed: int, count: int, max_len: int = 8) -> list[PackSample]:
    """Samples with prompt tokens (weight 0) then completion tokens, inference logprobs and advantages."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(count):
        length = int(torch.randint(3, max_len + 1, (1,), generator=generator))
        prompt = int(torch.randint(1, length - 1, (1,), generator=generator))
        ids = torch.randint(0, VOCAB, (length,), generator=generator).tolist()
        weights = [0.0] * prompt + [1.0] * (length - prompt)
        logprobs = (-torch.rand(length, generator=generator) * 3).tolist()
        advantage = float(torch.randn(1, generator=generator))
        advantages = [0.0] * prompt + [advantage] * (length - prompt)
        samples.append(PackSample(f"s{i}", ids, weights, logprobs=logprobs, advantages=advantages))
    return samples


def pack(samples: list[PackSample]) -> PackedBatch:
    return collate_packed(samples, TextPositions())


def random_logits(batch: PackedBatch, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, batch.num_tokens, VOCAB, generator=generator, dtype=torch.float64).requires_grad_(True)


def fractional_samples(seed: int) -> list[PackSample]:
    """`random_samples` with completion weights cycling through TOKEN_WEIGHTS and one of SAMPLE_WEIGHTS each."""
    samples = random_samples(seed, count=len(SAMPLE_WEIGHTS))
    out = []
    for sample, sample_weight in zip(samples, SAMPLE_WEIGHTS, strict=True):
        prompt = sum(1 for w in sample.loss_weights if w == 0)
        completion = len(sample.token_ids) - prompt
        weights = [0.0] * prompt + [TOKEN_WEIGHTS[i % len(TOKEN_WEIGHTS)] for i in range(completion)]
        out.append(dataclasses.replace(sample, loss_weights=weights, sample_weight=sample_weight))
    return out


def near_policy(samples: list[PackSample], logits: torch.Tensor, seed: int, spread: float) -> list[PackSample]:
    """The samples with the server's logprobs within `spread` of the trainer's under `logits`: most ratios inside
    the clip range (where each token's weight shows in loss and gradient), a few outside it."""
    generator = torch.Generator().manual_seed(seed)
    own = torch.log_softmax(logits.detach()[0], dim=-1)
    out, start = [], 0
    for sample in samples:
        logprobs = list(sample.logprobs)
        for t in range(len(sample.token_ids) - 1):
            noise = float(torch.rand(1, generator=generator, dtype=torch.float64)) * 2 - 1
            logprobs[t + 1] = float(own[start + t, sample.token_ids[t + 1]]) + spread * noise
        out.append(dataclasses.replace(sample, logprobs=logprobs))
        start += len(sample.token_ids)
    return out


def naive_counted_targets(samples: list[PackSample], logits: torch.Tensor) -> list[list[tuple]]:
    """Per sample, in Python floats, each counted target: (row position, token, lp, mu, advantage, weight),
    with the weight its loss weight times its sample's weight."""
    rows = logits.detach()[0].tolist()
    per_sample, start = [], 0
    for sample in samples:
        tokens = []
        for t in range(len(sample.token_ids) - 1):
            weight = sample.loss_weights[t + 1] * sample.sample_weight
            if weight > 0:
                row, token = rows[start + t], sample.token_ids[t + 1]
                lp = row[token] - math.log(sum(math.exp(x) for x in row))
                tokens.append((start + t, token, lp, sample.logprobs[t + 1], sample.advantages[t + 1], weight))
        per_sample.append(tokens)
        start += len(sample.token_ids)
    return per_sample


def naive_step_loss(samples: list[PackSample], logits: torch.Tensor, config: LossConfig) -> float:
    """Token by token in Python floats: log-softmax, ratio, the kind's surrogate, KL, over the step's counted tokens."""
    total, counted = 0.0, 0
    for targets in naive_counted_targets(samples, logits):
        tokens = [(lp, mu, advantage, weight) for _, _, lp, mu, advantage, weight in targets]
        if config.kind == "gspo" and tokens:
            seq = math.exp(sum(w * (lp - mu) for lp, mu, _, w in tokens) / sum(w for *_, w in tokens))
        for lp, mu, advantage, weight in tokens:
            ratio = seq if config.kind == "gspo" else math.exp(lp - mu)
            if config.kind == "importance_sampling":
                value = -min(ratio, config.importance_cap) * advantage * lp
            else:
                bounded = min(max(ratio, 1 - config.clip_low), 1 + config.clip_high)
                value = -min(ratio * advantage, bounded * advantage)
            value += config.kl_coef * (math.exp(mu - lp) - (mu - lp) - 1)
            total += weight * value
            counted += 1
    return total / max(counted, 1)


def naive_step_gradient(samples: list[PackSample], logits: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """d loss / d logits derived by hand, in Python floats: per counted token the derivative g of its weighted term
    in its logprob lp, then d lp / d logits = onehot(token) - softmax(row).

    importance_sampling: g = -w min(r, C) A (the importance weight held fixed); ppo: g = -w r A where the unclipped
    branch is the minimum, else 0; gspo: through s = exp(sum_t w_t d_t / sum_t w_t), so token t of a sample gets
    (w_t / sum w) * sum_t' (-w_t' s A_t' where unclipped); KL: + kl_coef w (1 - exp(mu - lp)).
    """
    rows = logits.detach()[0].tolist()
    grad = [[0.0] * VOCAB for _ in rows]
    per_sample = naive_counted_targets(samples, logits)
    counted = sum(len(targets) for targets in per_sample)
    for targets in per_sample:
        if not targets:
            continue
        total_weight = sum(t[-1] for t in targets)
        seq = math.exp(sum(w * (lp - mu) for _, _, lp, mu, _, w in targets) / total_weight)
        seq_slope = 0.0  # d (the sample's weighted gspo terms) / d log s
        for _, _, _, _, advantage, weight in targets:
            bounded = min(max(seq, 1 - config.clip_low), 1 + config.clip_high)
            seq_slope += -weight * seq * advantage if seq * advantage <= bounded * advantage else 0.0
        for position, token, lp, mu, advantage, weight in targets:
            ratio = math.exp(lp - mu)
            if config.kind == "importance_sampling":
                slope = -weight * min(ratio, config.importance_cap) * advantage
            elif config.kind == "ppo":
                bounded = min(max(ratio, 1 - config.clip_low), 1 + config.clip_high)
                slope = -weight * ratio * advantage if ratio * advantage <= bounded * advantage else 0.0
            else:
                slope = weight / total_weight * seq_slope
            slope += config.kl_coef * weight * (1 - math.exp(mu - lp))
            row = rows[position]
            z = sum(math.exp(x) for x in row)
            for v in range(VOCAB):
                grad[position][v] += slope * ((v == token) - math.exp(row[v]) / z) / max(counted, 1)
    return torch.tensor([grad], dtype=logits.dtype)


def step_tokens(batch: PackedBatch) -> int:
    return local_loss_tokens([batch])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
def test_loss_equals_a_hand_computed_per_token_reference(kind: str, kl_coef: float) -> None:
    config = LossConfig(kind=kind, clip_low=0.2, clip_high=0.3, kl_coef=kl_coef, importance_cap=1.5)
    samples = random_samples(seed=3, count=4)
    batch = pack(samples)
    logits = random_logits(batch, seed=4)
    got = rl_loss(logits, batch, step_tokens(batch), config).loss
    assert got.item() == pytest.approx(naive_step_loss(samples, logits, config), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
def test_fractional_token_and_sample_weights_scale_loss_and_gradient_as_the_hand_derived_reference(
    kind: str, kl_coef: float
) -> None:
    """Loss weights 0.25 / 0.5 / 1.5 inside each completion and sample weights 1.5 / 0.5 / 0 / 0.75: every token's
    term is scaled by its weight, not by whether it counts, GSPO's sequence ratio is the weighted mean of its
    tokens' log-ratios, and the step still divides by the number of counted tokens. Near-policy logprobs keep
    most ratios inside the clip range, where a wrong weight changes the value and the gradient."""
    config = LossConfig(kind=kind, clip_low=0.2, clip_high=0.3, kl_coef=kl_coef, importance_cap=1.5)
    samples = fractional_samples(seed=7)
    logits = random_logits(pack(samples), seed=8)
    samples = near_policy(samples, logits, seed=9, spread=0.3)
    batch = pack(samples)
    weights = packed_token_weights(batch)
    assert len(set(weights[weights > 0].tolist())) >= 6  # products of both kinds of weight reach the packed row
    got = rl_loss(logits, batch, step_tokens(batch), config).loss
    (grad,) = torch.autograd.grad(got, logits)
    assert got.item() == pytest.approx(naive_step_loss(samples, logits, config), rel=1e-5, abs=1e-6)
    want = naive_step_gradient(samples, logits, config)
    assert want.abs().sum() > 0
    torch.testing.assert_close(grad, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kl_coef", [0.0, 0.5])
def test_at_ratio_one_the_gradient_is_the_advantage_weighted_nll_gradient(kind: str, kl_coef: float) -> None:
    samples = random_samples(seed=5, count=3)
    batch = pack(samples)
    logits = random_logits(batch, seed=6)
    own = (-token_nll(logits, batch.labels)).detach()  # the server agrees with the trainer exactly
    batch = PackedBatch(**{**batch.__dict__, "logprobs": own})
    tokens = step_tokens(batch)
    pg_loss = rl_loss(logits, batch, tokens, LossConfig(kind=kind, kl_coef=kl_coef)).loss
    (pg_grad,) = torch.autograd.grad(pg_loss, logits)
    weighted_nll = (token_nll(logits, batch.labels) * packed_token_weights(batch) * batch.advantages).sum() / tokens
    (nll_grad,) = torch.autograd.grad(weighted_nll, logits)
    assert torch.allclose(pg_grad, nll_grad, atol=1e-6)
    assert pg_grad.abs().sum() > 0


def test_mismatch_kl_is_zero_when_logprobs_agree_and_the_k3_estimate_otherwise() -> None:
    trainer = torch.tensor([[-0.5, -1.0, -2.0, -0.1]])
    weights = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    cu = torch.tensor([0, 4], dtype=torch.int32)
    common = {"advantages": torch.ones(1, 4), "weights": weights, "cu_seqlens": cu, "step_loss_tokens": 3,
              "config": LossConfig(kind="ppo")}  # fmt: skip
    same = policy_loss(trainer_logprobs=trainer, inference_logprobs=trainer.clone(), **common)
    assert same.stats == PolicyStats(tokens=3, mismatch_kl=0.0, ratio=3.0, clipped=0.0)
    assert same.stats.means() == {"mismatch_kl": 0.0, "ratio_mean": 1.0, "clip_fraction": 0.0, "entropy": 0.0}
    entropy = torch.tensor([[5.0, 0.5, 1.0, 3.0]])  # the prompt token's entropy is not counted
    assert policy_loss(trainer_logprobs=trainer, inference_logprobs=trainer, entropy=entropy, **common).stats.means()[
        "entropy"
    ] == pytest.approx(1.5)
    with pytest.raises(ContractError, match="entropy"):
        policy_loss(trainer_logprobs=trainer, inference_logprobs=trainer, entropy=entropy[:, :3], **common)

    inference = torch.tensor([[-9.0, -1.1, -1.5, -0.1]])  # the prompt token's value is never read
    other = policy_loss(trainer_logprobs=trainer, inference_logprobs=inference, **common)
    d = [0.1, -0.5, 0.0]
    assert other.stats.mismatch_kl == pytest.approx(sum(math.exp(x) - 1 - x for x in d), rel=1e-6)
    assert other.stats.ratio == pytest.approx(sum(math.exp(x) for x in d), rel=1e-6)
    assert other.stats.clipped == 1  # exp(-0.5) = 0.61 < 1 - 0.2


def test_ppo_clip_removes_the_gradient_of_tokens_pushed_past_the_bound() -> None:
    inference = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    trainer = torch.log(torch.tensor([[0.5, 0.8, 0.25]])).requires_grad_(True)  # ratios 1, 1.6, 0.5
    config = LossConfig(kind="ppo", clip_low=0.2, clip_high=0.2)
    result = policy_loss(trainer_logprobs=trainer, inference_logprobs=inference, advantages=torch.ones(1, 3),
                         weights=torch.ones(1, 3), cu_seqlens=torch.tensor([0, 3]), config=config,
                         step_loss_tokens=3)  # fmt: skip
    (grad,) = torch.autograd.grad(result.loss, trainer)
    # token 0: ratio 1, gradient -A r / N; token 1: above 1.2 with A > 0, clipped; token 2: below 0.8 with A > 0, kept.
    assert grad[0].tolist() == pytest.approx([-1 / 3, 0.0, -0.5 / 3], abs=1e-6)
    assert result.stats.clipped == 2


def test_importance_weight_is_truncated_and_detached() -> None:
    inference = torch.log(torch.tensor([[0.1, 0.5]]))
    trainer = torch.log(torch.tensor([[0.5, 0.5]])).requires_grad_(True)  # ratios 5 and 1
    config = LossConfig(kind="importance_sampling", importance_cap=2.0)
    result = policy_loss(trainer_logprobs=trainer, inference_logprobs=inference, advantages=torch.tensor([[2.0, -1.0]]),
                         weights=torch.ones(1, 2), cu_seqlens=torch.tensor([0, 2]), config=config,
                         step_loss_tokens=2)  # fmt: skip
    (grad,) = torch.autograd.grad(result.loss, trainer)
    assert grad[0].tolist() == pytest.approx([-2.0 * 2.0 / 2, 1.0 * 1.0 / 2])
    assert result.stats.clipped == 1


def test_gspo_uses_one_ratio_per_packed_sample() -> None:
    # Two samples in one row: [a a a | b b]; the first token of each is a prompt token (weight 0).
    trainer = torch.tensor([[0.0, -1.0, -1.0, 0.0, -2.0]])
    inference = torch.tensor([[5.0, -1.2, -0.6, 7.0, -2.0]])
    weights = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0]])
    cu = torch.tensor([0, 3, 5], dtype=torch.int32)
    means = sequence_mean(torch.where(weights > 0, trainer - inference, 0.0), weights, cu)
    assert means[0].tolist() == pytest.approx([-0.1, -0.1, -0.1, 0.0, 0.0])
    result = policy_loss(trainer_logprobs=trainer, inference_logprobs=inference, advantages=torch.ones(1, 5),
                         weights=weights, cu_seqlens=cu, config=LossConfig(kind="gspo"),
                         step_loss_tokens=3)  # fmt: skip
    assert result.stats.ratio == pytest.approx(2 * math.exp(-0.1) + 1.0)
    assert result.stats.mismatch_kl == pytest.approx((math.exp(0.2) - 1.2) + (math.exp(-0.4) - 0.6))


def test_a_sample_without_weight_gets_a_zero_mean_not_nan() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0]])
    got = sequence_mean(values, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0, 2, 3], dtype=torch.int32))
    assert got.tolist() == [[0.0, 0.0, 3.0]]


@pytest.mark.parametrize("kind", KINDS)
def test_packing_leaks_nothing_between_samples(kind: str) -> None:
    """Loss and gradient of a packed row equal the sums of its samples run as rows of their own."""
    samples = random_samples(seed=11, count=3)
    config = LossConfig(kind=kind, kl_coef=0.1)
    packed = pack(samples)
    logits = random_logits(packed, seed=12)
    tokens = step_tokens(packed)
    packed_loss = rl_loss(logits, packed, tokens, config).loss
    (packed_grad,) = torch.autograd.grad(packed_loss, logits)
    alone_loss, alone_grads, start = 0.0, [], 0
    for sample in samples:
        length = len(sample.token_ids)
        own = logits.detach()[:, start : start + length].clone().requires_grad_(True)
        loss = rl_loss(own, pack([sample]), tokens, config).loss
        alone_loss += loss.item()
        alone_grads.append(torch.autograd.grad(loss, own)[0])
        start += length
    assert packed_loss.item() == pytest.approx(alone_loss, rel=1e-6, abs=1e-9)
    assert torch.allclose(packed_grad, torch.cat(alone_grads, dim=1), atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(2, 6), cut=st.integers(1, 5), kind=st.sampled_from(KINDS))
def test_micro_batches_with_the_step_normalizer_add_up_to_one_batch(seed: int, count: int, cut: int, kind: str) -> None:
    samples = random_samples(seed, count)
    cut = min(cut, count - 1)
    config = LossConfig(kind=kind)
    whole = pack(samples)
    logits = random_logits(whole, seed + 1)
    tokens = step_tokens(whole)
    first, second = pack(samples[:cut]), pack(samples[cut:])
    split = first.num_tokens
    parts = rl_loss(logits[:, :split], first, tokens, config).loss
    parts = parts + rl_loss(logits[:, split:], second, tokens, config).loss
    # fp32 sums of terms of either sign in another order: agree to ~1e-6 absolute, not relative to a small total
    assert parts.item() == pytest.approx(rl_loss(logits, whole, tokens, config).loss.item(), rel=1e-5, abs=1e-6)


def test_placeholder_logprobs_of_prompt_tokens_never_overflow_the_ratio() -> None:
    prompt_placeholder = -1e4
    sample = PackSample("s", [1, 2, 3, 4], [0.0, 0.0, 1.0, 1.0], logprobs=[0.0, prompt_placeholder, -1.0, -1.0],
                        advantages=[0, 0, 1, 1])  # fmt: skip
    batch = pack([sample])
    logits = random_logits(batch, seed=0)
    for kind in KINDS:
        result = rl_loss(logits, batch, step_tokens(batch), LossConfig(kind=kind, kl_coef=0.1))
        (grad,) = torch.autograd.grad(result.loss, logits)
        assert math.isfinite(result.loss.item()) and bool(torch.isfinite(grad).all())


def test_batches_without_logprobs_or_advantages_and_sft_kind_are_refused() -> None:
    plain = pack([PackSample("s", [1, 2, 3], [0.0, 1.0, 1.0])])
    logits = random_logits(plain, seed=0)
    with pytest.raises(ContractError, match="logprobs"):
        rl_loss(logits, plain, 2, LossConfig(kind="ppo"))
    batch = pack(random_samples(seed=1, count=1))
    with pytest.raises(ContractError, match="trainer.loss.kind"):
        rl_loss(random_logits(batch, 0), batch, 2, LossConfig(kind="sft"))
    with pytest.raises(ContractError, match="advantages"):
        policy_loss(trainer_logprobs=torch.zeros(1, 3), inference_logprobs=torch.zeros(1, 3),
                    advantages=torch.zeros(1, 2), weights=torch.ones(1, 3), cu_seqlens=torch.tensor([0, 3]),
                    config=LossConfig(kind="ppo"), step_loss_tokens=3)  # fmt: skip


def row_inputs(trainer: list[float], inference: list[float], advantages: list[float]) -> dict[str, torch.Tensor]:
    """`policy_loss` keyword arguments for one sample whose every token counts with weight 1."""
    count = len(trainer)
    return {"trainer_logprobs": torch.tensor([trainer]), "inference_logprobs": torch.tensor([inference]),
            "advantages": torch.tensor([advantages]), "weights": torch.ones(1, count),
            "cu_seqlens": torch.tensor([0, count], dtype=torch.int32)}  # fmt: skip


def test_the_kl_penalty_is_taken_to_the_reference_logprobs_when_given() -> None:
    """k3 of (reference - trainer) per counted token, divided by the step's tokens; without a reference, the
    behaviour policy is the reference (here it agrees with the trainer, so its penalty alone would be 0)."""
    inputs = row_inputs([-1.0, -2.0], [-1.0, -2.0], [0.0, 0.0])
    reference = torch.tensor([[-1.5, -1.0]])
    config = LossConfig(kind="ppo", kl_coef=0.5)
    with_reference = policy_loss(**inputs, config=config, step_loss_tokens=2, reference_logprobs=reference)
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 1.0)]
    assert with_reference.loss.item() == pytest.approx(0.5 * sum(k3) / 2, rel=1e-6)
    assert policy_loss(**inputs, config=config, step_loss_tokens=2).loss.item() == 0.0

    batch = pack(random_samples(seed=3, count=2))
    logits, tokens = random_logits(batch, seed=4), step_tokens(batch)
    reference = -torch.rand(1, batch.num_tokens, generator=torch.Generator().manual_seed(5))
    through_logits = rl_loss(logits, batch, tokens, config, reference_logprobs=reference).loss
    direct = policy_loss(trainer_logprobs=-token_nll(logits, batch.labels), inference_logprobs=batch.logprobs,
                         advantages=batch.advantages, weights=packed_token_weights(batch),
                         cu_seqlens=batch.cu_seqlens, config=config, step_loss_tokens=tokens,
                         reference_logprobs=reference).loss  # fmt: skip
    assert through_logits.item() == pytest.approx(direct.item(), rel=1e-6)
    assert through_logits.item() != pytest.approx(rl_loss(logits, batch, tokens, config).loss.item(), rel=1e-3)


@pytest.mark.parametrize("step_loss_tokens", [0, 1, 4])
def test_the_loss_divides_by_the_step_tokens_and_by_one_for_a_step_without_any(step_loss_tokens: int) -> None:
    inputs = row_inputs([-0.5], [-0.5], [2.0])  # ratio 1: the token's loss is -A * lp, or -A * r for the surrogates
    token_loss = {"importance_sampling": 1.0, "ppo": -2.0, "gspo": -2.0}
    for kind in KINDS:
        loss = policy_loss(**inputs, config=LossConfig(kind=kind), step_loss_tokens=step_loss_tokens).loss
        assert loss.item() == pytest.approx(token_loss[kind] / max(step_loss_tokens, 1)), kind


def test_a_ratio_exactly_at_a_bound_is_not_counted_as_clipped() -> None:
    inputs = row_inputs([-1.0, -1.0], [-1.0, -1.0], [1.0, -1.0])  # ratio exactly 1
    tight = {
        "importance_sampling": LossConfig(kind="importance_sampling", importance_cap=1.0),
        "ppo low": LossConfig(kind="ppo", clip_low=0.0),
        "ppo high": LossConfig(kind="ppo", clip_high=0.0),
    }
    for name, config in tight.items():
        assert policy_loss(**inputs, config=config, step_loss_tokens=2).stats.clipped == 0, name


def test_without_the_entropy_bonus_the_logits_path_reports_zero_entropy_and_with_it_the_policy_entropy() -> None:
    batch = pack(random_samples(seed=6, count=2))
    logits, tokens = random_logits(batch, seed=7), step_tokens(batch)
    assert rl_loss(logits, batch, tokens, LossConfig(kind="ppo")).stats.entropy == 0.0
    entropy = torch.distributions.Categorical(logits=logits.detach().float()).entropy()
    counted = (packed_token_weights(batch) > 0).to(entropy.dtype)
    bonus = rl_loss(logits, batch, tokens, LossConfig(kind="ppo", entropy_coef=0.01)).stats.entropy
    assert bonus == pytest.approx(float((entropy * counted).sum()), rel=1e-5)


def test_step_statistics_add_field_by_field_and_average_over_tokens() -> None:
    first = PolicyStats(tokens=2, mismatch_kl=0.5, ratio=2.5, clipped=1, entropy=3.0)
    second = PolicyStats(tokens=3, mismatch_kl=0.25, ratio=3.5, clipped=0, entropy=1.0)
    total = first + second
    assert total == PolicyStats(tokens=5, mismatch_kl=0.75, ratio=6.0, clipped=1, entropy=4.0)
    assert total.as_list() == [5, 0.75, 6.0, 1, 4.0]
    assert total.means() == pytest.approx({"mismatch_kl": 0.15, "ratio_mean": 1.2, "clip_fraction": 0.2,
                                           "entropy": 0.8})  # fmt: skip
    assert PolicyStats().means() == {"mismatch_kl": 0.0, "ratio_mean": 1.0, "clip_fraction": 0.0, "entropy": 0.0}
    assert PolicyStats(tokens=1, mismatch_kl=0.5, ratio=2.0, clipped=1, entropy=0.5).means() == {
        "mismatch_kl": 0.5, "ratio_mean": 2.0, "clip_fraction": 1.0, "entropy": 0.5}  # fmt: skip


def contract_error(call: Callable[[], object]) -> tuple[str, object, str]:
    with pytest.raises(ContractError) as caught:
        call()
    return caught.value.field, caught.value.value, caught.value.expected


@pytest.mark.parametrize("name", ["inference_logprobs", "advantages", "weights", "reference_logprobs", "entropy"])
def test_a_tensor_of_the_wrong_shape_is_named_with_its_shape(name: str) -> None:
    inputs = row_inputs([-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])
    extra = {"reference_logprobs": torch.zeros(1, 3), "entropy": torch.zeros(1, 3)}
    arguments = {**inputs, **extra, name: torch.zeros(1, 2)}
    config = LossConfig(kind="ppo", kl_coef=0.1, entropy_coef=0.1)
    got = contract_error(lambda: policy_loss(**arguments, config=config, step_loss_tokens=3))
    assert got == (name, [1, 2], "the shape of the trainer logprobs [1, 3]")


def test_refusals_name_the_field_the_value_and_what_was_expected() -> None:
    inputs = row_inputs([-1.0], [-1.0], [1.0])
    assert contract_error(lambda: policy_loss(**inputs, config=LossConfig(kind="ppo"), step_loss_tokens=-1)) == (
        "step_loss_tokens", -1, "a non-negative token count")  # fmt: skip
    assert contract_error(lambda: policy_loss(**inputs, config=LossConfig(kind="sft"), step_loss_tokens=1)) == (
        "trainer.loss.kind", "sft", f"one of {list(RL_LOSS_KINDS)} for an RL loss")  # fmt: skip
    cu = torch.tensor([0, 1, 2], dtype=torch.int32)
    assert contract_error(lambda: sequence_mean(torch.zeros(1, 3), torch.ones(1, 3), cu)) == (
        "cu_seqlens", 2, "ending at the row length 3")  # fmt: skip
    samples = [PackSample(f"p{i}", [1, 2, 3], [0.0, 1.0, 1.0], logprobs=[0.0] * 3) for i in range(5)]
    batch = pack(samples)
    assert contract_error(lambda: rl_loss(random_logits(batch, 0), batch, 10, LossConfig(kind="ppo"))) == (
        "advantages", None, "advantages on every sample of an RL batch (samples ('p0', 'p1', 'p2'))")  # fmt: skip
