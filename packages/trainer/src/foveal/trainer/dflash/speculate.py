"""Acceptance length and simulated speedup of a draft under greedy verification by the real target.

DFlash decoding: after the prompt's prefill the target has emitted one token, the anchor. Each round the draft
fills the block [anchor, mask, ...] in one forward, conditioned on the target's features of every token before
the anchor; the target verifies the block in one forward and accepts the longest run of drafted tokens equal
to its own greedy choices, plus its own next token (the bonus), which becomes the next anchor. So a round
yields accepted + 1 tokens for one target forward; the acceptance length is their mean per round.

Greedy verification is lossless: the output is exactly the target's greedy continuation. So the target's
continuation is generated once (`generate`), its features captured in one forward over prompt + continuation
(causal, so the features of any prefix are those the real loop would have), and the rounds are replayed by
running only the draft. Speedup = generated tokens / target forwards (prefill + rounds), against one forward
per token for plain greedy decoding; the draft's own cost is not counted ("simulated").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from foveal.trainer.data.collate import Packable, PackSample, collate_packed
from foveal.trainer.dflash.draft import DFlashDraft
from foveal.trainer.dflash.regenerate import generation_batches
from foveal.trainer.dflash.target import FrozenTarget
from foveal.trainer.dflash.weights import TargetWeights


@dataclass(frozen=True)
class EvalSequence:
    """A held-out prompt with the target's greedy continuation, and the target's features of all of it."""

    sample_id: str
    token_ids: torch.Tensor
    """[L] int64 on the target's device: prompt, then the continuation."""
    prompt_len: int
    features: torch.Tensor
    """[L, n*H] context features."""


@dataclass(frozen=True)
class Decoding:
    """One simulated decoding: tokens per verification round (accepted drafts + the target's bonus token)."""

    generated: int
    rounds: tuple[int, ...]

    @property
    def target_forwards(self) -> int:
        return 1 + len(self.rounds)  # the prefill emits the first token


@dataclass(frozen=True)
class EvalResult:
    """Acceptance over a held-out set: mean tokens per round, and tokens per target forward (the speedup)."""

    samples: int
    generated: int
    target_forwards: int
    rounds: int
    acceptance_length: float
    speedup: float

    def as_metrics(self, prefix: str = "eval_") -> dict[str, float | int]:
        return {
            f"{prefix}acceptance_length": self.acceptance_length,
            f"{prefix}speedup": self.speedup,
            f"{prefix}rounds": self.rounds,
            f"{prefix}generated": self.generated,
        }


def accepted_run(proposal: torch.Tensor, reference: torch.Tensor) -> int:
    """How many leading drafted tokens equal the target's greedy tokens."""
    length = min(len(proposal), len(reference))
    matches = (proposal[:length] == reference[:length]).long()
    return int(matches.cumprod(0).sum())


@torch.no_grad()
def simulate(draft: DFlashDraft, weights: TargetWeights, sequence: EvalSequence, block_size: int) -> Decoding:
    """Replay greedy DFlash decoding of one sequence; returns the tokens each round produced."""
    tokens, end = sequence.token_ids, len(sequence.token_ids)
    positions = torch.arange(end, device=tokens.device)
    offsets = torch.arange(block_size, device=tokens.device)
    anchor, rounds = sequence.prompt_len, []
    while anchor < end - 1:
        hidden = draft(
            sequence.features[:anchor],
            positions[:anchor],
            weights.embed_tokens(tokens[anchor : anchor + 1]),
            (anchor + offsets)[None],
        )
        proposal = weights.logits(hidden[1:]).argmax(-1)
        produced = min(accepted_run(proposal, tokens[anchor + 1 : anchor + block_size]) + 1, end - 1 - anchor)
        rounds.append(produced)
        anchor += produced
    return Decoding(generated=end - sequence.prompt_len, rounds=tuple(rounds))


def evaluate(
    draft: DFlashDraft, weights: TargetWeights, sequences: Sequence[EvalSequence], block_size: int
) -> EvalResult:
    """Acceptance length and simulated speedup of `draft` over `sequences`."""
    decodings = [simulate(draft, weights, sequence, block_size) for sequence in sequences]
    rounds = [r for decoding in decodings for r in decoding.rounds]
    generated = sum(d.generated for d in decodings)
    forwards = sum(d.target_forwards for d in decodings)
    return EvalResult(
        samples=len(decodings),
        generated=generated,
        target_forwards=forwards,
        rounds=len(rounds),
        acceptance_length=sum(rounds) / max(len(rounds), 1),
        speedup=generated / max(forwards, 1),
    )


def eval_sequences(
    target: FrozenTarget, prompts: Sequence[Packable], max_new_tokens: int, stop_ids: Sequence[int], batch_size: int
) -> list[EvalSequence]:
    """The target's greedy continuations of `prompts` (materialized; batched `generate`), with features of each."""
    sequences = []
    for batch in generation_batches(len(prompts), batch_size):
        chosen = [prompts[i] for i in batch]
        continuations = target.greedy_continuations(chosen, max_new_tokens, stop_ids)
        sequences.extend(_captured(target, prompt, c) for prompt, c in zip(chosen, continuations, strict=True))
    return sequences


def _captured(target: FrozenTarget, prompt: Packable, continuation: Sequence[int]) -> EvalSequence:
    ids = [*map(int, prompt.token_ids), *continuation]
    whole = PackSample(prompt.sample_id, ids, [0.0] * len(ids), pixel_kwargs=prompt.pixel_kwargs)
    batch = collate_packed([whole], target.positions).to(target.device)
    return EvalSequence(prompt.sample_id, batch.input_ids[0], len(prompt.token_ids), target.capture(batch))
