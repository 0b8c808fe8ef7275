"""The running batch: every sequence being decoded, sharing one left-padded KV cache.

Continuous batching: a prefilled prompt joins between two decode steps (its cache rows are padded and
stacked onto the batch's), each step samples one token for every row, and finished or dropped rows leave
at once, so a long completion never holds back short ones and freed rows are refilled right away.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq

import torch

from foveal.trainer.serving.engine import kv
from foveal.trainer.serving.engine.runner import ModelRunner, Prefill
from foveal.trainer.serving.engine.sampling import sample_batch
from foveal.trainer.serving.engine.sequences import Sequence
from foveal.trainer.serving.engine.stopping import Decode


class RunningBatch:
    """Sequences in decode order; row i of the cache belongs to `sequences[i]`."""

    def __init__(self, runner: ModelRunner, decode: Decode, suppressed: tuple[int, ...] = ()) -> None:
        self.runner = runner
        self.decode = decode
        self.suppressed = suppressed
        self.sequences: list[Sequence] = []
        self.padded: kv.PaddedCache | None = None

    def __len__(self) -> int:
        return len(self.sequences)

    def admit(self, prefill: Prefill, sequences: Seq[Sequence]) -> list[Sequence]:
        """Sample each sequence's first token from the prompt's logits; those not finished by it join the
        batch (sharing the prompt's cache rows). Returns the ones that finished at once."""
        logits = prefill.logits.expand(len(sequences), -1)
        sample_rows(sequences, logits, self.decode, self.suppressed)
        going = [seq for seq in sequences if not seq.finished]
        if going:
            rows = kv.repeat_rows(prefill.padded, len(going))
            self.padded = rows if self.padded is None else kv.join([self.padded, rows])
            self.sequences.extend(going)
        return [seq for seq in sequences if seq.finished]

    def step(self) -> list[Sequence]:
        """Decode one token for every row; returns the sequences that finished (already removed)."""
        if self.padded is None:
            return []
        device = self.runner.device
        tokens = torch.tensor([seq.token_ids[-1] for seq in self.sequences], dtype=torch.long, device=device)
        positions = torch.tensor([seq.next_position - 1 for seq in self.sequences], dtype=torch.long, device=device)
        logits = self.runner.decode(self.padded, tokens, positions)
        sample_rows(self.sequences, logits, self.decode, self.suppressed)
        return self.remove(lambda seq: seq.finished)

    def remove(self, leaves: Callable[[Sequence], bool]) -> list[Sequence]:
        """Drop the sequences for which `leaves` is true (and their cache rows); returns them."""
        gone = [seq for seq in self.sequences if leaves(seq)]
        if not gone:
            return []
        kept = [i for i, seq in enumerate(self.sequences) if not leaves(seq)]
        self.sequences = [self.sequences[i] for i in kept]
        if not kept or self.padded is None:
            self.padded = None
        else:
            self.padded = kv.keep_rows(self.padded, torch.tensor(kept, dtype=torch.long, device=self.runner.device))
        return gone


def sample_rows(sequences: Seq[Sequence], logits: torch.Tensor, decode: Decode, suppressed: tuple[int, ...]) -> None:
    """One token per row, each with its sequence's own settings and generator; logprobs from the raw model."""
    params = [seq.owner.request.sampling for seq in sequences]
    sampled = sample_batch(logits, params, [seq.generator for seq in sequences], suppressed)
    for seq, token, logprob, alternatives in zip(
        sequences, sampled.tokens, sampled.logprobs, sampled.alternatives, strict=True
    ):
        seq.append(token, logprob, decode, alternatives)
