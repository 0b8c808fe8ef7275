"""Collate one planned micro-batch into a single packed row the model runs without padding.

Targets are shifted inside each sample: the row position of token t predicts token t+1 of the same sample,
and the last token of every sample predicts nothing (label `IGNORE_INDEX`, weight 0), so no target crosses
a boundary. Per-token fields (`loss_weights`, `logprobs`, `advantages`) are aligned with `token_ids` on
input, value i being about token i as a target, and shift together with the labels. Images keep sample
order: each of the model's image kwargs is concatenated name by name in the order the placeholders appear
(`PixelKwargs`); the family's position scheme checks them against the tokens.

Any sample with these attribute names packs: `PackSample` (the structural minimum) or
`foveal.trainer.data.materialize.MaterializedSample`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

from foveal.renderers.errors import ContractError
from foveal.trainer.data.adapters import PixelKwargs, concat_pixel_kwargs
from foveal.trainer.data.packing import OverlongText, PackItem, packed_length
from foveal.trainer.data.positions import PositionScheme, pack_positions

IGNORE_INDEX = -100
PER_TOKEN_FIELDS = ("loss_weights", "logprobs", "advantages")
Values = Sequence[int] | Sequence[float] | torch.Tensor


class Packable(Protocol):
    """What collation reads from one sample."""

    @property
    def sample_id(self) -> str: ...
    @property
    def token_ids(self) -> Values: ...
    @property
    def loss_weights(self) -> Values: ...
    @property
    def logprobs(self) -> Values | None: ...
    @property
    def advantages(self) -> Values | None: ...
    @property
    def sample_weight(self) -> float: ...
    @property
    def pixel_kwargs(self) -> PixelKwargs: ...


S = TypeVar("S", bound=Packable)


@dataclass(frozen=True)
class PackSample:
    """The structural minimum of one training sample: tokens, per-token fields and its images' tensors."""

    sample_id: str
    token_ids: Values
    loss_weights: Values
    logprobs: Values | None = None
    advantages: Values | None = None
    sample_weight: float = 1.0
    pixel_kwargs: PixelKwargs = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sample(self)


@dataclass(frozen=True)
class PackedBatch:
    """One packed row of T tokens from n samples; `cu_seqlens` are the boundaries `[0, L_0, L_0 + L_1, ..., T]`."""

    sample_ids: tuple[str, ...]
    input_ids: torch.Tensor
    """[1, T] int64."""
    labels: torch.Tensor
    """[1, T] int64: the next token of the same sample, IGNORE_INDEX at each sample's last token."""
    loss_weights: torch.Tensor
    """[1, T] float32, the weight of each label; 0 wherever the label is IGNORE_INDEX."""
    position_ids: torch.Tensor
    """[1, T] for text models, [rows, 1, T] for families whose scheme numbers tokens on several rows."""
    cu_seqlens: torch.Tensor
    """[n + 1] int32."""
    sample_weights: torch.Tensor
    """[n] float32, one per sample (spread over its tokens with `cu_seqlens`)."""
    pixel_kwargs: PixelKwargs = field(default_factory=dict)
    """The model's image kwargs for the row's images, in sample order; empty without images."""
    logprobs: torch.Tensor | None = None
    """[1, T] float32, shifted like `labels`."""
    advantages: torch.Tensor | None = None
    """[1, T] float32, shifted like `labels`."""

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[-1]

    def to(self, device: torch.device | str) -> PackedBatch:
        """The same batch with every tensor on `device`."""
        moved = {
            column.name: value.to(device)
            for column in dataclasses.fields(self)
            if isinstance(value := getattr(self, column.name), torch.Tensor)
        }
        images = {name: tensor.to(device) for name, tensor in self.pixel_kwargs.items()}
        return dataclasses.replace(self, **moved, pixel_kwargs=images)


def pack_item(sample: Packable) -> PackItem:
    """What the planner sees of a sample."""
    return PackItem(sample.sample_id, len(sample.token_ids), bool(sample.pixel_kwargs))


def fit_sample(sample: S, seq_len: int, overlong_text: OverlongText = "error") -> S:
    """`sample` at the length the plan gives it: unchanged, truncated (text only, when allowed) or refused.

    Truncation cuts the token ids and every per-token field at the same place, so they stay aligned.
    """
    keep = packed_length(pack_item(sample), seq_len, overlong_text)
    if keep == len(sample.token_ids):
        return sample
    cut = {
        name: values[:keep]
        for name in ("token_ids", *PER_TOKEN_FIELDS)
        if (values := getattr(sample, name)) is not None
    }
    return dataclasses.replace(sample, **cut)  # type: ignore[type-var]


def collate_packed(samples: Sequence[Packable], positions: PositionScheme) -> PackedBatch:
    """One packed row from the samples of one planned bin, in the given order."""
    if not samples:
        raise ContractError("samples", [], "at least one sample per micro-batch")
    for sample in samples:
        check_sample(sample)
    ids = [torch.as_tensor(sample.token_ids, dtype=torch.long) for sample in samples]
    lengths = torch.tensor([0, *(len(x) for x in ids)])
    return PackedBatch(
        sample_ids=tuple(sample.sample_id for sample in samples),
        input_ids=torch.cat(ids).unsqueeze(0),
        labels=torch.cat([_shift(x, IGNORE_INDEX) for x in ids]).unsqueeze(0),
        loss_weights=_shifted_field(samples, "loss_weights"),
        position_ids=pack_positions(
            [positions.sample_positions(s.sample_id, x, s.pixel_kwargs) for s, x in zip(samples, ids, strict=True)]
        ),
        cu_seqlens=lengths.cumsum(0).to(torch.int32),
        sample_weights=torch.tensor([float(sample.sample_weight) for sample in samples], dtype=torch.float32),
        pixel_kwargs=concat_pixel_kwargs([sample.pixel_kwargs for sample in samples]),
        logprobs=_optional_field(samples, "logprobs"),
        advantages=_optional_field(samples, "advantages"),
    )


def check_sample(sample: Packable) -> None:
    """Per-token fields as long as the tokens (the position scheme checks the images when it numbers them)."""
    length = len(sample.token_ids)
    if length < 1:
        raise ContractError(f"sample {sample.sample_id!r}.token_ids", length, "at least 1 token")
    for name in PER_TOKEN_FIELDS:
        values = getattr(sample, name)
        if values is not None and len(values) != length:
            raise ContractError(f"sample {sample.sample_id!r}.{name}", len(values), f"one value per token ({length})")


def _shift(values: torch.Tensor, fill: float | int) -> torch.Tensor:
    """values[1:] followed by `fill`: what each position predicts, and nothing after the sample's last token."""
    return torch.cat([values[1:], values.new_full((1,), fill)])


def _shifted_field(samples: Sequence[Packable], name: str) -> torch.Tensor:
    parts = [_shift(torch.as_tensor(getattr(s, name), dtype=torch.float32), 0.0) for s in samples]
    return torch.cat(parts).unsqueeze(0)


def _optional_field(samples: Sequence[Packable], name: str) -> torch.Tensor | None:
    """A per-token field all samples carry, or none does; a mix would leave some tokens without a value."""
    present = [getattr(s, name) is not None for s in samples]
    if not any(present):
        return None
    if not all(present):
        missing = [s.sample_id for s, has in zip(samples, present, strict=True) if not has]
        raise ContractError(name, missing, f"{name} on every sample of the micro-batch or on none")
    return _shifted_field(samples, name)
